"""Killed runs resume to the same result; the same seed gives the same metrics; earlier runs are never overwritten."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, run_module, subprocess_env, wandb_exit_code

pytestmark = pytest.mark.slow
# Long enough epochs that the kill lands mid-epoch; offline W&B to check the run id survives the resume.
RUN = [
    "experiment=demo",
    "data.max_train_samples=600",
    "data.max_eval_samples=80",
    "trainer.epochs=3",
    "logger.mode=offline",
]


def train_args(demo_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*RUN, f"demo.dir={demo_dir}", f"hydra.run.dir={run_dir}", *extra]


def command(demo_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """The same run as a command line to start, then kill or signal mid-run."""
    return [sys.executable, "-m", "spanqa.train", *train_args(demo_dir, run_dir, *extra)]


def scores(entry: dict) -> dict:
    """Everything but timings."""
    return {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k}


def run(demo_dir: Path, run_dir: Path, *extra: str) -> dict:
    proc = run_module("spanqa.train", *train_args(demo_dir, run_dir, *extra), WANDB_MODE="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "run.json").read_text())


def test_same_seed_same_metrics_and_resume_after_kill_matches(tmp_path: Path, demo_dir: Path) -> None:
    first = run(demo_dir, tmp_path / "a")
    again = run(demo_dir, tmp_path / "b")
    assert scores(again["metrics"]) == scores(first["metrics"])  # determinism on CPU: identical, not approximately

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        command(demo_dir, killed),
        cwd=REPO,
        env=subprocess_env(WANDB_MODE=""),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not list(killed.glob("checkpoints/checkpoint-*/trainer_state.json")):  # the end of epoch 1
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "run.json").exists()
    wandb_id = (killed / "wandb_run_id.txt").read_text()

    # Without resume=true the interrupted run dir is protected ...
    refused = subprocess.run(command(demo_dir, killed), cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert refused.returncode == 2 and "already holds checkpoints: pass resume=true" in refused.stderr
    # ... and with it, training continues from the last complete checkpoint to the uninterrupted result.
    resumed = run(demo_dir, killed, "resume=true")
    assert scores(resumed["metrics"]) == scores(first["metrics"])
    assert resumed["wandb_run_id"] == wandb_id
    evals = [[scores(h) for h in r["log_history"] if "eval_f1" in h] for r in (resumed, first)]
    assert evals[0] == evals[1]

    # A finished run dir is never trained over.
    again = subprocess.run(command(demo_dir, killed), cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert again.returncode == 2 and "holds a finished run" in again.stderr


def test_a_signal_mid_epoch_saves_a_checkpoint_and_the_resumed_run_ends_as_if_uninterrupted(
    tmp_path: Path, demo_dir: Path
) -> None:
    """SIGUSR1 (what SLURM sends before a time limit): the step in progress finishes, a complete checkpoint is
    saved, the W&B run is closed, and the process exits with 75 for the job script to requeue. Resumed from that
    mid-epoch checkpoint, the run ends with the uninterrupted run's metrics and evaluation history."""
    uninterrupted = run(demo_dir, tmp_path / "whole")
    steps_per_epoch = uninterrupted["global_step"] // 3

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(
        command(demo_dir, stopped), cwd=REPO, env=subprocess_env(WANDB_MODE=""), stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not list(stopped.glob("checkpoints/checkpoint-*/trainer_state.json")):  # the end of epoch 1
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 75, err[-2000:]
    (saved,) = [p for p in (stopped / "checkpoints").glob("checkpoint-*") if p.name != f"checkpoint-{steps_per_epoch}"]
    step = int(saved.name.split("-")[1])
    assert steps_per_epoch < step < 2 * steps_per_epoch  # mid epoch 2: one step's work at most is lost
    assert (saved / "trainer_state.json").is_file() and (saved / "optimizer.pt").is_file()
    assert err.strip().splitlines()[-1] == (
        f"spanbert-seed42: stopped by SIGUSR1 after step {step}, checkpoint saved in {stopped / 'checkpoints'}; "
        "relaunch the same command (resume=true, or the same hydra.sweep.dir) to continue from it"
    )
    assert wandb_exit_code(stopped) == 75 and not (stopped / "run.json").exists()

    resumed = run(demo_dir, stopped, "resume=true")
    assert scores(resumed["metrics"]) == scores(uninterrupted["metrics"])
    evals = [[scores(h) for h in r["log_history"] if "eval_f1" in h] for r in (resumed, uninterrupted)]
    assert evals[0] == evals[1]
