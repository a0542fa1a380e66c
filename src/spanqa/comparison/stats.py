"""Statistics for comparing groups of runs: mean ± std over seeds, a paired bootstrap over questions, and the
per-question breakdowns of the error analysis. Pure functions on numbers and per-question records."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spanqa.rundir.record import RunRecord

QUESTION_WORDS = ("what", "who", "when", "where", "which", "why", "how", "other")
LENGTH_BUCKETS = ("unanswerable", "1", "2-3", "4-6", "7+")
_WORD = re.compile(r"[a-z]+")


SUMMARY_METRICS = ("exact", "f1", "HasAns_f1", "NoAns_f1")  # reported as mean ± std over seeds


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the values that are present; std is nan for fewer than two."""
    xs = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if xs.size == 0:
        return math.nan, math.nan
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else math.nan


@dataclass(frozen=True)
class BootstrapResult:
    """Candidate − baseline, in the units of the inputs."""

    mean_diff: float
    low: float
    high: float
    p_value: float
    n_questions: int
    n_resamples: int


def paired_bootstrap(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 500,
) -> BootstrapResult:
    """Resample questions with replacement; each resample's statistic is the mean paired difference.

    p-value: twice the fraction of resampled differences on the other side of 0 from the observed one (0
    itself counts as the other side, which is conservative), capped at 1. Resamples are drawn in chunks so
    memory stays at chunk × n indices even for the 12k-question dev set.
    """
    diff = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty 1-D score arrays")
    rng = np.random.default_rng(seed)
    n = diff.size
    means = np.concatenate(
        [
            diff[rng.integers(0, n, size=(min(chunk, n_resamples - start), n))].mean(axis=1)
            for start in range(0, n_resamples, chunk)
        ]
    )
    observed = float(diff.mean())
    other_side = means <= 0 if observed > 0 else means >= 0
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return BootstrapResult(
        mean_diff=observed,
        low=float(low),
        high=float(high),
        p_value=min(1.0, 2 * float(other_side.mean())),
        n_questions=n,
        n_resamples=n_resamples,
    )


@dataclass(frozen=True)
class SeedDifference:
    """Difference of per-seed scores. Paired (same seeds on both sides): mean ± sample std of the per-seed
    differences. Unpaired: difference of means ± its standard error sqrt(s_a²/n_a + s_b²/n_b)."""

    diff: float
    spread: float
    paired: bool
    per_seed: dict[Any, float]


def seed_difference(baseline: Sequence[tuple[Any, float]], candidate: Sequence[tuple[Any, float]]) -> SeedDifference:
    """(seed, score) per run of each group. Runs are paired when both groups ran the same seeds (a seed that
    repeats is paired by order of appearance)."""

    def keyed(pairs: Sequence[tuple[Any, float]]) -> dict[tuple[Any, int], float]:
        seen: dict[Any, int] = {}
        out = {}
        for seed, value in pairs:
            seen[seed] = seen.get(seed, -1) + 1
            out[(seed, seen[seed])] = value
        return out

    b, c = keyed(baseline), keyed(candidate)
    if b and b.keys() == c.keys():
        per_seed = {k[0] if k[1] == 0 else k: c[k] - b[k] for k in sorted(b, key=repr)}
        diff, std = mean_std(per_seed.values())
        return SeedDifference(diff, std, True, per_seed)
    (mean_b, std_b), (mean_c, std_c) = mean_std(b.values()), mean_std(c.values())
    stderr = math.sqrt(std_b**2 / len(b) + std_c**2 / len(c)) if b and c else math.nan
    return SeedDifference(mean_c - mean_b, stderr, False, {})


def question_word(question: str) -> str:
    """The first wh-word among the question's words ("In which year ..." → which), else "other"."""
    return next((w for w in _WORD.findall(question.lower()) if w in QUESTION_WORDS[:-1]), "other")


def answer_length_bucket(gold: Sequence[str]) -> str:
    """Length in words of the first gold answer; no gold answer means unanswerable."""
    words = len(gold[0].split()) if gold else 0
    if words == 0:
        return "unanswerable"
    return "1" if words == 1 else "2-3" if words <= 3 else "4-6" if words <= 6 else "7+"


def bucket_scores(
    per_question: Mapping[str, Mapping[str, Any]], bucket: Callable[[Mapping[str, Any]], str]
) -> dict[str, tuple[int, float, float]]:
    """bucket → (questions, EM %, F1 %) for one run's per-question records."""
    members: dict[str, list[Mapping[str, Any]]] = {}
    for record in per_question.values():
        members.setdefault(bucket(record), []).append(record)
    return {
        name: (len(rs), 100 * float(np.mean([r["exact"] for r in rs])), 100 * float(np.mean([r["f1"] for r in rs])))
        for name, rs in members.items()
    }


def unanswerable_prf(per_question: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Abstention as a detector: predicting "" is the positive class, an empty gold list the true label.
    Precision/recall/F1 in percent (nan when undefined), plus the counts."""
    tp = fp = fn = 0
    for record in per_question.values():
        predicted, actual = record["prediction"] == "", not record["gold"]
        tp += predicted and actual
        fp += predicted and not actual
        fn += actual and not predicted
    precision = 100 * tp / (tp + fp) if tp + fp else math.nan
    recall = 100 * tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if tp + fp and tp + fn else math.nan)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def seed_mean_by_question(tables: Sequence[Mapping[str, Mapping[str, Any]]], key: str = "f1") -> dict[str, float]:
    """Per-question score (%) averaged over runs (seeds), on the questions every run scored."""
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return {q: 100 * float(np.mean([t[q][key] for t in tables])) for q in sorted(common)}


def error_breakdown(tables: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """For one group's runs: question-word and answer-length buckets as (questions, EM %, F1 %) averaged over
    runs, and the abstention precision/recall/F1 (and counts) averaged over runs."""

    def averaged(bucket: Callable[[Mapping[str, Any]], str]) -> dict[str, tuple[float, float, float]]:
        per_run = [bucket_scores(t, bucket) for t in tables]
        names = {b for p in per_run for b in p}
        return {b: tuple(float(x) for x in np.mean([p[b] for p in per_run if b in p], axis=0)) for b in names}

    prf = [unanswerable_prf(t) for t in tables]
    return {
        "word": averaged(lambda r: question_word(r["question"])),
        "length": averaged(lambda r: answer_length_bucket(r["gold"])),
        "unanswerable": {k: float(np.mean([p[k] for p in prf])) for k in prf[0]} if prf else {},
    }


def threshold_curve(per_question: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """F1 and EM (%) of one run at every null threshold on a grid of 0..1 (step 0.005), re-scored from its saved best
    spans and no-answer probabilities exactly as the official script scores a threshold; None for per-question
    records from before best spans were saved."""
    from spanqa.eval.squad_v2 import compute_exact, compute_f1, gold_texts

    rows = list(per_question.values())
    if not rows or "best_span" not in rows[0]:
        return None
    na = np.array([r["na_prob"] for r in rows])
    raw_f1, raw_em, empty = [], [], []
    for r in rows:
        gold = gold_texts(r["gold"])
        raw_f1.append(max(compute_f1(g, r["best_span"]) for g in gold))
        raw_em.append(max(compute_exact(g, r["best_span"]) for g in gold))
        empty.append(max(compute_f1(g, "") for g in gold))  # "": 1 on an unanswerable question, 0 on the others
    grid = np.linspace(0.0, 1.0, 201)
    answered = na[None, :] <= grid[:, None]
    f1 = 100 * np.where(answered, np.array(raw_f1)[None, :], np.array(empty)[None, :]).mean(axis=1)
    em = 100 * np.where(answered, np.array(raw_em)[None, :], np.array(empty)[None, :]).mean(axis=1)
    return grid, f1, em


def summarize(records: Sequence[RunRecord]) -> dict[str, Any]:
    """One group's row from its runs' records: (mean, std) of the SUMMARY_METRICS, means of the rest."""
    metrics = [r.metrics for r in records]

    def mean(values: Iterable[Any]) -> float:
        return mean_std(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))[0]

    return {
        "n": len(records),
        **{m: mean_std(x.get(f"eval_{m}") for x in metrics) for m in SUMMARY_METRICS},
        **{k: mean(x.get(f"eval_{k}") for x in metrics) for k in ("best_f1", "best_f1_thresh")},
        "null_threshold": mean(r.null_threshold.value for r in records),
        "policy": ", ".join(sorted({r.null_threshold.policy for r in records})),
        "train_time_s": mean(r.train_runtime_s for r in records),
        "steps_per_s": mean(r.train_steps_per_second for r in records),
        "params": sorted({r.num_parameters for r in records if r.num_parameters is not None}),
    }


def gradient_clipping(runs: Sequence[tuple[Sequence[Mapping[str, Any]], float]]) -> tuple[float, float]:
    """(median pre-clip gradient norm, fraction of logged steps clipped) over a group's runs: each run's Trainer
    log history (training part: every logging step's `grad_norm`, the total norm before clipping) and its
    max_grad_norm. A head whose norms sit far above the limit is trained with a smaller effective step."""
    norms, clipped = [], 0
    for history, max_norm in runs:
        for entry in history:
            if "train_runtime" in entry:
                break
            if entry.get("grad_norm") is not None and entry.get("loss") is not None:
                norms.append(float(entry["grad_norm"]))
                clipped += float(entry["grad_norm"]) > max_norm
    if not norms:
        return math.nan, math.nan
    return float(np.median(norms)), clipped / len(norms)
