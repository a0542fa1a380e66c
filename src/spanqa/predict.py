"""Answer questions with a trained model, the plain or the CRF head, windowed and decoded as in evaluation.

    python -m spanqa.predict --model DIR --question Q --context C      one JSON object on stdout
    python -m spanqa.predict --model DIR --file F [--out predictions.json] [--overwrite]

DIR is a training run dir (its `model/`, its windowing settings from `.hydra/config.yaml` and the null
threshold it used from `run.json`) or a checkpoint dir (DataConfig defaults, threshold 0.5); flags override
either. F is official-format SQuAD JSON or JSONL of {id, question, context}; file mode writes predictions.json
({id: answer}, the official format) and a sibling <stem>_full.json ({id: {answer, score, start, end,
no_answer_probability, best_span}}). Windows come from `make_windows` and answers from the evaluation's
`window_candidates` + `postprocess`: the same windows and answer selection as a run's evaluation (inference here
is fp32, and padding positions never compete for a window's top-n_best logits).
Bad input exits with status 2 and one line `error: ...` on stderr, before the model is loaded when possible.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from spanqa.config import DataConfig
from spanqa.errors import ConfigError, DataError, ModelLoadError, SpanQAError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from spanqa.postprocess import Predictions

EXIT_BAD_INPUT = 2
WINDOW_KEYS = ("max_length", "doc_stride", "max_query_length", "max_answer_length", "n_best")
DEFAULT_THRESHOLD = 0.5
# Inputs a head may take; each model gets those its forward() names (the plain BERT head has no context_mask).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "context_mask")
# The output fields `window_candidates` reads, in its order, per head.
HEAD_OUTPUTS = {"span": ("start_logits", "end_logits"), "crf": ("span_start", "span_end", "span_score", "null_score")}
# Examples windowed and decoded together: bounds memory on large files (a dev set is ~12k questions).
CHUNK_EXAMPLES = 1024


# ---------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Where the weights are and how to window and decide, resolved before anything heavy is loaded."""

    model_dir: Path
    data: DataConfig
    null_threshold: float
    head: str  # "span" | "crf"
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
    run_dir = None
    if (root / "config.json").is_file():
        model_dir = root
    elif (root / "model").is_dir() or (root / ".hydra").is_dir():
        run_dir, model_dir = root, root / "model"
        values = _run_window_settings(root)
        if not model_dir.is_dir():
            raise ModelLoadError(f"--model={str(path)!r} is a run dir without model/ (the run did not finish)")
    else:
        raise ModelLoadError(
            f"--model={str(path)!r} is neither a checkpoint dir (config.json + weights) "
            "nor a training run dir (model/ + .hydra/config.yaml)"
        )
    from spanqa.modeling import check_checkpoint, is_crf_checkpoint

    check_checkpoint(str(model_dir), key="--model")
    head = "crf" if is_crf_checkpoint(str(model_dir)) else "span"
    if head == "crf" and "max_answer_length" not in values:  # a bare CRF checkpoint knows its own limit
        saved = json.loads((model_dir / "config.json").read_text()).get("max_answer_length")
        if saved is not None:
            values["max_answer_length"] = int(saved)
    values |= {k: overrides[k] for k in WINDOW_KEYS if overrides.get(k) is not None}
    data = DataConfig(**values)  # its checks name the impossible value

    threshold = overrides.get("null_threshold")
    if threshold is None:
        threshold = _run_threshold(root) if run_dir is not None else DEFAULT_THRESHOLD
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"--null-threshold={threshold!r} is invalid: a no-answer probability in [0, 1]")
    return Settings(model_dir=model_dir, data=data, null_threshold=float(threshold), head=head, run_dir=run_dir)


def _run_config(root: Path) -> Any:
    from omegaconf import OmegaConf

    file = root / ".hydra" / "config.yaml"
    if not file.is_file():
        raise ConfigError(f"run dir {str(root)!r} has no .hydra/config.yaml (the run's composed config)")
    try:
        return OmegaConf.load(file)
    except Exception as err:
        raise ConfigError(f"{file}: cannot be read ({str(err).splitlines()[0]})") from None


def _select(cfg: Any, key: str, file: Path) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key)
    except Exception as err:  # an interpolation that cannot be resolved
        raise ConfigError(f"{file}: {key} cannot be resolved ({str(err).splitlines()[0]})") from None


def _run_window_settings(root: Path) -> dict[str, Any]:
    cfg = _run_config(root)
    file = root / ".hydra" / "config.yaml"
    values = {key: _select(cfg, f"data.{key}", file) for key in WINDOW_KEYS}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise ConfigError(f"{file}: has no data.{missing[0]}; not a spanqa run config")
    return values


def _run_threshold(root: Path) -> float:
    """The threshold the run's evaluation used (run.json); a fixed policy's value when run.json lacks it."""
    record = root / "run.json"
    if record.is_file():
        try:
            value = json.loads(record.read_text()).get("metrics", {}).get("eval_null_threshold")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ConfigError(f"{record}: not a run record ({err})") from None
        if value is not None:
            return float(value)
    cfg = _run_config(root)
    file = root / ".hydra" / "config.yaml"
    policy = _select(cfg, "data.null_threshold.policy", file) or "fixed"
    if policy != "fixed":
        raise ConfigError(
            f"run dir {str(root)!r}: run.json has no metrics.eval_null_threshold and the run's threshold was tuned "
            f"(data.null_threshold.policy={policy}): pass --null-threshold"
        )
    value = _select(cfg, "data.null_threshold.value", file)
    return DEFAULT_THRESHOLD if value is None else float(value)


# ---------------------------------------------------------------------------------------------------- inputs
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
    qid = str(qid)
    for key in ("question", "context"):
        if not isinstance(record[key], str):
            raise DataError(f"{where}question {qid!r}: {key} is not a string")
        if not record[key].strip():
            raise DataError(f"{where}question {qid!r} has an empty {key}")
    return {"id": qid, "question": record["question"], "context": record["context"]}


def check_records(records: Iterable[Any]) -> list[dict[str, str]]:
    checked, seen = [], set()
    for i, record in enumerate(records):
        row = check_record(record, where=f"record {i}: ")
        if row["id"] in seen:
            raise DataError(f"duplicate question id {row['id']!r}")
        seen.add(row["id"])
        checked.append(row)
    if not checked:
        raise DataError("no questions to answer")
    return checked


def read_questions(path: str | Path) -> list[dict[str, str]]:
    """Questions from official-format SQuAD JSON or JSONL of {id, question, context}; DataError names the file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a SQuAD JSON or JSONL file") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if not text.strip():
        raise DataError(f"{path}: is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as whole_err:
        first = text.lstrip().splitlines()[0]
        try:  # JSONL when its first line is a JSON value on its own; else report the document's error
            json.loads(first)
        except json.JSONDecodeError:
            raise DataError(f"{path}: not valid JSON ({whole_err})") from None
        return _from_jsonl(path, text)
    if isinstance(doc, dict) and "data" in doc:
        return _from_squad(path, doc)
    if isinstance(doc, dict) and "question" in doc:  # JSONL with a single line
        return _from_jsonl(path, text)
    raise DataError(
        f"{path}: neither SQuAD JSON (an object with a 'data' list) nor JSONL (one {{id, question, context}} "
        "object per line)"
    )


def _from_squad(path: str | Path, doc: dict[str, Any]) -> list[dict[str, str]]:
    records = []
    try:
        for article in doc["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    record = {"id": qa["id"], "question": qa["question"], "context": context}
                    records.append(check_record(record, where=f"{path}: "))
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{path}: not in SQuAD format (expected data[].paragraphs[].context and .qas[] with id and question; "
            f"problem at {err!r})"
        ) from None
    return _unique(path, records)


def _from_jsonl(path: str | Path, text: str) -> list[dict[str, str]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number}: not valid JSON ({err})") from None
        records.append(check_record(record, where=f"{path}: line {number}: "))
    return _unique(path, records)


def _unique(path: str | Path, records: list[dict[str, str]]) -> list[dict[str, str]]:
    if not records:
        raise DataError(f"{path}: holds no questions")
    seen: set[str] = set()
    for record in records:
        if record["id"] in seen:
            raise DataError(f"{path}: duplicate question id {record['id']!r}")
        seen.add(record["id"])
    return records


# ---------------------------------------------------------------------------------------------------- predictor
class Predictor:
    """A model, its tokenizer and the settings to window contexts and to decide between a span and no answer."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        data: DataConfig,
        null_threshold: float,
        head: str,
        batch_size: int = 32,
        device: str | torch.device | None = None,
    ) -> None:
        import torch

        from spanqa.data import WindowCollator

        if head not in HEAD_OUTPUTS:
            raise ValueError(f"head={head!r}; expected one of {sorted(HEAD_OUTPUTS)}")
        if batch_size < 1:
            raise ConfigError(f"--batch-size={batch_size} is invalid: must be >= 1")
        if not tokenizer.is_fast:
            raise ModelLoadError("the tokenizer must be a fast (Rust) tokenizer: windows need offset mappings")
        if tokenizer.padding_side != "right":
            raise ModelLoadError(f"tokenizer.padding_side={tokenizer.padding_side!r}: only 'right' is supported")
        limit = _max_positions(getattr(model, "config", None))
        if limit is not None and data.max_length > limit:
            raise ConfigError(f"max_length={data.max_length} exceeds the model's {limit} position embeddings")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if head == "crf":  # the CRF filters spans while decoding: give it this run's limit
            self.model.config.max_answer_length = data.max_answer_length
        self.tokenizer = tokenizer
        self.data = data
        self.null_threshold = null_threshold
        self.head = head
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
        from spanqa.modeling import load_model, load_tokenizer

        if isinstance(path, Settings) and any(v is not None for v in overrides.values()):
            raise TypeError("pass overrides to resolve_settings, not with resolved Settings")
        settings = path if isinstance(path, Settings) else resolve_settings(path, **overrides)
        model_cfg = ModelConfig(name_or_path=str(settings.model_dir), head=settings.head)
        tokenizer = load_tokenizer(model_cfg)
        model = load_model(model_cfg, settings.data.max_answer_length)
        return cls(model, tokenizer, settings.data, settings.null_threshold, settings.head, batch_size, device)

    def predict(self, question: str, context: str) -> dict[str, Any]:
        """{answer, score, start, end, no_answer_probability, best_span} for one question about one context."""
        return self.predict_many([{"id": "0", "question": question, "context": context}])["0"]

    def predict_many(self, records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """[{id, question, context}] → {id: {answer, score, start, end, no_answer_probability, best_span}}.

        start/end are character offsets of the answer in its context (None when the answer is ""); score is the
        best span's score (None when no span qualifies), whether or not the null threshold blanks it.
        """
        rows = check_records(records)
        results: dict[str, dict[str, Any]] = {}
        for lo in range(0, len(rows), CHUNK_EXAMPLES):
            results |= self._predict_chunk(rows[lo : lo + CHUNK_EXAMPLES])
        return results

    def _predict_chunk(self, rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
        from datasets import Dataset

        from spanqa.data import make_windows
        from spanqa.evaluation import EvalSet, postprocess, window_candidates

        examples = {
            "id": [r["id"] for r in rows],
            "question": [r["question"] for r in rows],
            "context": [r["context"] for r in rows],
            "answers": [{"text": [], "answer_start": []} for _ in rows],
        }
        features = Dataset.from_dict(make_windows(examples, self.tokenizer, self.data, for_eval=True))
        es = EvalSet.build("predict", Dataset.from_dict(examples), features)
        outputs = self._model_outputs(es.model_inputs())
        cands = window_candidates(outputs, self.head, es, self.data.n_best, self.data.max_answer_length)
        preds = postprocess(cands, es, self.data.n_best)
        return {qid: self._result(preds, qid) for qid in es.ids}

    def _model_outputs(self, features: Dataset) -> tuple[np.ndarray, ...]:
        """The head's output fields for every window, in window order, with gradients off.

        Windows run longest first so each padded batch is tight. Plain-head logits are stored per window up to
        its own length, -inf beyond: which windows share a batch cannot change an answer.
        """
        import numpy as np
        import torch

        names = [n for n in self.input_names if n in features.column_names]
        columns = features.select_columns(names)[:]
        lengths = np.fromiter((len(ids) for ids in columns["input_ids"]), dtype=np.int64)
        width, n_windows = int(lengths.max()), len(lengths)
        order = np.argsort(-lengths, kind="stable")
        fields = HEAD_OUTPUTS[self.head]
        outputs: list[np.ndarray] = []
        with torch.inference_mode():
            for lo in range(0, n_windows, self.batch_size):
                rows = order[lo : lo + self.batch_size]
                batch = self.collator([{name: columns[name][i] for name in names} for i in rows])
                result = self.model(**{k: v.to(self.device) for k, v in batch.items()})
                for j, name in enumerate(fields):
                    value = getattr(result, name)
                    value = (value.float() if value.is_floating_point() else value).cpu().numpy()
                    if self.head == "span":  # logits over the padded batch: keep each window's own positions
                        value = value[:, :width]
                        real = np.arange(value.shape[1]) < lengths[rows, None]
                        value = np.where(real, value, -np.inf).astype(np.float32)
                        if lo == 0:
                            outputs.append(np.full((n_windows, width), -np.inf, dtype=np.float32))
                        outputs[j][rows, : value.shape[1]] = value
                    else:  # (B, K) candidates or (B,) null scores
                        if lo == 0:
                            outputs.append(np.empty((n_windows, *value.shape[1:]), dtype=value.dtype))
                        outputs[j][rows] = value
        return tuple(outputs)

    def _result(self, preds: Predictions, qid: str) -> dict[str, Any]:
        nbest = preds.nbest[qid]
        best = nbest[0] if nbest else None
        na_prob = preds.na_prob[qid]
        answered = best is not None and na_prob <= self.null_threshold  # the official scorer's rule
        return {
            "answer": best["text"] if answered else "",
            "score": best["score"] if best is not None else None,
            "start": best["start"] if answered else None,
            "end": best["end"] if answered else None,
            "no_answer_probability": na_prob,
            "best_span": best["text"] if best is not None else "",
        }


def _max_positions(config: Any) -> int | None:
    """The encoder's position limit: on the config itself (plain head) or its nested encoder dict (CRF)."""
    if config is None:
        return None
    limit = getattr(config, "max_position_embeddings", None)
    encoder = getattr(config, "encoder", None)
    if limit is None and isinstance(encoder, dict):
        limit = encoder.get("max_position_embeddings")
    return int(limit) if limit is not None else None


# ---------------------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m spanqa.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="A training run dir or a checkpoint dir.")
    parser.add_argument("--question", help="Single mode: the question (with --context).")
    parser.add_argument("--context", help="Single mode: the context to answer from.")
    parser.add_argument("--file", metavar="F", help="File mode: SQuAD JSON or JSONL of {id, question, context}.")
    parser.add_argument("--out", metavar="F", help="File mode: predictions path (default: ./predictions.json).")
    parser.add_argument("--overwrite", action="store_true", help="Replace existing prediction files.")
    for key in WINDOW_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"Override data.{key}.")
    parser.add_argument("--null-threshold", type=float, help="Answer '' when the no-answer probability exceeds it.")
    parser.add_argument("--batch-size", type=int, default=32, help="Windows per forward pass (default 32).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="Default: cuda if any.")
    args = parser.parse_args(argv)
    if args.file is not None and (args.question is not None or args.context is not None):
        parser.error("--file cannot be combined with --question/--context")
    if args.file is None and (args.question is None or args.context is None):
        parser.error("pass --question and --context, or --file")
    if args.out is not None and args.file is None:
        parser.error("--out applies to --file mode only")
    if args.batch_size < 1:
        parser.error(f"--batch-size={args.batch_size} is invalid: must be >= 1")
    return args


def output_paths(out: str | None, overwrite: bool) -> tuple[Path, Path]:
    """predictions.json and its sibling <stem>_full.json; refuses to replace either unless overwrite."""
    path = Path(out or "predictions.json")
    full = path.with_name(f"{path.stem}_full{path.suffix or '.json'}")
    for target in (path, full):
        if target.is_dir():
            raise DataError(f"{target}: is a directory, expected a file path for --out")
        if target.exists() and not overwrite:
            raise DataError(f"{target} already exists: pass --overwrite to replace it")
    return path, full


def _write_json(path: Path, blob: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(blob, indent=1, ensure_ascii=False))
    tmp.replace(path)  # never leave a half-written file behind


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths: tuple[Path, Path] | None = None
    try:
        if args.file is None:
            if not args.question.strip():
                raise DataError("--question is empty")
            if not args.context.strip():
                raise DataError("--context is empty")
            records = [{"id": "0", "question": args.question, "context": args.context}]
        else:
            records = read_questions(args.file)
            paths = output_paths(args.out, args.overwrite)
        overrides = {key: getattr(args, key) for key in (*WINDOW_KEYS, "null_threshold")}
        settings = resolve_settings(args.model, **overrides)

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # stderr stays for the one-line errors
        hf_logging.disable_progress_bar()
        device = None if args.device == "auto" else args.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--device=cuda but no CUDA device is available")
        predictor = Predictor.load(settings, batch_size=args.batch_size, device=device)
        results = predictor.predict_many(records)
    except SpanQAError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if paths is None:
        print(json.dumps(results["0"], ensure_ascii=False))
        return 0
    path, full = paths
    _write_json(full, results)
    _write_json(path, {qid: result["answer"] for qid, result in results.items()})
    print(f"wrote {len(results)} answers to {path} and {full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
