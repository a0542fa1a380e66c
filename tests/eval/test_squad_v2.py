"""Hand-computed checks of the SQuAD v2 scorer against the official script's definitions."""

from __future__ import annotations

import logging
import re

import pytest

from spanqa.errors import DataError
from spanqa.eval.squad_v2 import (
    apply_no_answer_threshold,
    compute_exact,
    compute_f1,
    gold_from_squad_json,
    gold_texts,
    normalize_answer,
    squad_v2_scores,
)

# Two answerable and two unanswerable questions, reused below.
GOLD = {
    "q1": ["Denver Broncos", "the Broncos"],
    "q2": ["Santa Clara, California"],
    "q3": [],
    "q4": [],
}
PREDS = {"q1": "Broncos", "q2": "Santa Clara", "q3": "", "q4": "Levi's Stadium"}
# Raw per-question scores by hand:
#   q1: "Broncos" == normalize("the Broncos") -> EM 1, F1 1
#   q2: gold {santa, clara, california}, pred {santa, clara}: P = 1, R = 2/3 -> F1 = 0.8, EM 0
#   q3: "" vs "" -> EM 1, F1 1;  q4: non-empty vs "" -> EM 0, F1 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theory of the atheist", "theory of atheist"),  # articles only as whole words
        ("the-end", "theend"),  # punctuation goes before articles are matched
        ("  A  ", ""),
        ("Levi's Stadium.", "levis stadium"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_compute_exact_ignores_case_articles_and_punctuation() -> None:
    assert compute_exact("The Broncos!", "broncos") == 1
    assert compute_exact("Denver Broncos", "Broncos") == 0
    assert compute_exact("the", "") == 1


def test_compute_f1_partial_overlap() -> None:
    # gold tokens [cat, sat, on, mat], pred [cat, on, mat]: P = 3/3, R = 3/4 -> 2*0.75/1.75 = 6/7
    assert compute_f1("the cat sat on the mat", "a cat on a mat!") == pytest.approx(6 / 7)
    # repeated tokens count by multiplicity: common = min(2, 1) = 1, P = 1, R = 1/2 -> 2/3
    assert compute_f1("paris paris", "Paris") == pytest.approx(2 / 3)
    assert compute_f1("red car", "blue bike") == 0.0


def test_compute_f1_empty_answers() -> None:
    assert compute_f1("", "") == 1.0
    assert compute_f1("", "something") == 0.0
    assert compute_f1("something", "") == 0.0
    assert compute_f1("The", "a") == 1.0  # both normalise to no tokens


def test_gold_texts_drops_answers_that_normalise_to_empty() -> None:
    assert gold_texts(["the", "Broncos"]) == ["Broncos"]
    assert gold_texts([]) == [""]
    assert gold_texts(["."]) == [""]


def test_scores_without_na_probs() -> None:
    result = squad_v2_scores(GOLD, PREDS)
    s = result.scores
    assert list(s) == [
        "exact", "f1", "total",
        "HasAns_exact", "HasAns_f1", "HasAns_total",
        "NoAns_exact", "NoAns_f1", "NoAns_total",
        "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
    ]  # fmt: skip
    assert s["exact"] == pytest.approx(50.0)  # (1 + 0 + 1 + 0) / 4
    assert s["f1"] == pytest.approx(70.0)  # (1 + 0.8 + 1 + 0) / 4
    assert s["total"] == 4
    assert s["HasAns_exact"] == pytest.approx(50.0)
    assert s["HasAns_f1"] == pytest.approx(90.0)
    assert s["HasAns_total"] == 2
    assert (s["NoAns_exact"], s["NoAns_f1"], s["NoAns_total"]) == (
        pytest.approx(50.0),
        pytest.approx(50.0),
        2,
    )
    # All probabilities 0.0, swept in prediction order from 2 (abstain everywhere):
    # exact 2 -> 3 (q1) -> 3 -> 3 -> 2 (q4 answers wrongly); f1 2 -> 3 -> 3.8 -> 3.8 -> 2.8
    assert s["best_exact"] == pytest.approx(75.0)
    assert s["best_f1"] == pytest.approx(95.0)
    assert s["best_exact_thresh"] == 0.0
    assert s["best_f1_thresh"] == 0.0
    assert result.exact_by_qid == {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 0.0}
    assert result.f1_by_qid == pytest.approx({"q1": 1.0, "q2": 0.8, "q3": 1.0, "q4": 0.0})


def test_multiple_gold_answers_take_the_max() -> None:
    gold = {"q": ["Denver Broncos", "Broncos", "the Denver team"]}
    # EM: only "Broncos" matches. F1 vs "Denver Broncos": P = 1, R = 1/2 -> 2/3; vs "Broncos": 1.
    result = squad_v2_scores(gold, {"q": "the broncos"})
    assert result.exact_by_qid["q"] == 1.0
    # "denver" alone: vs "Denver Broncos" P = 1, R = 1/2 -> 2/3; vs "the Denver team" R = 1/2 -> 2/3.
    result = squad_v2_scores(gold, {"q": "Denver"})
    assert result.exact_by_qid["q"] == 0.0
    assert result.f1_by_qid["q"] == pytest.approx(2 / 3)


def test_empty_normalised_gold_answer_is_not_a_free_match() -> None:
    result = squad_v2_scores({"q": ["the", "Broncos"]}, {"q": ""})
    assert result.exact_by_qid["q"] == 0.0
    assert result.scores["HasAns_total"] == 1


def test_threshold_turns_predictions_into_no_answer() -> None:
    na = {"q1": 0.1, "q2": 0.7, "q3": 0.9, "q4": 0.8}
    result = squad_v2_scores(GOLD, PREDS, na, na_prob_thresh=0.5)
    # q2, q3, q4 exceed 0.5 and count as "": q2 (answerable) -> 0, q3 and q4 (unanswerable) -> 1
    assert result.exact_by_qid == {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 1.0}
    assert result.f1_by_qid == {"q1": 1.0, "q2": 0.0, "q3": 1.0, "q4": 1.0}
    assert result.scores["exact"] == pytest.approx(75.0)
    assert result.scores["NoAns_exact"] == pytest.approx(100.0)
    assert result.scores["HasAns_f1"] == pytest.approx(50.0)
    # The comparison is strict: a probability equal to the threshold keeps the prediction.
    kept = squad_v2_scores(GOLD, PREDS, na, na_prob_thresh=0.8)
    assert kept.exact_by_qid["q4"] == 0.0


def test_apply_no_answer_threshold_directly() -> None:
    out = apply_no_answer_threshold({"a": 0.5, "b": 0.0}, {"a": 0.9, "b": 0.9}, {"a": True, "b": False}, 0.5)
    assert out == {"a": 0.0, "b": 1.0}


def test_best_thresholds_differ_for_exact_and_f1() -> None:
    na = {"q1": 0.1, "q2": 0.2, "q3": 0.9, "q4": 0.8}
    s = squad_v2_scores(GOLD, PREDS, na).scores
    # Sweep order q1 (.1), q2 (.2), q4 (.8), q3 (.9), starting at 2 correct abstentions:
    # exact: 3 @ .1, 3, 2, 2 -> best 3/4 at .1;  f1: 3 @ .1, 3.8 @ .2, 2.8, 2.8 -> best 3.8/4 at .2
    assert s["best_exact"] == pytest.approx(75.0)
    assert s["best_exact_thresh"] == pytest.approx(0.1)
    assert s["best_f1"] == pytest.approx(95.0)
    assert s["best_f1_thresh"] == pytest.approx(0.2)
    # Thresholding at the reported optimum reproduces the best score.
    at_best = squad_v2_scores(GOLD, PREDS, na, na_prob_thresh=s["best_f1_thresh"]).scores
    assert at_best["f1"] == pytest.approx(s["best_f1"])


def test_best_threshold_stays_zero_when_abstaining_everywhere_wins() -> None:
    gold = {"a": ["Paris"], "u": []}
    s = squad_v2_scores(gold, {"a": "London", "u": "Rome"}, {"a": 0.3, "u": 0.6}).scores
    # Start 1 (u abstains correctly); a adds 0 -> 1 (no strict gain); u answers wrongly -> 0.
    assert s["best_exact"] == pytest.approx(50.0)
    assert s["best_exact_thresh"] == 0.0


def test_splits_present_only_when_non_empty() -> None:
    s = squad_v2_scores({"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}).scores
    assert "HasAns_total" in s
    assert not any(k.startswith("NoAns") for k in s)
    s = squad_v2_scores({"u": []}, {"u": ""}).scores
    assert "NoAns_total" in s
    assert not any(k.startswith("HasAns") for k in s)


def test_missing_and_extra_predictions(caplog: pytest.LogCaptureFixture) -> None:
    preds = {"q1": "Broncos", "q3": "", "unknown": "ignored"}
    with caplog.at_level(logging.WARNING, logger="spanqa.eval.squad_v2"):
        result = squad_v2_scores(GOLD, preds)
    assert "Missing prediction for 2 of 4 questions: q2, q4" in caplog.text
    assert result.scores["total"] == 2
    assert result.scores["HasAns_total"] == 1
    assert result.scores["exact"] == pytest.approx(100.0)
    assert set(result.exact_by_qid) == {"q1", "q3"}


def test_every_prediction_missing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no prediction for any of the 4 gold questions"):
        squad_v2_scores(GOLD, {"other": "x"})


def test_na_probs_must_cover_predicted_questions() -> None:
    with pytest.raises(ValueError, match="lack 1 predicted question"):
        squad_v2_scores(GOLD, PREDS, {"q1": 0.0, "q2": 0.0, "q3": 0.0})


def test_gold_from_squad_json() -> None:
    dataset = {
        "version": "v2.0",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Denver Broncos won.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "Who won?",
                                "answers": [{"text": "Denver Broncos", "answer_start": 0}],
                                "is_impossible": False,
                            },
                            {"id": "b", "question": "Who lost?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    assert gold_from_squad_json(dataset) == {"a": ["Denver Broncos"], "b": []}


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"version": "v2.0"}, "gold: not in SQuAD format (expected an object with a 'data' list of articles)"),
        ({"data": [{"title": "T"}]}, "gold: not in SQuAD format: data[0] has no 'paragraphs' list"),
        (
            {"data": [{"paragraphs": [{"context": "c"}]}]},
            "gold: not in SQuAD format: data[0].paragraphs[0] has no 'qas'",
        ),
        ({"data": [{"paragraphs": [{"qas": [{"answers": []}]}]}]}, "a question in data[0].paragraphs[0] has no 'id'"),
        (
            {"data": [{"paragraphs": [{"qas": [{"id": "x", "answers": [{"t": 1}]}]}]}]},
            "gold: question 'x' needs 'answers': a list of {text, answer_start}",
        ),
        ({"data": [{"paragraphs": [{"qas": [{"id": "x", "answers": []}] * 2}]}]}, "gold: duplicate question id 'x'"),
        ({"data": []}, "gold: holds no questions"),
    ],
)
def test_gold_from_squad_json_rejects_malformed(dataset: dict, message: str) -> None:
    """The official script reads only ids and answer texts: no context or question is required here."""
    with pytest.raises(DataError, match=re.escape(message)):
        gold_from_squad_json(dataset)


def test_the_evaluate_metric_module_scores_exactly_as_the_scorer(tmp_path) -> None:
    """`evaluate.load` of the shipped module directory works offline and returns the scorer's own dict."""
    import random

    import evaluate

    from spanqa.eval.squad_v2 import METRIC_DIR

    rng = random.Random(0)
    words = ["Paris", "the river Seine", "1889", "Gustave Eiffel", ""]
    references, predictions = [], []
    for i in range(60):
        gold = rng.sample(words[:-1], k=rng.randint(0, 2))
        references.append({"id": f"q{i}", "answers": {"text": gold, "answer_start": [0] * len(gold)}})
        predictions.append({"id": f"q{i}", "prediction_text": rng.choice(words), "no_answer_probability": rng.random()})
    metric = evaluate.load(METRIC_DIR)
    for threshold in (1.0, 0.5):
        got = metric.compute(predictions=predictions, references=references, no_answer_threshold=threshold)
        expected = squad_v2_scores(
            {r["id"]: r["answers"]["text"] for r in references},
            {p["id"]: p["prediction_text"] for p in predictions},
            {p["id"]: p["no_answer_probability"] for p in predictions},
            threshold,
        ).scores
        assert got == expected
