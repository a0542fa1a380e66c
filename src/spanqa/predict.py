"""Answer questions with a trained model, the plain or the CRF head, windowed and decoded as in evaluation.

    python -m spanqa.predict --model DIR --question Q --context C      one JSON object on stdout
    python -m spanqa.predict --model DIR --file F [--out predictions.json] [--overwrite]

DIR is a training run dir or a checkpoint dir (`spanqa.inference`, the Python API this wraps, says what each
gives); flags override either. F is official-format SQuAD JSON or JSONL of {id, question, context}; file mode
writes predictions.json ({id: answer}, the official format) and a sibling <stem>_full.json ({id: {answer, score,
start, end, no_answer_probability, best_span}}), by default under outputs/predict/<time>_<run>/ (never into the
run dir: a finished run is never modified), with a progress bar on stderr.
Bad input exits with status 2 and one line `error: ...` on stderr, before the model is loaded when possible.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from spanqa.data.squad import iter_squad, unique_ids
from spanqa.errors import ArgumentParser, ConfigError, DataError, reported
from spanqa.files import write_json
from spanqa.inference import WINDOW_KEYS, Predictor, Settings, check_record, resolve_settings


# ---------------------------------------------------------------------------------------------------- inputs
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
    where = f"{path}: "
    records = [check_record(q, where) for q in iter_squad(doc, str(path), fields=("context", "question"))]
    unique_ids((r["id"] for r in records), str(path))
    return records


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
    unique_ids((r["id"] for r in records), str(path))
    return records


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m spanqa.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="A training run dir or a checkpoint dir.")
    parser.add_argument("--question", help="Single mode: the question (with --context).")
    parser.add_argument("--context", help="Single mode: the context to answer from.")
    parser.add_argument("--file", metavar="F", help="File mode: SQuAD JSON or JSONL of {id, question, context}.")
    parser.add_argument(
        "--out",
        metavar="F",
        help="File mode: predictions path (default: outputs/predict/<time>_<run>/predictions.json).",
    )
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


def default_out(settings: Settings) -> Path:
    """Where file mode writes without --out: outputs/predict/<time>_<run or checkpoint dir name>/predictions.json."""
    name = (settings.run_dir or settings.model_dir).resolve().name
    return Path("outputs") / "predict" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{name}" / "predictions.json"


def output_paths(out: str | Path, overwrite: bool) -> tuple[Path, Path]:
    """predictions.json and its sibling <stem>_full.json; refuses to replace either unless overwrite."""
    path = Path(out)
    full = path.with_name(f"{path.stem}_full{path.suffix or '.json'}")
    for target in (path, full):
        if target.is_dir():
            raise DataError(f"{target}: is a directory, expected a file path for --out")
        if target.exists() and not overwrite:
            raise DataError(f"{target} already exists: pass --overwrite to replace it")
    return path, full


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths: tuple[Path, Path] | None = None
    with reported():
        if args.file is None:
            if not args.question.strip():
                raise DataError("--question is empty")
            if not args.context.strip():
                raise DataError("--context is empty")
            records = [{"id": "0", "question": args.question, "context": args.context}]
        else:
            records = read_questions(args.file)
        overrides = {key: getattr(args, key) for key in (*WINDOW_KEYS, "null_threshold")}
        settings = resolve_settings(args.model, **overrides)
        if args.file is not None:
            paths = output_paths(args.out or default_out(settings), args.overwrite)

        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # stderr stays for the one-line errors
        hf_logging.disable_progress_bar()
        device = None if args.device == "auto" else args.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--device=cuda but no CUDA device is available")
        predictor = Predictor.load(settings, batch_size=args.batch_size, device=device)
        results = predictor.predict_many(records, progress=paths is not None)
    if paths is None:
        print(json.dumps(results["0"], ensure_ascii=False))
        return 0
    path, full = paths
    write_json(full, results)
    write_json(path, {qid: result["answer"] for qid, result in results.items()})
    print(f"wrote {len(results)} answers to {path} and {full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
