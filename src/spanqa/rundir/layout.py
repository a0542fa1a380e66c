"""What a run dir holds, by name, and the launch's Hydra files.

    <run>/run_config.json     the config the run started with, before its first checkpoint (relaunch compares to it)
          run.json            the run record (`spanqa.rundir.record`), written atomically and last: "finished"
          .hydra/             config.yaml, hydra.yaml, overrides.yaml of the launch that started the run
          model/              the best checkpoint (safetensors + tokenizer), what inference loads
          checkpoints/        the Trainer's checkpoints (resume)
          eval/step-N/        each evaluation's artifacts; the final ones sit in the run dir itself
          skipped_rows.json   training rows dropped as malformed (data.bad_rows=skip)
          trimmed_answers.json  answers whose surrounding whitespace was trimmed
          superseded/<time>/  an earlier run of this dir, set aside by rerun_changed=true
          .lock               held while a process works in the dir (`spanqa.rundir.lock`)

Hydra writes .hydra/ itself before the task function runs, so a relaunch that is then refused (a finished run dir,
another config) would already have rewritten a finished run's files. `conf/config.yaml` therefore sets
`hydra.output_subdir: null` and the job writes the same three files here, once it knows it will run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

RECORD = "run.json"
STARTED = "run_config.json"
HYDRA_DIR = ".hydra"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
SKIPPED = "skipped_rows.json"
TRIMMED = "trimmed_answers.json"
PER_QUESTION = "per_question.json"
CONTEXTS = "contexts.json"
SUPERSEDED = "superseded"
LOCK = ".lock"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / RECORD).is_file()


def is_run_dir(path: Path) -> bool:
    """A run dir of any age: a record, a start record, or (runs from before either) Hydra's saved config."""
    return any((path / name).is_file() for name in (RECORD, STARTED, f"{HYDRA_DIR}/config.yaml"))


def find_run_dirs(root: Path) -> list[Path]:
    """Run dirs at any depth under `root`, in sorted order; a run dir's own subdirs (checkpoints/, eval/step-N/,
    superseded/) are never runs of their own."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_run_dir(here):
            found.append(here)
            dirnames.clear()
        dirnames.sort()
    return found


def write_launch_files(run_dir: Path, task_cfg: Any) -> None:
    """.hydra/config.yaml, hydra.yaml and overrides.yaml, as Hydra itself would write them (it is told not to).
    Call from inside the Hydra task, for a run that starts; an existing .hydra/ (a resumed run's) stays as it was."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    out = run_dir / HYDRA_DIR
    if (out / "config.yaml").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    hydra_cfg = HydraConfig.instance().cfg  # the `hydra` node alone, as Hydra saves it
    for name, node in (
        ("config.yaml", task_cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", HydraConfig.get().overrides.task),
    ):
        (out / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
