"""Finished runs for `make compare`: found in run dirs (or read from W&B), grouped by model and by every config key
that differs between runs, paired (candidate head against the start/end head) and checked for what makes their
numbers not like-for-like. Reads run dirs only: nothing here trains or loads a model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from spanqa.comparison import stats
from spanqa.config import flatten
from spanqa.env import wandb_key_configured, wandb_server_reachable
from spanqa.errors import DataError
from spanqa.models.heads import BASELINE

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

    @property
    def max_grad_norm(self) -> float:
        """The clipping limit it trained with (the Trainer's default, 1.0, where the config does not say)."""
        return float(self.config.get("optimizer.max_grad_norm", 1.0))


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
    """A finished run dir. Its config is the one run.json recorded (Hydra rewrites .hydra/config.yaml when a
    sweep is relaunched into the dir, even a relaunch that is then refused); .hydra/ for runs that predate that."""
    record = _read_json(run_dir / "run.json")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise DataError(f"{run_dir / 'run.json'}: no metrics object")
    try:
        if isinstance(record.get("config"), dict):
            tree = record["config"]
        else:
            cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
            try:
                tree = OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # Hydra-only resolvers (${now:...}, ${hydra:...}) do not exist outside a Hydra job
                tree = OmegaConf.to_container(cfg, resolve=False)
        ov_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(ov_file)] if ov_file.is_file() else []
    except Exception as exc:
        raise DataError(f"{run_dir}: unreadable .hydra config ({str(exc).splitlines()[0]})") from None
    pq_file = run_dir / "per_question.json"
    return Run(
        path=str(run_dir),
        config=flatten(tree),  # type: ignore[arg-type]
        record=record,
        per_question=_read_json(pq_file) if pq_file.is_file() else None,
        overrides=record.get("overrides", overrides),
    )


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
    config = {k: v for k, v in flatten(dict(r.config)).items() if k.split(".")[0] in SCHEMA_ROOTS}
    record = {
        "metrics": {k: v for k, v in summary.items() if k.startswith("eval_") or k in ("epoch", "best_epoch")},
        "null_threshold_policy": config.get("data.null_threshold.policy"),
        "log_history": history,
        "train_runtime_s": summary.get("train/train_runtime"),
        "train_steps_per_second": summary.get("train/train_steps_per_second"),
    }
    return Run(r.url, config, record)


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
        label = " ".join([model, *(f"{short[k]}={fmt_value(r.config.get(k))}" for k in split)])
        head = str(r.config.get("model.head", "unknown"))  # every run config since the first release has it
        groups.setdefault(label, Group(label, model, head, [])).runs.append(r)
    return sorted(groups.values(), key=lambda g: (g.model, g.label))


def summary_table(groups: list[Group]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        norm, clipped = stats.gradient_clipping([(r.record.get("log_history") or [], r.max_grad_norm) for r in g.runs])
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


def compare_groups(baseline: Group, candidate: Group, n_resamples: int = 10_000, seed: int = 0) -> Comparison:
    fb, fc = stats.seed_mean_by_question(baseline.tables), stats.seed_mean_by_question(candidate.tables)
    qids = sorted(fb.keys() & fc.keys())
    boot = stats.paired_bootstrap([fb[q] for q in qids], [fc[q] for q in qids], n_resamples, seed) if qids else None
    return Comparison(baseline, candidate, boot, stats.seed_difference(_seed_f1(baseline), _seed_f1(candidate)))


def choose_pair(groups: list[Group], baseline: str | None, candidate: str | None) -> tuple[Group, Group] | None:
    """--baseline/--candidate labels; by default another head − the start/end head (same swept values if possible),
    else the first two groups."""
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
        b = by_label[baseline] if baseline else next((g for g in rest if g.head == BASELINE), rest[0] if rest else None)
        c = (
            by_label[candidate]
            if candidate
            else next((g for g in rest if g.head != BASELINE), rest[0] if rest else None)
        )
        return (b, c) if b and c else None
    plain, others = [g for g in groups if g.head == BASELINE], [g for g in groups if g.head != BASELINE]
    if plain and others:
        c = others[0]
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
        ("numbers of epochs trained", {fmt_value(r.metrics.get("epoch")) for r in runs}),
        ("numbers of eval questions", {fmt_value(r.metrics.get("eval_total")) for r in runs}),
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
