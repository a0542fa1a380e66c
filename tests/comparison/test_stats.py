"""The statistics behind `make compare`, on cases whose answer is known by construction or by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spanqa.comparison import stats
from spanqa.rundir.record import NullThreshold, RunRecord


def test_bootstrap_identical_groups_has_no_difference() -> None:
    scores = np.random.default_rng(0).uniform(0, 100, size=200)
    result = stats.paired_bootstrap(scores, scores.copy(), n_resamples=2_000, seed=1)
    assert result.mean_diff == 0.0
    assert result.low <= 0.0 <= result.high
    assert result.p_value == 1.0
    assert (result.n_questions, result.n_resamples) == (200, 2_000)


def test_bootstrap_candidate_better_by_exactly_ten_everywhere() -> None:
    baseline = np.random.default_rng(0).uniform(0, 90, size=150)
    result = stats.paired_bootstrap(baseline, baseline + 10.0, n_resamples=10_000, seed=0)
    assert result.mean_diff == pytest.approx(10.0)
    assert result.low == pytest.approx(10.0) and result.high == pytest.approx(10.0)
    assert result.p_value == 0.0  # reported as < 1/B


def test_bootstrap_candidate_worse_everywhere_is_symmetric() -> None:
    baseline = np.full(50, 60.0)
    result = stats.paired_bootstrap(baseline, baseline - 5.0, n_resamples=1_000)
    assert result.mean_diff == pytest.approx(-5.0)
    assert result.high == pytest.approx(-5.0)
    assert result.p_value == 0.0


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    # With many questions the bootstrap distribution of the mean difference is ~ N(mean, sd/sqrt(n)).
    diff = np.random.default_rng(7).normal(1.0, 20.0, size=4_000)
    result = stats.paired_bootstrap(np.zeros_like(diff), diff, n_resamples=10_000, seed=3)
    se = diff.std() / math.sqrt(diff.size)
    assert result.mean_diff == pytest.approx(diff.mean())
    assert result.high - result.low == pytest.approx(2 * 1.96 * se, rel=0.06)
    assert result.low == pytest.approx(diff.mean() - 1.96 * se, abs=0.15 * se)
    # Two-sided p of a z-test: 2 * (1 - Phi(|z|)).
    z = abs(diff.mean()) / se
    p_normal = math.erfc(z / math.sqrt(2))
    assert result.p_value == pytest.approx(p_normal, abs=0.02)


def test_bootstrap_is_seeded_and_chunking_does_not_change_the_draws() -> None:
    rng = np.random.default_rng(11)
    base, cand = rng.uniform(0, 100, 300), rng.uniform(0, 100, 300)
    one = stats.paired_bootstrap(base, cand, n_resamples=1_234, seed=5, chunk=1_234)
    chunked = stats.paired_bootstrap(base, cand, n_resamples=1_234, seed=5, chunk=100)
    assert one == chunked
    assert stats.paired_bootstrap(base, cand, n_resamples=1_234, seed=6) != one


def test_bootstrap_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError):
        stats.paired_bootstrap([], [])


def test_mean_std_is_the_sample_std_and_ignores_missing() -> None:
    assert stats.mean_std([70.0, 72.0, 74.0, None]) == pytest.approx((72.0, 2.0))
    mean, std = stats.mean_std([70.0])
    assert mean == 70.0 and math.isnan(std)
    assert all(math.isnan(v) for v in stats.mean_std([]))


def test_seed_difference_paired_and_unpaired() -> None:
    paired = stats.seed_difference([(1, 50.0), (2, 52.0)], [(2, 55.0), (1, 51.0)])
    assert paired.paired
    assert paired.per_seed == {1: 1.0, 2: 3.0}
    assert (paired.diff, paired.spread) == pytest.approx((2.0, math.sqrt(2)))
    unpaired = stats.seed_difference([(1, 50.0), (2, 52.0)], [(3, 55.0), (4, 57.0)])
    assert not unpaired.paired
    # 56 - 51; stderr sqrt(2/2 + 2/2)
    assert (unpaired.diff, unpaired.spread) == pytest.approx((5.0, math.sqrt(2)))


@pytest.mark.parametrize(
    ("question", "word"),
    [
        ("What is the capital of France?", "what"),
        ("In which year did the war end?", "which"),
        ("The treaty was signed when?", "when"),
        ("Who wrote Les Misérables?", "who"),
        ("How many moons does Mars have?", "how"),
        ("Name the longest river.", "other"),
        ("WHERE is it?", "where"),
        ("Why what?", "why"),  # the first wh-word wins
    ],
)
def test_question_word(question: str, word: str) -> None:
    assert stats.question_word(question) == word


@pytest.mark.parametrize(
    ("gold", "bucket"),
    [
        ([], "unanswerable"),
        (["Paris"], "1"),
        (["Victor Hugo", "Hugo"], "2-3"),
        (["in 1990"], "2-3"),
        (["a b c d e f"], "4-6"),
        (["one two three four five six seven"], "7+"),
    ],
)
def test_answer_length_bucket(gold: list[str], bucket: str) -> None:
    assert stats.answer_length_bucket(gold) == bucket


# Six hand-made questions: which bucket each falls in and the abstention counts are worked out by hand.
TINY = {
    "q1": {"question": "What is the capital?", "gold": ["Paris"], "prediction": "Paris", "exact": 1.0, "f1": 1.0},
    "q2": {"question": "Who wrote it?", "gold": ["Victor Hugo"], "prediction": "", "exact": 0.0, "f1": 0.0},
    "q3": {"question": "In which year?", "gold": [], "prediction": "", "exact": 1.0, "f1": 1.0},
    "q4": {"question": "When was it?", "gold": ["in the year 1990"], "prediction": "1990", "exact": 0.0, "f1": 0.4},
    "q5": {"question": "Why is the sky green?", "gold": [], "prediction": "blue", "exact": 0.0, "f1": 0.0},
    "q6": {"question": "What colour?", "gold": ["dark red"], "prediction": "red", "exact": 0.0, "f1": 2 / 3},
}


def test_bucket_scores_by_question_word() -> None:
    by_word = stats.bucket_scores(TINY, lambda r: stats.question_word(r["question"]))
    assert set(by_word) == {"what", "who", "which", "when", "why"}
    n, em, f1 = by_word["what"]
    assert n == 2 and em == pytest.approx(50.0) and f1 == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert by_word["when"] == pytest.approx((1, 0.0, 40.0))


def test_bucket_scores_by_answer_length() -> None:
    by_length = stats.bucket_scores(TINY, lambda r: stats.answer_length_bucket(r["gold"]))
    assert by_length["unanswerable"] == pytest.approx((2, 50.0, 50.0))
    assert by_length["1"] == pytest.approx((1, 100.0, 100.0))
    assert by_length["2-3"] == pytest.approx((2, 0.0, 100 / 3))
    assert by_length["4-6"] == pytest.approx((1, 0.0, 40.0))


def test_unanswerable_precision_recall() -> None:
    # predicted "": q2 (answerable: FP), q3 (unanswerable: TP); q5 is unanswerable but answered (FN).
    prf = stats.unanswerable_prf(TINY)
    assert (prf["tp"], prf["fp"], prf["fn"]) == (1, 1, 1)
    assert prf["precision"] == pytest.approx(50.0) and prf["recall"] == pytest.approx(50.0)
    assert prf["f1"] == pytest.approx(50.0)
    never = stats.unanswerable_prf({"a": {**TINY["q1"]}})
    assert math.isnan(never["precision"]) and math.isnan(never["recall"]) and math.isnan(never["f1"])


def test_error_breakdown_averages_over_runs() -> None:
    other = {q: {**r, "f1": 0.0, "exact": 0.0} for q, r in TINY.items()}
    breakdown = stats.error_breakdown([TINY, other])
    assert breakdown["word"]["when"] == pytest.approx((1, 0.0, 20.0))
    # The second run scores 0 everywhere but makes the same predictions: same abstention counts.
    assert breakdown["unanswerable"]["tp"] == 1.0


def test_seed_mean_by_question_keeps_shared_questions() -> None:
    a = {"q1": {"f1": 1.0}, "q2": {"f1": 0.0}}
    b = {"q1": {"f1": 0.5}, "q3": {"f1": 1.0}}
    assert stats.seed_mean_by_question([a, b]) == {"q1": 75.0}
    assert stats.seed_mean_by_question([]) == {}


def test_summarize_group_of_records() -> None:
    records = [
        RunRecord("a", {}, "", {"eval_f1": 70.0, "eval_exact": 65.0}, NullThreshold(0.5, "fixed"),
                  train_runtime_s=100.0, train_steps_per_second=2.0, num_parameters=10),
        RunRecord("b", {}, "", {"eval_f1": 74.0, "eval_exact": 67.0}, NullThreshold(0.5, "fixed"),
                  train_runtime_s=120.0, train_steps_per_second=3.0, num_parameters=10),
    ]  # fmt: skip
    row = stats.summarize(records)
    assert row["n"] == 2
    assert row["f1"] == pytest.approx((72.0, math.sqrt(8)))
    assert row["exact"] == pytest.approx((66.0, math.sqrt(2)))
    assert all(math.isnan(v) for v in row["HasAns_f1"])
    assert (row["train_time_s"], row["steps_per_s"], row["params"], row["policy"]) == (110.0, 2.5, [10], "fixed")


def test_gradient_clipping_counts_logged_training_steps_above_the_limit() -> None:
    history = [
        {"loss": 2.0, "grad_norm": 0.5, "step": 10},
        {"loss": 1.9, "grad_norm": 3.0, "step": 20},
        {"eval_f1": 40.0, "step": 20},  # evaluations carry no grad_norm
        {"loss": 1.8, "grad_norm": 5.0, "step": 30},
        {"train_runtime": 10.0},
        {"loss": 1.0, "grad_norm": 99.0},  # after training: not counted
    ]
    median, clipped = stats.gradient_clipping([(history, 1.0), ([{"loss": 1.0, "grad_norm": 0.9}], 1.0)])
    assert (median, clipped) == (pytest.approx(1.95), 0.5)  # norms 0.5, 0.9, 3.0, 5.0; two of four above 1
    assert all(math.isnan(x) for x in stats.gradient_clipping([([], 1.0)]))
