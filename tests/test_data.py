"""Loading local official-format SQuAD files, and the errors for malformed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spanqa.config import DataConfig
from spanqa.data import load_examples
from spanqa.errors import DataError


def squad(qas: list[dict[str, Any]], context: str = "Kalo was born in Bilbao.") -> dict[str, Any]:
    return {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


GOOD = {"id": "a1", "question": "Where was Kalo born?", "answers": [{"text": "Bilbao", "answer_start": 17}]}


def load(tmp_path: Path, train: Any, dev: Any = None) -> Any:
    paths = []
    for name, blob in (("train.json", train), ("dev.json", dev if dev is not None else squad([GOOD]))):
        path = tmp_path / name
        path.write_text(blob if isinstance(blob, str) else json.dumps(blob))
        paths.append(str(path))
    return load_examples(DataConfig(dataset_name=None, train_file=paths[0], validation_file=paths[1]))


def test_local_official_json_loads_with_unanswerable(tmp_path: Path) -> None:
    impossible = {
        "id": "a2",
        "question": "Where did Kalo die?",
        "answers": [],
        "is_impossible": True,
        "plausible_answers": [{"text": "Bilbao", "answer_start": 17}],
    }
    raw = load(tmp_path, squad([GOOD, impossible]))
    assert raw["train"]["id"] == ["a1", "a2"]
    assert raw["train"]["answers"] == [{"text": ["Bilbao"], "answer_start": [17]}, {"text": [], "answer_start": []}]


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            squad([{**GOOD, "answers": [{"text": "Bilbao", "answer_start": 3}]}]),
            "train: example 'a1': answer 'Bilbao' is not at answer_start=3",
        ),
        (squad([GOOD, GOOD]), "train: duplicate example id 'a1'"),
        (squad([{**GOOD, "is_impossible": True}]), "example 'a1' has is_impossible=true but also answers"),
        (squad([{**GOOD, "question": "  "}]), "train: example 'a1' has an empty question"),
        (squad([{**GOOD, "answers": []}], context=" "), "train: example 'a1' has an empty context"),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, "not in SQuAD format"),
        ("{not json", "not valid JSON"),
        (squad([]), "train.json: holds no questions"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path: Path, train: Any, message: str) -> None:
    with pytest.raises(DataError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")) as err:
        load(tmp_path, train)
    assert "\n" not in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does-not-exist\.json' does not exist"):
        load_examples(
            DataConfig(
                dataset_name=None,
                train_file=str(tmp_path / "does-not-exist.json"),
                validation_file=str(tmp_path / "x.json"),
            )
        )
