"""Optuna searches in the comparison: the trials table read from the study's storage, and the best trial of each
head compared, not two arbitrary trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanqa import compare
from spanqa.comparison import runs as comparison
from spanqa.comparison.studies import find_studies
from tests.comparison.fake_runs import write_run


def search(sweep: Path, model: str, trials: list[tuple[float, float]]) -> None:
    """A study as the Optuna sweeper leaves it (optuna.db in the sweep dir), and each trial's run dir."""
    import optuna

    sweep.mkdir(parents=True)
    study = optuna.create_study(study_name=f"spanqa_{model}", storage=f"sqlite:///{sweep / 'optuna.db'}",
                                direction="maximize")  # fmt: skip
    lr_range = {"optimizer.lr": optuna.distributions.LogUniformDistribution(1e-5, 1e-3)}
    for lr, skill in trials:
        record = write_run(sweep / f"trial_lr={lr}", model, 1, skill, lr=lr)
        study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": lr}, distributions=lr_range,
                                                  value=record["metrics"]["eval_f1"]))  # fmt: skip


def test_the_trials_table_and_the_best_trials_compared(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search(tmp_path / "optuna_spanbert", "spanbert", [(2e-5, 0.4), (5e-5, 0.6), (1e-4, 0.5)])
    search(tmp_path / "optuna_spanbert_crf", "spanbert_crf", [(3e-5, 0.7), (8e-5, 0.5)])
    runs, _ = comparison.collect_local([tmp_path])
    studies = find_studies([tmp_path], runs)
    assert [(s.name, len(s.trials)) for s in studies] == [("spanqa_spanbert", 3), ("spanqa_spanbert_crf", 2)]
    assert all(t.run is not None and t.run.config["optimizer.lr"] == t.params["optimizer.lr"]
               for s in studies for t in s.trials)  # fmt: skip
    best = {s.name: s.best for s in studies}
    for s in studies:  # the best trial: the highest value, and the run dir of its values
        top = max(s.trials, key=lambda t: t.value or -1)
        assert (
            s.best is top
            and top.run is not None
            and Path(top.run.path).name == f"trial_lr={top.params['optimizer.lr']}"
        )
    out = tmp_path / "r"
    assert compare.main([str(tmp_path), "--out", str(out), "--resamples", "200"]) == 0
    report = (out / "report.md").read_text()
    assert "## Optuna study `spanqa_spanbert`" in report and "## Optuna study `spanqa_spanbert_crf`" in report
    assert report.count(" **(best)**") == 2
    comparisons = report.split("## Does the candidate help?")[1].split("## Error analysis")[0]
    assert comparisons.count("**Paired bootstrap over") == 1  # the two best trials, and nothing else
    lr_span = best["spanqa_spanbert"].params["optimizer.lr"]  # type: ignore[union-attr]
    lr_crf = best["spanqa_spanbert_crf"].params["optimizer.lr"]  # type: ignore[union-attr]
    assert f"**spanbert_crf lr={lr_crf:g}** − **spanbert lr={lr_span:g}**" in comparisons
