"""Real end-to-end runs: Hydra → data → QATrainer → W&B offline → metrics and run records, on the demo stand-ins."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, subprocess_env


def train(run_dir: Path, demo_dir: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanqa.train",
            "experiment=demo",
            f"demo.dir={demo_dir}",
            "demo.train_examples=4000",
            "demo.dev_examples=400",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_tiny_run_writes_wandb_offline_run_metrics_and_artifacts(tmp_path: Path, demo_dir: Path) -> None:
    run = tmp_path / "run"
    train(run, demo_dir, "trainer.epochs=1", "data.max_train_samples=300", "logger.mode=auto", WANDB_MODE="")
    record = json.loads((run / "run.json").read_text())
    metrics = record["metrics"]
    for key in (
        "eval_exact",
        "eval_f1",
        "eval_HasAns_f1",
        "eval_NoAns_f1",
        "eval_best_f1",
        "eval_best_f1_thresh",
        "eval_loss",
        "eval_null_threshold",
    ):
        assert key in metrics
    assert record["wandb_run_id"] and record["num_parameters"] > 0
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and record["wandb_run_id"] in offline_runs[0].name
    assert any(offline_runs[0].glob("*.wandb"))
    # Train loss logged during training, eval loss + F1 at the epoch's end.
    assert any("loss" in h for h in record["log_history"])
    assert any("eval_loss" in h and "eval_f1" in h for h in record["log_history"])
    predictions = json.loads((run / "predictions.json").read_text())
    official = json.loads((demo_dir / "dev.json").read_text())
    dev_ids = {qa["id"] for p in official["data"][0]["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == dev_ids
    for name in ("null_odds.json", "nbest_predictions.json", "eval_results.json", "per_question.json"):
        assert (run / name).is_file()
    assert (run / "model" / "model.safetensors").is_file()
    # The official-format command-line scorer agrees with what the Trainer reported.
    proc = subprocess.run(
        [sys.executable, "-m", "spanqa.evaluate", str(demo_dir / "dev.json"), str(run / "predictions.json")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["f1"] == pytest.approx(metrics["eval_f1"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf"])
def test_demo_model_beats_the_all_empty_baseline(tmp_path: Path, demo_dir: Path, model: str) -> None:
    run = tmp_path / "run"
    train(run, demo_dir, f"model={model}", "logger=none")
    metrics = json.loads((run / "run.json").read_text())["metrics"]
    baseline_f1 = 100.0 * metrics["eval_NoAns_total"] / metrics["eval_total"]  # "" for every question
    assert metrics["eval_HasAns_f1"] > 0
    assert metrics["eval_f1"] > baseline_f1 + 5


def test_best_checkpoint_is_selected_by_eval_f1(tmp_path: Path, demo_dir: Path) -> None:
    run = tmp_path / "run"
    train(
        run,
        demo_dir,
        "trainer.epochs=3",
        "data.max_train_samples=200",
        "data.max_eval_samples=80",
        "optimizer.lr=3e-3",
        "logger=none",
    )
    record = json.loads((run / "run.json").read_text())
    per_epoch = [h for h in record["log_history"] if "eval_f1" in h][:-1]  # the last entry re-scores the best model
    assert len(per_epoch) == 3
    best = max(per_epoch, key=lambda h: h["eval_f1"])
    assert record["metrics"]["eval_f1"] == pytest.approx(best["eval_f1"])
    assert record["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert record["metrics"]["best_epoch"] == best["epoch"]
