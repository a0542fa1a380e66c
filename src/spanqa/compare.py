"""`make compare` → `python -m spanqa.compare [RUNS ...]`: does the CRF head help, beyond seed and sample noise?

Finds finished run dirs (their run record, run.json) under the given paths, groups them by model
and by every config key that differs between runs (seeds, names, paths and logging aside), and writes report.md
(summary table, paired bootstrap over questions, across-seed view, error analysis), its figures, and report.html:
the same report in one self-contained page with an answer explorer (`spanqa.comparison`: runs, stats, plots,
report, explorer, html).
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from spanqa.comparison import stats
from spanqa.comparison.explorer import explorer_data
from spanqa.comparison.html import render_html
from spanqa.comparison.plots import (
    history_curves,
    plot_f1_curves,
    plot_grad_norms,
    plot_loss_curves,
    plot_metric_bars,
    plot_threshold_curves,
)
from spanqa.comparison.report import render_comparison, render_report, render_summary
from spanqa.comparison.runs import (
    Group,
    choose_pairs,
    collect_local,
    compare_groups,
    fairness_warnings,
    group_runs,
    load_wandb_runs,
    summary_table,
)
from spanqa.comparison.studies import Study, find_studies
from spanqa.errors import ArgumentParser, DataError, reported


def write_figures(groups: list[Group], table: list[dict[str, Any]], out: Path) -> list[Path]:
    per = {g.label: [history_curves(r.record.log_history) for r in g.runs] for g in groups}

    def pick(key: str) -> dict[str, list[dict[float, float]]]:
        return {label: [c[key] for c in cs] for label, cs in per.items()}

    bars = {row["group"]: {m: row[m] for m in stats.SUMMARY_METRICS} for row in table}
    seeds = {g.label: [{m: r.metrics.get(f"eval_{m}", math.nan) for m in stats.SUMMARY_METRICS} for r in g.runs]
             for g in groups}  # fmt: skip
    limits = {g.label: g.runs[0].max_grad_norm for g in groups}
    best = {g.label: [round(float(r.metrics.get("best_epoch") or math.nan), 2) for r in g.runs] for g in groups}
    run = groups[0].runs[0].metrics
    baseline = 100 * run["eval_NoAns_total"] / run["eval_total"] if "eval_NoAns_total" in run else None
    thresholds = {g.label: [c for r in g.runs if r.per_question and (c := stats.threshold_curve(r.per_question))]
                  for g in groups}  # fmt: skip
    applied = {g.label: [r.record.null_threshold.value for r in g.runs] for g in groups}
    return [
        plot_loss_curves(pick("loss"), pick("eval_loss"), out / "loss_curves.png"),
        plot_f1_curves(pick("eval_f1"), pick("eval_exact"), out / "f1_curves.png", best, baseline),
        plot_threshold_curves(thresholds, applied, out / "threshold_curves.png"),
        plot_grad_norms(pick("grad_norm"), limits, out / "grad_norms.png"),
        plot_metric_bars(bars, stats.SUMMARY_METRICS, out / "metrics_bars.png", seeds),
    ]


def best_trials(groups: list[Group], studies: list[Study]) -> list[Group]:
    """The groups a comparison pairs: all of them, except that the trials of an Optuna study are represented by its
    best trial alone (trials are points of a search, not replicates: a bootstrap between two of them says little)."""
    trials = {t.run.path for s in studies for t in s.trials if t.run is not None}
    best = {s.best.run.path for s in studies if s.best is not None and s.best.run is not None}
    return [g for g in groups if not any(r.path in trials for r in g.runs) or any(r.path in best for r in g.runs)]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be >= 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m spanqa.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run dirs or dirs holding them (default: outputs/)")
    parser.add_argument("--out", type=Path, help="report dir (default: outputs/compare/<timestamp>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT[:GROUP]", help="read the runs from W&B instead")
    parser.add_argument("--baseline", help="group label of the baseline (default: the start/end head)")
    parser.add_argument("--candidate", help="group label of the candidate (default: another head, the CRF)")
    parser.add_argument("--resamples", type=_positive, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument(
        "--allow-different-questions",
        action="store_true",
        help="pair groups scored on different evaluation questions, on the questions they share",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.runs or [Path("outputs")]
    with reported():
        runs, skipped = (load_wandb_runs(args.wandb), []) if args.wandb else collect_local(paths)
        if not runs:
            where = args.wandb or ", ".join(map(str, paths))
            raise DataError(f"no finished runs found in {where}" + (f" ({len(skipped)} skipped)" if skipped else ""))
        groups = group_runs(runs)
        studies = [] if args.wandb else find_studies(paths, runs)
        pairs = choose_pairs(best_trials(groups, studies), args.baseline, args.candidate)
        comparisons = [
            compare_groups(b, c, args.resamples, args.bootstrap_seed, args.allow_different_questions) for b, c in pairs
        ]
    out = args.out or Path("outputs/compare") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(groups)
    figures = write_figures(groups, table, out)
    command = " ".join(["python -m spanqa.compare", *(argv if argv is not None else sys.argv[1:])])
    warnings = fairness_warnings([r for g in groups for r in g.runs])  # in the report's order of runs
    report = render_report(groups, table, comparisons, warnings, skipped, figures, command, studies)
    (out / "report.md").write_text(report, encoding="utf-8")
    page = render_html(
        report, figures, explorer_data(groups), f"Model comparison: {', '.join(g.label for g in groups)}"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    print(render_summary(table))
    for comparison in comparisons or [None]:
        print("\n" + render_comparison(comparison))
    for line in [*skipped, *warnings]:
        print(f"note: {line}")
    print(f"\nreport: {out / 'report.md'} and {out / 'report.html'} (with the answer explorer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
