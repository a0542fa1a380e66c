"""Per-window span candidates → one answer per example, shared by the plain and the CRF head.

Both heads hand over `WindowCandidates` (spans with scores, and a null score per window); `select_answers`
pools every window of an example and decides between the best span and "no answer". Everything is
vectorised over all windows at once; Python only builds the answer strings and the per-example dicts.
The n-best lists stay arrays until `Predictions.nbest` is first read (writing nbest_predictions.json):
~10^5 small dicts cost more than all the rest, and most evaluations never look at them.

Tie rule (the reference loop in `spanqa.benchmarks.postprocess` uses the same one): a window's top-n
logits are its n largest, ties going to the lower token index (a stable sort); an example's candidates
rank by score, ties going to the earlier window, then the earlier start token, then the earlier end.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class WindowCandidates:
    start: np.ndarray  # (N, K) int64 token index, -1 = no candidate
    end: np.ndarray  # (N, K) int64 token index (inclusive), -1 = no candidate
    score: np.ndarray  # (N, K) float32 span score (higher = better), -inf for no candidate
    null: np.ndarray  # (N,) float32 the window's null (no-answer) score


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


@dataclass
class Predictions:
    answers: dict[str, str]  # example id -> answer after the threshold ("" = no answer)
    best_span: dict[str, str]  # example id -> best non-null span text, even when null wins
    score_diff: dict[str, float]  # null - best span score (the SQuAD 2 reference's null odds)
    na_prob: dict[str, float]  # sigmoid(score_diff)
    nbest_source: dict[str, list[dict]] | NBestArrays = field(repr=False)

    @cached_property
    def nbest(self) -> dict[str, list[dict]]:
        """{"text", "score", "probability", "start", "end"} per candidate, best first; built when first read."""
        source = self.nbest_source
        return source if isinstance(source, dict) else source.to_dicts()


def _check_windows(name: str, arr: np.ndarray, n_windows: int, ndim: int) -> None:
    if arr.ndim != ndim or arr.shape[0] != n_windows:
        raise ValueError(f"{name} has shape {arr.shape}; expected {ndim} dims with {n_windows} windows first")


def _top_n_sorted(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`_top_n` by a full row sort (numpy's SIMD float sort beats a partition here); the sorted
    neighbours show at once which rows have a tie at the cut."""
    rows, width = x.shape
    if n >= width:
        return np.broadcast_to(np.arange(width), (rows, width)).copy(), x.copy()
    ordered = np.sort(x, axis=1)
    if rows and np.isnan(ordered[:, -1]).any():  # NaN sorts last
        raise ValueError("logits contain NaN; expected finite values (padding may use -100)")
    kth = ordered[:, width - n, None]
    keep = x >= kth
    tied_rows = np.flatnonzero(ordered[:, width - n - 1] == ordered[:, width - n])
    if tied_rows.size:
        sub, sub_kth = x[tied_rows], kth[tied_rows]
        above = sub > sub_kth
        tied = sub == sub_kth
        room = n - np.count_nonzero(above, axis=1)[:, None]
        keep[tied_rows] = above | (tied & (np.cumsum(tied, axis=1) <= room))
    # flatnonzero is row-major, so each row's n indices come out contiguous and ascending.
    flat = np.flatnonzero(keep)
    return flat.reshape(rows, n) - (np.arange(rows) * width)[:, None], x.reshape(-1)[flat].reshape(rows, n)


def _top_n(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) → the (N, n) column indices, ascending, of each row's n largest values, and those values.

    Ties at the n-th value go to the lowest indices, so the set equals a stable argsort of -x cut at n
    (the reference loop's rule). For wide float32 rows only 4n values per row are sorted: the n largest
    values (and every value tied with the n-th) lie in the n groups of 4 consecutive columns with the
    largest maxima, because those n maxima are distinct values >= the n-th largest. Rows whose n-th and
    (n+1)-th group maxima tie take the full sort.
    """
    rows, width = x.shape
    n_groups = width // 4
    if x.dtype != np.float32 or width % 4 or n_groups < 4 * n:  # few groups to skip: not worth the detour
        return _top_n_sorted(x, n)
    x = np.ascontiguousarray(x)
    # Max over column pairs, twice: viewing pairs of float32 as one complex64 keeps every read contiguous.
    half = x.view(np.complex64)
    half = np.maximum(half.real, half.imag).view(np.complex64)
    group_max = np.maximum(half.real, half.imag)  # (rows, n_groups)
    ordered = np.sort(group_max, axis=1)
    if rows and np.isnan(ordered[:, -1]).any():  # a NaN makes its group's max NaN, which sorts last
        raise ValueError("logits contain NaN; expected finite values (padding may use -100)")
    chosen = group_max >= ordered[:, n_groups - n, None]
    tied_rows = np.flatnonzero(ordered[:, n_groups - n - 1] == ordered[:, n_groups - n])
    chosen[tied_rows] = np.arange(n_groups) < n  # placeholder groups; these rows are redone below
    groups = np.flatnonzero(chosen)  # row * n_groups + group, each row's n groups ascending
    # Gather the chosen groups as whole 16-byte items; their columns stay in ascending order.
    subset = np.take(x.view(np.complex128).reshape(-1), groups).view(np.float32).reshape(rows, 4 * n)
    pos, values = _top_n_sorted(subset, n)  # pos: group rank * 4 + column in the group
    group_col = groups.reshape(rows, n) - (np.arange(rows) * n_groups)[:, None]
    top = group_col.reshape(-1)[(np.arange(rows) * n)[:, None] + (pos >> 2)] * 4 + (pos & 3)
    if tied_rows.size:
        top[tied_rows], values[tied_rows] = _top_n_sorted(x[tied_rows], n)
    return top, values


def top_n_indices(x: np.ndarray, n: int) -> np.ndarray:
    """(N, L) → (N, min(n, L)) column indices, in ascending order, of each row's n largest values; ties at
    the n-th value go to the lowest indices (the set a stable argsort of -x cut at n gives)."""
    return _top_n(np.asarray(x), n)[0]


def span_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int,
    max_answer_length: int,
    offsets: np.ndarray,
    max_context: np.ndarray,
) -> WindowCandidates:
    """Top-n_best starts × top-n_best ends per window, filtered like the reference.

    Only the valid pairs are returned: K is the largest number of them in one window (at least 1), rows
    padded with "no candidate". Within a window they are ordered by start token, then end token. Logits
    may be wider than `offsets` (the Trainer pads with -100): the top-n is taken over all logit positions,
    as in the reference, and positions past the offsets are then rejected.
    """
    start_logits = np.asarray(start_logits, dtype=np.float32)
    end_logits = np.asarray(end_logits, dtype=np.float32)
    offsets = np.asarray(offsets)
    max_context = np.asarray(max_context, dtype=bool)
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best={n_best} and max_answer_length={max_answer_length} must both be >= 1")
    if start_logits.ndim != 2:
        raise ValueError(f"start_logits has shape {start_logits.shape}; expected (windows, positions)")
    n_windows, n_logits = start_logits.shape
    if end_logits.shape != start_logits.shape:
        raise ValueError(f"end_logits has shape {end_logits.shape}; expected {start_logits.shape}")
    _check_windows("offsets", offsets, n_windows, 3)
    if max_context.shape != offsets.shape[:2]:
        raise ValueError(f"max_context has shape {max_context.shape}; expected {offsets.shape[:2]}")

    n = min(n_best, n_logits)
    top_start, start_score = _top_n(start_logits, n)
    top_end, end_score = _top_n(end_logits, n)

    # Starts: inside the offsets, max-context and a context token. The small max-context mask is read
    # first, so that only its survivors touch the large offsets array (random reads there cost the most).
    width = offsets.shape[1]
    char_start = offsets.reshape(-1, 2)[:, 0]
    s_pos = (np.arange(n_windows) * width)[:, None] + np.minimum(top_start, width - 1)
    valid_start = np.flatnonzero((top_start < width) & max_context.reshape(-1)[s_pos])  # window * n + rank
    valid_start = valid_start[char_start[s_pos.reshape(-1)[valid_start]] >= 0]

    # Pair each valid start with its window's n ends; end - start in [0, max_answer_length) is one unsigned
    # comparison per pair, on int16 for any realistic width. Spans are shorter than n_logits, so the limit
    # can be cut to that, which keeps every negative difference (read as unsigned) above it.
    small, unsigned = (np.int16, np.uint16) if n_logits < 2**15 else (np.int32, np.uint32)
    limit = min(max_answer_length, n_logits)
    span = top_end.astype(small)[valid_start // n] - top_start.reshape(-1)[valid_start].astype(small)[:, None]
    hit = np.flatnonzero(span.reshape(-1).view(unsigned) < limit)
    s_flat = valid_start[hit // n]
    window = s_flat // n
    e_flat = window * n + hit % n
    e_tok = top_end.reshape(-1)[e_flat]
    # Ends: inside the offsets and a context token (checked on the few pairs left).
    end_ok = (e_tok < width) & (char_start[window * width + np.minimum(e_tok, width - 1)] >= 0)
    s_flat, e_flat, window, e_tok = s_flat[end_ok], e_flat[end_ok], window[end_ok], e_tok[end_ok]

    # Compact: slot j of window w holds its j-th valid pair (windows come out in order).
    per_window = np.bincount(window, minlength=n_windows)
    k = max(int(per_window.max(initial=0)), 1)
    slot = window * k + np.arange(len(window)) - (np.cumsum(per_window) - per_window)[window]
    start = np.full((n_windows, k), -1, dtype=np.int64)
    end = np.full((n_windows, k), -1, dtype=np.int64)
    score = np.full((n_windows, k), -np.inf, dtype=np.float32)
    start.reshape(-1)[slot] = top_start.reshape(-1)[s_flat]
    end.reshape(-1)[slot] = e_tok
    score.reshape(-1)[slot] = start_score.reshape(-1)[s_flat] + end_score.reshape(-1)[e_flat]
    null = start_logits[:, 0] + end_logits[:, 0]  # CLS sits at index 0
    return WindowCandidates(start=start, end=end, score=score, null=null)


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
        _check_windows(name, np.asarray(arr), n_windows, ndim)
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
    is_null = (na_prob > na_prob_thresh).tolist()
    return Predictions(
        answers={eid: "" if no else text for eid, text, no in zip(example_ids, texts, is_null, strict=True)},
        best_span=dict(zip(example_ids, texts, strict=True)),
        score_diff=dict(zip(example_ids, score_diff.tolist(), strict=True)),
        na_prob=dict(zip(example_ids, na_prob.tolist(), strict=True)),
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
