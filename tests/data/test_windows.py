"""Windows and labels on hand-checked cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spanqa.config import DataConfig
from spanqa.data.windows import make_windows
from spanqa.errors import DataError

FILLER = "The market opened early on most days of the week. "


def batch(context: str, answers: list[tuple[str, int]], question: str = "Where was Kalo born?") -> dict[str, Any]:
    return {
        "id": ["q1"],
        "question": [question],
        "context": [context],
        "answers": [{"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]}],
    }


def windows(tokenizer, context: str, answers: list[tuple[str, int]], **cfg: int) -> dict[str, list]:
    settings = {"max_length": 48, "doc_stride": 12, "max_query_length": 12, **cfg}
    return make_windows(batch(context, answers), tokenizer, DataConfig(**settings), for_eval=True)


def span_text(out: dict[str, list], w: int, context: str) -> str:
    s, e = out["start_positions"][w], out["end_positions"][w]
    return context[out["offset_mapping"][w][s][0] : out["offset_mapping"][w][e][1]]


def test_answer_only_in_a_later_window_is_labelled_there_and_cls_elsewhere(tokenizer) -> None:
    context = FILLER * 6 + "Kalo was born in Bilbao. " + FILLER
    start = context.index("Bilbao")
    out = windows(tokenizer, context, [("Bilbao", start)])
    labelled = [w for w, s in enumerate(out["start_positions"]) if s != 0]
    assert len(out["input_ids"]) > 2 and 0 not in labelled and labelled
    for w in range(len(out["input_ids"])):
        if w in labelled:
            assert span_text(out, w, context) == "Bilbao"
        else:
            assert (out["start_positions"][w], out["end_positions"][w]) == (0, 0)


def test_answer_cut_by_a_window_edge_is_cls_in_that_window(tokenizer) -> None:
    context = FILLER * 8
    out = windows(tokenizer, context, [("x", 0)])  # labels unused: find the first window's last context token
    first_ctx = [o for o in out["offset_mapping"][0] if o[0] != -1]
    # An answer made of the first window's last two context tokens plus the next word straddles the edge.
    edge_start = first_ctx[-2][0]
    edge_end = context.index(" ", first_ctx[-1][1] + 1)
    answer = context[edge_start:edge_end]
    out = windows(tokenizer, context, [(answer, edge_start)])
    assert (out["start_positions"][0], out["end_positions"][0]) == (0, 0)
    inside = [w for w in range(len(out["input_ids"])) if out["start_positions"][w] != 0]
    assert inside and all(span_text(out, w, context) == answer for w in inside)
    # ... while the first window's own last context token, fully inside, is labelled at the very edge.
    last_tok = context[first_ctx[-1][0] : first_ctx[-1][1]]
    out = windows(tokenizer, context, [(last_tok, first_ctx[-1][0])])
    ctx_positions = [i for i, m in enumerate(out["context_mask"][0]) if m]
    assert out["start_positions"][0] == out["end_positions"][0] == ctx_positions[-1]


def test_unanswerable_is_cls_everywhere_and_offsets_mark_the_context(tokenizer) -> None:
    context = FILLER * 5
    out = windows(tokenizer, context, [])
    assert set(out["start_positions"]) == {0} and set(out["end_positions"]) == {0}
    for offsets, mask, ids in zip(out["offset_mapping"], out["context_mask"], out["input_ids"], strict=True):
        assert len(offsets) == len(mask) == len(ids)
        assert all((o == [-1, -1]) == (m == 0) for o, m in zip(offsets, mask, strict=True))
        assert mask[0] == 0 and mask[-1] == 0  # [CLS] and the final [SEP]


def test_each_context_token_has_exactly_one_max_context_window(tokenizer) -> None:
    context = FILLER * 6
    out = windows(tokenizer, context, [])
    owners: dict[tuple[int, int], int] = {}
    for w, (offsets, flags) in enumerate(zip(out["offset_mapping"], out["max_context"], strict=True)):
        for o, f in zip(offsets, flags, strict=True):
            if f:
                assert tuple(o) not in owners, "a token is max-context in two windows"
                owners[tuple(o)] = w
    all_tokens = {tuple(o) for offsets in out["offset_mapping"] for o in offsets if o[0] != -1}
    assert set(owners) == all_tokens
    # A token in the middle of a window (not at its edge) is owned by that window: check the first token.
    first = next(tuple(o) for o in out["offset_mapping"][0] if o[0] != -1)
    assert owners[first] == 0


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("  Leading blanks,   runs of spaces\tand a tab: Zürich is where Kalo was born.", "Zürich"),
        ("Kalo loved the naïve café on the Straße, near Kraków.", "café on the Straße"),
        ("Kalo was born in 東京 and moved to Dakar.", "Dakar"),
    ],
)
def test_whitespace_and_unicode_round_trip(tokenizer, context: str, answer: str) -> None:
    out = windows(tokenizer, context, [(answer, context.index(answer))], max_length=96, doc_stride=16)
    labelled = [w for w, s in enumerate(out["start_positions"]) if s != 0]
    assert labelled and all(span_text(out, w, context) == answer for w in labelled)


def test_long_questions_are_cut_to_max_query_length(tokenizer) -> None:
    question = "Where " + "really " * 40 + "was Kalo born?"
    out = make_windows(
        batch(FILLER, [], question=question),
        tokenizer,
        DataConfig(max_length=48, doc_stride=8, max_query_length=10),
        True,
    )
    first_context = out["context_mask"][0].index(1)
    assert first_context == 1 + 10 + 1  # [CLS] + 10 question tokens + [SEP]


def test_held_out_articles_share_no_title_with_the_training_questions(demo_dir: Path) -> None:
    from spanqa.config import DataConfig
    from spanqa.data.squad import load_examples
    from spanqa.data.windows import hold_out

    raw, _ = load_examples(
        DataConfig(train_file=str(demo_dir / "train.json"), validation_file=str(demo_dir / "dev.json"))
    )
    train = raw["train"]
    kept, held = hold_out(train, 0.05, "article", seed=3)
    assert len(kept) + len(held) == len(train) and len(held) >= 0.05 * len(train)
    assert not set(kept["title"]) & set(held["title"])
    assert hold_out(train, 0.05, "article", seed=3)[1]["id"] == held["id"]  # seeded
    # By question, paragraphs (and their articles) straddle the split: what the article split avoids.
    kept_q, held_q = hold_out(train, 0.05, "question", seed=3)
    assert set(kept_q["title"]) & set(held_q["title"])
    with pytest.raises(DataError, match=r"held_out_by=article needs articles: the training data has 1 distinct"):
        hold_out(train.map(lambda row: {"title": "one"}), 0.05, "article", seed=3)
