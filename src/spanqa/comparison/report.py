"""The markdown of `make compare`: summary table, bootstrap/across-seed verdict, error analysis, whole report.

Pure rendering of what `runs` has loaded and computed; nothing here reads files or runs statistics beyond the
per-bucket error breakdown.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from spanqa.comparison import stats
from spanqa.comparison.runs import Comparison, Group, fmt_value
from spanqa.comparison.studies import Study, study_markdown

SUMMARY_HEADERS = ["group", "n seeds", "EM", "F1", "HasAns F1", "NoAns F1", "best F1", "best F1 thresh"]
SUMMARY_HEADERS += ["null thresh (policy)", "train time (s)", "steps/s", "params"]
SUMMARY_HEADERS += ["grad norm (median, pre-clip)", "clipped steps"]
BOOTSTRAP_METHOD = (
    "Method: per-question F1 is averaged over each group's seeds and questions are matched by id; {B:,} resamples "
    "draw questions with replacement (numpy, fixed seed). The interval is the 2.5–97.5 percentile of the resampled "
    "mean differences; p is twice the fraction of resampled differences on the other side of 0 (0 included), capped "
    "at 1. It measures question-sampling noise only; seed noise is in the across-seed line."
)
NO_COMPARISON = "Only one group: nothing to compare."
SUMMARY_NOTE = (
    "Mean ± sample std (ddof=1) over seeds; scores in %. Gradient norm: the total norm before clipping at each logged "
    "step, median over the group's runs; clipped steps: the share of logged steps above optimizer.max_grad_norm (a "
    "head clipped on most steps learns with a smaller effective step)."
)


def _ms(pair: tuple[float, float]) -> str:
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


def _num(value: Any, spec: str = ".2f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(
        "| " + " | ".join(str(c) for c in line) + " |" for line in [headers, ["---"] * len(headers), *rows]
    )


def _summary_cells(row: dict[str, Any]) -> list[Any]:
    spread = [_ms(row[m]) for m in stats.SUMMARY_METRICS]
    best = [_num(row["best_f1"]), _num(row["best_f1_thresh"], ".3f")]
    threshold = f"{_num(row['null_threshold'], '.3f')} ({row['policy']})"
    params = " / ".join(f"{p:,}" for p in row["params"]) or "–"
    timing = [_num(row["train_time_s"], ".0f"), _num(row["steps_per_s"]), params]
    clipping = [_num(row["grad_norm"]), "–" if math.isnan(row["clipped"]) else f"{100 * row['clipped']:.0f}%"]
    return [row["group"], row["n"], *spread, *best, threshold, *timing, *clipping]


def render_summary(table: list[dict[str, Any]]) -> str:
    """The rows of compare.summary_table as one markdown table."""
    return markdown_table(SUMMARY_HEADERS, [_summary_cells(row) for row in table])


def render_comparison(c: Comparison | None) -> str:
    """Candidate − baseline: the paired bootstrap over questions, then the across-seed difference."""
    if c is None:
        return NO_COMPARISON
    b, s = c.bootstrap, c.seeds
    lines = [f"F1 difference **{c.candidate.label}** − **{c.baseline.label}** (positive: the candidate is better).", ""]
    if b is None:
        lines.append(f"- Paired bootstrap skipped: {c.bootstrap_skipped}.")
    else:
        p = f"p < {1 / b.n_resamples:g}" if b.p_value == 0 else f"p = {b.p_value:.4f}"
        side = "better" if b.low > 0 else "worse"
        verdict = (
            "contains 0: no detectable difference" if b.low <= 0 <= b.high else f"excludes 0: the candidate is {side}"
        )
        lines.append(
            f"- **Paired bootstrap over {b.n_questions} questions**: mean difference {b.mean_diff:+.2f} F1, 95% "
            f"interval [{b.low:+.2f}, {b.high:+.2f}], two-sided {p}; the interval {verdict}."
        )
        lines.append("- " + BOOTSTRAP_METHOD.format(B=b.n_resamples))
    kind = "paired by seed: mean ± std of per-seed differences" if s.paired else "unpaired: ± standard error"
    per_seed = ", ".join(f"seed {k}: {v:+.2f}" for k, v in s.per_seed.items())
    lines.append(
        f"- **Across seeds** ({kind}): {_num(s.diff, '+.2f')} ± {_num(s.spread)} F1"
        + (f" ({per_seed})" if per_seed else "")
        + ("" if c.same_questions else "; the runs were scored on different questions, so this mixes the two")
    )
    if not math.isnan(s.spread) and abs(s.diff) < 2 * s.spread:
        lines.append("- The across-seed difference is within 2 std of 0: seed variation is as large as the effect.")
    return "\n".join(lines)


def _has_gold(tables: list[dict[str, dict[str, Any]]]) -> bool:
    return all("gold" in v and "question" in v for t in tables for v in t.values())


def render_errors(groups: list[Group]) -> str:
    """F1 by question word and by answer length, and unanswerable detection, for groups with per-question records."""
    found = {g.label: stats.error_breakdown(t) for g in groups if (t := g.tables) and _has_gold(t)}
    if not found:
        return "No per-question records with questions and gold answers: error analysis skipped."
    parts, analyses = [], list(found.values())
    for key, title, order in (
        ("word", "F1 by question word (first wh-word of the question)", stats.QUESTION_WORDS),
        ("length", "F1 by gold answer length (words of the first gold answer)", stats.LENGTH_BUCKETS),
    ):
        rows = [
            [b, _num(next(e[key][b][0] for e in analyses if b in e[key]), ".0f")]
            + [_num(e[key][b][2]) if b in e[key] else "–" for e in analyses]
            for b in order
            if any(b in e[key] for e in analyses)
        ]
        parts.append(f"### {title}\n\n" + markdown_table(["bucket", "questions", *(f"{g} F1" for g in found)], rows))
    rows = []
    for label, e in found.items():
        u = e["unanswerable"]
        rows.append([label, _num(u["tp"] + u["fn"], ".0f"), _num(u["tp"] + u["fp"], ".1f")])
        rows[-1] += [_num(u[k]) for k in ("precision", "recall", "f1")]
    headers = ["group", "gold unanswerable", 'predicted ""', "precision", "recall", "F1"]
    parts.append('### Unanswerable detection (predicting "" is the positive class)\n\n' + markdown_table(headers, rows))
    return "\n\n".join(parts) + "\n\nAll numbers are means over each group's seeds."


def render_report(
    groups: list[Group],
    table: list[dict[str, Any]],
    comparisons: list[Comparison],
    warnings: list[str],
    skipped: list[str],
    figures: list[Path],
    command: str,
    studies: list[Study] | None = None,
) -> str:
    """report.md: runs, summary (`table` from compare.summary_table), verdict, error analysis, figure links."""
    runs = [r for g in groups for r in g.runs]
    totals = ", ".join(sorted({fmt_value(r.metrics.get("eval_total")) for r in runs}))
    out = [f"# Model comparison: {', '.join(g.label for g in groups)}", ""]
    out += [
        f"`{command}` ({datetime.now():%Y-%m-%d %H:%M:%S}): {len(runs)} finished runs in {len(groups)} groups, "
        f"eval questions per run: {totals}.",
        "",
    ]
    out += [f"> **warning**: {w}\n" for w in warnings]
    rows = [
        [g.label, r.config.get("seed"), f"`{r.path}`", " ".join(r.overrides) or "–"] for g in groups for r in g.runs
    ]
    out += ["## Runs", "", markdown_table(["group", "seed", "run", "overrides"], rows), ""]
    out += [f"- skipped: {s}" for s in skipped] + ([""] if skipped else [])
    out += ["## Summary", "", SUMMARY_NOTE, ""]
    out += [render_summary(table), ""]
    for study in studies or []:
        best = study.best
        out += [f"## Optuna study `{study.name}` ({study.storage})", ""]
        out += [
            f"{len(study.trials)} trials; best: trial {best.number}, value {best.value:.2f}"
            + (f" (`{Path(best.run.path).name}`)" if best.run else "")
            + ". The comparison below pairs each study's best trial, not two arbitrary trials."
            if best is not None and best.value is not None
            else f"{len(study.trials)} trials, none complete.",
            "",
            study_markdown(study),
            "",
        ]
    out += ["## Does the candidate help?", ""]
    for c in comparisons:
        if len(comparisons) > 1:
            out += [f"### {c.candidate.label} − {c.baseline.label}", ""]
        out += [render_comparison(c), ""]
    if not comparisons:
        out += [render_comparison(None), ""]
    out += ["## Error analysis", "", render_errors(groups), "", "## Figures", ""]
    return "\n".join(out + [f"![{f.stem}]({f.name})" for f in figures]) + "\n"
