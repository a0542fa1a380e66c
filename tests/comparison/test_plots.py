"""Curves from the Trainer's log history."""

from __future__ import annotations

from pathlib import Path

from tests.comparison.fake_runs import write_run


def test_curves_skip_the_final_evaluation(tmp_path: Path) -> None:
    from spanqa.comparison.plots import history_curves

    record = write_run(tmp_path / "run", "spanbert", 1, 0.5, epochs=3)
    curves = history_curves(record["log_history"])
    assert sorted(curves["eval_f1"]) == [1.0, 2.0, 3.0]
    assert -1.0 not in curves["eval_f1"].values()
    assert sorted(curves["loss"])[:3] == [10.0, 20.0, 30.0]
