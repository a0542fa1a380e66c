"""spanqa's SQuAD v2 scorer as an `evaluate` metric module, loaded from its directory, offline.

Inputs and output keys are those of the Hub's `squad_v2` metric; the numbers are those of `spanqa.eval.squad_v2`
(the official script's semantics), so a Hugging Face evaluation loop scores exactly as `make train` does:

    metric = evaluate.load(spanqa.eval.squad_v2.METRIC_DIR)
    metric.compute(predictions=[{"id": "q1", "prediction_text": "Dakar", "no_answer_probability": 0.1}],
                   references=[{"id": "q1", "answers": {"text": ["Dakar"], "answer_start": [17]}}])

`evaluate` scans this file's imports line by line before loading it: keep one plain `import` per line.
"""

import datasets
import evaluate

import spanqa.eval.squad_v2

_KWARGS = """
predictions: [{"id", "prediction_text", "no_answer_probability"}] per question.
references: [{"id", "answers": {"text": [...], "answer_start": [...]}}]; no answers = unanswerable.
no_answer_threshold: answer "" when no_answer_probability exceeds it (default 1.0: never).
Returns exact, f1, total, HasAns_*/NoAns_* (for the splits present), best_exact(_thresh), best_f1(_thresh).
"""


class SquadV2Metric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="SQuAD v2 exact match and F1, with no-answer thresholds, as the official script computes them",
            citation="Rajpurkar, Jia and Liang (2018): Know What You Don't Know: Unanswerable Questions for SQuAD",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        "no_answer_probability": datasets.Value("float64"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions: list, references: list, no_answer_threshold: float = 1.0) -> dict:
        gold = {r["id"]: list(r["answers"]["text"]) for r in references}
        answers = {p["id"]: p["prediction_text"] for p in predictions}
        na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
        return spanqa.eval.squad_v2.squad_v2_scores(gold, answers, na_probs, no_answer_threshold).scores
