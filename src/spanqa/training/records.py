"""What a run leaves in its Hydra run dir, and what a run dir's contents mean when a run starts there again.

run.json is the "finished" marker: the composed config (resolved) and its digest, Trainer log history, final
metrics, wall time, steps/s, parameter count, best checkpoint and W&B run id, written atomically and last. A run
records its config when it starts too (run_config.json), so a relaunch can tell "the same job, interrupted or
done" from "a changed job in the same dir" (Hydra rewrites .hydra/config.yaml before the task runs, so that file
cannot tell). Beside it, the final eval artifacts (predictions, null odds,
n-best, per-question EM/F1) and `model/` (the best checkpoint, safetensors, loadable by `spanqa.predict` and, for
the start/end head, by `AutoModelForQuestionAnswering.from_pretrained`). `make compare` reads only these files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from spanqa.config import flatten
from spanqa.errors import ConfigError
from spanqa.files import write_json

if TYPE_CHECKING:  # run_state and read_record serve the first second of a run: nothing heavy at import
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput

    from spanqa.data.windows import EvalSet
    from spanqa.eval.policies import Outcome
    from spanqa.training.tracking import Tracker

RECORD = "run.json"
STARTED = "run_config.json"
SKIPPED = "skipped_rows.json"
SUPERSEDED = "superseded"
# Keys that change how a run goes, not what it computes: a relaunch may differ in them and still be the same job.
OPERATIONAL = (
    "resume",
    "rerun_changed",
    "optimized_metric",
    "logger",
    "data.num_proc",
    "trainer.eval_batch_size",
    "trainer.dataloader_workers",
    "trainer.save_total_limit",
    "trainer.logging_steps",
    "trainer.cpu_threads",
)


def _what(config: dict[str, Any]) -> dict[str, Any]:
    """The dotted keys that define what a run computes."""
    return {k: v for k, v in flatten(config).items() if not any(k == o or k.startswith(o + ".") for o in OPERATIONAL)}


@dataclass(frozen=True)
class RunIdentity:
    """The composed config (resolved) and a digest of what it computes."""

    config: dict[str, Any]
    digest: str
    overrides: list[str] = field(default_factory=list)  # the command line's, for the comparison report

    @classmethod
    def of(cls, cfg: DictConfig | dict[str, Any], overrides: list[str] | None = None) -> RunIdentity:
        config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        blob = json.dumps(_what(config), sort_keys=True, default=str)  # type: ignore[arg-type]
        return cls(config, hashlib.sha256(blob.encode()).hexdigest()[:16], list(overrides or []))  # type: ignore[arg-type]

    def differences(self, earlier: dict[str, Any]) -> list[str]:
        """'key: earlier → now' for each key that changed what is computed."""
        old, new = _what(earlier), _what(self.config)
        return [f"{k}: {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}" for k in sorted(old.keys() | new.keys())
                if old.get(k) != new.get(k)]  # fmt: skip


def run_state(
    run_dir: Path, resume: bool, multirun: bool, identity: RunIdentity | None = None, rerun_changed: bool = False
) -> str:
    """'fresh', 'resume' or 'done'. Never train over an earlier run's checkpoints. A re-launched multirun
    resumes its interrupted jobs and skips its finished ones when their config is the one asked for now; a job
    whose config changed is refused (one line naming the keys) or, with rerun_changed, run again from scratch
    after its earlier run is moved into superseded/."""
    finished = (run_dir / RECORD).is_file()
    has_checkpoints = any((run_dir / "checkpoints").glob("checkpoint-*"))
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
    earlier = read_record(run_dir).get("config") if finished else _started_config(run_dir)
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
    set_aside(run_dir)
    return "fresh"


def _started_config(run_dir: Path) -> dict[str, Any] | None:
    started = run_dir / STARTED
    return json.loads(started.read_text())["config"] if started.is_file() else None


def record_start(run_dir: Path, identity: RunIdentity) -> None:
    """The config the checkpoints about to be written come from: what a relaunch compares against."""
    write_json(run_dir / STARTED, {"config": identity.config, "config_digest": identity.digest})


def set_aside(run_dir: Path) -> Path:
    """Move an earlier run's files into superseded/<time>/ (nothing is deleted). Hydra's .hydra/ (already the
    new job's) and the job's open log stay where they are."""
    dest = run_dir / SUPERSEDED / time.strftime("%Y-%m-%d_%H-%M-%S")
    dest.mkdir(parents=True)
    for entry in run_dir.iterdir():
        if entry.name not in (".hydra", SUPERSEDED) and entry.suffix != ".log":
            shutil.move(str(entry), dest / entry.name)
    return dest


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RECORD).read_text())


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint: one killed while saving lacks trainer_state.json (written last)."""
    complete = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]))) if complete else None


def best_epoch(best_checkpoint: str | None, log_history: list[dict[str, Any]]) -> float | None:
    """The epoch whose evaluation produced the best checkpoint (the one loaded at the end)."""
    if best_checkpoint is None:
        return None
    step = int(best_checkpoint.rsplit("-", 1)[-1])
    return next((h["epoch"] for h in log_history if h.get("step") == step and "eval_f1" in h), None)


def save_final(
    trainer: Trainer,
    outcome: Outcome | None,
    eval_set: EvalSet,
    metrics: dict[str, float],
    train_output: TrainOutput,
    run_dir: Path,
    tracker: Tracker,
    identity: RunIdentity,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the final artifacts and, last, run.json; close the W&B run. Returns the metrics with best_epoch.
    `extra` adds entries to run.json (what the data step skipped, for one)."""
    from spanqa.eval.policies import write_artifacts

    trainer.save_model(str(run_dir / "model"))  # every rank takes part; the Trainer writes once
    state = trainer.state
    metrics = {**metrics, "best_epoch": best_epoch(state.best_model_checkpoint, state.log_history)}
    if not trainer.is_world_process_zero():
        return metrics
    assert outcome is not None, "save_final runs after a final evaluation"
    files = write_artifacts(outcome, eval_set, run_dir, nbest=True)
    record: dict[str, Any] = {
        "run_name": trainer.args.run_name,
        "config": identity.config,
        "config_digest": identity.digest,
        "overrides": identity.overrides,
        "metrics": metrics,
        "null_threshold_policy": outcome.policy,
        "log_history": state.log_history,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "train_steps_per_second": train_output.metrics.get("train_steps_per_second"),
        "global_step": state.global_step,
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "best_checkpoint": state.best_model_checkpoint,
        "wandb_run_id": tracker.run.id if tracker.run is not None else None,
        **(extra or {}),
    }
    write_json(run_dir / RECORD, record)
    tracker.log_files(f"eval-{tracker.run.id}" if tracker.run else "eval", "evaluation", files)
    tracker.finish({k: v for k, v in metrics.items() if v is not None})
    return metrics


def write_skipped(run_dir: Path, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The training rows data.bad_rows=skip dropped, with their reasons, in skipped_rows.json; returns what
    run.json records of them."""
    if not skipped:
        return {}
    write_json(run_dir / SKIPPED, skipped)
    return {"skipped_rows": len(skipped)}


def summary_line(run_name: str, metrics: dict[str, Any], run_dir: Path, skipped_rows: int = 0) -> str:
    """One line for the terminal: EM/F1, the splits, and the score of answering "" to everything."""
    nan = float("nan")
    baseline = 100.0 * metrics["eval_NoAns_total"] / metrics["eval_total"] if "eval_NoAns_total" in metrics else 0.0
    return (
        f"{run_name}: EM {metrics['eval_exact']:.2f}  F1 {metrics['eval_f1']:.2f}  "
        f"(HasAns F1 {metrics.get('eval_HasAns_f1', nan):.2f}, NoAns F1 {metrics.get('eval_NoAns_f1', nan):.2f}; "
        f'all-"" baseline F1 {baseline:.2f})  best epoch {metrics.get("best_epoch")}'
        + (f"  ({skipped_rows} malformed training rows skipped: {SKIPPED})" if skipped_rows else "")
        + f"  → {run_dir}"
    )
