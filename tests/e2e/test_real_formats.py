"""`make train` and `make smoke` on the real artifacts' formats (tiny replicas, tests/replicas.py): the SpanBERT
release with BERT's cased tokenizer and the Hub dataset's parquet layout, the first-second checks, and divergence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, last_line, make, run_module, subprocess_env

WINDOWS = ["data.max_length=64", "data.doc_stride=16", "data.max_query_length=16", "trainer.device=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf"])
def test_the_spanbert_release_trains_through_make_train(real: dict[str, Path], tmp_path: Path, model: str) -> None:
    """config.json without model_type, fp16 pytorch_model.bin, no tokenizer files; the Hub dataset layout."""
    run = tmp_path / "run"
    args = [
        f"model.name_or_path={real['release']}",
        f"model.tokenizer_name_or_path={real['tokenizer']}",
        f"data.dataset_name={real['dataset']}",
        *WINDOWS,
        "data.max_train_samples=64",
        "data.max_eval_samples=32",
        "trainer.max_steps=3",
        "logger=none",
        f"hydra.run.dir={run}",
    ]
    proc = make("train", f"model={model}", "ARGS=" + " ".join(args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["global_step"] == 3 and record["metrics"]["eval_total"] == 32
    # The encoder came from the checkpoint in full: no loading report, no warning about its weights.
    assert "LOAD REPORT" not in proc.stderr and "MISSING" not in proc.stderr and "unused" not in proc.stderr
    from safetensors import safe_open

    with safe_open(run / "model" / "model.safetensors", "pt") as saved:
        assert {saved.get_tensor(k).dtype for k in saved.keys()} == {torch.float32}  # noqa: SIM118


def test_smoke_runs_the_real_configuration_offline_on_the_demo_assets(demo_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "smoke"
    args = [
        f"model.name_or_path={demo_dir / 'tiny-bert'}",
        "model.tokenizer_name_or_path=null",
        f"data.train_file={demo_dir / 'train.json'}",
        f"data.validation_file={demo_dir / 'dev.json'}",
        *WINDOWS,
        f"hydra.run.dir={run}",
    ]
    env_wandb = os.environ.pop("WANDB_MODE")  # the real logger settings: W&B with no key → an offline run
    try:
        proc = make("smoke", "model=spanbert_crf", "ARGS=" + " ".join(args))
    finally:
        os.environ["WANDB_MODE"] = env_wandb
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["global_step"] == 20
    assert record["metrics"]["eval_total"] == 200  # experiment=smoke: 200 dev questions
    assert [h["step"] for h in record["log_history"] if "loss" in h] == [1, 5, 10, 15, 20]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1


def test_a_missing_data_file_fails_before_torch_or_any_model_is_loaded(tmp_path: Path) -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['spanqa.train', 'data.train_file=/no/train.json', 'data.validation_file=/no/dev.json',"
        f" 'logger=none', 'hydra.run.dir={tmp_path / 'run'}']\n"
        "try:\n    runpy.run_module('spanqa.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True)
    assert proc.stdout.split("\n")[-2] == "2 []"
    assert last_line(proc) == "error: data.train_file='/no/train.json' does not exist"


@pytest.mark.slow
def test_a_tokenizer_that_does_not_fit_the_model_stops_the_run_before_preprocessing(
    real: dict[str, Path], tmp_path: Path
) -> None:
    from spanqa.data.demo import save_tiny_bert

    small = tmp_path / "small-bert"
    save_tiny_bert(small, vocab_size=500)
    proc = run_module(
        "spanqa.train", f"model.name_or_path={small}", f"model.tokenizer_name_or_path={real['tokenizer']}",
        f"data.dataset_name={real['dataset']}", *WINDOWS, "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert proc.returncode == 2
    assert last_line(proc) == (
        f"error: model.tokenizer_name_or_path={str(real['tokenizer'])!r} has 1,099 tokens but model.name_or_path="
        f"{str(small)!r} embeds only 500: use the tokenizer the model was trained with"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_at_its_step_and_keeps_earlier_checkpoints(demo_dir: Path, tmp_path: Path) -> None:
    """lr 100 with weight decay 0.1: every decay step multiplies the weights by -9, so training diverges within
    a few steps; checkpoints every quarter epoch leave one saved before that."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "spanqa.train", "experiment=demo", f"demo.dir={demo_dir}",
         "data.max_train_samples=200", "data.max_eval_samples=40", "trainer.evals_per_epoch=4",
         "optimizer.lr=100", "optimizer.weight_decay=0.1", "optimizer.warmup_ratio=0", "logger=none",
         f"hydra.run.dir={run}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    found = re.fullmatch(
        r"error: training loss is (nan|inf|-inf) at step (\d+) \(epoch [0-9.]+\): training diverged and stopped; "
        rf"checkpoints saved before that step are kept in {re.escape(str(run / 'checkpoints'))}\. .*",
        last_line(proc),
    )
    assert found, last_line(proc)
    from safetensors.torch import load_file

    kept = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert kept and all(int(p.name.split("-")[1]) < int(found.group(2)) for p in kept)
    for checkpoint in kept:
        assert (checkpoint / "trainer_state.json").is_file()
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    assert not (run / "run.json").exists()
