"""The README's troubleshooting table, row by row: each bad input fails fast with one line, or falls back safely."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import last_line, run_module

TINY = ["experiment=demo", "data.max_train_samples=60", "data.max_eval_samples=20", "trainer.max_steps=3"]


def train(demo_dir: Path, run_dir: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_module("spanqa.train", *TINY, f"demo.dir={demo_dir}", f"hydra.run.dir={run_dir}", *overrides, **env)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d, tmp: str(tmp / "nowhere"), "does not exist (expected a checkpoint directory or a Hub id)"),
        (
            lambda d, tmp: str(
                shutil.copytree(d / "tiny-bert", tmp / "no-weights", ignore=shutil.ignore_patterns("*.safetensors"))
            ),
            "has no weights",
        ),
    ],
)
def test_missing_or_incomplete_checkpoint(tmp_path: Path, demo_dir: Path, setup, message: str) -> None:
    path = setup(demo_dir, tmp_path)
    proc = train(demo_dir, tmp_path / "run", f"model.name_or_path={path}", "logger=none")
    assert proc.returncode == 2
    assert last_line(proc).startswith(f"error: model.name_or_path={path!r}") and message in last_line(proc)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_wandb_key_without_network_falls_back_offline_and_the_key_is_never_saved(
    tmp_path: Path, demo_dir: Path
) -> None:
    key = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_API_KEY": key, "WANDB_MODE": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens there
    start = time.perf_counter()
    proc = train(demo_dir, tmp_path / "run", "logger.mode=auto", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - start < 120  # W&B itself would hang ~100 s before giving up
    assert "W&B server unreachable: logging offline" in proc.stdout + proc.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []
    assert key not in proc.stdout + proc.stderr
    # Weights are saved as safetensors only.
    saved = [p.name for p in (tmp_path / "run").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".safetensors")]
    assert "model.safetensors" in saved and not [n for n in saved if n.endswith(".bin") and "model" in n]


def test_unwritable_output_dir_fails_in_one_line(tmp_path: Path, demo_dir: Path) -> None:
    proc = train(demo_dir, Path("/proc/spanqa-run"), "logger=none")
    assert proc.returncode == 2
    assert last_line(proc) == (
        "error: hydra.run.dir='/proc/spanqa-run' is not writable (No such file or directory): choose another directory"
    )


def test_windows_longer_than_the_model_fail_before_preprocessing(tmp_path: Path, demo_dir: Path) -> None:
    proc = train(demo_dir, tmp_path / "run", "data.max_length=600", "data.doc_stride=128", "logger=none")
    assert proc.returncode == 2
    assert last_line(proc) == "error: data.max_length=600 is invalid: the model has 512 positions at most"


def test_a_malformed_row_is_reported_before_the_model_loads(tmp_path: Path, demo_dir: Path) -> None:
    """The model here would not even load (its weights are cut short): the row's error comes first."""
    import json

    broken = shutil.copytree(demo_dir / "tiny-bert", tmp_path / "broken-bert")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    blob = json.loads((demo_dir / "train.json").read_text())
    qa = blob["data"][0]["paragraphs"][0]["qas"][0]
    qa["question"] = "\u200b\u200b"  # invisible: the tokenizer drops it
    train_file = tmp_path / "train.json"
    train_file.write_text(json.dumps(blob))
    proc = train(demo_dir, tmp_path / "run", f"model.name_or_path={broken}", f"data.train_file={train_file}",
                 "logger=none")  # fmt: skip
    assert proc.returncode == 2
    assert last_line(proc) == (
        f"error: train: question {qa['id']!r} has an empty question (data.bad_rows=skip drops such training rows)"
    )
