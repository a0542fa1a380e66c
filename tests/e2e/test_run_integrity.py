"""A run is exactly what it says it is, tried as a hostile user would: a cached BERT tokenizer beside a checkpoint
with its own, two processes in one run dir, relaunches into a finished run (checksums), a killed run's lock, a
truncated checkpoint, a disk that fills at the second checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spanqa.inference import resolve_settings
from tests.helpers import REPO, last_line, run_module, subprocess_env

# A tiny real run: the demo's checkpoint, tokenizer and data through the plain config (not experiment=demo).
WINDOWS = ["data.max_length=64", "data.doc_stride=16", "data.max_query_length=16", "data.max_answer_length=8"]
SMALL = ["data.max_train_samples=60", "data.max_eval_samples=20", "trainer.device=cpu", "logger=none"]


def plain_run(demo_dir: Path, *extra: str) -> list[str]:
    """The overrides of that run; `extra` may replace any of them (Hydra refuses a key given twice)."""
    keys = {e.split("=", 1)[0].lstrip("+") for e in extra}
    base = [
        f"model.name_or_path={demo_dir / 'tiny-bert'}",
        f"data.train_file={demo_dir / 'train.json'}",
        f"data.validation_file={demo_dir / 'dev.json'}",
        *WINDOWS,
        *SMALL,
    ]
    return [b for b in base if b.split("=", 1)[0] not in keys] + list(extra)


def checksums(run_dir: Path) -> dict[str, str]:
    """Every file of a run dir but its log, by its sha256."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.suffix != ".log"
    }


@pytest.fixture(scope="module")
def cached_bert(hub_cache: Path) -> Path:
    """An HF_HOME whose hub cache holds a stand-in google-bert/bert-base-cased, as after any earlier SpanBERT run."""
    return hub_cache


@pytest.fixture(scope="module")
def finished(demo_dir: Path, cached_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished job of a sweep (64/16 windows), trained with BERT's cased tokenizer in the cache."""
    sweep = tmp_path_factory.mktemp("sweep")
    proc = run_module(
        "spanqa.train", "--multirun", *plain_run(demo_dir, "trainer.max_steps=4"), f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job", HF_HOME=str(cached_bert),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep / "job"


# ------------------------------------------------------------------------------------ 1. the tokenizer
def test_the_checkpoints_own_tokenizer_is_used_and_recorded(finished: Path, tokenizer) -> None:
    record = json.loads((finished / "run.json").read_text())
    used = record["tokenizer"]
    assert used["source"] == "model.name_or_path" and used["name_or_path"].endswith("tiny-bert")
    assert used["vocab_size"] == len(tokenizer.get_vocab()) and not used["lowercases"]


def test_a_chosen_tokenizer_that_is_not_the_checkpoints_stops_the_run(
    demo_dir: Path, cached_bert: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    bert = "model.tokenizer_name_or_path=google-bert/bert-base-cased"
    proc = run_module("spanqa.train", *plain_run(demo_dir, bert, f"hydra.run.dir={run}"), HF_HOME=str(cached_bert))
    assert proc.returncode == 2
    tiny = str(demo_dir / "tiny-bert")
    assert last_line(proc) == (
        "error: model.tokenizer_name_or_path='google-bert/bert-base-cased' (1,099 tokens, keeps case) is not the "
        f"tokenizer model.name_or_path={tiny!r} ships (1,000 tokens, keeps case): leave model.tokenizer_name_or_path "
        "unset to use the checkpoint's own"
    )
    assert not (run / "checkpoints").exists()


# ------------------------------------------------------------------------------------ 2. one process per run dir
def test_two_runs_into_one_run_dir_one_is_refused_at_once(demo_dir: Path, cached_bert: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = subprocess_env(HF_HOME=str(cached_bert))
    procs = {
        model: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spanqa.train",
                f"model={model}",
                *plain_run(demo_dir, "trainer.max_steps=6"),
                f"hydra.run.dir={run}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("spanbert", "spanbert_crf")
    }
    outputs = {model: p.communicate(timeout=300) for model, p in procs.items()}
    codes = {model: p.returncode for model, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], {m: err[-2000:] for m, (_, err) in outputs.items()}
    winner, loser = sorted(codes, key=codes.get)
    line = outputs[loser][1].strip().splitlines()[-1]
    assert line.startswith(
        f"error: run dir {str(run)!r} is in use by pid {procs[winner].pid} on {socket.gethostname()}, started "
    ), line
    # Everything in the dir is the winner's.
    assert json.loads((run / "run.json").read_text())["config"]["model"]["name"] == winner
    assert json.loads((run / "run_config.json").read_text())["config"]["model"]["name"] == winner
    model_type = json.loads((run / "model" / "config.json").read_text())["model_type"]
    assert model_type == ("spanbert_crf" if winner == "spanbert_crf" else "bert")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-6"]
    assert not (run / ".lock").exists()


def test_a_refused_run_never_imported_torch(demo_dir: Path, tmp_path: Path) -> None:
    """The lock is taken in the first second: the refused process stops before torch, transformers or datasets."""
    from spanqa.rundir.lock import RunLock

    run = tmp_path / "run"
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['spanqa.train', 'experiment=demo', 'demo.dir={demo_dir}', 'hydra.run.dir={run}']\n"
        "try:\n    runpy.run_module('spanqa.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    with RunLock.held(run):
        proc = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True)
    assert proc.stdout.split("\n")[-2] == "2 []"
    assert last_line(proc).startswith(f"error: run dir {str(run)!r} is in use by pid {os.getpid()} on ")


# ------------------------------------------------------------------------------------ 3. a finished run stays as it is
def test_a_refused_relaunch_leaves_a_finished_run_byte_identical(finished: Path, demo_dir: Path) -> None:
    before, log = checksums(finished), (finished / "train.log").read_text()
    sweep = finished.parent
    relaunches = {
        "another config, same sweep": (
            ["--multirun", *plain_run(demo_dir, "trainer.max_steps=4", "data.max_length=48", "data.doc_stride=12"),
             f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"],
            2, "holds a finished run of another config (data.doc_stride: 16 → 12; data.max_length: 64 → 48)",
        ),
        "the same config, same sweep": (
            ["--multirun", *plain_run(demo_dir, "trainer.max_steps=4"), f"hydra.sweep.dir={sweep}",
             "hydra.sweep.subdir=job"],
            0, None,
        ),
        "a single run into it": ([*plain_run(demo_dir, "data.max_length=384", "data.doc_stride=128"),
                                  f"hydra.run.dir={finished}"], 2, "holds a finished run: choose a new hydra.run.dir"),
    }  # fmt: skip
    for what, (args, status, line) in relaunches.items():
        proc = run_module("spanqa.train", *args)
        assert proc.returncode == status, (what, proc.stderr[-2000:])
        if line is not None:
            assert line in last_line(proc), what
        else:
            assert "already finished" in proc.stdout
        assert checksums(finished) == before, what
        assert (finished / "train.log").read_text().startswith(log)  # logs may only grow
    # Inference windows as the run was trained, from its record: 64/16, not a rewritten config's 384/128.
    settings = resolve_settings(finished)
    assert (settings.data.max_length, settings.data.doc_stride) == (64, 16)
    hydra_config = (finished / ".hydra" / "config.yaml").read_text()
    assert "max_length: 64" in hydra_config and "doc_stride: 16" in hydra_config


# ------------------------------------------------------------------------------------ 6. a killed run, a broken save
@pytest.mark.slow
def test_a_killed_run_is_resumed_past_its_lock_and_its_truncated_checkpoint(demo_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*plain_run(demo_dir, "trainer.epochs=4", "trainer.evals_per_epoch=2", "data.max_train_samples=200"),
            f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "spanqa.train", *args], cwd=REPO, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while len([p for p in (run / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before two checkpoints"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / ".lock").is_file() and not (run / "run.json").exists()
    complete = [p for p in (run / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    newest = max(complete, key=lambda p: int(p.name.split("-")[-1]))
    state = newest / "trainer_state.json"
    state.write_text(state.read_text()[:100])  # cut short, as a kill mid-write leaves it
    resumed = run_module("spanqa.train", *args, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr  # Hydra logs to stdout (and train.log)
    assert f"was left by pid {proc.pid} on {socket.gethostname()}" in said
    assert f"{newest} is incomplete (trainer_state.json is cut short or not JSON)" in said
    assert json.loads((run / "run.json").read_text())["global_step"] > int(newest.name.split("-")[-1])


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs of a few MB (as root: mount(8)); skipped where this machine may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def sized(megabytes: float) -> Path:
        size = f"size={int(megabytes * 1024)}k"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        return mount

    yield sized
    subprocess.run(["umount", str(mount)], capture_output=True)


def checkpoint_mb(finished: Path) -> float:
    ckpt = next((finished / "checkpoints").glob("checkpoint-*"))
    return sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file()) / 2**20


@pytest.mark.slow
def test_a_disk_that_fills_at_the_second_checkpoint_is_one_line(
    finished: Path, demo_dir: Path, small_disk, cached_bert: Path
) -> None:
    one = checkpoint_mb(finished)
    disk = small_disk(1.7 * one)  # the run's free-space estimate (16 bytes a parameter) fits; two checkpoints do not
    run = disk / "run"
    args = plain_run(demo_dir, "trainer.epochs=2", "trainer.save_total_limit=1", f"hydra.run.dir={run}")
    proc = run_module("spanqa.train", *args, HF_HOME=str(cached_bert))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = last_line(proc)
    assert line.startswith("error: writing checkpoint-") and f"the disk holding {str(run)!r} is full (" in line
    assert " MB free)" in line and "Traceback" not in proc.stderr
    kept = sorted((run / "checkpoints").iterdir())
    assert len(kept) == 1 and f"{kept[0].name} intact" in line
    from spanqa.training.relaunch import checkpoint_problem

    assert checkpoint_problem(kept[0]) is None  # the earlier checkpoint is whole


@pytest.mark.slow
def test_free_space_is_checked_before_the_model_loads(demo_dir: Path, small_disk, tmp_path: Path) -> None:
    """On a disk with too little room the error comes first, in MB: the checkpoint here would not even load."""
    broken = tmp_path / "broken-bert"
    broken.mkdir()
    for f in (demo_dir / "tiny-bert").iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:64] if f.suffix == ".safetensors" else f.read_bytes())
    disk = small_disk(1)
    proc = run_module(
        "spanqa.train", *plain_run(demo_dir, f"model.name_or_path={broken}", f"hydra.run.dir={disk / 'r'}")
    )
    assert proc.returncode == 2
    assert last_line(proc).startswith(f"error: {str(disk / 'r')!r} has ") and " MB free but the run's checkpoints " \
        "need about " in last_line(proc)  # fmt: skip
