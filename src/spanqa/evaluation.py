"""From window predictions to SQuAD v2 scores: candidates, null threshold policy, artifacts.

An `EvalSet` bundles the eval windows with the arrays post-processing needs, built once per run. The null
threshold is a no-answer probability: the answer is "" when na_prob > threshold (the official scorer's rule).
Policies: `fixed` (a configured value), `tune_on_dev` (the value that maximises F1 on the set being reported:
optimistic, and labelled so), `held_out` (tuned on training questions held out from training, then applied).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from spanqa.metrics import SquadV2Result, squad_v2_scores
from spanqa.postprocess import Predictions, WindowCandidates, select_answers, span_candidates

EVAL_COLUMNS = ("example_id", "offset_mapping", "max_context")


@dataclass
class EvalSet:
    """Eval windows (model inputs + EVAL_COLUMNS) and their examples, with stacked arrays for post-processing."""

    name: str
    features: Dataset
    ids: list[str]
    questions: list[str]
    contexts: list[str]
    gold: dict[str, list[str]]
    example_index: np.ndarray  # (N,) window → example
    offsets: np.ndarray  # (N, L, 2) char offsets, -1 outside the context
    max_context: np.ndarray  # (N, L) bool
    n_tokens: np.ndarray  # (N,) tokens per window; logits past them come from batch padding

    @classmethod
    def build(cls, name: str, examples: Dataset, features: Dataset) -> EvalSet:
        ids = list(examples["id"])
        position = {qid: i for i, qid in enumerate(ids)}
        columns = features.select_columns(list(EVAL_COLUMNS))[:]
        width = max((len(o) for o in columns["offset_mapping"]), default=1)
        offsets = np.full((len(features), width, 2), -1, dtype=np.int64)
        max_context = np.zeros((len(features), width), dtype=bool)
        for i, (off, mc) in enumerate(zip(columns["offset_mapping"], columns["max_context"], strict=True)):
            offsets[i, : len(off)] = off
            max_context[i, : len(mc)] = mc
        return cls(
            name=name,
            features=features,
            ids=ids,
            questions=list(examples["question"]),
            contexts=list(examples["context"]),
            gold={qid: list(a["text"]) for qid, a in zip(ids, examples["answers"], strict=True)},
            example_index=np.array([position[e] for e in columns["example_id"]], dtype=np.int64),
            offsets=offsets,
            max_context=max_context,
            n_tokens=np.array([len(o) for o in columns["offset_mapping"]], dtype=np.int64),
        )

    def model_inputs(self) -> Dataset:
        return self.features.remove_columns(list(EVAL_COLUMNS))


def window_candidates(
    predictions: tuple[np.ndarray, ...], head: str, es: EvalSet, n_best: int, max_answer_length: int
) -> WindowCandidates:
    """The one place that knows the heads' output layouts (the order of their ModelOutput fields)."""
    if head == "crf":  # span_start, span_end, span_score, null_score: already filtered by the model
        start, end, score, null = (np.asarray(p) for p in predictions[:4])
        return WindowCandidates(start=start.astype(np.int64), end=end.astype(np.int64), score=score, null=null)
    width = np.asarray(predictions[0]).shape[1]
    # Positions past a window's own tokens are padding, as wide as its batch happened to be (batch size, world
    # size, batch-mates): their logits must not take top-n slots, or the answers would depend on the batching.
    padding = np.arange(width) >= es.n_tokens[:, None]
    start_logits, end_logits = (np.where(padding, -np.inf, np.asarray(p, dtype=np.float32)) for p in predictions[:2])
    offsets, max_context = es.offsets, es.max_context
    if width > offsets.shape[1]:  # logits padded past the longest window
        pad = width - offsets.shape[1]
        offsets = np.pad(offsets, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
        max_context = np.pad(max_context, ((0, 0), (0, pad)))
    return span_candidates(
        start_logits, end_logits, n_best, max_answer_length, offsets[:, :width], max_context[:, :width]
    )


@dataclass
class Outcome:
    """Everything one evaluation produced."""

    predictions: Predictions
    result: SquadV2Result
    threshold: float
    policy: str
    metrics: dict[str, float] = field(default_factory=dict)

    def answers(self) -> dict[str, str]:
        p = self.predictions
        return {qid: "" if p.na_prob[qid] > self.threshold else p.best_span[qid] for qid in p.best_span}


def postprocess(cands: WindowCandidates, es: EvalSet, n_best: int) -> Predictions:
    # Threshold 1.0: nothing blanked here; the policy decides afterwards from best_span and na_prob.
    return select_answers(cands, es.example_index, es.offsets, es.contexts, es.ids, n_best=n_best, na_prob_thresh=1.0)


def tuned_threshold(preds: Predictions, gold: dict[str, list[str]]) -> float:
    """The no-answer threshold that maximises F1 on these questions (the official best_f1_thresh)."""
    return float(squad_v2_scores(gold, preds.best_span, preds.na_prob).scores["best_f1_thresh"])


def score(preds: Predictions, es: EvalSet, threshold: float, policy: str) -> Outcome:
    result = squad_v2_scores(es.gold, preds.best_span, preds.na_prob, na_prob_thresh=threshold)
    metrics = {k: float(v) for k, v in result.scores.items()}
    metrics["null_threshold"] = threshold
    return Outcome(preds, result, threshold, policy, metrics)


def write_artifacts(outcome: Outcome, es: EvalSet, out_dir: Path, nbest: bool = True) -> list[Path]:
    """predictions.json (official format), null_odds.json, na_probs.json, [nbest_predictions.json],
    eval_results.json, per_question.json (question, gold, prediction, EM/F1: for paired tests and error analysis)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = outcome.predictions
    answers = outcome.answers()
    files: dict[str, Any] = {
        "predictions.json": answers,
        "null_odds.json": p.score_diff,
        "na_probs.json": p.na_prob,
        "eval_results.json": {**outcome.metrics, "null_threshold_policy": outcome.policy},
        "per_question.json": {
            qid: {
                "question": question,
                "gold": es.gold[qid],
                "prediction": answers[qid],
                "na_prob": p.na_prob[qid],
                "exact": outcome.result.exact_by_qid[qid],
                "f1": outcome.result.f1_by_qid[qid],
            }
            for qid, question in zip(es.ids, es.questions, strict=True)
        },
    }
    if nbest:
        files["nbest_predictions.json"] = p.nbest
    written = []
    for name, blob in files.items():
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(blob, indent=1, default=_numpy_scalar))
        tmp.replace(path)  # never leave a half-written file behind
        written.append(path)
    return written


def _numpy_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
