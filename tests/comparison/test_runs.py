"""Runs → groups → the pair compared: grouping by swept keys, the default pair by head, the paired statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spanqa.comparison import runs as comparison
from spanqa.comparison.report import render_comparison
from tests.comparison.fake_runs import N_QUESTIONS, write_multirun, write_run


def test_bootstrap_section_reports_crf_minus_plain(tmp_path: Path) -> None:
    runs, _ = comparison.collect_local([write_multirun(tmp_path)])
    groups = comparison.group_runs(runs)
    baseline, candidate = comparison.choose_pair(groups, None, None)  # type: ignore[misc]
    assert (baseline.label, candidate.label) == ("spanbert", "spanbert_crf")
    result = comparison.compare_groups(baseline, candidate, n_resamples=3_000, seed=0)
    # The bootstrap's mean difference is the difference of the seed-averaged per-question F1.
    per_run = {g.label: [r.per_question for r in g.runs] for g in groups}
    mean_f1 = {k: 100 * np.mean([[t[q]["f1"] for q in t] for t in v]) for k, v in per_run.items()}
    assert result.bootstrap is not None
    assert result.bootstrap.n_questions == N_QUESTIONS
    assert result.bootstrap.mean_diff == pytest.approx(mean_f1["spanbert_crf"] - mean_f1["spanbert"])
    assert result.bootstrap.low < result.bootstrap.mean_diff < result.bootstrap.high
    # Same seeds on both sides: paired per-seed differences of the saved eval_f1.
    f1 = {g.label: [r.metrics["eval_f1"] for r in sorted(g.runs, key=lambda r: r.config["seed"])] for g in groups}
    diffs = np.subtract(f1["spanbert_crf"], f1["spanbert"])
    assert result.seeds.paired
    assert (result.seeds.diff, result.seeds.spread) == pytest.approx((diffs.mean(), diffs.std(ddof=1)))
    text = render_comparison(result)
    assert f"mean difference {result.bootstrap.mean_diff:+.2f} F1" in text
    assert f"[{result.bootstrap.low:+.2f}, {result.bootstrap.high:+.2f}]" in text
    assert "twice the fraction" in text  # the method is stated
    p_value = result.bootstrap.p_value
    assert (f"p = {p_value:.4f}" if p_value > 0 else "p < 0.000333333") in text


def test_grouping_by_a_swept_key(tmp_path: Path) -> None:
    plain = [("spanbert", 2e-5, 1), ("spanbert", 2e-5, 2), ("spanbert", 3e-5, 1)]
    crf = [("spanbert_crf", 3e-5, 1), ("spanbert_crf", 3e-5, 2), ("spanbert_crf", 2e-5, 1)]
    for i, (model, lr, seed) in enumerate(plain + crf):
        write_run(tmp_path / "runs" / f"r{i}", model, seed, 0.5, lr=lr)
    runs, skipped = comparison.collect_local([tmp_path / "runs"])
    assert not skipped
    groups = comparison.group_runs(runs)
    assert {g.label: len(g.runs) for g in groups} == {
        "spanbert lr=2e-05": 2,
        "spanbert lr=3e-05": 1,
        "spanbert_crf lr=2e-05": 1,
        "spanbert_crf lr=3e-05": 2,
    }
    baseline, candidate = comparison.choose_pair(groups, None, None)  # type: ignore[misc]
    assert (baseline.label, candidate.label) == ("spanbert lr=2e-05", "spanbert_crf lr=2e-05")


def test_three_heads_give_each_against_start_end_and_the_crf_against_tagging_only(tmp_path: Path) -> None:
    for model, skill in (("spanbert", 0.5), ("spanbert_crf", 0.6), ("spanbert_bio", 0.55)):
        write_run(tmp_path / model, model, 1, skill)
    groups = comparison.group_runs(comparison.collect_local([tmp_path])[0])
    pairs = [(b.label, c.label) for b, c in comparison.choose_pairs(groups, None, None)]
    assert pairs == [("spanbert", "spanbert_bio"), ("spanbert", "spanbert_crf"), ("spanbert_bio", "spanbert_crf")]
    assert [(b.label, c.label) for b, c in comparison.choose_pairs(groups, "spanbert_crf", "spanbert")] == [
        ("spanbert_crf", "spanbert")
    ]


def test_runs_without_per_question_records_skip_the_bootstrap(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "spanbert", 1, 0.5)
    write_run(tmp_path / "b", "spanbert_crf", 1, 0.6)
    (tmp_path / "b" / "per_question.json").unlink()  # what W&B-only input looks like
    groups = comparison.group_runs(comparison.collect_local([tmp_path])[0])
    result = comparison.compare_groups(*groups, n_resamples=100)
    assert result.bootstrap is None
    assert "bootstrap skipped" in render_comparison(result)


def test_the_head_comes_from_each_runs_config_not_its_name(tmp_path: Path) -> None:
    """A CRF run named without 'crf' and a start/end run named with it: the pair follows model.head."""
    write_run(tmp_path / "a", "tagger", 1, 0.5)
    write_run(tmp_path / "b", "crf_free", 1, 0.6)
    for run, head in (("a", "crf"), ("b", "span")):
        record_file = tmp_path / run / "run.json"  # the config a run records is the one the comparison reads
        record = json.loads(record_file.read_text())
        record["config"]["model"]["head"] = head
        record_file.write_text(json.dumps(record))
    groups = comparison.group_runs(comparison.collect_local([tmp_path])[0])
    baseline, candidate = comparison.choose_pair(groups, None, None)  # type: ignore[misc]
    assert (baseline.label, candidate.label) == ("crf_free", "tagger")
