"""The markdown of the report: summary cells, the verdict's wording, and values as labels show them."""

from __future__ import annotations

import math

from spanqa.comparison.report import markdown_table, render_comparison, render_summary
from spanqa.comparison.runs import Comparison, Group, fmt_value
from spanqa.comparison.stats import BootstrapResult, SeedDifference


def row(group: str, f1: float) -> dict:
    return {
        "group": group,
        "n": 3,
        "exact": (f1 - 3, 0.5),
        "f1": (f1, 0.25),
        "HasAns_f1": (f1 + 5, math.nan),
        "NoAns_f1": (math.nan, math.nan),
        "best_f1": f1 + 1,
        "best_f1_thresh": 0.4321,
        "null_threshold": 0.5,
        "policy": "held_out",
        "train_time_s": 1234.4,
        "steps_per_s": 9.876,
        "params": [108_893_186],
        "grad_norm": 12.34,
        "clipped": 0.875,
    }


def test_summary_cells_show_mean_and_std_and_leave_missing_values_as_dashes() -> None:
    lines = render_summary([row("spanbert", 80.0)]).splitlines()
    assert lines[0].startswith("| group | n seeds | EM | F1 | HasAns F1 | NoAns F1 |")
    assert lines[2] == (
        "| spanbert | 3 | 77.00 ± 0.50 | 80.00 ± 0.25 | 85.00 | – | 81.00 | 0.432 | 0.500 (held_out) | 1234 | 9.88 "
        "| 108,893,186 | 12.34 | 88% |"
    )


def test_the_verdict_says_whether_the_interval_excludes_zero() -> None:
    group = Group("g", "m", "span", [])
    seeds = SeedDifference(1.0, 0.2, True, {1: 0.8, 2: 1.2})
    better = Comparison(group, Group("c", "m", "crf", []), BootstrapResult(1.5, 0.5, 2.5, 0.0, 100, 1000), seeds)
    text = render_comparison(better)
    assert "interval [+0.50, +2.50], two-sided p < 0.001; the interval excludes 0: the candidate is better" in text
    assert (
        "(paired by seed: mean ± std of per-seed differences): +1.00 ± 0.20 F1 (seed 1: +0.80, seed 2: +1.20)" in text
    )
    unsure = Comparison(
        group, group, BootstrapResult(0.1, -0.4, 0.6, 0.7, 100, 1000), SeedDifference(0.1, 0.3, False, {})
    )
    text = render_comparison(unsure)
    assert "p = 0.7000; the interval contains 0: no detectable difference" in text
    assert "within 2 std of 0" in text
    assert render_comparison(None) == "Only one group: nothing to compare."


def test_values_and_tables_as_markdown() -> None:
    assert (fmt_value(2.0000000000000002e-05), fmt_value(3), fmt_value("x")) == ("2e-05", "3", "x")
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"
