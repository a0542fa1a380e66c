"""The tagging-only head: BIO emissions with a softmax per token, the CRF head without its CRF. Its span scores and
loss against brute force over every path, decoding, save/load, and learning."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertConfig

from spanqa.models.tagging import (
    TAG_B,
    TAG_I,
    TAG_O,
    ContextWindows,
    SpanBertBioConfig,
    SpanBertBioForQuestionAnswering,
    bio_spans,
)


def tiny_model(**settings) -> SpanBertBioForQuestionAnswering:
    encoder = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    return SpanBertBioForQuestionAnswering(SpanBertBioConfig(encoder=encoder.to_dict(), **settings)).eval()


def path_log_prob(log_probs: torch.Tensor, path: list[int]) -> float:
    return float(sum(log_probs[t, tag] for t, tag in enumerate(path)))


def test_span_scores_are_path_log_odds_against_all_o_by_brute_force() -> None:
    model = tiny_model()
    torch.manual_seed(1)
    n = 6
    emissions = torch.randn(1, n, 3, dtype=torch.float64)
    log_probs = emissions[0].log_softmax(dim=-1)
    null = path_log_prob(log_probs, [TAG_O] * n)
    for start, end in ((s, e) for s in range(n) for e in range(s, n)):
        path = [TAG_O] * n
        path[start] = TAG_B
        path[start + 1 : end + 1] = [TAG_I] * (end - start)
        expected = path_log_prob(log_probs, path) - null
        got = model.span_log_odds(emissions, torch.tensor([n]), torch.tensor([0]), torch.tensor([start]),
                                  torch.tensor([end]))  # fmt: skip
        assert float(got) == pytest.approx(expected, abs=1e-9), (start, end)


def test_the_loss_is_the_gold_tags_sequence_nll_over_context_tokens() -> None:
    model = tiny_model()
    torch.manual_seed(2)
    emissions = torch.randn(2, 5, 3)
    context = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    tags = torch.tensor([[0, 1, 2, 0, 0], [0, 0, 0, 1, 0]])
    windows = ContextWindows.from_mask(context)
    nll = [-sum(float(emissions[w, t].log_softmax(-1)[tags[w, t]]) for t in range(5) if context[w, t]) for w in (0, 1)]
    assert float(model.tagging_loss(emissions, windows, tags)) == pytest.approx(sum(nll) / 2, rel=1e-5)


def test_decoding_returns_the_best_single_span_paths_with_a_null_of_zero() -> None:
    model = tiny_model(num_candidates=3, max_answer_length=3)
    torch.manual_seed(3)
    emissions = torch.randn(1, 7, 3)
    context = torch.tensor([[0, 0, 1, 1, 1, 1, 0]])  # context positions 2..5
    start, end, score, null = model.decode(emissions, ContextWindows.from_mask(context))
    assert float(null) == 0.0
    log_probs = emissions[0, 2:6].log_softmax(-1)
    every = {}
    for s, e in itertools.product(range(4), range(4)):
        if s <= e < s + 3:
            path = [TAG_O] * 4
            path[s], path[s + 1 : e + 1] = TAG_B, [TAG_I] * (e - s)
            assert bio_spans(path) == [(s, e)]
            every[(s + 2, e + 2)] = path_log_prob(log_probs, path) - path_log_prob(log_probs, [TAG_O] * 4)
    best = sorted(every.items(), key=lambda kv: -kv[1])[:3]
    assert [(int(a), int(b)) for a, b in zip(start[0], end[0], strict=True)] == [span for span, _ in best]
    assert score[0].tolist() == pytest.approx([v for _, v in best], abs=1e-5)


def test_saved_and_loaded_through_the_auto_class(tmp_path: Path) -> None:
    model = tiny_model(max_answer_length=7)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert isinstance(loaded, SpanBertBioForQuestionAnswering) and loaded.config.max_answer_length == 7
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_few_steps_learn_a_span() -> None:
    model = tiny_model().train()
    ids = torch.randint(5, 100, (4, 12), generator=torch.Generator().manual_seed(4))
    context = torch.tensor([[0] * 4 + [1] * 7 + [0]] * 4)
    starts, ends = torch.tensor([5, 6, 0, 7]), torch.tensor([6, 8, 0, 7])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(ids, context_mask=context, start_positions=starts, end_positions=ends).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    out = model.eval()(ids, context_mask=context)
    assert out.span_start[0, 0] == 5 and out.span_end[0, 0] == 6 and out.span_score[0, 0] > 0
    assert out.span_score[2, 0] < 0  # the window labelled "no answer" prefers the all-O path
