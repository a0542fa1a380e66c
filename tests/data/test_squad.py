"""Loading local official-format SQuAD files, and the errors for malformed ones."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from spanqa.config import DataConfig
from spanqa.data.squad import load_examples
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
    return load_examples(DataConfig(dataset_name=None, train_file=paths[0], validation_file=paths[1]))[0]


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
            "train: question 'a1' has an answer 'Bilbao' not at answer_start=3 of its context (data.bad_rows",
        ),
        (squad([GOOD, GOOD]), "train: question 'a1' repeats the id of an earlier question"),
        (squad([{**GOOD, "is_impossible": True}]), "train: question 'a1' has is_impossible=true but also answers"),
        (squad([{**GOOD, "question": "  "}]), "train: question 'a1' has an empty question"),
        (squad([{**GOOD, "answers": []}], context=" "), "train: question 'a1' has an empty context"),
        (squad([{**GOOD, "question": "\u200b\u200b"}]), "train: question 'a1' has an empty question"),
        (squad([{**GOOD, "question": "\ufeff \u00ad"}]), "train: question 'a1' has an empty question"),
        (
            squad([{**GOOD, "answers": [{"text": " ", "answer_start": 4}]}]),
            "train: question 'a1' has a blank answer ' '",
        ),
        (
            {"data": [{"paragraphs": [{"qas": []}]}]},
            "not in SQuAD format: data[0].paragraphs[0] has no 'context' string",
        ),
        ("{not json", "not valid JSON"),
        (squad([]), "train.json: holds no questions"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path: Path, train: Any, message: str) -> None:
    with pytest.raises(DataError, match="^.*" + re.escape(message)) as err:
        load(tmp_path, train)
    assert "\n" not in str(err.value)


DAKAR = "Amadou met her in Dakar and stayed."


def test_answers_with_surrounding_whitespace_are_trimmed_and_reported(tmp_path: Path, tokenizer) -> None:
    """ " Dakar " at a consistent answer_start would be labelled as the tokens `in Dakar and`."""
    from spanqa.data.windows import make_windows

    answer = {"text": " Dakar ", "answer_start": 17}
    spaced = {"id": "d1", "question": "Where did Amadou meet her?", "answers": [answer]}
    assert DAKAR[17:24] == " Dakar "
    train_file, dev_file = tmp_path / "train.json", tmp_path / "dev.json"
    train_file.write_text(json.dumps(squad([spaced], context=DAKAR)))
    dev_file.write_text(json.dumps(squad([GOOD])))
    raw, rows = load_examples(DataConfig(dataset_name=None, train_file=str(train_file), validation_file=str(dev_file)))
    assert raw["train"]["answers"] == [{"text": ["Dakar"], "answer_start": [18]}]
    assert rows.trimmed == [{"id": "d1", "split": "train", "text": " Dakar ", "answer_start": 17,
                             "trimmed_text": "Dakar", "trimmed_start": 18}]  # fmt: skip
    assert rows.skipped == []
    window = make_windows(raw["train"][:], tokenizer, DataConfig(), for_eval=False)
    start, end = window["start_positions"][0], window["end_positions"][0]
    labelled = tokenizer.decode(window["input_ids"][0][start : end + 1])
    assert labelled == "Dakar"
    # A clean file is read once and left as it is.
    _, clean = load_examples(DataConfig(dataset_name=None, train_file=str(dev_file), validation_file=str(dev_file)))
    assert clean.trimmed == []


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does-not-exist\.json' does not exist"):
        load_examples(
            DataConfig(
                dataset_name=None,
                train_file=str(tmp_path / "does-not-exist.json"),
                validation_file=str(tmp_path / "x.json"),
            )
        )


def test_the_hub_dataset_layout_loads_through_dataset_name_like_the_official_json(
    real: dict[str, Path], demo_dir: Path, tmp_path: Path
) -> None:
    from spanqa.data.squad import load_examples

    hub, _ = load_examples(DataConfig(dataset_name=str(real["dataset"])))
    files, _ = load_examples(
        DataConfig(train_file=str(demo_dir / "train.json"), validation_file=str(demo_dir / "dev.json"))
    )
    for split in ("train", "validation"):
        assert hub[split].features == files[split].features
        assert hub[split][:] == files[split][:]
    # A copy saved with DatasetDict.save_to_disk works the same way.
    hub.save_to_disk(str(tmp_path / "saved"))
    assert load_examples(DataConfig(dataset_name=str(tmp_path / "saved")))[0]["validation"][:] == files["validation"][:]


def test_a_dataset_in_another_schema_names_the_missing_columns(real: dict[str, Path]) -> None:
    from spanqa.data.squad import load_examples

    with pytest.raises(DataError, match=r"its train split lacks the SQuAD column\(s\) question \(has id, title"):
        load_examples(DataConfig(dataset_name=str(real["no_question"])))


def test_a_hub_dataset_that_cannot_be_reached_keeps_the_librarys_reason() -> None:
    from spanqa.data.squad import load_examples

    with pytest.raises(DataError) as err:
        load_examples(DataConfig(dataset_name="rajpurkar/squad_v2"))
    assert str(err.value).startswith(
        "data.dataset_name='rajpurkar/squad_v2' could not be loaded (the Hub is unreachable and it is not in the "
        "local cache): ConnectionError: Couldn't reach 'rajpurkar/squad_v2' on the Hub (OfflineModeIsEnabled)"
    )


def test_huggingface_hub_still_rejects_single_segment_ids() -> None:
    """Why `canonical_dataset_id` exists; if this fails, the pinned huggingface_hub accepts them again."""
    from huggingface_hub import HfFileSystem

    with pytest.raises(ValueError, match="Repository id must be 'namespace/name'"):
        HfFileSystem().resolve_path("squad_v2")


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "is not valid JSON"), ('{"version": "v2.0"}', "is not in SQuAD format (expected an object with a 'data'")],
)
def test_unreadable_local_files_are_named_in_the_first_check(tmp_path: Path, content: str, message: str) -> None:
    from spanqa.data.squad import check_data_source

    bad = tmp_path / "train.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=rf"^data\.train_file='{re.escape(str(bad))}' {re.escape(message)}"):
        check_data_source(DataConfig(train_file=str(bad), validation_file=str(bad)))
