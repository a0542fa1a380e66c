"""The inference API: settings resolved from a run dir or a checkpoint dir, and a Predictor that answers with them.

A run dir gives its `model/`, and its windowing settings and the null threshold its final evaluation applied from
its run record (`run.json`, never `.hydra/`, which a relaunch may rewrite); a checkpoint dir gives DataConfig
defaults and threshold 0.5; overrides win over either. Windows come
from `make_windows` and answers from the head's candidates + `postprocess`: the same windows and answer selection
as a run's evaluation (inference here is fp32, and padding positions never compete for a window's top-n_best
logits). `resolve_settings` rejects a missing or malformed dir before transformers is imported.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanqa.config import DataConfig
from spanqa.data.squad import check_question, unique_ids
from spanqa.errors import ConfigError, DataError, ModelLoadError
from spanqa.models.checkpoint import check_checkpoint
from spanqa.models.heads import Head, get_head, head_of_checkpoint
from spanqa.rundir.layout import MODEL_DIR, is_run_dir
from spanqa.rundir.record import RunRecord

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from spanqa.eval.answers import Predictions

WINDOW_KEYS = ("max_length", "doc_stride", "max_query_length", "max_answer_length", "n_best")
DEFAULT_THRESHOLD = 0.5
# Inputs a head may take; each model gets those its forward() names (the plain BERT head has no context_mask).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "context_mask")
# Examples windowed and decoded together: bounds memory on large files (a dev set is ~12k questions).
CHUNK_EXAMPLES = 1024


# ---------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Where the weights are and how to window and decide, resolved before anything heavy is loaded."""

    model_dir: Path
    data: DataConfig
    null_threshold: float
    head: Head
    run_dir: Path | None = None  # set when --model named a training run dir


def resolve_settings(path: str | Path, **overrides: float | int | None) -> Settings:
    """Settings for a run dir or a checkpoint dir; `overrides` (WINDOW_KEYS, null_threshold) win when not None."""
    unknown = set(overrides) - {*WINDOW_KEYS, "null_threshold"}
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    if not str(path):
        raise ModelLoadError("--model is empty: pass a training run dir or a checkpoint dir")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelLoadError(f"--model={str(path)!r} does not exist or is not a directory")
    values: dict[str, Any] = {}
    run_dir, record = None, None
    if (root / "config.json").is_file():
        model_dir = root
    elif (root / MODEL_DIR).is_dir() or is_run_dir(root):
        run_dir, model_dir = root, root / MODEL_DIR
        if not model_dir.is_dir():
            raise ModelLoadError(f"--model={str(path)!r} is a run dir without model/ (the run did not finish)")
        record = RunRecord.read(root)  # one line for a run that did not finish or a broken record
        values = _window_settings(record, root)
    else:
        raise ModelLoadError(
            f"--model={str(path)!r} is neither a checkpoint dir (config.json + weights) "
            "nor a training run dir (model/ + run.json)"
        )
    check_checkpoint(str(model_dir), key="--model")
    saved_head = head_of_checkpoint(model_dir)
    if "max_answer_length" not in values:  # a bare checkpoint that decodes in its model knows its own limit
        saved = json.loads((model_dir / "config.json").read_text()).get("max_answer_length")
        if saved is not None:
            values["max_answer_length"] = int(saved)
    values |= {k: overrides[k] for k in WINDOW_KEYS if overrides.get(k) is not None}
    data = DataConfig(**values)  # its checks name the impossible value

    threshold = overrides.get("null_threshold")
    if threshold is None:
        threshold = _run_threshold(record, root) if record is not None else DEFAULT_THRESHOLD
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"--null-threshold={threshold!r} is invalid: a no-answer probability in [0, 1]")
    return Settings(model_dir=model_dir, data=data, null_threshold=float(threshold), head=saved_head, run_dir=run_dir)


def _window_settings(record: RunRecord, root: Path) -> dict[str, Any]:
    """The run's windowing settings, from the config its record holds."""
    config = record.flat_config
    values = {key: config.get(f"data.{key}") for key in WINDOW_KEYS}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise ConfigError(f"{root / record.config_source}: has no data.{missing[0]}; not a spanqa run config")
    return values


def _run_threshold(record: RunRecord, root: Path) -> float:
    """The threshold the run's final evaluation applied; for a record of an earlier release that lacks it, a
    fixed policy's configured value."""
    value = record.null_threshold.value
    if value == value:  # not nan
        return float(value)
    policy = record.null_threshold.policy
    if policy != "fixed":
        raise ConfigError(
            f"run dir {str(root)!r}: run.json records no null threshold and the run's threshold was tuned "
            f"(data.null_threshold.policy={policy}): pass --null-threshold"
        )
    configured = record.flat_config.get("data.null_threshold.value")
    return DEFAULT_THRESHOLD if configured is None else float(configured)


# ---------------------------------------------------------------------------------------------------- records
def check_record(record: Any, where: str = "") -> dict[str, str]:
    """{id, question, context} with string values and a non-blank question and context; `where` prefixes errors."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}expected an object with id, question and context, got {type(record).__name__}")
    for key in ("id", "question", "context"):
        if key not in record:
            raise DataError(f"{where}has no {key!r}")
    qid = record["id"]
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise DataError(f"{where}id {qid!r} is not a string")
    check_question(str(qid), record["question"], record["context"], where)
    return {"id": str(qid), "question": record["question"], "context": record["context"]}


def check_records(records: Iterable[Any], where: str = "") -> list[dict[str, str]]:
    checked = [check_record(record, where=f"{where}record {i}: ") for i, record in enumerate(records)]
    unique_ids((r["id"] for r in checked), where.rstrip(": ") or "the questions")
    return checked


class Predictor:
    """A model, its tokenizer and the settings to window contexts and to decide between a span and no answer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        data: DataConfig,
        null_threshold: float,
        head: Head | str,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        import torch

        from spanqa.data.collate import WindowCollator
        from spanqa.models.load import max_positions

        if batch_size < 1:
            raise ConfigError(f"--batch-size={batch_size} is invalid: must be >= 1")
        if not tokenizer.is_fast:
            raise ModelLoadError("the tokenizer must be a fast (Rust) tokenizer: windows need offset mappings")
        if tokenizer.padding_side != "right":
            raise ModelLoadError(f"tokenizer.padding_side={tokenizer.padding_side!r}: only 'right' is supported")
        limit = max_positions(getattr(model, "config", None))
        if limit is not None and data.max_length > limit:
            raise ConfigError(f"max_length={data.max_length} exceeds the model's {limit} position embeddings")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if hasattr(getattr(self.model, "config", None), "max_answer_length"):  # a head decoding in its model
            self.model.config.max_answer_length = data.max_answer_length
        self.tokenizer = tokenizer
        self.data = data
        self.null_threshold = null_threshold
        self.head = head if isinstance(head, Head) else get_head(head)
        self.batch_size = batch_size
        accepted = inspect.signature(self.model.forward).parameters
        self.input_names = [name for name in MODEL_INPUTS if name in accepted]
        on_gpu = self.device.type == "cuda"
        self.collator = WindowCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if on_gpu else None)

    @classmethod
    def load(
        cls,
        path: str | Path | Settings,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        **overrides: float | int | None,
    ) -> Predictor:
        """From a run dir or a checkpoint dir (or resolved Settings); `overrides` as in `resolve_settings`."""
        from spanqa.config import ModelConfig
        from spanqa.models.heads import load_model
        from spanqa.models.load import load_tokenizer

        if isinstance(path, Settings) and any(v is not None for v in overrides.values()):
            raise TypeError("pass overrides to resolve_settings, not with resolved Settings")
        settings = path if isinstance(path, Settings) else resolve_settings(path, **overrides)
        model_cfg = ModelConfig(name_or_path=str(settings.model_dir), head=settings.head.name)
        tokenizer = load_tokenizer(model_cfg)
        model = load_model(model_cfg, settings.data.max_answer_length)
        return cls(model, tokenizer, settings.data, settings.null_threshold, settings.head, batch_size, device)

    def predict(self, question: str, context: str) -> dict[str, Any]:
        """{answer, score, start, end, no_answer_probability, best_span} for one question about one context."""
        return self.predict_many([{"id": "0", "question": question, "context": context}])["0"]

    def predict_many(self, records: Iterable[Mapping[str, Any]], progress: bool = False) -> dict[str, dict[str, Any]]:
        """[{id, question, context}] → {id: {answer, score, start, end, no_answer_probability, best_span}}.

        start/end are character offsets of the answer in its context (None when the answer is ""); score is the
        best span's score (None when no span qualifies), whether or not the null threshold blanks it. `progress`
        shows a progress bar (questions answered) on stderr.
        """
        from tqdm.auto import tqdm

        rows = check_records(records)
        results: dict[str, dict[str, Any]] = {}
        with tqdm(total=len(rows), unit="question", desc="answering", disable=not progress) as bar:
            for lo in range(0, len(rows), CHUNK_EXAMPLES):
                results |= self._predict_chunk(rows[lo : lo + CHUNK_EXAMPLES])
                bar.update(min(CHUNK_EXAMPLES, len(rows) - lo))
        return results

    def _predict_chunk(self, rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
        from datasets import Dataset

        from spanqa.data.windows import EvalSet, make_windows
        from spanqa.eval.policies import postprocess

        examples = {
            "id": [r["id"] for r in rows],
            "question": [r["question"] for r in rows],
            "context": [r["context"] for r in rows],
            "answers": [{"text": [], "answer_start": []} for _ in rows],
        }
        features = Dataset.from_dict(make_windows(examples, self.tokenizer, self.data, for_eval=True))
        es = EvalSet.build("predict", Dataset.from_dict(examples), features)
        outputs = self._model_outputs(es.model_inputs())
        cands = self.head.candidates(outputs, es, self.data.n_best, self.data.max_answer_length)
        preds = postprocess(cands, es, self.data.n_best)
        return {qid: self._result(preds, qid) for qid in es.ids}

    def _model_outputs(self, features: Dataset) -> tuple[np.ndarray, ...]:
        """The head's output fields for every window, in window order, with gradients off.

        Windows run longest first so each padded batch is tight. Logits past a window's own length come from
        batch padding; the head's `candidates` masks them, so which windows share a batch cannot change an answer.
        """
        import numpy as np
        import torch

        names = [n for n in self.input_names if n in features.column_names]
        columns = features.select_columns(names)[:]
        lengths = np.fromiter((len(ids) for ids in columns["input_ids"]), dtype=np.int64)
        width, n_windows = int(lengths.max()), len(lengths)
        order = np.argsort(-lengths, kind="stable")
        fields = self.head.outputs
        outputs: list[np.ndarray] = []
        with torch.inference_mode():
            for lo in range(0, n_windows, self.batch_size):
                rows = order[lo : lo + self.batch_size]
                batch = self.collator([{name: columns[name][i] for name in names} for i in rows])
                result = self.model(**{k: v.to(self.device) for k, v in batch.items()})
                for j, name in enumerate(fields):
                    value = getattr(result, name)
                    value = (value.float() if value.is_floating_point() else value).cpu().numpy()
                    if self.head.per_token:  # outputs over the padded batch: keep each window's own positions
                        value = value[:, :width]
                        if lo == 0:
                            outputs.append(np.full((n_windows, width), -np.inf, dtype=np.float32))
                        outputs[j][rows, : value.shape[1]] = value
                    else:  # (B, K) candidates or (B,) null scores
                        if lo == 0:
                            outputs.append(np.empty((n_windows, *value.shape[1:]), dtype=value.dtype))
                        outputs[j][rows] = value
        return tuple(outputs)

    def _result(self, preds: Predictions, qid: str) -> dict[str, Any]:
        from spanqa.eval.answers import decide_answer

        nbest = preds.nbest[qid]
        best = nbest[0] if nbest else None
        na_prob = preds.na_prob[qid]
        answer = decide_answer(best["text"], na_prob, self.null_threshold) if best is not None else ""
        return {
            "answer": answer,
            "score": best["score"] if best is not None else None,
            "start": best["start"] if answer else None,
            "end": best["end"] if answer else None,
            "no_answer_probability": na_prob,
            "best_span": best["text"] if best is not None else "",
        }
