"""SQuAD v2 questions: the official JSON format, the Hub dataset, and the checks every row passes.

One walker (`iter_squad`) reads the official nested format for every consumer: training data, the scorer's gold
answers and `make predict`'s input files; each names the fields it needs. The Hub dataset and a local directory
holding it (`hf download rajpurkar/squad_v2 --repo-type dataset --local-dir DIR`: a README with the splits and
parquet shards) go through the same `load_dataset` call; a directory written by `DatasetDict.save_to_disk` is read
with `load_from_disk`. `datasets` is imported inside the functions: `check_data_source` runs before any heavy
import, in the first second of a run.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanqa.config import DataConfig
from spanqa.env import is_offline
from spanqa.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, Features

log = logging.getLogger(__name__)
COLUMNS = ("id", "title", "context", "question", "answers")
SPLITS = ("train", "validation")


# ---------------------------------------------------------------------------------------------------- the JSON format
def read_squad_json(path: str | Path, key: str | None = None) -> dict[str, Any]:
    """The parsed official-format file; DataError naming the setting (or the file) and the problem."""
    where = f"{key}={str(path)!r}" if key else str(path)
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


def iter_squad(blob: Any, where: str, fields: tuple[str, ...] = ("context", "question", "answers")) -> Iterator[dict]:
    """Every question of an official-format document, in file order: {id, title, context, question, answers,
    is_impossible}, answers as the file's [{text, answer_start}] list. The `fields` a consumer needs must be present
    and typed (context and question strings; answers a list of objects with a string text); errors name the place."""
    if not isinstance(blob, dict) or not isinstance(blob.get("data"), list):
        raise DataError(f"{where}: not in SQuAD format (expected an object with a 'data' list of articles)")
    for i, article in enumerate(blob["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{where}: not in SQuAD format: data[{i}] has no 'paragraphs' list")
        for j, paragraph in enumerate(paragraphs):
            at = f"data[{i}].paragraphs[{j}]"
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise DataError(f"{where}: not in SQuAD format: {at} has no 'qas' list")
            context = paragraph.get("context")
            if "context" in fields and not isinstance(context, str):
                raise DataError(f"{where}: not in SQuAD format: {at} has no 'context' string")
            for qa in qas:
                qid = qa.get("id") if isinstance(qa, dict) else None
                if isinstance(qid, bool) or not isinstance(qid, (str, int)):
                    raise DataError(f"{where}: not in SQuAD format: a question in {at} has no 'id'")
                qid = str(qid)
                if "question" in fields and not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}: question {qid!r} has no 'question' string")
                answers = qa.get("answers", [])
                if "answers" in fields and not (
                    isinstance(answers, list)
                    and all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers)
                ):
                    raise DataError(f"{where}: question {qid!r} needs 'answers': a list of {{text, answer_start}}")
                yield {
                    "id": qid,
                    "title": article.get("title", ""),
                    "context": context,
                    "question": qa.get("question"),
                    "answers": answers,
                    "is_impossible": bool(qa.get("is_impossible", False)),
                }


def repeated(ids: Iterable[str]) -> list[int]:
    """Positions of ids seen before (a duplicate would merge two questions' windows and scores)."""
    seen: set[str] = set()
    out = []
    for i, qid in enumerate(ids):
        if qid in seen:
            out.append(i)
        seen.add(qid)
    return out


def unique_ids(ids: Iterable[str], where: str) -> None:
    """The ids must be unique, and there must be some."""
    ids = list(ids)
    if not ids:
        raise DataError(f"{where}: holds no questions")
    dup = repeated(ids)
    if dup:
        raise DataError(f"{where}: duplicate question id {ids[dup[0]]!r}")


def is_blank(text: str) -> bool:
    """Nothing a tokenizer keeps: whitespace, and invisible format or control characters (U+200B zero-width space,
    U+FEFF, soft hyphens), which BERT's normaliser drops."""
    return all(c.isspace() or unicodedata.category(c)[0] == "C" for c in text)


def row_problem(question: Any, context: Any, texts: Sequence[str] = (), starts: Sequence[int] = ()) -> str | None:
    """Why a row cannot be used, as a predicate of "question <id> ...", or None: a blank question or context
    windows into nothing, and an answer not found at its answer_start trains the model on the wrong tokens."""
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str):
            return f"has a {name} that is not a string"
        if is_blank(value):
            return f"has an empty {name}"
    for text, start in zip(texts, starts, strict=True):
        if not text or is_blank(text):
            return f"has a blank answer {text!r}"
        if context[start : start + len(text)] != text:
            return f"has an answer {text!r} not at answer_start={start} of its context"
    return None


def trimmed_answer(context: str, text: str, start: int) -> tuple[str, int] | None:
    """(text, answer_start) without the whitespace around an answer found at its answer_start, or None when there
    is nothing to trim (or it is not at answer_start: the row check reports that). Labels are the tokens the answer
    covers: " Dakar " at its place would be labelled as the words on either side of it too."""
    stripped = text.strip()
    if stripped == text or not stripped or context[start : start + len(text)] != text:
        return None
    return stripped, start + len(text) - len(text.lstrip())


def check_question(qid: str, question: Any, context: Any, where: str) -> None:
    if (problem := row_problem(question, context)) is not None:
        raise DataError(f"{where}question {qid!r} {problem}")


# ---------------------------------------------------------------------------------------------------- datasets
def check_data_source(cfg: DataConfig) -> None:
    """Local files exist, can be read and hold JSON with a `data` list: checked before the tokenizer or model is
    touched (on a real machine, before a 440 MB download), so a typo costs a second, not minutes."""
    for key in ("train_file", "validation_file"):
        path = getattr(cfg, key)
        if path is not None:
            read_squad_json(path, f"data.{key}")


def squad_features() -> Features:
    """The Hub dataset's features (rajpurkar/squad_v2): local JSON is read into the same types."""
    from datasets import Features, Sequence, Value

    strings = {name: Value("string") for name in COLUMNS[:-1]}
    return Features({**strings, "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")})})


def _rows_of_file(path: str, mtime_ns: int) -> Iterator[dict[str, Any]]:
    """`Dataset.from_generator` rows of one file, with a `problem` for rows only the JSON form can get wrong.
    `mtime_ns` is unused here but part of the datasets cache key."""
    del mtime_ns
    count = 0
    for row in iter_squad(read_squad_json(path), path):
        count += 1
        answers, problem = row["answers"], ""
        try:
            starts = [int(a["answer_start"]) for a in answers]
        except (KeyError, TypeError, ValueError):
            starts, problem = [0] * len(answers), "has an answer without an integer answer_start"
        # The official scorer reads only `answers`; a file that also flags them impossible is ambiguous.
        if row["is_impossible"] and answers:
            problem = "has is_impossible=true but also answers"
        yield {
            "id": row["id"],
            "title": row["title"],
            "context": row["context"],
            "question": row["question"],
            "answers": {"text": [a["text"] for a in answers], "answer_start": starts},
            "problem": problem,
        }
    if count == 0:
        raise DataError(f"{path}: holds no questions")


def _from_squad_json(path: str) -> Dataset:
    from datasets import Dataset, Value

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data file {path!r} does not exist")
    try:
        features = squad_features()
        features["problem"] = Value("string")
        return Dataset.from_generator(
            _rows_of_file,
            features=features,
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
        unreachable = is_offline() and not local.exists()
        hint = " (the Hub is unreachable and it is not in the local cache)" if unreachable else ""
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


@dataclass
class RowReport:
    """What the data step did to rows: dropped as malformed (data.bad_rows=skip: [{id, split, reason}]) and answers
    trimmed of surrounding whitespace ([{id, split, text, answer_start, trimmed_text, trimmed_start}])."""

    skipped: list[dict[str, Any]] = field(default_factory=list)
    trimmed: list[dict[str, Any]] = field(default_factory=list)


def load_examples(cfg: DataConfig) -> tuple[DatasetDict, RowReport]:
    """Train and validation examples with columns id, title, context, question, answers{text, answer_start}, and
    what was done to their rows: answers with surrounding whitespace trimmed (both splits: the official scorer
    ignores that whitespace, so scores do not change), malformed training rows dropped under data.bad_rows=skip."""
    from datasets import DatasetDict

    if cfg.train_file is not None and cfg.validation_file is not None:
        raw = DatasetDict(train=_from_squad_json(cfg.train_file), validation=_from_squad_json(cfg.validation_file))
    else:
        assert cfg.dataset_name is not None, "DataConfig guarantees a dataset name or both files"
        raw = _from_dataset(cfg.dataset_name)
    if cfg.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(cfg.max_train_samples, len(raw["train"]))))
    if cfg.max_eval_samples is not None:
        raw["validation"] = raw["validation"].select(range(min(cfg.max_eval_samples, len(raw["validation"]))))
    report = RowReport()
    for split in SPLITS:
        raw[split], trimmed = trim_answers(raw[split], split)
        report.trimmed += trimmed
    # The rows that will be used. Evaluation rows are never dropped: the reported scores need the whole set.
    raw["train"], report.skipped = check_examples(raw["train"], "train", skip=cfg.bad_rows == "skip")
    raw["validation"], _ = check_examples(raw["validation"], "validation", skip=False)
    return DatasetDict({split: ds.select_columns(list(COLUMNS)) for split, ds in raw.items()}), report


def trim_answers(ds: Dataset, split: str) -> tuple[Dataset, list[dict[str, Any]]]:
    """The split with every answer's surrounding whitespace trimmed and its answer_start moved to match, and one
    entry per trimmed answer. The common case (nothing to trim) reads the answers once and writes nothing."""
    trimmed: list[dict[str, Any]] = []
    columns = ds.select_columns(["id", "context", "answers"])
    for batch in columns.iter(batch_size=2048):
        for qid, context, answers in zip(batch["id"], batch["context"], batch["answers"], strict=True):
            for text, start in zip(answers["text"], answers["answer_start"], strict=True):
                if isinstance(context, str) and (new := trimmed_answer(context, text, start)) is not None:
                    trimmed.append({"id": qid, "split": split, "text": text, "answer_start": start,
                                    "trimmed_text": new[0], "trimmed_start": new[1]})  # fmt: skip
    if not trimmed:
        return ds, []
    log.warning("%s: %d answers trimmed of surrounding whitespace", split, len(trimmed))
    return ds.map(_trim_batch, batched=True, features=ds.features, desc=f"{split}: trim answers"), trimmed


def _trim_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    out = []
    for context, answers in zip(batch["context"], batch["answers"], strict=True):
        texts, starts = [], []
        for text, start in zip(answers["text"], answers["answer_start"], strict=True):
            new = trimmed_answer(context, text, start) if isinstance(context, str) else None
            texts.append(text if new is None else new[0])
            starts.append(start if new is None else new[1])
        out.append({"text": texts, "answer_start": starts})
    return {"answers": out}


def check_examples(ds: Dataset, split: str, skip: bool = False) -> tuple[Dataset, list[dict[str, str]]]:
    """Rows the pipeline would silently mistrain on: the first stops the run (naming the split and the question
    id), or, with `skip`, every such row is dropped and returned with its reason."""
    if len(ds) == 0:
        raise DataError(f"the {split} split is empty")
    problems: dict[int, str] = dict.fromkeys(repeated(ds["id"]), "repeats the id of an earlier question")
    columns = ["id", "context", "question", "answers", *(["problem"] if "problem" in ds.column_names else [])]
    position = 0
    for batch in ds.select_columns(columns).iter(batch_size=2048):
        marked = batch.get("problem") or [""] * len(batch["id"])
        rows = zip(batch["context"], batch["question"], batch["answers"], marked, strict=True)
        for i, (context, question, answers, mark) in enumerate(rows, start=position):
            found = mark or row_problem(question, context, answers["text"], answers["answer_start"])
            if found and i not in problems:
                problems[i] = found
        position += len(batch["id"])
    if not problems:
        return ds, []
    ids = ds["id"]
    if not skip:
        first = min(problems)
        where = (
            "data.bad_rows=skip drops such training rows" if split == "train" else "evaluation rows are never dropped"
        )
        raise DataError(f"{split}: question {ids[first]!r} {problems[first]} ({where})")
    skipped = [{"id": ids[i], "split": split, "reason": problems[i]} for i in sorted(problems)]
    log.warning("%s: %d malformed rows skipped (data.bad_rows=skip)", split, len(skipped))
    return ds.select(sorted(set(range(len(ds))) - problems.keys())), skipped
