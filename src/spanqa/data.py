"""SQuAD v2 examples (Hub dataset, a local copy of it, or local official-format JSON) → checked rows;
`spanqa.features` windows them.

The Hub dataset and a local directory holding it (`hf download rajpurkar/squad_v2 --repo-type dataset
--local-dir DIR`: a README with the splits and parquet shards) go through the same `load_dataset` call; a
directory written by `DatasetDict.save_to_disk` is read with `load_from_disk`. `datasets` is imported inside
the functions: `check_data_source` runs before any heavy import, in the first second of a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanqa.config import DataConfig
from spanqa.errors import DataError
from spanqa.hub import is_offline

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

COLUMNS = ("id", "title", "context", "question", "answers")
SPLITS = ("train", "validation")


def check_data_source(cfg: DataConfig) -> None:
    """Local files exist, can be read and hold JSON with a `data` list: checked before the tokenizer or model is
    touched (on a real machine, before a 440 MB download), so a typo costs a second, not minutes."""
    for key in ("train_file", "validation_file"):
        path = getattr(cfg, key)
        if path is not None:
            _read_squad_json(path, f"data.{key}")


def _read_squad_json(path: str, key: str | None = None) -> dict[str, Any]:
    """The parsed official-format file; DataError naming the setting (or the file) and the problem."""
    where = f"{key}={path!r}" if key else repr(path)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{where} does not exist" + (" (it is a directory)" if file.is_dir() else ""))
    try:
        with file.open(encoding="utf-8") as f:
            blob = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{where} is not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{where} cannot be read ({getattr(err, 'strerror', None) or err})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("data"), list):
        raise DataError(f"{where} is not in SQuAD format (expected an object with a 'data' list of articles)")
    return blob


def _iter_squad_json(path: str, mtime_ns: int) -> Iterator[dict[str, Any]]:
    """Flatten the official nested format. `mtime_ns` is unused here but part of the datasets cache key."""
    del mtime_ns
    blob = _read_squad_json(path)
    try:
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
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"{path}: not in SQuAD format (expected data[].paragraphs[].qas[] with id/question/answers; "
            f"problem at {err!r})"
        ) from err


def squad_features() -> Any:
    """The Hub dataset's features (rajpurkar/squad_v2): local JSON is read into the same types."""
    from datasets import Features, Sequence, Value

    strings = {name: Value("string") for name in COLUMNS[:-1]}
    return Features({**strings, "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})


def _from_squad_json(path: str) -> Dataset:
    from datasets import Dataset

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data file {path!r} does not exist")
    try:
        return Dataset.from_generator(
            _iter_squad_json,
            features=squad_features(),
            gen_kwargs={"path": str(file.resolve()), "mtime_ns": file.stat().st_mtime_ns},
        )
    except Exception as err:  # datasets wraps generator errors; surface ours unchanged
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or DataError(f"{path}: could not be read ({err})")) from err


def _from_dataset(name: str) -> DatasetDict:
    """`load_dataset(name)`: a Hub id or a local dir in the Hub layout; a save_to_disk dir via load_from_disk."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    local = Path(name).expanduser()
    try:
        raw = load_from_disk(str(local)) if (local / "dataset_dict.json").is_file() else load_dataset(name)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        hint = (
            " (the Hub is unreachable and it is not in the local cache)" if is_offline() and not local.exists() else ""
        )
        raise DataError(
            f"data.dataset_name={name!r} could not be loaded{hint}: {type(err).__name__}: {first} -- or point "
            "data.train_file/data.validation_file at official-format SQuAD JSON"
        ) from err
    if not isinstance(raw, DatasetDict):
        raise DataError(f"data.dataset_name={name!r} is a single split: expected the splits {', '.join(SPLITS)}")
    missing_splits = [split for split in SPLITS if split not in raw]
    if missing_splits:
        raise DataError(
            f"data.dataset_name={name!r} has no split {', '.join(missing_splits)} (it has {', '.join(raw) or 'none'})"
        )
    for split in SPLITS:
        missing = [c for c in COLUMNS if c not in raw[split].column_names]
        if missing:
            raise DataError(
                f"data.dataset_name={name!r}: its {split} split lacks the SQuAD column(s) {', '.join(missing)} "
                f"(has {', '.join(raw[split].column_names)}; expected {', '.join(COLUMNS)})"
            )
    return DatasetDict({split: raw[split] for split in SPLITS})


def load_examples(cfg: DataConfig) -> DatasetDict:
    """Train and validation examples with columns id, title, context, question, answers{text, answer_start}."""
    from datasets import DatasetDict

    if cfg.train_file is not None and cfg.validation_file is not None:
        raw = DatasetDict(train=_from_squad_json(cfg.train_file), validation=_from_squad_json(cfg.validation_file))
    else:
        assert cfg.dataset_name is not None, "DataConfig guarantees a dataset name or both files"
        raw = _from_dataset(cfg.dataset_name)
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
