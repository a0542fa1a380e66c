"""Checks on where a run writes, done before anything is computed, so no work is lost to a full or
unwritable disk.

`RunDirCheck` is a Hydra callback (registered in conf/config.yaml): Hydra creates the run dir before the task
starts, so an unwritable `hydra.run.dir` would otherwise surface as a Hydra traceback.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from spanqa.errors import SpanQAError


class OutputError(SpanQAError):
    """The output location cannot hold the run."""


def ensure_writable(path: Path, key: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OutputError(f"{key}={str(path)!r} is not writable ({err.strerror}): choose another directory") from err


def checkpoint_bytes(num_parameters: int, checkpoints_kept: int) -> int:
    """fp32 weights + two AdamW moments per kept checkpoint, plus the final model."""
    return num_parameters * 4 * (3 * checkpoints_kept + 1)


def check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise OutputError(
            f"{str(path)!r} has {free / 1e9:.2f} GB free but the run's checkpoints need about {needed / 1e9:.2f} GB: "
            "free space, lower trainer.save_total_limit or set hydra.run.dir elsewhere"
        )


class RunDirCheck(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(Path(config.hydra.sweep.dir), "hydra.sweep.dir")

    @staticmethod
    def _check(path: Path, key: str) -> None:
        try:
            ensure_writable(path, key)
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
