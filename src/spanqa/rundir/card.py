"""The model card of a run's `model/`: README.md as the Hugging Face Hub reads it, built from the run record alone.

Its metadata holds a `model-index` with the official SQuAD v2 figures of the final evaluation (exact, F1, the
HasAns/NoAns splits and the best-threshold ones), the threshold that was applied and its policy; its text holds the
recipe, the init checkpoint, the seed, how to load the model and its limits. huggingface_hub's `ModelCard` and
`EvalResult` write it, so the Hub renders it as it renders every other model's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

    from spanqa.rundir.record import RunRecord

CARD = "README.md"
# The metrics the model-index lists: (key in the record, metric type, name).
METRICS = (
    ("exact", "exact_match", "Exact match"),
    ("f1", "f1", "F1"),
    ("HasAns_exact", "exact_match", "HasAns exact match"),
    ("HasAns_f1", "f1", "HasAns F1"),
    ("NoAns_exact", "exact_match", "NoAns exact match"),
    ("NoAns_f1", "f1", "NoAns F1"),
    ("best_exact", "exact_match", "Best exact match (threshold tuned on these questions)"),
    ("best_f1", "f1", "Best F1 (threshold tuned on these questions)"),
)
HEADS = {
    "span": "a start/end span head (`BertForQuestionAnswering`)",
    "crf": "BIO emissions and a linear-chain CRF over the context tokens (spanqa's `SpanBertCrfForQuestionAnswering`)",
    "bio": "BIO emissions with a softmax per context token (spanqa's `SpanBertBioForQuestionAnswering`)",
}


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not Path(name).expanduser().exists()  # type: ignore[union-attr]


def eval_results(record: RunRecord) -> list[EvalResult]:
    """The final evaluation as model-index entries: one per official metric, on the run's evaluation set."""
    from huggingface_hub import EvalResult

    c = record.flat_config
    dataset = c.get("data.dataset_name") or Path(str(c.get("data.validation_file"))).name
    threshold = {"null_threshold": record.null_threshold.value, "null_threshold_policy": record.null_threshold.policy}
    return [
        EvalResult(
            task_type="question-answering",
            task_name="Extractive question answering",
            dataset_type=str(dataset),
            dataset_name="SQuAD v2" if _is_hub_id(dataset) else str(dataset),
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(record.metrics[f"eval_{key}"]), 4),
            metric_args={f"{key}_thresh": record.metrics[f"eval_{key}_thresh"]}
            if key.startswith("best")
            else threshold,
        )
        for key, metric_type, name in METRICS
        if f"eval_{key}" in record.metrics
    ]


def model_card(record: RunRecord) -> ModelCard:
    from huggingface_hub import ModelCard, ModelCardData

    c = record.flat_config
    init, head = str(c.get("model.name_or_path")), str(c.get("model.head"))
    dataset = c.get("data.dataset_name")
    data = ModelCardData(
        model_name=record.run_name,
        base_model=init if _is_hub_id(init) else None,
        datasets=[dataset] if _is_hub_id(dataset) else None,
        language=["en"],
        library_name="transformers",
        pipeline_tag="question-answering",
        tags=["spanqa", "squad_v2", "extractive-qa", f"head-{head}"],
        eval_results=eval_results(record),
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(record, init, head, c)}")


def _body(record: RunRecord, init: str, head: str, c: dict) -> str:
    m, t = record.metrics, record.null_threshold
    dataset = c.get("data.dataset_name") or f"{c.get('data.train_file')} / {c.get('data.validation_file')}"
    questions = record.questions.count if record.questions else int(m.get("eval_total", 0))
    steps = c.get("trainer.max_steps") or -1
    budget = f"{steps} steps" if steps > 0 else f"{c.get('trainer.epochs')} epochs"
    rows = "\n".join(f"| {name} | {float(m[f'eval_{key}']):.2f} |" for key, _, name in METRICS if f"eval_{key}" in m)
    raw = json.dumps({k: v for k, v in m.items() if k.startswith("eval_")} | {"null_threshold": t.value}, indent=1)
    held_out = f", unit {t.held_out_by}" if t.held_out_by else ""
    loading = (
        "```python\nfrom transformers import AutoModelForQuestionAnswering, AutoTokenizer\n\n"
        'model = AutoModelForQuestionAnswering.from_pretrained("<this repo>")\n'
        'tokenizer = AutoTokenizer.from_pretrained("<this repo>")\n```\n\n'
        "transformers 5 has no question-answering pipeline: decode start/end logits over the windows yourself, or use "
        "spanqa, which windows and decodes as this model was evaluated:"
        if head == "span"
        else f"The {head} head is spanqa's own model type: load it with spanqa (importing `spanqa.models.crf` or "
        "`spanqa.models.tagging` registers it with the Auto classes), which also windows and decodes as this model "
        "was evaluated:"
    )
    return f"""# {record.run_name}

SpanBERT-style extractive question answering on SQuAD v2: {HEADS.get(head, head)}, fine-tuned from `{init}` with
spanqa on {dataset}.

## Evaluation

Official SQuAD v2 metrics on {questions} evaluation questions, the answer being "" where the no-answer probability
exceeds the null threshold {t.value:g} (policy `{t.policy}`{held_out}). The "best" figures use the threshold that
maximises them on these same questions, so they are optimistic.

| metric | value |
|---|---|
{rows}

Raw metrics of the final evaluation:

```json
{raw}
```

## Training

- init checkpoint: `{init}`; head `{head}`; seed {c.get("seed")}
- windows of {c.get("data.max_length")} tokens, stride {c.get("data.doc_stride")}, questions cut to \
{c.get("data.max_query_length")} tokens, answers of at most {c.get("data.max_answer_length")} tokens
- AdamW, lr {c.get("optimizer.lr")}, weight decay {c.get("optimizer.weight_decay")}, warmup \
{c.get("optimizer.warmup_ratio")}, batch {c.get("trainer.batch_size")}, {budget}; best epoch {m.get("best_epoch")} \
(of {record.global_step} steps)
- config digest `{record.config_digest}` (the run's run.json holds the whole resolved config)

## How to load

{loading}

```python
from spanqa.inference import Predictor

predictor = Predictor.load("path/to/this/model")  # a local copy: huggingface_hub.snapshot_download("<this repo>")
predictor.predict("Where was Kalo born?", "Kalo was born in Dakar.")
```

## Limits

- Trained and evaluated on {dataset} only; SQuAD v2 is English Wikipedia text.
- The null threshold was set by the `{t.policy}` policy; another threshold trades HasAns against NoAns accuracy.
- Check the licences of the base model and of the data before reuse (SQuAD 2.0 is CC BY-SA 4.0).
"""


def write_card(record: RunRecord, model_dir: Path) -> Path:
    path = model_dir / CARD
    model_card(record).save(path)
    return path
