"""`make compare` → `python -m spanqa.compare [RUNS ...]`: does the CRF head help, beyond seed and sample noise?

Finds finished run dirs (their run record, run.json) under the given paths, groups them by model
and by every config key that differs between runs (seeds, names, paths and logging aside), and writes report.md
(summary table, paired bootstrap over questions, across-seed view, error analysis) and three figures
(`spanqa.comparison`: runs, stats, plots, report).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from spanqa.comparison import stats
from spanqa.comparison.plots import history_curves, plot_f1_curves, plot_grad_norms, plot_loss_curves, plot_metric_bars
from spanqa.comparison.report import render_comparison, render_report, render_summary
from spanqa.comparison.runs import (
    Group,
    choose_pair,
    collect_local,
    compare_groups,
    fairness_warnings,
    group_runs,
    load_wandb_runs,
    summary_table,
)
from spanqa.errors import ArgumentParser, DataError, reported


def write_figures(groups: list[Group], table: list[dict[str, Any]], out: Path) -> list[Path]:
    per = {g.label: [history_curves(r.record.log_history) for r in g.runs] for g in groups}

    def pick(key: str) -> dict[str, list[dict[float, float]]]:
        return {label: [c[key] for c in cs] for label, cs in per.items()}

    bars = {row["group"]: {m: row[m] for m in stats.SUMMARY_METRICS} for row in table}
    limits = {g.label: g.runs[0].max_grad_norm for g in groups}
    return [
        plot_loss_curves(pick("loss"), pick("eval_loss"), out / "loss_curves.png"),
        plot_f1_curves(pick("eval_f1"), pick("eval_exact"), out / "f1_curves.png"),
        plot_grad_norms(pick("grad_norm"), limits, out / "grad_norms.png"),
        plot_metric_bars(bars, stats.SUMMARY_METRICS, out / "metrics_bars.png"),
    ]


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
        pair = choose_pair(groups, args.baseline, args.candidate)
        comparison = (
            compare_groups(*pair, args.resamples, args.bootstrap_seed, args.allow_different_questions) if pair else None
        )
    out = args.out or Path("outputs/compare") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(groups)
    figures = write_figures(groups, table, out)
    command = " ".join(["python -m spanqa.compare", *(argv if argv is not None else sys.argv[1:])])
    warnings = fairness_warnings([r for g in groups for r in g.runs])  # in the report's order of runs
    report = render_report(groups, table, comparison, warnings, skipped, figures, command)
    (out / "report.md").write_text(report, encoding="utf-8")
    print(render_summary(table))
    print("\n" + render_comparison(comparison))
    for line in [*skipped, *warnings]:
        print(f"note: {line}")
    print(f"\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
