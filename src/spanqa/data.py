"""SQuAD v2 examples (Hub or local official-format JSON) → checked rows; `spanqa.features` windows them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from spanqa.config import DataConfig
from spanqa.errors import DataError
from spanqa.hub import is_offline

COLUMNS = ("id", "title", "context", "question", "answers")


def _iter_squad_json(path: str, mtime_ns: int) -> Iterator[dict[str, Any]]:
    """Flatten the official nested format. `mtime_ns` is unused here but part of the datasets cache key."""
    del mtime_ns
    try:
        with open(path, encoding="utf-8") as f:
            blob = json.load(f)
        count = 0
        for article in blob["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    # The official scorer reads only `answers`; a file that also flags them impossible is ambiguous.
                    answers = qa.get("answers", [])
                    if qa.get("is_impossible", False) and answers:
                        raise DataError(f"{path}: example {qa['id']!r} has is_impossible=true but also answers")
                    count += 1
                    yield {
                        "id": str(qa["id"]),
                        "title": article.get("title", ""),
                        "context": context,
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
        if count == 0:
            raise DataError(f"{path}: holds no questions")
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"{path}: not in SQuAD format (expected data[].paragraphs[].qas[] with id/question/answers; "
            f"problem at {err!r})"
        ) from err


def _from_squad_json(path: str) -> Dataset:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data file {path!r} does not exist")
    try:
        return Dataset.from_generator(
            _iter_squad_json, gen_kwargs={"path": str(file.resolve()), "mtime_ns": file.stat().st_mtime_ns}
        )
    except Exception as err:  # datasets wraps generator errors; surface ours unchanged
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or DataError(f"{path}: could not be read ({err})")) from err


def load_examples(cfg: DataConfig) -> DatasetDict:
    """Train and validation examples with columns id, title, context, question, answers{text, answer_start}."""
    if cfg.train_file is not None and cfg.validation_file is not None:
        raw = DatasetDict(train=_from_squad_json(cfg.train_file), validation=_from_squad_json(cfg.validation_file))
    else:
        try:
            raw = load_dataset(cfg.dataset_name)
        except Exception as err:
            hint = " (the Hub is unreachable and it is not in the local cache)" if is_offline() else ""
            raise DataError(
                f"data.dataset_name={cfg.dataset_name!r} could not be loaded{hint}: point "
                "data.train_file/data.validation_file at local SQuAD-format JSON and set data.dataset_name=null"
            ) from err
        missing = {"train", "validation"} - set(raw)
        if missing:
            raise DataError(f"data.dataset_name={cfg.dataset_name!r} has no split {sorted(missing)}")
    raw = DatasetDict({split: ds.select_columns(list(COLUMNS)) for split, ds in raw.items()})
    if cfg.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(cfg.max_train_samples, len(raw["train"]))))
    if cfg.max_eval_samples is not None:
        raw["validation"] = raw["validation"].select(range(min(cfg.max_eval_samples, len(raw["validation"]))))
    for split, ds in raw.items():  # the rows that will be used
        check_examples(ds, split)
    return raw


def check_examples(ds: Dataset, split: str) -> None:
    """Reject rows the pipeline would silently mistrain on; the error names the example id."""
    if len(ds) == 0:
        raise DataError(f"the {split} split is empty")
    seen: set[str] = set()
    for batch in ds.iter(batch_size=2048):
        for qid, context, question, answers in zip(
            batch["id"], batch["context"], batch["question"], batch["answers"], strict=True
        ):
            if qid in seen:
                raise DataError(f"{split}: duplicate example id {qid!r}")
            seen.add(qid)
            if not context.strip():
                raise DataError(f"{split}: example {qid!r} has an empty context")
            if not question.strip():
                raise DataError(f"{split}: example {qid!r} has an empty question")
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                if not text or context[start : start + len(text)] != text:
                    raise DataError(
                        f"{split}: example {qid!r}: answer {text!r} is not at answer_start={start} of its context"
                    )
