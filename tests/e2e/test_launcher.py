"""conf/hydra/launcher/slurm.yaml: it composes onto hydra-submitit-launcher's SLURM launcher, turns into the
intended sbatch script (one array task per sweep point), and the plugin's local launcher runs a demo sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tests.helpers import REPO, subprocess_env

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def compose_slurm(*overrides: str) -> DictConfig:
    from spanqa.config import register_configs

    register_configs()  # conf/config.yaml starts from the spanqa_schema node
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)


def test_slurm_config_extends_the_submitit_slurm_launcher() -> None:
    launcher = OmegaConf.to_container(compose_slurm().hydra.launcher, resolve=False)
    assert launcher["_target_"] == SLURM_LAUNCHER
    expected = {
        "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 600,
        "partition": None, "array_parallelism": 8, "max_num_timeout": 3,
        "submitit_folder": "${hydra.sweep.dir}/.submitit/%j",
    }  # fmt: skip
    assert {key: launcher[key] for key in expected} == expected
    assert launcher["signal_delay_s"] == 120  # USR2 two minutes before the time limit
    site = compose_slurm("hydra.launcher.partition=gpu", "hydra.launcher.account=nlp").hydra.launcher
    assert (site.partition, site.account, site.mem_gb) == ("gpu", "nlp", 64)


def test_slurm_config_becomes_one_array_task_per_sweep_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    bin_dir = tmp_path / "bin"  # submitit's SLURM executor only checks that srun exists; nothing is submitted
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = tmp_path / "sweep"
    params = OmegaConf.to_container(compose_slurm(f"hydra.sweep.dir={sweep}").hydra.launcher, resolve=True)
    assert isinstance(params, dict) and params.pop("_target_") == SLURM_LAUNCHER
    # What the launcher does with its parameters (BaseSubmititLauncher.launch): shared keys as they are,
    # SLURM-only keys prefixed; update_parameters rejects any name submitit does not know.
    folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    slurm = executor._executor
    slurm.parameters["map_count"] = 6  # model=spanbert,spanbert_crf seed=1,2,3: one array of 6 jobs
    script = slurm._make_submission_file_text("python -m spanqa.train", "0")
    for option in (
        "--array=0-5%6", "--nodes=1", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=8",
        "--mem=64GB", "--time=600", "--job-name=spanqa", f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out",
    ):  # fmt: skip
        assert f"#SBATCH {option}\n" in script, option
    assert "--partition" not in script  # the cluster's default


@pytest.mark.slow
def test_local_submitit_sweep_runs_every_job(tmp_path: Path, demo_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable, "-m", "spanqa.train", "--multirun", "hydra/launcher=submitit_local", "experiment=demo",
            f"demo.dir={demo_dir}", "demo.train_examples=4000", "demo.dev_examples=400", "model=spanbert,spanbert_crf",
            "trainer.max_steps=2", "data.max_train_samples=40", "data.max_eval_samples=20", "logger=none",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, model in enumerate(("spanbert", "spanbert_crf")):
        record = json.loads((sweep / f"{job}_{model}-seed42" / "run.json").read_text())
        assert record["global_step"] == 2 and record["metrics"]["eval_total"] == 20
        assert record["run_name"] == f"{model}-seed42"
    # Each job ran in its own process and left its log in the submitit folder under the sweep dir.
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    summaries = sorted(line.split(":")[0] for log in logs for line in log.read_text().splitlines() if ": EM " in line)
    assert summaries == ["spanbert-seed42", "spanbert_crf-seed42"]
