"""The start/end head's decoding: top-n with its tie rule, and the span filter."""

from __future__ import annotations

import numpy as np
import pytest

from spanqa.models.span_decoding import span_candidates, top_n_indices
from tests.helpers import window


def test_top_n_indices_breaks_ties_toward_lower_indices():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(50, 40)).astype(np.float32)  # ties everywhere
    for n in (1, 7, 40):
        expected = np.sort(np.argsort(-x, axis=1, kind="stable")[:, :n], axis=1)
        np.testing.assert_array_equal(top_n_indices(x, n), expected)
    with pytest.raises(ValueError, match="NaN"):
        top_n_indices(np.array([[1.0, np.nan, 2.0]], dtype=np.float32), 2)


def stable_top_n(x: np.ndarray, n: int) -> np.ndarray:
    return np.sort(np.argsort(-x, axis=1, kind="stable")[:, :n], axis=1)


def test_top_n_indices_on_wide_rows_matches_a_stable_sort_including_ties_at_the_group_cut():
    # 384 columns: the path that sorts only the 4n values of the n groups of 4 with the largest maxima.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 384), dtype=np.float32)
    x[:50] = np.round(x[:50] * 2)  # ties everywhere, also between group maxima at the cut
    x[50:60, 200:] = -100.0  # Trainer padding
    x[60] = 0.0  # one value everywhere
    # Row 61: 30 groups share the max 5.0, so the n-th and (n+1)-th group maxima tie; the 20 winners are
    # the first 20 of those 5.0 values, in column order.
    x[61] = -1.0
    x[61, np.arange(30) * 12 + 1] = 5.0
    for n in (1, 20):
        np.testing.assert_array_equal(top_n_indices(x, n), stable_top_n(x, n))
    np.testing.assert_array_equal(top_n_indices(x[61:62], 20)[0], np.arange(20) * 12 + 1)
    # float64 rows take the full sort and give the same answer.
    np.testing.assert_array_equal(top_n_indices(x.astype(np.float64), 20), stable_top_n(x, 20))
    x[7, 333] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        top_n_indices(x, 20)


def test_span_candidates_returns_only_valid_pairs_ordered_by_start_then_end():
    # One window, words 0-7 at tokens 4-11. Top-3 starts {4, 6, 9} (words 0, 2, 5), top-3 ends {5, 9, 1};
    # end 1 is a question token. Valid with max_len 4: (4, 5), (6, 5) no (reversed), (6, 9), (9, 9).
    offsets, max_context = window(0, 8, 14)
    start = np.full((1, 14), -5.0, dtype=np.float32)
    end = np.full((1, 14), -5.0, dtype=np.float32)
    start[0, [4, 6, 9]] = [3.0, 2.0, 1.0]
    end[0, [5, 9, 1]] = [1.5, 0.5, 9.0]
    start[0, 0] = end[0, 0] = 0.25  # CLS: 4th of both lists
    cands = span_candidates(start, end, 3, 4, offsets[None], max_context[None])
    assert cands.start.tolist() == [[4, 6, 9]] and cands.end.tolist() == [[5, 9, 9]]
    assert cands.score.tolist() == [[4.5, 2.5, 1.5]] and cands.null.tolist() == [0.5]
    # No length limit in practice: (4, 9) joins, the reversed (6, 5) still does not.
    unlimited = span_candidates(start, end, 3, 10**6, offsets[None], max_context[None])
    assert unlimited.start.tolist() == [[4, 4, 6, 9]] and unlimited.end.tolist() == [[5, 9, 9, 9]]
    # A second window with a single pair: K stays the largest count, the short row is padded.
    two = span_candidates(
        np.concatenate([start, start]), np.concatenate([end, end]), 3, 4,
        np.stack([offsets, offsets]), np.stack([max_context, np.arange(14) == 9]),
    )  # fmt: skip
    assert two.start.tolist() == [[4, 6, 9], [9, -1, -1]] and two.end.tolist() == [[5, 9, 9], [9, -1, -1]]
    assert two.score[1, 0] == 1.5 and np.isneginf(two.score[1, 1:]).all()
