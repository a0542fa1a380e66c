"""Preprocessing benchmark: paragraph merging on hand-made data, and small end-to-end runs."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from spanqa.benchmarks.preprocess import group_sizes, main, make_dataset, merge_paragraphs
from spanqa.data.demo import make_squad_v2, train_tokenizer


def paragraph(context: str, answer: str | None, qid: str) -> dict:
    answers = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
    return {
        "context": context,
        "qas": [{"id": qid, "question": "Who?", "answers": answers, "is_impossible": not answers}],
    }


def test_merged_contexts_are_joined_by_a_space_and_answers_shifted():
    paragraphs = [paragraph("Ana was born in Kobe.", "Kobe", "a"), paragraph("Bo is a pilot.", "pilot", "b")]
    paragraphs.append(paragraph("Cy likes teal.", None, "c"))
    merged = merge_paragraphs(paragraphs, [2, 1])
    assert [m["context"] for m in merged] == ["Ana was born in Kobe. Bo is a pilot.", "Cy likes teal."]
    assert [[qa["id"] for qa in m["qas"]] for m in merged] == [["a", "b"], ["c"]]
    # "Kobe" stays at 16; "pilot" moves from 8 to 8 + len("Ana was born in Kobe.") + 1 = 30.
    assert [qa["answers"][0]["answer_start"] for qa in merged[0]["qas"]] == [16, 30]
    assert merged[1]["qas"][0]["answers"] == []
    assert paragraphs[1]["qas"][0]["answers"][0]["answer_start"] == 8  # the input is left as it was
    with pytest.raises(ValueError, match="add up to 3"):
        merge_paragraphs(paragraphs, [1, 1])


def test_group_sizes_add_up_and_have_the_requested_mean():
    rng = random.Random(0)
    assert group_sizes(7, 1.0, rng) == [1] * 7
    sizes = group_sizes(20_000, 1.5, rng)
    assert sum(sizes) == 20_000 and min(sizes) >= 1
    assert len(sizes) == pytest.approx(20_000 / 1.5, rel=0.03)
    assert max(sizes) >= 6  # a geometric tail: some contexts are several times the mean
    with pytest.raises(ValueError, match=r"mean=0\.5"):
        group_sizes(3, 0.5, rng)


def test_merged_demo_data_keeps_every_question_and_answer():
    plain = make_dataset(200, seed=4, title="t", context_repeat=1)
    merged = make_dataset(200, seed=4, title="t", context_repeat=3)
    qa_of = {
        name: {qa["id"]: (qa["answers"], p["context"]) for p in blob["data"][0]["paragraphs"] for qa in p["qas"]}
        for name, blob in (("plain", plain), ("merged", merged))
    }
    assert qa_of["plain"].keys() == qa_of["merged"].keys()
    n_plain, n_merged = (len(b["data"][0]["paragraphs"]) for b in (plain, merged))
    assert n_merged < n_plain / 2
    for answers, context in qa_of["merged"].values():
        for a in answers:
            assert context[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paragraphs = [p for a in make_squad_v2(100, seed=9)["data"] for p in a["paragraphs"]]
    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([p["context"] for p in paragraphs] + [qa["question"] for p in paragraphs for qa in p["qas"]], out)
    return out


def run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    main(["--questions", "120", "--eval-questions", "40", *args])
    out = capsys.readouterr().out
    windows = re.search(r"windows: train (\d+) \+ eval (\d+) = (\d+)", out)
    assert windows is not None, out
    train, evaluation, total = (int(x) for x in windows.groups())
    assert train + evaluation == total
    return {"out": out, "train": train, "eval": evaluation}


def test_short_contexts_give_one_window_each_and_the_rerun_hits_the_cache(
    capsys: pytest.CaptureFixture[str], tokenizer_dir: Path
):
    # Demo contexts (~66 tokens) never overflow 384: one window per question.
    result = run(capsys, "--context-repeat", "1", "--tokenizer", str(tokenizer_dir))
    assert (result["train"], result["eval"]) == (120, 40)
    assert "cache hit: True" in result["out"] and "new cache files: 0," in result["out"]
    wrote = re.search(r"first run wrote (\d+)", result["out"])
    assert wrote is not None and int(wrote.group(1)) > 0  # the cold run really filled the fresh cache
    assert re.search(r"cold cache: .* -> [\d,]+ features/s", result["out"])


def test_long_merged_contexts_overflow_into_more_windows_also_with_two_processes(
    capsys: pytest.CaptureFixture[str],
):
    # ~8 paragraphs (~530 tokens) per context on average: most questions need two windows or more. The
    # tokenizer is trained by the benchmark itself here.
    result = run(capsys, "--context-repeat", "8", "--num-proc", "2")
    assert result["train"] > 1.5 * 120 and result["eval"] > 1.5 * 40
    assert "cache hit: True" in result["out"]
