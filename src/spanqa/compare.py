"""`make compare` → `python -m spanqa.compare [RUNS ...]`: does the CRF head help, beyond seed and sample noise?

Finds finished Hydra run dirs (run.json next to .hydra/config.yaml) under the given paths, groups them by model
and by every config key that differs between runs (seeds, names, paths and logging aside), and writes report.md
(summary table, paired bootstrap over questions, across-seed view, error analysis) and three figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spanqa import stats
from spanqa.errors import DataError
from spanqa.plots import history_curves, plot_f1_curves, plot_loss_curves, plot_metric_bars

EXIT_BAD_INPUT = 2
# Keys that change neither what is trained nor how it is scored never split groups (model.name is the label's head).
IGNORED = ("seed", "run_name", "resume", "optimized_metric", "logger.", "demo.dir", "model.name", "model.head")
IGNORED += ("trainer.dataloader_workers", "trainer.save_total_limit", "trainer.eval_batch_size")
IGNORED += ("trainer.logging_steps",)
PATH_SUFFIXES = ("_file", "_dir", "name_or_path", "_path")
FAIRNESS = ("data.", "demo.", "trainer.epochs", "trainer.max_steps")  # differences here make a comparison unfair
SCHEMA_ROOTS = ("model", "data", "optimizer", "trainer", "logger", "demo", "seed", "run_name")


@dataclass
class Run:
    path: str
    config: dict[str, Any]  # flattened: "optimizer.lr" → 3e-05
    record: dict[str, Any]  # run.json: metrics, null_threshold_policy, log_history, train time, steps/s, params
    per_question: dict[str, dict[str, Any]] | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record["metrics"]

    @property
    def policy(self) -> str | None:
        return self.record.get("null_threshold_policy")


@dataclass
class Group:
    label: str
    model: str
    head: str
    runs: list[Run]

    @property
    def suffix(self) -> str:
        return self.label[len(self.model) :].strip()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 3e-05}} → {"optimizer.lr": 3e-05}."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def discover_runs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) run dirs: a dir with .hydra/config.yaml, at any depth under each path."""
    finished: dict[Path, None] = {}
    unfinished: dict[Path, None] = {}
    for root in paths:
        if not root.exists():
            raise DataError(f"{root}: no such file or directory")
        for dirpath, dirnames, _ in os.walk(root):
            here = Path(dirpath)
            if (here / ".hydra" / "config.yaml").is_file():
                (finished if (here / "run.json").is_file() else unfinished)[here] = None
                dirnames.clear()  # checkpoints/, eval/step-N/: parts of this run, never runs themselves
            dirnames.sort()
    return list(finished), list(unfinished)


def load_run(run_dir: Path) -> Run:
    try:
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        try:
            tree = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # Hydra-only resolvers (${now:...}, ${hydra:...}) do not exist outside a Hydra job
            tree = OmegaConf.to_container(cfg, resolve=False)
        ov_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(ov_file)] if ov_file.is_file() else []
    except Exception as exc:
        raise DataError(f"{run_dir}: unreadable .hydra config ({str(exc).splitlines()[0]})") from None
    record = _read_json(run_dir / "run.json")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise DataError(f"{run_dir / 'run.json'}: no metrics object")
    pq_file = run_dir / "per_question.json"
    return Run(
        path=str(run_dir),
        config=flatten(tree),  # type: ignore[arg-type]
        record=record,
        per_question=_read_json(pq_file) if pq_file.is_file() else None,
        overrides=overrides,
    )


def load_wandb_runs(spec: str) -> list[Run]:
    """Finished runs of ENTITY/PROJECT[:GROUP] through the W&B public API (no per-question records there)."""
    path, _, group = spec.partition(":")
    if len(path.split("/")) != 2 or not all(path.split("/")):
        raise DataError(f"--wandb {spec!r}: expected ENTITY/PROJECT[:GROUP]")
    from spanqa.tracking import wandb_key_configured, wandb_server_reachable

    if not wandb_key_configured():
        raise DataError("W&B unavailable: no API key (set WANDB_API_KEY or run `wandb login`)")
    if not wandb_server_reachable():
        raise DataError("W&B unavailable: the server cannot be reached (no network?)")
    try:
        import wandb

        found = wandb.Api(timeout=30).runs(path, filters={"group": group} if group else {})
        return [_from_wandb(r) for r in found if r.state == "finished"]
    except Exception as exc:  # auth, network, unknown project: all mean the runs cannot be read
        raise DataError(f"W&B unavailable: {type(exc).__name__}: {(str(exc) or '-').splitlines()[0]}") from None


def _from_wandb(r: Any) -> Run:
    history: list[dict[str, Any]] = []
    for row in r.scan_history():  # the Trainer's callback logs "train/loss", "eval/f1", "train/epoch", ...
        where = {"step": row.get("train/global_step"), "epoch": row.get("train/epoch")}
        if row.get("train/loss") is not None:
            history.append({"loss": row["train/loss"], **where})
        evals = {f"eval_{k[5:]}": v for k, v in row.items() if k.startswith("eval/") and v is not None}
        if evals:
            history.append({**evals, **where})
    summary = dict(r.summary)
    config = {k: v for k, v in flatten(dict(r.config)).items() if k.split(".")[0] in SCHEMA_ROOTS}
    record = {
        "metrics": {k: v for k, v in summary.items() if k.startswith("eval_") or k in ("epoch", "best_epoch")},
        "null_threshold_policy": config.get("data.null_threshold.policy"),
        "log_history": history,
        "train_runtime_s": summary.get("train/train_runtime"),
        "train_steps_per_second": summary.get("train/train_steps_per_second"),
    }
    return Run(r.url, config, record)


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _ignored(key: str) -> bool:
    return key.startswith(IGNORED) or key.endswith(PATH_SUFFIXES)


def _varying(runs: list[Run], key: str) -> bool:
    return len({repr(r.config.get(key)) for r in runs}) > 1


def group_runs(runs: list[Run]) -> list[Group]:
    """One group per model and combination of the values of the keys that differ between runs."""
    shared = set.intersection(*(set(r.config) for r in runs))  # a key missing from older configs cannot split
    split = [k for k in sorted(shared) if not _ignored(k) and _varying(runs, k)]
    short = {k: k.rsplit(".", 1)[-1] for k in split}
    if len(set(short.values())) < len(short):  # "lr" must not name two keys
        short = {k: k for k in split}
    groups: dict[str, Group] = {}
    for r in runs:
        model = str(r.config.get("model.name", "unknown"))
        label = " ".join([model, *(f"{short[k]}={_fmt_value(r.config.get(k))}" for k in split)])
        head = str(r.config.get("model.head", "crf" if "crf" in model else "span"))
        groups.setdefault(label, Group(label, model, head, [])).runs.append(r)
    return sorted(groups.values(), key=lambda g: (g.model, g.label))


def summary_table(groups: list[Group]) -> list[dict[str, Any]]:
    return [{"group": g.label, **stats.summarize([r.record for r in g.runs])} for g in groups]


def write_figures(groups: list[Group], table: list[dict[str, Any]], out: Path) -> list[Path]:
    per = {g.label: [history_curves(r.record.get("log_history") or []) for r in g.runs] for g in groups}

    def pick(key: str) -> dict[str, list[dict[float, float]]]:
        return {label: [c[key] for c in cs] for label, cs in per.items()}

    bars = {row["group"]: {m: row[m] for m in stats.SUMMARY_METRICS} for row in table}
    return [
        plot_loss_curves(pick("loss"), pick("eval_loss"), out / "loss_curves.png"),
        plot_f1_curves(pick("eval_f1"), pick("eval_exact"), out / "f1_curves.png"),
        plot_metric_bars(bars, stats.SUMMARY_METRICS, out / "metrics_bars.png"),
    ]


def _seed_f1(group: Group) -> list[tuple[Any, float]]:
    return [(r.config.get("seed"), float(r.metrics.get("eval_f1", math.nan))) for r in group.runs]


def _tables(group: Group) -> list[dict[str, dict[str, Any]]]:
    return [r.per_question for r in group.runs if r.per_question]


@dataclass
class Comparison:
    baseline: Group
    candidate: Group
    bootstrap: stats.BootstrapResult | None
    seeds: stats.SeedDifference


def compare_groups(baseline: Group, candidate: Group, n_resamples: int = 10_000, seed: int = 0) -> Comparison:
    fb, fc = stats.seed_mean_by_question(_tables(baseline)), stats.seed_mean_by_question(_tables(candidate))
    qids = sorted(fb.keys() & fc.keys())
    boot = stats.paired_bootstrap([fb[q] for q in qids], [fc[q] for q in qids], n_resamples, seed) if qids else None
    return Comparison(baseline, candidate, boot, stats.seed_difference(_seed_f1(baseline), _seed_f1(candidate)))


def choose_pair(groups: list[Group], baseline: str | None, candidate: str | None) -> tuple[Group, Group] | None:
    """--baseline/--candidate labels; by default CRF − plain (same swept values if possible), else the first two."""
    by_label = {g.label: g for g in groups}
    for label in (baseline, candidate):
        if label is not None and label not in by_label:
            raise DataError(f"no group labelled {label!r}; groups: {', '.join(by_label)}")
    if baseline and baseline == candidate:
        raise DataError(f"--baseline and --candidate are the same group ({baseline!r})")
    if baseline and candidate:
        return by_label[baseline], by_label[candidate]
    if baseline or candidate:
        rest = [g for g in groups if g.label not in (baseline, candidate)]
        b = by_label[baseline] if baseline else next((g for g in rest if g.head != "crf"), rest[0] if rest else None)
        c = by_label[candidate] if candidate else next((g for g in rest if g.head == "crf"), rest[0] if rest else None)
        return (b, c) if b and c else None
    plain, crf = [g for g in groups if g.head != "crf"], [g for g in groups if g.head == "crf"]
    if plain and crf:
        c = crf[0]
        return next((p for p in plain if p.suffix == c.suffix), plain[0]), c
    return (groups[0], groups[1]) if len(groups) > 1 else None


def fairness_warnings(runs: list[Run]) -> list[str]:
    """What makes the groups' numbers not like-for-like: data, threshold policy, epochs, eval questions."""
    out = []
    keys = [k for k in sorted({k for r in runs for k in r.config}) if k.startswith(FAIRNESS) and _varying(runs, k)]
    if keys:
        out.append(f"runs differ in {', '.join(keys)}: data, threshold or training length are not the same")
    for what, values in (
        ("null-threshold policies", {str(r.policy) for r in runs}),
        ("numbers of epochs trained", {_fmt_value(r.metrics.get("epoch")) for r in runs}),
        ("numbers of eval questions", {_fmt_value(r.metrics.get("eval_total")) for r in runs}),
    ):
        if len(values) > 1:
            out.append(f"runs used different {what}: {', '.join(sorted(values))}")
    qsets = {frozenset(t) for r in runs if (t := r.per_question)}
    if len(qsets) > 1:
        out.append("runs were scored on different question sets (the bootstrap uses only the shared ones)")
    silent = [
        Path(r.path).name
        for r in runs
        if r.per_question and all(v.get("prediction") == "" for v in r.per_question.values())
    ]
    if silent:
        out.append(f"answered no question at all (scores only measure the no-answer rate): {', '.join(silent)}")
    if any(r.policy == "tune_on_dev" for r in runs):
        out.append("tune_on_dev: the null threshold was tuned on the reported questions, so scores are optimistic")
    return out


def _ms(pair: tuple[float, float]) -> str:
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


def _num(value: Any, spec: str = ".2f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(
        "| " + " | ".join(str(c) for c in line) + " |" for line in [headers, ["---"] * len(headers), *rows]
    )


SUMMARY_HEADERS = ["group", "n seeds", "EM", "F1", "HasAns F1", "NoAns F1", "best F1", "best F1 thresh"]
SUMMARY_HEADERS += ["null thresh (policy)", "train time (s)", "steps/s", "params"]


def _summary_cells(row: dict[str, Any]) -> list[Any]:
    spread = [_ms(row[m]) for m in stats.SUMMARY_METRICS]
    best = [_num(row["best_f1"]), _num(row["best_f1_thresh"], ".3f")]
    threshold = f"{_num(row['null_threshold'], '.3f')} ({row['policy']})"
    params = " / ".join(f"{p:,}" for p in row["params"]) or "–"
    timing = [_num(row["train_time_s"], ".0f"), _num(row["steps_per_s"]), params]
    return [row["group"], row["n"], *spread, *best, threshold, *timing]


def render_summary(table: list[dict[str, Any]]) -> str:
    return markdown_table(SUMMARY_HEADERS, [_summary_cells(row) for row in table])


BOOTSTRAP_METHOD = (
    "Method: per-question F1 is averaged over each group's seeds and questions are matched by id; {B:,} resamples "
    "draw questions with replacement (numpy, fixed seed). The interval is the 2.5–97.5 percentile of the resampled "
    "mean differences; p is twice the fraction of resampled differences on the other side of 0 (0 included), capped "
    "at 1. It measures question-sampling noise only; seed noise is in the across-seed line."
)


def render_comparison(c: Comparison) -> str:
    b, s = c.bootstrap, c.seeds
    lines = [f"F1 difference **{c.candidate.label}** − **{c.baseline.label}** (positive: the candidate is better).", ""]
    if b is None:
        lines.append("- Paired bootstrap skipped: it needs per_question.json from local run dirs of both groups.")
    else:
        p = f"< {1 / b.n_resamples:g}" if b.p_value == 0 else f"{b.p_value:.4f}"
        side = "better" if b.low > 0 else "worse"
        verdict = (
            "contains 0: no detectable difference" if b.low <= 0 <= b.high else f"excludes 0: the candidate is {side}"
        )
        lines.append(
            f"- **Paired bootstrap over {b.n_questions} questions**: mean difference {b.mean_diff:+.2f} F1, 95% "
            f"interval [{b.low:+.2f}, {b.high:+.2f}], two-sided p = {p}; the interval {verdict}."
        )
        lines.append("- " + BOOTSTRAP_METHOD.format(B=b.n_resamples))
    kind = "paired by seed: mean ± std of per-seed differences" if s.paired else "unpaired: ± standard error"
    per_seed = ", ".join(f"seed {k}: {v:+.2f}" for k, v in s.per_seed.items())
    lines.append(
        f"- **Across seeds** ({kind}): {_num(s.diff, '+.2f')} ± {_num(s.spread)} F1"
        + (f" ({per_seed})" if per_seed else "")
    )
    if not math.isnan(s.spread) and abs(s.diff) < 2 * s.spread:
        lines.append("- The across-seed difference is within 2 std of 0: seed variation is as large as the effect.")
    return "\n".join(lines)


def render_errors(groups: list[Group]) -> str:
    found = {g.label: stats.error_breakdown(t) for g in groups if (t := _tables(g)) and _has_gold(t)}
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


def _has_gold(tables: list[dict[str, dict[str, Any]]]) -> bool:
    return all("gold" in v and "question" in v for t in tables for v in t.values())


def render_report(
    groups: list[Group], comparison: Comparison | None, skipped: list[str], figures: list[Path], command: str
) -> str:
    runs = [r for g in groups for r in g.runs]
    totals = ", ".join(sorted({_fmt_value(r.metrics.get("eval_total")) for r in runs}))
    out = [f"# Model comparison: {', '.join(g.label for g in groups)}", ""]
    out += [
        f"`{command}` ({datetime.now():%Y-%m-%d %H:%M:%S}): {len(runs)} finished runs in {len(groups)} groups, "
        f"eval questions per run: {totals}.",
        "",
    ]
    out += [f"> **warning**: {w}\n" for w in fairness_warnings(runs)]
    rows = [
        [g.label, r.config.get("seed"), f"`{r.path}`", " ".join(r.overrides) or "–"] for g in groups for r in g.runs
    ]
    out += ["## Runs", "", markdown_table(["group", "seed", "run", "overrides"], rows), ""]
    out += [f"- skipped: {s}" for s in skipped] + ([""] if skipped else [])
    out += ["## Summary", "", "Mean ± sample std (ddof=1) over seeds; scores in %.", ""]
    out += [render_summary(summary_table(groups)), "", "## Does the candidate help?", ""]
    out += [render_comparison(comparison) if comparison else "Only one group: nothing to compare.", ""]
    out += ["## Error analysis", "", render_errors(groups), "", "## Figures", ""]
    return "\n".join(out + [f"![{f.stem}]({f.name})" for f in figures]) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m spanqa.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run dirs or dirs holding them (default: outputs/)")
    parser.add_argument("--out", type=Path, help="report dir (default: outputs/compare/<timestamp>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT[:GROUP]", help="read the runs from W&B instead")
    parser.add_argument("--baseline", help="group label of the baseline (default: the plain head)")
    parser.add_argument("--candidate", help="group label of the candidate (default: the CRF head)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    return parser.parse_args(argv)


def collect_local(paths: list[Path]) -> tuple[list[Run], list[str]]:
    """Loaded finished runs, and one line per skipped dir (unfinished or unreadable)."""
    finished, unfinished = discover_runs(paths)
    runs, skipped = [], [f"`{p}` (unfinished: no run.json)" for p in unfinished]
    for path in finished:
        try:
            runs.append(load_run(path))
        except DataError as exc:
            skipped.append(str(exc))
    return runs, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.runs or [Path("outputs")]
    try:
        runs, skipped = (load_wandb_runs(args.wandb), []) if args.wandb else collect_local(paths)
        if not runs:
            where = args.wandb or ", ".join(map(str, paths))
            raise DataError(f"no finished runs found in {where}" + (f" ({len(skipped)} skipped)" if skipped else ""))
        groups = group_runs(runs)
        pair = choose_pair(groups, args.baseline, args.candidate)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    comparison = compare_groups(*pair, args.resamples, args.bootstrap_seed) if pair else None
    out = args.out or Path("outputs/compare") / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(groups, summary_table(groups), out)
    command = " ".join(["python -m spanqa.compare", *(argv if argv is not None else sys.argv[1:])])
    (out / "report.md").write_text(render_report(groups, comparison, skipped, figures, command), encoding="utf-8")
    print(render_summary(summary_table(groups)))
    print("\n" + (render_comparison(comparison) if comparison else "Only one group: nothing to compare."))
    for line in [*skipped, *fairness_warnings(runs)]:
        print(f"note: {line}")
    print(f"\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
