"""SQuAD v2 scoring with the semantics of the official ``evaluate-v2.0.py`` script.

The Hub metric (``evaluate.load("squad_v2")``) needs network access, so the project owns its scorer (also shipped
as a local `evaluate` module: `spanqa.eval.squad_v2_metric`).
Definitions follow the official script: answer normalisation, token-level F1, max over gold answers,
the no-answer threshold and the best-threshold sweep. Where the official script would crash (a question
without a prediction, which makes its per-split averages raise ``KeyError``), missing questions are
skipped with a warning and every average is taken over the questions that were scored.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanqa.data.squad import iter_squad, unique_ids

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """Bag-of-tokens F1; when either side is empty (no answer), 1 if both are empty else 0."""
    gold_toks = get_tokens(gold)
    pred_toks = get_tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
    """Gold answers used for scoring: those non-empty after normalisation, else the empty answer."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def apply_no_answer_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    """Score a question as if "" were predicted when its no-answer probability exceeds the threshold.

    As in the official script the replacement score is 1 for unanswerable and 0 for answerable
    questions, where "answerable" means the raw gold answer list is non-empty.
    """
    return {
        qid: float(not has_answer[qid]) if na_probs[qid] > na_prob_thresh else float(score)
        for qid, score in scores.items()
    }


def find_best_threshold(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """Best achievable score (percent) over no-answer thresholds, and the threshold reaching it.

    The sweep starts with every question abstained (each unanswerable one is correct), then answers the
    questions one at a time in increasing no-answer probability: an answerable question gains its raw
    score, an unanswerable one loses 1 if its raw prediction string is non-empty. Ties are stepped
    through one question at a time and only strict improvements move the threshold, like the original.
    """
    num_no_answer = sum(1 for qid in scores if not has_answer[qid])
    current = best = float(num_no_answer)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, float(na_probs[qid])
    return 100.0 * best / len(scores), best_thresh


def _split_scores(exact: Mapping[str, float], f1: Mapping[str, float], qids: Iterable[str]) -> dict[str, Any]:
    qid_list = list(qids)
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact[q] for q in qid_list) / total,
        "f1": 100.0 * sum(f1[q] for q in qid_list) / total,
        "total": total,
    }


@dataclass
class SquadV2Result:
    """Official scores (percentages; ``*_total`` are counts, ``*_thresh`` are probabilities) and
    per-question scores after thresholding, for paired significance tests."""

    scores: dict[str, float]
    exact_by_qid: dict[str, float]
    f1_by_qid: dict[str, float]


def squad_v2_scores(
    gold: Mapping[str, list[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> SquadV2Result:
    """Score predictions against gold answers (``[]`` marks an unanswerable question).

    Without ``na_probs`` every prediction gets no-answer probability 0.0, as in the official script.
    Predictions for ids absent from ``gold`` are ignored; gold ids without a prediction are skipped.
    """
    scored = [qid for qid in gold if qid in predictions]
    missing = [qid for qid in gold if qid not in predictions]
    if not scored:
        raise ValueError(f"no prediction for any of the {len(gold)} gold questions")
    if missing:
        preview = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning("Missing prediction for %d of %d questions: %s", len(missing), len(gold), preview)
    if na_probs is None:
        na_probs = {qid: 0.0 for qid in predictions}
    lacking = [qid for qid in scored if qid not in na_probs]
    if lacking:
        raise ValueError(f"no-answer probabilities lack {len(lacking)} predicted question(s), e.g. {lacking[0]}")

    has_answer = {qid: bool(gold[qid]) for qid in scored}
    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    for qid in scored:
        golds = gold_texts(gold[qid])
        exact_raw[qid] = float(max(compute_exact(g, predictions[qid]) for g in golds))
        f1_raw[qid] = max(compute_f1(g, predictions[qid]) for g in golds)

    exact = apply_no_answer_threshold(exact_raw, na_probs, has_answer, na_prob_thresh)
    f1 = apply_no_answer_threshold(f1_raw, na_probs, has_answer, na_prob_thresh)

    scores: dict[str, float] = dict(_split_scores(exact, f1, scored))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        split = [qid for qid in scored if has_answer[qid] is wanted]
        if split:
            scores.update({f"{prefix}_{k}": v for k, v in _split_scores(exact, f1, split).items()})
    best_exact, best_exact_thresh = find_best_threshold(predictions, exact_raw, na_probs, has_answer)
    best_f1, best_f1_thresh = find_best_threshold(predictions, f1_raw, na_probs, has_answer)
    scores.update(
        best_exact=best_exact,
        best_exact_thresh=best_exact_thresh,
        best_f1=best_f1,
        best_f1_thresh=best_f1_thresh,
    )
    return SquadV2Result(scores=scores, exact_by_qid=exact, f1_by_qid=f1)


def gold_from_squad_json(dataset: dict[str, Any], where: str = "gold") -> dict[str, list[str]]:
    """Map question id to gold answer texts from the official nested SQuAD JSON format.

    A question is unanswerable when its ``answers`` list is empty (the official rule; ``is_impossible`` is not
    consulted). Raises ``DataError`` naming `where` and the first structural problem found.
    """
    questions = list(iter_squad(dataset, where, fields=("answers",)))
    unique_ids((q["id"] for q in questions), where)
    return {q["id"]: [a["text"] for a in q["answers"]] for q in questions}


# The scorer as an `evaluate` module directory: `evaluate.load(METRIC_DIR)` works offline.
METRIC_DIR = str(Path(__file__).with_name("squad_v2_metric"))
