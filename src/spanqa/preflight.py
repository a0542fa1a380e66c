"""Checks done before anything heavy is imported or computed: where a run writes (so no work is lost to a full or
unwritable disk) and whether local model and data paths exist (so a typo costs a second, not a download).

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

from spanqa.config import ModelConfig
from spanqa.errors import ModelLoadError, SpanQAError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class OutputError(SpanQAError):
    """The output location cannot hold the run."""


def check_local_dir(name_or_path: str, key: str) -> bool:
    """True for a path (not a Hub id); a path must be an existing directory."""
    path = Path(name_or_path).expanduser()
    if not (name_or_path.startswith((".", "/", "~")) or path.exists()):
        return False
    if not path.is_dir():
        raise ModelLoadError(f"{key}={name_or_path!r} does not exist (expected a checkpoint directory or a Hub id)")
    return True


def check_checkpoint(name_or_path: str, key: str = "model.name_or_path") -> None:
    """A local path must be a complete checkpoint; a Hub id needs the Hub or the cache (checked when loading)."""
    if not check_local_dir(name_or_path, key):
        return
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{key}={name_or_path!r} has no config.json: not a saved checkpoint")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(f"{key}={name_or_path!r} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def check_model_source(cfg: ModelConfig) -> None:
    """Local checkpoint and tokenizer dirs exist and hold what loading needs; Hub ids are checked when loading."""
    check_checkpoint(cfg.name_or_path)
    if cfg.tokenizer_name_or_path is not None:
        check_local_dir(cfg.tokenizer_name_or_path, "model.tokenizer_name_or_path")


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
