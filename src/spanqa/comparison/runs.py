"""Finished runs for `make compare`: found in run dirs (or read from W&B), grouped by model and by every config key
that differs between runs, paired (candidate head against the start/end head) and checked for what makes their
numbers not like-for-like. Reads run dirs only: nothing here trains or loads a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanqa.comparison import stats
from spanqa.config import flatten, is_operational
from spanqa.env import wandb_key_configured, wandb_server_reachable
from spanqa.errors import DataError
from spanqa.models.heads import BASELINE
from spanqa.rundir.layout import CONTEXTS, PER_QUESTION, find_run_dirs, is_finished
from spanqa.rundir.record import NullThreshold, QuestionSet, RunRecord

# Beyond the operational settings (`config.OPERATIONAL_KEYS`), keys that never split groups: seeds are the
# replicates, model.name and model.head are the label, and paths differ between machines.
NOT_SPLITTING = ("seed", "demo.dir", "model.name", "model.head")
PATH_SUFFIXES = ("_file", "_dir", "name_or_path", "_path")
FAIRNESS = ("data.", "demo.", "trainer.epochs", "trainer.max_steps")  # differences here make a comparison unfair
SCHEMA_ROOTS = ("model", "data", "optimizer", "trainer", "logger", "demo", "seed", "run_name")


@dataclass
class Run:
    path: str
    record: RunRecord
    per_question: dict[str, dict[str, Any]] | None = None
    contexts: dict[str, Any] | None = None  # contexts.json: {"contexts": [...], "of": {id: index}}
    config: dict[str, Any] = field(init=False)  # flattened: "optimizer.lr" → 3e-05

    def __post_init__(self) -> None:
        self.config = self.record.flat_config

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics

    @property
    def policy(self) -> str:
        return self.record.null_threshold.policy

    @property
    def overrides(self) -> list[str]:
        return self.record.overrides

    @property
    def max_grad_norm(self) -> float:
        """The clipping limit it trained with (the Trainer's default, 1.0, where the config does not say)."""
        return float(self.config.get("optimizer.max_grad_norm", 1.0))

    @property
    def questions(self) -> QuestionSet | None:
        """The questions it was scored on: recorded, or (older records) read off per_question.json."""
        if self.record.questions is not None:
            return self.record.questions
        return QuestionSet.of(self.per_question) if self.per_question is not None else None

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class Group:
    label: str
    model: str
    head: str
    runs: list[Run]

    @property
    def suffix(self) -> str:
        return self.label[len(self.model) :].strip()

    @property
    def tables(self) -> list[dict[str, dict[str, Any]]]:
        """The per-question records of the runs that have them (local run dirs; W&B runs have none)."""
        return [r.per_question for r in self.runs if r.per_question]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def discover_runs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) run dirs at any depth under each path."""
    finished: dict[Path, None] = {}
    unfinished: dict[Path, None] = {}
    for root in paths:
        if not root.exists():
            raise DataError(f"{root}: no such file or directory")
        for here in find_run_dirs(root):
            (finished if is_finished(here) else unfinished)[here] = None
    return list(finished), list(unfinished)


def load_run(run_dir: Path) -> Run:
    """A finished run dir: its run record, and its per-question scores and contexts when it has them."""
    pq_file, contexts_file = run_dir / PER_QUESTION, run_dir / CONTEXTS
    per_question = _read_json(pq_file) if pq_file.is_file() else None
    contexts = _read_json(contexts_file) if contexts_file.is_file() else None
    return Run(str(run_dir), RunRecord.read(run_dir), per_question, contexts)


def load_wandb_runs(spec: str) -> list[Run]:
    """Finished runs of ENTITY/PROJECT[:GROUP] through the W&B public API (no per-question records there)."""
    path, _, group = spec.partition(":")
    if len(path.split("/")) != 2 or not all(path.split("/")):
        raise DataError(f"--wandb {spec!r}: expected ENTITY/PROJECT[:GROUP]")
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
    config = {k: v for k, v in dict(r.config).items() if k in SCHEMA_ROOTS}
    metrics = {k: v for k, v in summary.items() if k.startswith("eval_") or k in ("epoch", "best_epoch")}
    threshold = metrics.pop("eval_null_threshold", math.nan)
    record = RunRecord(
        run_name=str(config.get("run_name", r.name)),
        config=config,
        config_digest="",
        metrics=metrics,
        null_threshold=NullThreshold(threshold, str(flatten(config).get("data.null_threshold.policy", "fixed"))),
        log_history=history,
        train_runtime_s=summary.get("train/train_runtime"),
        train_steps_per_second=summary.get("train/train_steps_per_second"),
        config_source="W&B",
    )
    return Run(r.url, record)


def _ignored(key: str) -> bool:
    return is_operational(key) or key in NOT_SPLITTING or key.endswith(PATH_SUFFIXES)


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
        label = " ".join([model, *(f"{short[k]}={fmt_value(r.config.get(k))}" for k in split)])
        head = str(r.config.get("model.head", "unknown"))  # every run config since the first release has it
        groups.setdefault(label, Group(label, model, head, [])).runs.append(r)
    return sorted(groups.values(), key=lambda g: (g.model, g.label))


def summary_table(groups: list[Group]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        norm, clipped = stats.gradient_clipping([(r.record.log_history, r.max_grad_norm) for r in g.runs])
        rows.append(
            {"group": g.label, **stats.summarize([r.record for r in g.runs]), "grad_norm": norm, "clipped": clipped}
        )
    return rows


def fmt_value(v: Any) -> str:
    """A config or metric value as group labels and the report show it: 2e-05, not 2.0000000000000002e-05."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _seed_f1(group: Group) -> list[tuple[Any, float]]:
    return [(r.config.get("seed"), float(r.metrics.get("eval_f1", math.nan))) for r in group.runs]


@dataclass
class Comparison:
    baseline: Group
    candidate: Group
    bootstrap: stats.BootstrapResult | None
    seeds: stats.SeedDifference
    bootstrap_skipped: str | None = None  # why there is no bootstrap, when there is none
    same_questions: bool = True


def question_sets(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by the questions they were scored on (ids digest; "count:N" where only the count is known)."""
    out: dict[str, list[Run]] = {}
    for r in runs:
        q = r.questions
        key = q.ids_digest if q is not None else f"count:{r.metrics.get('eval_total')}"
        out.setdefault(key, []).append(r)
    return out


def _count(r: Run) -> str:
    return fmt_value(r.questions.count if r.questions is not None else r.metrics.get("eval_total"))


def check_same_questions(runs: list[Run]) -> None:
    """A comparison scores both groups on one question set; runs scored on different ones stop it here."""
    sets = question_sets(runs)
    if len(sets) > 1:
        shown = "; ".join(
            f"{len(rs)} run{'s' if len(rs) > 1 else ''} on {_count(rs[0])} questions (e.g. {rs[0].name})"
            for rs in sets.values()
        )
        raise DataError(
            f"the runs were scored on different evaluation questions ({shown}): compare runs of one evaluation "
            "set, or pass --allow-different-questions to pair them on the questions they share"
        )


def compare_groups(
    baseline: Group, candidate: Group, n_resamples: int = 10_000, seed: int = 0, allow_different_questions: bool = False
) -> Comparison:
    """Candidate − baseline. Refuses (DataError) groups scored on different questions unless allowed."""
    runs = baseline.runs + candidate.runs
    same = len(question_sets(runs)) == 1
    if not same and not allow_different_questions:
        check_same_questions(runs)
    seeds = stats.seed_difference(_seed_f1(baseline), _seed_f1(candidate))
    missing = [r.name for r in runs if not r.per_question]
    if missing:
        reason = (
            f"{len(missing)} of the {len(runs)} runs have no per-question scores ({', '.join(missing[:3])}"
            + (", …" if len(missing) > 3 else "")
            + "; W&B runs carry none)"
        )
        return Comparison(baseline, candidate, None, seeds, reason, same)
    fb, fc = stats.seed_mean_by_question(baseline.tables), stats.seed_mean_by_question(candidate.tables)
    qids = sorted(fb.keys() & fc.keys())
    if not qids:
        return Comparison(baseline, candidate, None, seeds, "the two groups share no evaluation question", same)
    boot = stats.paired_bootstrap([fb[q] for q in qids], [fc[q] for q in qids], n_resamples, seed)
    return Comparison(baseline, candidate, boot, seeds, None, same)


def choose_pairs(groups: list[Group], baseline: str | None, candidate: str | None) -> list[tuple[Group, Group]]:
    """(baseline, candidate) pairs to compare. --baseline/--candidate: that one pair. By default every other head
    against the start/end head (matching swept values where possible), and the CRF head against the tagging-only
    head when both ran: the one pair that differs in the CRF's transitions alone. Without a start/end group, the
    first two groups."""
    by_label = {g.label: g for g in groups}
    for label in (baseline, candidate):
        if label is not None and label not in by_label:
            raise DataError(f"no group labelled {label!r}; groups: {', '.join(by_label)}")
    if baseline and baseline == candidate:
        raise DataError(f"--baseline and --candidate are the same group ({baseline!r})")
    if baseline and candidate:
        return [(by_label[baseline], by_label[candidate])]
    if baseline or candidate:
        rest = [g for g in groups if g.label not in (baseline, candidate)]
        b = by_label[baseline] if baseline else next((g for g in rest if g.head == BASELINE), rest[0] if rest else None)
        c = (
            by_label[candidate]
            if candidate
            else next((g for g in rest if g.head != BASELINE), rest[0] if rest else None)
        )
        return [(b, c)] if b and c else []
    plain, others = [g for g in groups if g.head == BASELINE], [g for g in groups if g.head != BASELINE]
    if not (plain and others):
        return [(groups[0], groups[1])] if len(groups) > 1 else []

    def matching(group: Group, candidates: list[Group]) -> Group:
        return next((g for g in candidates if g.suffix == group.suffix), candidates[0])

    pairs = [(matching(c, plain), c) for c in others]
    tagging_only = [g for g in groups if g.head == "bio"]
    pairs += [(matching(c, tagging_only), c) for c in groups if c.head == "crf" and tagging_only]
    return pairs


def choose_pair(groups: list[Group], baseline: str | None, candidate: str | None) -> tuple[Group, Group] | None:
    """The first of `choose_pairs`: the pair a single comparison reports."""
    pairs = choose_pairs(groups, baseline, candidate)
    return pairs[0] if pairs else None


def fairness_warnings(runs: list[Run]) -> list[str]:
    """What makes the groups' numbers not like-for-like: data, threshold policy, epochs, eval questions."""
    out = []
    keys = [k for k in sorted({k for r in runs for k in r.config}) if k.startswith(FAIRNESS) and _varying(runs, k)]
    if keys:
        out.append(f"runs differ in {', '.join(keys)}: data, threshold or training length are not the same")
    for what, values in (
        ("null-threshold policies", {str(r.policy) for r in runs}),
        ("numbers of epochs trained", {fmt_value(r.metrics.get("epoch")) for r in runs}),
        ("numbers of eval questions", {fmt_value(r.metrics.get("eval_total")) for r in runs}),
    ):
        if len(values) > 1:
            out.append(f"runs used different {what}: {', '.join(sorted(values))}")
    if len(question_sets(runs)) > 1:
        out.append("runs were scored on different question sets (the bootstrap uses only the shared ones)")
    silent = [
        r.name for r in runs if r.per_question and all(v.get("prediction") == "" for v in r.per_question.values())
    ]
    if silent:
        out.append(f"answered no question at all (scores only measure the no-answer rate): {', '.join(silent)}")
    if any(r.policy == "tune_on_dev" for r in runs):
        out.append("tune_on_dev: the null threshold was tuned on the reported questions, so scores are optimistic")
    return out


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
