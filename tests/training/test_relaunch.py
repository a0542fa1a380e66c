"""What a run dir holds and what it means when a run starts there again; run.json written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spanqa.errors import ConfigError
from spanqa.rundir.layout import RECORD
from spanqa.rundir.record import RunIdentity
from spanqa.training.relaunch import last_checkpoint, run_state
from spanqa.training.results import best_epoch, summary_line


def checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    """A checkpoint dir as the Trainer writes it (weights, optimizer, scheduler, state); incomplete: killed
    before trainer_state.json, which is written last."""
    import torch
    from safetensors.torch import save_file

    path = run / "checkpoints" / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def test_run_state_of_each_kind_of_run_dir(tmp_path: Path) -> None:
    assert run_state(tmp_path, resume=False, multirun=False) == "fresh"
    with pytest.raises(ConfigError, match=r"resume=true but run dir .* has no checkpoint"):
        run_state(tmp_path, resume=True, multirun=False)
    checkpoint(tmp_path, 10)
    with pytest.raises(ConfigError, match="already holds checkpoints: pass resume=true"):
        run_state(tmp_path, resume=False, multirun=False)
    assert run_state(tmp_path, resume=True, multirun=False) == "resume"
    assert run_state(tmp_path, resume=False, multirun=True) == "resume"
    (tmp_path / RECORD).write_text("{}")
    assert run_state(tmp_path, resume=False, multirun=True) == "done"
    with pytest.raises(ConfigError, match="holds a finished run"):
        run_state(tmp_path, resume=True, multirun=False)


def test_the_last_complete_checkpoint_is_resumed(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    checkpoint(tmp_path, 9)
    checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 20, complete=False)  # killed while saving: trainer_state.json is written last
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-10")


def cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: cut(c / "trainer_state.json", 16), "trainer_state.json is cut short"),
        (lambda c: cut(c / "model.safetensors", 20), "model.safetensors is cut short"),
        (lambda c: cut(c / "optimizer.pt", 30), "optimizer.pt is cut short"),
        (lambda c: (c / "scheduler.pt").unlink(), "no scheduler.pt"),
    ],
)
def test_a_damaged_newest_checkpoint_is_passed_over_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage, problem: str
) -> None:
    from spanqa.training.relaunch import checkpoint_problem

    checkpoint(tmp_path, 10)
    newest = checkpoint(tmp_path, 20)
    damage(newest)
    assert checkpoint_problem(newest) is not None and problem in str(checkpoint_problem(newest))
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "checkpoint-10")
    assert f"{newest} is incomplete ({problem}" in caplog.text


def test_no_complete_checkpoint_trains_from_the_start_saying_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint(tmp_path, 10, complete=False)
    assert last_checkpoint(tmp_path) is None
    assert "holds no complete checkpoint: training from the start" in caplog.text


def test_deciding_reads_the_dir_and_acting_sets_the_earlier_run_aside(tmp_path: Path) -> None:
    from spanqa.training.relaunch import decide

    (tmp_path / RECORD).write_text(json.dumps({"config": BASE, "metrics": {}}))
    (tmp_path / ".hydra").mkdir()
    changed = RunIdentity.of(config(**{"trainer.epochs": 4}))
    assert decide(tmp_path, False, True, changed, rerun_changed=True) == "supersede"
    assert (tmp_path / RECORD).is_file()  # deciding moved nothing
    assert run_state(tmp_path, False, True, changed, rerun_changed=True) == "fresh"
    (kept,) = (tmp_path / "superseded").iterdir()
    assert sorted(p.name for p in kept.iterdir()) == [".hydra", RECORD]  # the earlier launch's .hydra/ goes too


def test_best_epoch_and_the_summary_line(tmp_path: Path) -> None:
    history = [{"eval_f1": 50.0, "step": 10, "epoch": 1.0}, {"eval_f1": 60.0, "step": 20, "epoch": 2.0}]
    assert best_epoch("/r/checkpoints/checkpoint-20", history) == 2.0
    assert best_epoch(None, history) is None
    metrics = {"eval_exact": 55.0, "eval_f1": 60.0, "eval_HasAns_f1": 70.0, "eval_NoAns_f1": 50.0}
    metrics |= {"eval_NoAns_total": 40, "eval_total": 100, "best_epoch": 2.0}
    assert summary_line("spanbert-seed1", metrics, tmp_path) == (
        f'spanbert-seed1: EM 55.00  F1 60.00  (HasAns F1 70.00, NoAns F1 50.00; all-"" baseline F1 40.00)  '
        f"best epoch 2.0  → {tmp_path}"
    )


def test_records_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed mid-file leaves the previous run.json (or none), never half of one."""
    from spanqa import files

    target = tmp_path / RECORD
    files.write_json(target, {"metrics": {"eval_f1": 1.0}})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        files.write_json(target, {"metrics": {"eval_f1": 2.0}})
    assert json.loads(target.read_text()) == {"metrics": {"eval_f1": 1.0}}
    assert [p.name for p in tmp_path.iterdir()] == [RECORD]  # no temporary file left behind


BASE = {
    "model": {"name": "spanbert", "head": "span"},
    "trainer": {"epochs": 6, "logging_steps": 50, "batch_size": 8},
    "logger": {"project": "spanqa"},
    "seed": 1,
}


def config(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-key changes: config(**{"trainer.epochs": 4})."""
    out = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    return out


def test_a_relaunched_sweep_skips_only_a_job_with_the_same_config(tmp_path: Path) -> None:
    job = tmp_path / "0_spanbert-seed1"
    job.mkdir()
    (job / RECORD).write_text(json.dumps({"config": BASE, "metrics": {"eval_f1": 50.0}}))
    assert run_state(job, False, True, RunIdentity.of(config())) == "done"
    # Keys that change how a run goes, not what it computes, leave it the same job.
    same_job = config(**{"trainer.logging_steps": 10, "logger.project": "other"})
    assert run_state(job, False, True, RunIdentity.of(same_job)) == "done"
    changed = RunIdentity.of(config(**{"trainer.epochs": 4, "seed": 2}))
    with pytest.raises(ConfigError) as err:
        run_state(job, False, True, changed)
    assert str(err.value) == (
        f"run dir {str(job)!r} holds a finished run of another config (seed: 1 → 2; trainer.epochs: 6 → 4): pass "
        "rerun_changed=true to run it again (the earlier run is kept in superseded/), or relaunch into a new "
        "hydra.sweep.dir"
    )
    assert (job / RECORD).is_file()  # refused: nothing moved
    assert run_state(job, False, True, changed, rerun_changed=True) == "fresh"
    (kept,) = (job / "superseded").iterdir()
    assert json.loads((kept / RECORD).read_text())["metrics"] == {"eval_f1": 50.0}
    assert not (job / RECORD).exists()


def test_an_interrupted_job_resumes_only_under_the_config_it_started_with(tmp_path: Path) -> None:
    RunIdentity.of(config()).write_started(tmp_path)
    checkpoint(tmp_path, 10)
    assert run_state(tmp_path, False, True, RunIdentity.of(config())) == "resume"
    assert run_state(tmp_path, True, False, RunIdentity.of(config())) == "resume"
    with pytest.raises(
        ConfigError, match=r"holds an interrupted run of another config \(model\.head: 'span' → 'crf'\)"
    ):
        run_state(tmp_path, True, False, RunIdentity.of(config(**{"model.head": "crf"})))
