"""What a run dir's contents mean when a run starts there: start fresh, resume, skip (finished, same config), set
the earlier run aside (rerun_changed=true) or refuse. Decided from the run records alone (run.json,
run_config.json), never from .hydra/: nothing here imports anything heavy, it runs in the first second.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import time
import zipfile
from pathlib import Path
from typing import Literal

from spanqa.errors import ConfigError
from spanqa.rundir.layout import CHECKPOINTS_DIR, LOCK, SUPERSEDED, is_finished
from spanqa.rundir.record import RunIdentity, recorded_config, started_config

log = logging.getLogger(__name__)
State = Literal["fresh", "resume", "done", "supersede"]


def decide(
    run_dir: Path, resume: bool, multirun: bool, identity: RunIdentity | None = None, rerun_changed: bool = False
) -> State:
    """Never train over an earlier run's checkpoints. A re-launched multirun resumes its interrupted jobs and skips
    its finished ones when their config is the one asked for now; a job whose config changed is refused (one line
    naming the keys) or, with rerun_changed, superseded: run again from scratch, the earlier run set aside.
    Reads the dir only; `run_state` also acts on the answer."""
    finished = is_finished(run_dir)
    has_checkpoints = any((run_dir / CHECKPOINTS_DIR).glob("checkpoint-*"))
    if finished and not multirun:
        raise ConfigError(f"run dir {str(run_dir)!r} holds a finished run: choose a new hydra.run.dir")
    if has_checkpoints and not (resume or multirun):
        raise ConfigError(
            f"run dir {str(run_dir)!r} already holds checkpoints: pass resume=true or a new hydra.run.dir"
        )
    if not (finished or has_checkpoints):
        if resume:
            raise ConfigError(
                f"resume=true but run dir {str(run_dir)!r} has no checkpoint: set hydra.run.dir=<earlier run>"
            )
        return "fresh"
    earlier = recorded_config(run_dir) if finished else started_config(run_dir)
    if identity is None or (earlier is not None and RunIdentity.of(earlier).digest == identity.digest):
        return "done" if finished else "resume"
    what = "a finished" if finished else "an interrupted"
    changed = identity.differences(earlier) if earlier is not None else ["(its config was not recorded)"]
    if not rerun_changed:
        shown = "; ".join(changed[:3]) + ("; …" if len(changed) > 3 else "")
        raise ConfigError(
            f"run dir {str(run_dir)!r} holds {what} run of another config ({shown}): pass rerun_changed=true to "
            f"run it again (the earlier run is kept in {SUPERSEDED}/), or relaunch into a new hydra.sweep.dir"
        )
    return "supersede"


def run_state(
    run_dir: Path, resume: bool, multirun: bool, identity: RunIdentity | None = None, rerun_changed: bool = False
) -> State:
    """`decide`, then act on it: a superseded run is moved aside and the job starts fresh. Call while holding the
    run dir's lock."""
    state = decide(run_dir, resume, multirun, identity, rerun_changed)
    if state == "supersede":
        set_aside(run_dir)
        return "fresh"
    return state


def set_aside(run_dir: Path) -> Path:
    """Move an earlier run's files, its .hydra/ included, into superseded/<time>/ (nothing is deleted). The job's
    open log and the lock stay where they are."""
    dest = run_dir / SUPERSEDED / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if entry.name not in (SUPERSEDED, LOCK) and entry.suffix != ".log":
            shutil.move(str(entry), dest / entry.name)
    return dest


# ---------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint dir cannot be resumed from, or None. The Trainer writes weights, optimizer, scheduler and
    RNG state, then trainer_state.json, each in place: a run killed (or out of disk) mid-save leaves some missing
    or cut short. Cheap structural checks: JSON that parses, a safetensors header that fits the file, zip archives
    (torch.save's format) whose directory at the end of the file is there."""
    state = path / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        if "global_step" not in json.loads(state.read_text(encoding="utf-8")):
            return "trainer_state.json has no global_step"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is cut short or not JSON"
    weights = path / "model.safetensors"
    if weights.is_file():
        try:
            with weights.open("rb") as f:
                (header,) = struct.unpack("<Q", f.read(8))
                json.loads(f.read(header))
            if weights.stat().st_size < 8 + header:
                return "model.safetensors is cut short"
        except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError):
            return "model.safetensors is cut short"
    elif not (path / "pytorch_model.bin").is_file():
        return "no model weights"
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (path / name).is_file():
            return f"no {name}"
        if not zipfile.is_zipfile(path / name):
            return f"{name} is cut short"
    return None


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint, saying which newer ones were skipped and why; None when there is none."""
    found = sorted((run_dir / CHECKPOINTS_DIR).glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        log.warning("%s is incomplete (%s): resuming from an earlier checkpoint", path, problem)
    if found:
        log.warning("%s holds no complete checkpoint: training from the start", run_dir / CHECKPOINTS_DIR)
    return None
