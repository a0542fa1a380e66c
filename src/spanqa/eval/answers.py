"""Per-window span candidates → one answer per question, shared by every head.

Each head hands over `WindowCandidates` (spans with scores, and a null score per window); `select_answers` pools
every window of a question and decides between the best span and "no answer". Everything is vectorised over all
windows at once; Python only builds the answer strings and the per-question dicts. The n-best lists stay arrays
until `Predictions.nbest` is first read (writing nbest_predictions.json): ~10^5 small dicts cost more than all the
rest, and most evaluations never look at them.

Tie rule (the reference loop in `spanqa.benchmarks.postprocess` uses the same one): a question's candidates rank
by score, ties going to the earlier window, then the earlier start token, then the earlier end.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from spanqa.models.candidates import WindowCandidates, check_windows


@dataclass(eq=False)
class NBestArrays:
    """Every example's n-best candidates as flat arrays, grouped by example (in id order), best first."""

    example_ids: list[str]
    contexts: list[str]
    bounds: np.ndarray  # (n_examples + 1,) example i owns entries bounds[i]:bounds[i + 1]
    example: np.ndarray  # (M,) int64 example index of each entry
    score: np.ndarray  # (M,) float32
    window: np.ndarray  # (M,) int64
    start: np.ndarray  # (M,) int64 token index in its window
    end: np.ndarray  # (M,) int64 token index (inclusive)
    offsets: np.ndarray  # (N, L, 2) the windows' char offsets

    def to_dicts(self) -> dict[str, list[dict]]:
        """{example id: [{"text", "score", "probability", "start", "end"}, ...]}; probability is the softmax
        over the example's n-best scores."""
        score = self.score.astype(np.float64)
        best = score[self.bounds[:-1][self.example]]  # each group's first entry is its best
        weights = np.exp(score - best)
        prob = weights / np.bincount(self.example, weights=weights, minlength=len(self.example_ids))[self.example]
        char_start = self.offsets[self.window, self.start, 0]
        char_end = self.offsets[self.window, self.end, 1]
        contexts = self.contexts
        with _gc_paused():
            entries = [
                {"text": contexts[e][cs:ce], "score": sc, "probability": p, "start": cs, "end": ce}
                for e, sc, p, cs, ce in zip(
                    self.example.tolist(),
                    score.tolist(),
                    prob.tolist(),
                    char_start.tolist(),
                    char_end.tolist(),
                    strict=True,
                )
            ]
            bounds = self.bounds.tolist()
            return {eid: entries[lo:hi] for eid, lo, hi in zip(self.example_ids, bounds[:-1], bounds[1:], strict=True)}


def decide_answer(best_span: str, na_prob: float, threshold: float) -> str:
    """The one null-threshold rule (the official scorer's): "" when the no-answer probability exceeds the threshold,
    else the best span."""
    return "" if na_prob > threshold else best_span


@dataclass
class Predictions:
    answers: dict[str, str]  # example id -> answer after the threshold ("" = no answer)
    best_span: dict[str, str]  # example id -> best non-null span text, even when null wins
    score_diff: dict[str, float]  # null - best span score (the SQuAD 2 reference's null odds)
    na_prob: dict[str, float]  # sigmoid(score_diff)
    nbest_source: dict[str, list[dict]] | NBestArrays = field(repr=False)
    best_start: dict[str, int] = field(default_factory=dict)  # char offset of best_span in its context

    def thresholded(self, threshold: float) -> dict[str, str]:
        """Every question's answer under `threshold`."""
        return {qid: decide_answer(span, self.na_prob[qid], threshold) for qid, span in self.best_span.items()}

    @cached_property
    def nbest(self) -> dict[str, list[dict]]:
        """{"text", "score", "probability", "start", "end"} per candidate, best first; built when first read."""
        source = self.nbest_source
        return source if isinstance(source, dict) else source.to_dicts()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building ~10^5 small dicts triggers repeated cyclic-GC passes over every live object (in a
    training process: millions); none of these objects can form cycles, so skip the passes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _descending_order(score: np.ndarray) -> np.ndarray:
    """float32 → uint32 whose ascending order is the scores' descending order (-0.0 counts as 0.0)."""
    bits = (score + np.float32(0.0)).view(np.uint32)
    ascending = bits ^ np.where(bits >> 31 == 1, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    return ~ascending


def _stable_argsort(key: np.ndarray) -> np.ndarray:
    """argsort(key, kind="stable") for uint64 keys, ~10x faster: numpy's stable sort of 64-bit keys is a
    timsort, its default one is SIMD. Equal keys (rare with float scores) get their input order back."""
    order = np.argsort(key)
    ordered = key[order]
    new_run = ordered[1:] != ordered[:-1]
    if new_run.all():
        return order
    run = np.concatenate([[0], np.cumsum(new_run)]).astype(np.uint64)
    return (np.sort((run << np.uint64(32)) | order.astype(np.uint64)) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def select_answers(
    cands: WindowCandidates,
    example_index: np.ndarray,
    offsets: np.ndarray,
    contexts: list[str],
    example_ids: list[str],
    n_best: int = 20,
    na_prob_thresh: float = 0.5,
) -> Predictions:
    """Pool the candidates of all windows of each example; answer "" when na_prob > na_prob_thresh."""
    example_index = np.asarray(example_index, dtype=np.int64)
    offsets = np.asarray(offsets)
    n_windows, k = cands.start.shape
    n_examples = len(example_ids)
    if len(contexts) != n_examples:
        raise ValueError(f"{len(contexts)} contexts for {n_examples} example ids; expected one each")
    if n_best < 1:
        raise ValueError(f"n_best={n_best}; expected >= 1")
    for name, arr, ndim in (
        ("cands.end", cands.end, 2),
        ("cands.score", cands.score, 2),
        ("cands.null", cands.null, 1),
        ("example_index", example_index, 1),
        ("offsets", offsets, 3),
    ):
        check_windows(name, np.asarray(arr), n_windows, ndim)
    if n_windows and (example_index.min() < 0 or example_index.max() >= n_examples):
        lo, hi = int(example_index.min()), int(example_index.max())
        raise ValueError(f"example_index spans {lo}..{hi}; expected values in [0, {n_examples})")

    # Flatten every candidate of every window that has a finite score and indexes a real token.
    width = offsets.shape[1]
    score_all = np.asarray(cands.score, dtype=np.float32).reshape(-1)
    flat = np.flatnonzero(np.isfinite(score_all))
    start = np.asarray(cands.start, dtype=np.int64).reshape(-1)[flat]
    end = np.asarray(cands.end, dtype=np.int64).reshape(-1)[flat]
    in_range = (start >= 0) & (end >= 0) & (start < width) & (end < width)
    if not in_range.all():
        flat, start, end = flat[in_range], start[in_range], end[in_range]
    window = flat // k if k else flat
    score = score_all[flat]

    # Tie order is window, start, end: span_candidates already emits that order; sort other producers.
    position = (window * width + start) * width + end
    if position.size > 1 and (np.diff(position) < 0).any():
        by_position = np.argsort(position, kind="stable")
        window, start, end, score = (a[by_position] for a in (window, start, end, score))
    # One stable sort on (example, descending score) packed into a uint64.
    ex = example_index[window]
    order = _stable_argsort((ex.astype(np.uint64) << np.uint64(32)) | _descending_order(score).astype(np.uint64))
    window, start, end, score, ex = (a[order] for a in (window, start, end, score, ex))
    first = np.ones(len(ex), dtype=bool)
    first[1:] = ex[1:] != ex[:-1]
    group_start = np.flatnonzero(first)
    keep = np.arange(len(ex)) - group_start[np.cumsum(first) - 1] < n_best
    window, start, end, ex, score = window[keep], start[keep], end[keep], ex[keep], score[keep]

    best_at = np.searchsorted(ex, np.arange(n_examples + 1))  # group bounds in the kept entries
    has_span = best_at[1:] > best_at[:-1]
    top = best_at[:-1][has_span]
    answered = np.flatnonzero(has_span)
    best_score = np.full(n_examples, -np.inf)
    best_score[answered] = score[top]
    # Example null = MIN over its windows: a window that does not contain the answer is trained to
    # point at CLS, so its null is always high; one window that sees the answer is enough to answer.
    null = np.full(n_examples, np.inf)
    np.minimum.at(null, example_index, np.asarray(cands.null, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        score_diff = np.where(np.isfinite(best_score), null - best_score, np.inf)
    na_prob = np.exp(-np.logaddexp(0.0, -score_diff))  # sigmoid without overflow

    # Examples without a span keep the empty char range [0, 0).
    char_start = np.zeros(n_examples, dtype=np.int64)
    char_end = np.zeros(n_examples, dtype=np.int64)
    char_start[answered] = offsets[window[top], start[top], 0]
    char_end[answered] = offsets[window[top], end[top], 1]
    texts = [c[a:b] for c, a, b in zip(contexts, char_start.tolist(), char_end.tolist(), strict=True)]
    probs = na_prob.tolist()
    return Predictions(
        answers={e: decide_answer(t, p, na_prob_thresh) for e, t, p in zip(example_ids, texts, probs, strict=True)},
        best_span=dict(zip(example_ids, texts, strict=True)),
        score_diff=dict(zip(example_ids, score_diff.tolist(), strict=True)),
        na_prob=dict(zip(example_ids, probs, strict=True)),
        best_start=dict(zip(example_ids, char_start.tolist(), strict=True)),
        nbest_source=NBestArrays(
            example_ids=example_ids,
            contexts=contexts,
            bounds=best_at,
            example=ex,
            score=score,
            window=window,
            start=start,
            end=end,
            offsets=offsets,
        ),
    )
