"""The start/end head's decoding: per window, the top-n start logits × the top-n end logits → candidate spans that
lie in the context, start at a token this window sees with maximal context, and are at most max_answer_length long.

The CRF head decodes inside its model (`SpanBertCrfForQuestionAnswering.decode`); both hand `select_answers` the
same `WindowCandidates`.

Tie rule (the reference loop in `spanqa.benchmarks.postprocess` uses the same one): a window's top-n logits are its
n largest, ties going to the lower token index (a stable sort).
"""

from __future__ import annotations

import numpy as np

from spanqa.models.candidates import WindowCandidates, check_windows


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
    check_windows("offsets", offsets, n_windows, 3)
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
