"""Answer selection over all windows of a question: hand-made windows with known answers (decoded by the start/end
head), and the fast path against the reference loop."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from spanqa.benchmarks.postprocess import compare_predictions, fast_postprocess, make_inputs, reference_postprocess
from spanqa.eval.answers import NBestArrays, Predictions, select_answers
from spanqa.models.candidates import WindowCandidates
from spanqa.models.span_decoding import span_candidates
from tests.helpers import CONTEXT, FIRST, WORD_OFFSETS, window


def run(
    start: np.ndarray,
    end: np.ndarray,
    offsets: np.ndarray,
    max_context: np.ndarray,
    example_index: list[int],
    n_best: int = 20,
    max_len: int = 30,
    thresh: float = 0.5,
) -> Predictions:
    """Fast path on one example's windows, checked against the reference loop on the way."""
    start, end = np.asarray(start, np.float32), np.asarray(end, np.float32)
    index = np.asarray(example_index)
    cands = span_candidates(start, end, n_best, max_len, offsets, max_context)
    preds = select_answers(cands, index, offsets, [CONTEXT], ["e0"], n_best, thresh)
    ref = reference_postprocess(start, end, offsets, max_context, index, [CONTEXT], ["e0"], n_best, max_len, thresh)
    assert compare_predictions(preds, ref) == []
    return preds


def text(first: int, last: int) -> str:
    return CONTEXT[WORD_OFFSETS[first][0] : WORD_OFFSETS[last][1]]


def two_windows(width: int = 11):
    """Words 0-4 in window A and 3-7 in window B; by the BERT rule words 0-3 are max-context in A
    (word 3: min(3, 1) + 0.05 beats min(0, 4) + 0.05) and words 4-7 in B."""
    off_a, max_a = window(0, 5, width, [True, True, True, True, False])
    off_b, max_b = window(3, 5, width, [False, True, True, True, True])
    return np.stack([off_a, off_b]), np.stack([max_a, max_b])


def test_answer_seen_only_by_second_window_wins_over_first_windows_null():
    offsets, max_context = two_windows()
    start = np.zeros((2, 11))
    end = np.zeros((2, 11))
    start[0, 0] = end[0, 0] = 5.0  # window A points at CLS: null 10
    start[1, 0] = end[1, 0] = -2.0  # window B: null -4
    start[1, FIRST + 3] = 4.0  # word 6
    end[1, FIRST + 4] = 4.0  # word 7
    preds = run(start, end, offsets, max_context, [0, 0])
    assert preds.answers["e0"] == text(6, 7) == "eta theta"
    # The example's null is the minimum over windows (-4), so score_diff = -4 - 8.
    assert preds.score_diff["e0"] == pytest.approx(-12.0)
    assert preds.na_prob["e0"] == pytest.approx(1 / (1 + math.exp(12.0)))


def test_better_span_in_window_without_max_context_is_ignored():
    offsets, max_context = two_windows()
    start = np.full((2, 11), -5.0)
    end = np.full((2, 11), -5.0)
    start[0, FIRST + 4] = end[0, FIRST + 4] = 9.0  # word 4 in A, where it lacks max context: 18
    start[1, FIRST + 1] = end[1, FIRST + 1] = 3.0  # word 4 in B, its max-context window: 6
    preds = run(start, end, offsets, max_context, [0, 0])
    assert preds.best_span["e0"] == "epsilon"
    assert preds.nbest["e0"][0]["score"] == pytest.approx(6.0)
    assert max(entry["score"] for entry in preds.nbest["e0"]) == pytest.approx(6.0)


def test_only_the_start_token_needs_max_context():
    offsets, max_context = two_windows()
    start = np.full((2, 11), -5.0)
    end = np.full((2, 11), -5.0)
    start[0, FIRST + 3] = 4.0  # word 3, max-context in A
    end[0, FIRST + 4] = 4.0  # word 4, not max-context in A: still a valid end
    assert run(start, end, offsets, max_context, [0, 0]).answers["e0"] == "delta epsilon"


def test_null_wins_when_it_outscores_the_best_span_and_the_threshold_flips_it():
    offsets, max_context = window(0, 8, 14)
    start = np.full((1, 14), -1.0)
    end = np.full((1, 14), -1.0)
    start[0, 0] = end[0, 0] = 3.0  # null 6
    start[0, FIRST + 2] = end[0, FIRST + 2] = 2.0  # "gamma": 4
    args = (start, end, offsets[None], max_context[None], [0])
    preds = run(*args)
    assert preds.answers["e0"] == ""
    assert preds.best_span["e0"] == "gamma"
    assert preds.score_diff["e0"] == pytest.approx(2.0)
    assert preds.na_prob["e0"] == pytest.approx(1 / (1 + math.exp(-2.0)))  # 0.881
    assert run(*args, thresh=0.9).answers["e0"] == "gamma"


def test_spans_outside_the_context_too_long_or_reversed_are_never_chosen():
    width = 14  # 8 words at 4..11, [SEP] at 12, padding at 13
    offsets, max_context = window(0, 8, width)
    start = np.full((1, width), -10.0)
    end = np.full((1, width), -20.0)
    start[0, 0] = end[0, 0] = -50.0  # null -100
    start[0, 1], end[0, 1] = 100.0, 100.0  # question token
    start[0, 13], end[0, 13] = 95.0, 95.0  # padding
    start[0, FIRST + 5], end[0, FIRST + 2] = 80.0, 60.0  # word 5 → word 2: end before start
    start[0, FIRST + 0], end[0, FIRST + 7] = 70.0, 50.0  # word 0 → word 7: too long for max_len 2
    end[0, FIRST + 6] = -15.0
    preds = run(start, end, offsets[None], max_context[None], [0], max_len=2)
    # Best legal span: start word 5 (80) with end word 6 (-15) = 65.
    assert preds.answers["e0"] == "zeta eta"
    assert preds.nbest["e0"][0]["score"] == pytest.approx(65.0)
    for entry in preds.nbest["e0"]:
        words = [i for i, (lo, hi) in enumerate(WORD_OFFSETS) if lo >= entry["start"] and hi <= entry["end"]]
        assert 1 <= len(words) <= 2 and CONTEXT[entry["start"] : entry["end"]] == entry["text"]

    # With n_best 3 the top starts are {question, padding, word 5} and the top ends {question, padding,
    # word 2}: no legal pair survives, so the example has no candidate at all.
    cands = span_candidates(start, end, 3, 2, offsets[None], max_context[None])
    assert cands.start.shape == (1, 1) and (cands.start == -1).all() and np.isneginf(cands.score).all()
    none = run(start, end, offsets[None], max_context[None], [0], n_best=3, max_len=2)
    assert (none.answers["e0"], none.best_span["e0"], none.nbest["e0"]) == ("", "", [])
    assert none.score_diff["e0"] == math.inf and none.na_prob["e0"] == 1.0


def test_nbest_is_sorted_capped_and_its_probabilities_are_a_softmax():
    inputs = make_inputs(60, seed=3)
    cands = span_candidates(inputs.start_logits, inputs.end_logits, 20, 30, inputs.offsets, inputs.max_context)
    preds = select_answers(cands, inputs.example_index, inputs.offsets, inputs.contexts, inputs.example_ids, n_best=4)
    assert any(len(group) == 4 for group in preds.nbest.values())
    for eid, group in preds.nbest.items():
        assert len(group) <= 4
        if not group:
            continue
        scores = np.array([entry["score"] for entry in group])
        probs = np.array([entry["probability"] for entry in group])
        assert (np.diff(scores) <= 0).all()
        assert probs.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(probs, np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum())
        assert preds.best_span[eid] == group[0]["text"]


def test_select_answers_takes_any_k_in_any_order():
    # CRF-style candidates: null 0, K = 3, windows of example 0 and 1 interleaved, candidates unsorted.
    offsets = np.stack([window(0, 8, 14)[0]] * 3)
    cands = WindowCandidates(
        start=np.array([[FIRST + 6, FIRST + 1, -1], [FIRST + 2, -1, FIRST + 0], [-1, FIRST + 3, FIRST + 5]]),
        end=np.array([[FIRST + 6, FIRST + 2, -1], [FIRST + 2, -1, FIRST + 0], [-1, FIRST + 4, FIRST + 5]]),
        score=np.array([[2.0, 2.0, -np.inf], [1.0, -np.inf, -3.0], [-np.inf, 2.0, 0.5]], dtype=np.float32),
        null=np.zeros(3, dtype=np.float32),
    )
    ids = ["a", "b", "c"]  # "c" has no window at all
    preds = select_answers(cands, np.array([1, 0, 1]), offsets, [CONTEXT] * 3, ids, n_best=3)
    assert (preds.answers["c"], preds.na_prob["c"], preds.nbest["c"]) == ("", 1.0, [])
    assert preds.answers["a"] == "gamma"
    assert preds.score_diff["a"] == pytest.approx(-1.0)
    # Example "b": three spans score 2.0; ties go to the earlier window, then the earlier start.
    assert [entry["text"] for entry in preds.nbest["b"]] == ["beta gamma", "eta", "delta epsilon"]
    assert [entry["probability"] for entry in preds.nbest["b"]] == pytest.approx([1 / 3] * 3)


def test_nbest_stays_arrays_until_read_and_then_serialises():
    offsets, max_context = window(0, 8, 14)
    start = np.full((1, 14), -5.0)
    end = np.full((1, 14), -5.0)
    start[0, FIRST + 1] = start[0, FIRST + 3] = 1.0  # top-2 starts: beta, delta
    end[0, FIRST + 1], end[0, FIRST + 4] = 2.0, 1.0  # top-2 ends: beta, epsilon
    cands = span_candidates(start, end, 2, 30, offsets[None], max_context[None])
    preds = select_answers(cands, np.array([0]), offsets[None], [CONTEXT], ["e0"], n_best=3)
    assert isinstance(preds.nbest_source, NBestArrays) and "nbest" not in vars(preds)
    assert preds.answers == {"e0": "beta"}
    entries = preds.nbest["e0"]
    assert [(e["text"], e["score"], e["start"], e["end"]) for e in entries] == [
        ("beta", 3.0, 6, 10),
        ("beta gamma delta epsilon", 2.0, 6, 30),  # ties with the next: the earlier start goes first
        ("delta epsilon", 2.0, 17, 30),
    ]
    total = math.exp(0) + 2 * math.exp(-1)
    assert [e["probability"] for e in entries] == pytest.approx([1 / total, math.exp(-1) / total, math.exp(-1) / total])
    assert preds.nbest is preds.nbest  # built once
    assert json.loads(json.dumps(preds.nbest)) == {"e0": entries}
    # A prebuilt dict (the reference loop's) is handed back as it is.
    given = {"e0": entries}
    assert Predictions({}, {}, {}, {}, given).nbest is given


@pytest.mark.parametrize("variant", ["random", "ties", "logits_wider", "offsets_wider"])
def test_fast_path_equals_reference_loop(variant: str):
    inputs = make_inputs(150, seed=7, max_length=128, doc_stride=48)
    if variant == "ties":  # integer logits: ties between spans, windows and top-n positions
        inputs.start_logits = np.round(inputs.start_logits * 2).astype(np.float32)
        inputs.end_logits = np.round(inputs.end_logits * 2).astype(np.float32)
    elif variant == "logits_wider":  # the Trainer pads logits of shorter batches with -100
        pad = np.full((len(inputs.start_logits), 16), -100.0, dtype=np.float32)
        inputs.start_logits = np.concatenate([inputs.start_logits, pad], axis=1)
        inputs.end_logits = np.concatenate([inputs.end_logits, pad], axis=1)
    elif variant == "offsets_wider":  # features padded further than the logits
        inputs.offsets = np.concatenate([inputs.offsets, np.full((len(inputs.offsets), 16, 2), -1)], axis=1)
        inputs.max_context = np.pad(inputs.max_context, ((0, 0), (0, 16)))
    assert (np.bincount(inputs.example_index) > 1).any()  # some examples span several windows
    fast = fast_postprocess(inputs, n_best=20, max_answer_length=30)
    ref = reference_postprocess(
        inputs.start_logits, inputs.end_logits, inputs.offsets, inputs.max_context, inputs.example_index,
        inputs.contexts, inputs.example_ids, 20, 30,
    )  # fmt: skip
    assert compare_predictions(fast, ref) == []
    assert {"", *fast.answers.values()} != {""}  # some questions are answered


def test_bad_input_is_rejected_with_the_offending_value():
    offsets, max_context = window(0, 8, 14)
    with pytest.raises(ValueError, match="max_answer_length=0"):
        span_candidates(np.zeros((1, 14)), np.zeros((1, 14)), 20, 0, offsets[None], max_context[None])
    cands = span_candidates(np.zeros((1, 14)), np.zeros((1, 14)), 20, 30, offsets[None], max_context[None])
    with pytest.raises(ValueError, match=re.escape("example_index spans 3..3")):
        select_answers(cands, np.array([3]), offsets[None], [CONTEXT], ["e0"])
