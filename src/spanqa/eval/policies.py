"""From pooled answers to SQuAD v2 scores: the null threshold policy, the scores, and the artifacts of an evaluation.

The null threshold is a no-answer probability: the answer is "" when na_prob > threshold (the official scorer's rule).
Policies: `fixed` (a configured value), `tune_on_dev` (the value that maximises F1 on the set being reported:
optimistic, and labelled so), `held_out` (tuned on training questions held out from training, whole articles by
default (`held_out_by`), then applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanqa.data.windows import EvalSet
from spanqa.eval.answers import Predictions, select_answers
from spanqa.eval.squad_v2 import SquadV2Result, squad_v2_scores
from spanqa.files import write_json
from spanqa.models.candidates import WindowCandidates


@dataclass
class Outcome:
    """Everything one evaluation produced."""

    predictions: Predictions
    result: SquadV2Result
    threshold: float
    policy: str
    metrics: dict[str, float] = field(default_factory=dict)
    held_out_by: str | None = None  # the held_out policy's unit: article | question

    def answers(self) -> dict[str, str]:
        return self.predictions.thresholded(self.threshold)


def postprocess(cands: WindowCandidates, es: EvalSet, n_best: int) -> Predictions:
    # Threshold 1.0: nothing blanked here; the policy decides afterwards from best_span and na_prob.
    return select_answers(cands, es.example_index, es.offsets, es.contexts, es.ids, n_best=n_best, na_prob_thresh=1.0)


def tuned_threshold(preds: Predictions, gold: dict[str, list[str]]) -> float:
    """The no-answer threshold that maximises F1 on these questions (the official best_f1_thresh)."""
    return float(squad_v2_scores(gold, preds.best_span, preds.na_prob).scores["best_f1_thresh"])


def score(preds: Predictions, es: EvalSet, threshold: float, policy: str, held_out_by: str | None = None) -> Outcome:
    result = squad_v2_scores(es.gold, preds.best_span, preds.na_prob, na_prob_thresh=threshold)
    metrics = {k: float(v) for k, v in result.scores.items()}
    metrics["null_threshold"] = threshold
    return Outcome(preds, result, threshold, policy, metrics, held_out_by if policy == "held_out" else None)


def answer_rows(outcome: Outcome, es: EvalSet) -> dict[str, dict[str, Any]]:
    """{id: {question, gold, prediction, start, na_prob, exact, f1}}: each question's answer (start: its char offset
    in the context, None for "") and scores."""
    answers = outcome.answers()
    p, r = outcome.predictions, outcome.result
    return {
        qid: {
            "question": question,
            "gold": es.gold[qid],
            "prediction": answers[qid],
            "best_span": p.best_span[qid],  # before the threshold: what a threshold sweep re-scores
            "start": p.best_start.get(qid) if answers[qid] else None,
            "na_prob": p.na_prob[qid],
            "exact": r.exact_by_qid[qid],
            "f1": r.f1_by_qid[qid],
        }
        for qid, question in zip(es.ids, es.questions, strict=True)
    }


def contexts_of(es: EvalSet) -> dict[str, Any]:
    """{"contexts": each distinct context once, "of": {id: its context's index}}: what the answer explorer shows."""
    index: dict[str, int] = {}
    of = {qid: index.setdefault(context, len(index)) for qid, context in zip(es.ids, es.contexts, strict=True)}
    return {"contexts": list(index), "of": of}


def write_artifacts(outcome: Outcome, es: EvalSet, out_dir: Path, nbest: bool = True) -> list[Path]:
    """predictions.json (official format, thresholded), best_spans.json (each question's best non-null span, before
    the threshold), null_odds.json, na_probs.json, eval_results.json, per_question.json (question, gold, prediction,
    EM/F1: for paired tests and error analysis) and, with `nbest`, nbest_predictions.json and contexts.json.

    The official script scores best_spans.json with na_probs.json exactly as the evaluation did: every figure of
    eval_results.json, the best-threshold ones included (`--na-prob-thresh` the threshold applied). Scoring the
    thresholded predictions.json that way would count a blanked answer as a prediction of ""."""
    p = outcome.predictions
    answers = outcome.answers()
    files: dict[str, Any] = {
        "predictions.json": answers,
        "best_spans.json": p.best_span,
        "null_odds.json": p.score_diff,
        "na_probs.json": p.na_prob,
        "eval_results.json": {
            **outcome.metrics,
            "null_threshold_policy": outcome.policy,
            **({"null_threshold_held_out_by": outcome.held_out_by} if outcome.held_out_by else {}),
        },
        "per_question.json": answer_rows(outcome, es),
    }
    if nbest:  # the final evaluation: also the n-best lists and the contexts, for error analysis and the explorer
        files["nbest_predictions.json"] = p.nbest
        files["contexts.json"] = contexts_of(es)
    return [write_json(out_dir / name, blob) for name, blob in files.items()]
