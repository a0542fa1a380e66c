"""Hydra multiruns: the comparison sweep composes, a re-launched sweep skips finished jobs, Optuna runs trials."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.helpers import REPO, run_module

TINY = ["data.max_train_samples=40", "data.max_eval_samples=20", "trainer.max_steps=2", "logger=none"]


def multirun(demo_dir: Path, sweep_dir: Path, *overrides: str, status: int = 0) -> subprocess.CompletedProcess[str]:
    proc = run_module(
        "spanqa.train", "--multirun", f"demo.dir={demo_dir}", f"hydra.sweep.dir={sweep_dir}", *TINY, *overrides,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr[-3000:]
    return proc


def test_comparison_sweep_is_the_three_heads_times_three_seeds() -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=spanbert_vs_crf"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"model": "spanbert,spanbert_crf,spanbert_bio", "seed": "1,2,3"}
    assert cfg.data.null_threshold.policy == "held_out" and cfg.logger.group == "spanbert_vs_crf"
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.optimizer.lr) == (6, 8, 2e-5)


@pytest.mark.slow
def test_relaunched_sweep_skips_finished_jobs_and_refuses_changed_ones(tmp_path: Path, demo_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    multirun(demo_dir, sweep, "experiment=demo", "model=spanbert,spanbert_crf")
    records = sorted(sweep.glob("*/run.json"))
    assert [p.parent.name for p in records] == ["0_spanbert-seed42", "1_spanbert_crf-seed42"]
    before = {p: p.stat().st_mtime_ns for p in records}
    again = multirun(demo_dir, sweep, "experiment=demo", "model=spanbert,spanbert_crf")
    assert again.stdout.count("already finished") == 2
    assert {p: p.stat().st_mtime_ns for p in records} == before
    # The same dirs, another config: refused in one line, nothing touched (Hydra's own .hydra/ aside) ...
    changed = ["experiment=demo", "model=spanbert,spanbert_crf", "optimizer.lr=3e-3"]
    refused = multirun(demo_dir, sweep, *changed, status=2)
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: run dir {str(sweep / '0_spanbert-seed42')!r} holds a finished run of another config (optimizer.lr: "
        "0.001 → 0.003): pass rerun_changed=true to run it again (the earlier run is kept in superseded/), or "
        "relaunch into a new hydra.sweep.dir"
    )
    assert {p: p.stat().st_mtime_ns for p in records} == before
    # ... and `make compare` still reads the finished runs' own config, not the rewritten .hydra/config.yaml.
    from spanqa.comparison.runs import load_run

    assert load_run(sweep / "0_spanbert-seed42").config["optimizer.lr"] == 0.001
    # On request, the changed jobs run again; the earlier runs are kept aside.
    multirun(demo_dir, sweep, *changed, "rerun_changed=true")
    for job in ("0_spanbert-seed42", "1_spanbert_crf-seed42"):
        assert json.loads((sweep / job / "run.json").read_text())["config"]["optimizer"]["lr"] == 0.003
        (kept,) = (sweep / job / "superseded").iterdir()
        assert json.loads((kept / "run.json").read_text())["config"]["optimizer"]["lr"] == 0.001


@pytest.mark.slow
def test_a_relaunched_optuna_search_continues_its_study(tmp_path: Path, demo_dir: Path) -> None:
    """A search stopped after its first trial resumes at trial two: the study is in the sweep dir (SQLite), and
    each trial has its own job dir, named by its sampled values."""
    import optuna

    sweep = tmp_path / "optuna"
    search = ["experiment=demo", "hparams_search=optuna_f1", "hydra.sweeper.n_trials=1"]
    multirun(demo_dir, sweep, *search)
    multirun(demo_dir, sweep, *search)  # the relaunch: one more trial
    study = optuna.load_study(study_name="spanqa_spanbert", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    runs = sorted(sweep.glob("trial_*/run.json"))
    assert len(runs) == 2 and ",head_lr=" in runs[0].parent.name
    trial_f1 = sorted(json.loads(p.read_text())["metrics"]["eval_f1"] for p in runs)
    assert sorted(t.value for t in study.trials) == pytest.approx(trial_f1)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.head_lr", "optimizer.warmup_ratio", "trainer.epochs"}
    assert best["best_value"] == pytest.approx(max(trial_f1))
