"""The run record: written and read back whole and typed; records of earlier releases read with their config's
source named; a dir without one, or with a broken one, is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spanqa.errors import DataError
from spanqa.rundir.layout import find_run_dirs, is_run_dir
from spanqa.rundir.record import NullThreshold, QuestionSet, RowChanges, RunIdentity, RunRecord, TokenizerUsed

CONFIG = {"model": {"name": "spanbert", "head": "span"}, "data": {"max_length": 64}, "seed": 3}


def test_a_record_round_trips(tmp_path: Path) -> None:
    identity = RunIdentity.of(CONFIG, ["seed=3"])
    record = RunRecord(
        run_name="spanbert-seed3",
        config=identity.config,
        config_digest=identity.digest,
        overrides=identity.overrides,
        metrics={"eval_f1": 61.5},
        null_threshold=NullThreshold(0.42, "held_out", "article"),
        questions=QuestionSet.of(["q2", "q1"]),
        tokenizer=TokenizerUsed.of("/ckpt", "model.name_or_path", {"[PAD]": 0, "a": 1}, lowercases=False),
        rows=RowChanges(skipped=2, answers_trimmed=1),
        best_checkpoint="checkpoints/checkpoint-20",
    )
    record.write(tmp_path)
    assert RunRecord.read(tmp_path) == record
    blob = json.loads((tmp_path / "run.json").read_text())
    assert blob["format"] == 2 and "config_source" not in blob
    assert QuestionSet.of(["q1", "q2"]) == record.questions  # order-free
    assert record.tokenizer is not None and record.tokenizer.vocab_size == 2


def test_a_record_of_an_earlier_release_names_where_its_config_came_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    earlier = {
        "metrics": {"eval_f1": 50.0, "eval_null_threshold": 0.3},
        "null_threshold_policy": "tune_on_dev",
        "skipped_rows": 4,
        "best_checkpoint": str(tmp_path / "checkpoints" / "checkpoint-9"),
    }
    (tmp_path / "run.json").write_text(json.dumps(earlier))
    record = RunRecord.read(tmp_path)
    assert record.config == CONFIG and record.config_source == ".hydra/config.yaml"
    assert "predates config records" in caplog.text
    assert record.null_threshold == NullThreshold(0.3, "tune_on_dev")
    assert "eval_null_threshold" not in record.metrics  # the threshold lives in one place
    assert (record.rows.skipped, record.best_checkpoint, record.format) == (4, "checkpoints/checkpoint-9", 1)
    # A record that has its config never reads .hydra/ (which a relaunch may have rewritten).
    (tmp_path / "run.json").write_text(json.dumps({**earlier, "config": {**CONFIG, "seed": 9}}))
    assert RunRecord.read(tmp_path).config["seed"] == 9


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "has no run.json: the run did not finish, or is not a spanqa run"),
        ("{", "run.json: unreadable"),
        ("[]", "run.json: not a run record (no metrics object)"),
        ('{"metrics": {}, "format": 2}', "run.json: not a run record of this spanqa (TypeError"),
        ('{"metrics": {}}', "records no config and the run dir has no .hydra/config.yaml"),
    ],
)
def test_a_missing_or_broken_record_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(DataError) as err:
        RunRecord.read(tmp_path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_digest_leaves_out_what_does_not_change_a_result() -> None:
    base = RunIdentity.of({**CONFIG, "trainer": {"epochs": 2, "logging_steps": 50, "eval_batch_size": 64}})
    operational = RunIdentity.of(
        {**CONFIG, "trainer": {"epochs": 2, "logging_steps": 5, "eval_batch_size": 8}, "logger": {"project": "x"}}
    )
    changed = RunIdentity.of({**CONFIG, "trainer": {"epochs": 3, "logging_steps": 50, "eval_batch_size": 64}})
    assert base.digest == operational.digest != changed.digest
    assert changed.differences(base.config) == ["trainer.epochs: 2 → 3"]


def test_run_dirs_are_found_by_their_records(tmp_path: Path) -> None:
    finished, started, legacy, other = (tmp_path / n for n in ("a", "b", "c", "d"))
    for d in (finished / "checkpoints" / "checkpoint-1", started, legacy / ".hydra", other):
        d.mkdir(parents=True)
    (finished / "run.json").write_text("{}")
    (finished / "checkpoints" / "checkpoint-1" / "run.json").write_text("{}")  # inside a run: not a run
    (started / "run_config.json").write_text("{}")
    (legacy / ".hydra" / "config.yaml").write_text("seed: 1\n")
    assert find_run_dirs(tmp_path) == [finished, started, legacy]
    assert not is_run_dir(other)
