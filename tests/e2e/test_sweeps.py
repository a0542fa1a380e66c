"""Hydra multiruns: the comparison sweep composes, a re-launched sweep skips finished jobs, Optuna runs trials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.helpers import REPO, subprocess_env

TINY = ["data.max_train_samples=40", "data.max_eval_samples=20", "trainer.max_steps=2", "logger=none"]


def multirun(demo_dir: Path, sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spanqa.train",
            "--multirun",
            f"demo.dir={demo_dir}",
            f"hydra.sweep.dir={sweep_dir}",
            *TINY,
            *overrides,
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_comparison_sweep_is_both_heads_times_three_seeds() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=spanbert_vs_crf"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"model": "spanbert,spanbert_crf", "seed": "1,2,3"}
    assert cfg.data.null_threshold.policy == "held_out" and cfg.logger.group == "spanbert_vs_crf"
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optimizer.lr) == (6, 8, 2e-5)


@pytest.mark.slow
def test_relaunched_sweep_skips_finished_jobs(tmp_path: Path, demo_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    multirun(demo_dir, sweep, "experiment=demo", "model=spanbert,spanbert_crf")
    records = sorted(sweep.glob("*/run.json"))
    assert [p.parent.name for p in records] == ["0_spanbert-seed42", "1_spanbert_crf-seed42"]
    before = {p: p.stat().st_mtime_ns for p in records}
    again = multirun(demo_dir, sweep, "experiment=demo", "model=spanbert,spanbert_crf")
    assert again.stdout.count("already finished") == 2
    assert {p: p.stat().st_mtime_ns for p in records} == before


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(tmp_path: Path, demo_dir: Path) -> None:
    sweep = tmp_path / "optuna"
    multirun(
        demo_dir,
        sweep,
        "experiment=demo",
        "hparams_search=optuna_f1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert len(list(sweep.glob("*/run.json"))) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.warmup_ratio", "trainer.epochs"}
    trial_f1 = [json.loads(p.read_text())["metrics"]["eval_f1"] for p in sweep.glob("*/run.json")]
    assert best["best_value"] == pytest.approx(max(trial_f1))
