"""SpanBERT-CRF: BIO labels, compaction of the context, constrained decoding, span scores, save/load, training."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering, BertModel

from spanqa.benchmarks import crf_step
from spanqa.models.crf import FORBIDDEN_SCORE, SpanBertCrfConfig, SpanBertCrfForQuestionAnswering, span_log_odds
from spanqa.models.tagging import TAG_B, TAG_I, TAG_O, ContextWindows, bio_spans, bio_tags_from_positions

O, B, I = TAG_O, TAG_B, TAG_I  # noqa: E741 (the tag names of the BIO scheme)


def tiny_encoder(**overrides) -> BertConfig:
    return BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **overrides,
    )


def tiny_model(seed: int = 0, **crf_kwargs) -> SpanBertCrfForQuestionAnswering:
    torch.manual_seed(seed)
    return SpanBertCrfForQuestionAnswering(SpanBertCrfConfig(encoder=tiny_encoder().to_dict(), **crf_kwargs))


def context_rows(seq_len: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """(B, seq_len) context mask with context tokens first..last (inclusive) per row."""
    mask = torch.zeros(len(spans), seq_len, dtype=torch.long)
    for row, (first, last) in enumerate(spans):
        mask[row, first : last + 1] = 1
    return mask


def path_score(crf, emissions: torch.Tensor, path: list[int]) -> float:
    """Unnormalised CRF score of one tag path, summed term by term."""
    with torch.no_grad():
        trans, first, last = crf.transitions, crf.start_transitions, crf.end_transitions
        total = first[path[0]] + last[path[-1]] + sum(emissions[t, tag] for t, tag in enumerate(path))
        total += sum(trans[a, b] for a, b in itertools.pairwise(path))
    return float(total)


def is_well_formed(path: tuple[int, ...]) -> bool:
    return path[0] != I and all((a, b) != (O, I) for a, b in itertools.pairwise(path))


def span_path(length: int, start: int, end: int) -> list[int]:
    return [B if t == start else I if start < t <= end else O for t in range(length)]


# Window of 12: [CLS] q q [SEP] c c c c c c [SEP] [PAD] -> context tokens 4..9.
WINDOW_CONTEXT = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]


def test_bio_tags_hand_checked_windows():
    context = torch.tensor([WINDOW_CONTEXT] * 4)
    starts, ends = torch.tensor([5, 7, 0, 4]), torch.tensor([6, 9, 0, 4])
    tags = bio_tags_from_positions(starts, ends, context, 12)
    assert tags.tolist() == [
        [O, O, O, O, O, B, I, O, O, O, O, O],  # inside the context
        [O, O, O, O, O, O, O, B, I, I, O, O],  # up to the window's last context token
        [O] * 12,  # (0, 0): no answer in this window
        [O, O, O, O, B, O, O, O, O, O, O, O],  # one token, the first of the context
    ]
    assert tags.dtype == torch.long
    # (B, 1)-shaped labels, as some collators produce, give the same tags.
    assert torch.equal(bio_tags_from_positions(starts[:, None], ends[:, None], context, 12), tags)


@pytest.mark.parametrize(("start", "end"), [(2, 5), (8, 10), (6, 5), (0, 4)])
def test_bio_tags_reject_spans_outside_the_context(start: int, end: int):
    context = torch.tensor([WINDOW_CONTEXT, WINDOW_CONTEXT])
    with pytest.raises(ValueError, match=r"window 1: span"):
        bio_tags_from_positions(torch.tensor([5, start]), torch.tensor([6, end]), context, 12)


def test_bio_spans_and_ill_formed_paths():
    assert bio_spans([O, B, I, I, O, B, B, I]) == [(1, 3), (5, 5), (6, 7)]
    assert bio_spans([O, O]) == []
    with pytest.raises(RuntimeError, match="ill-formed"):
        bio_spans([O, I, O])


def test_context_windows_compact_with_holes_and_ragged_lengths():
    context = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    windows = ContextWindows.from_mask(context)
    assert windows.lengths.tolist() == [3, 1, 6]
    assert windows.mask.tolist() == [[True] * 3 + [False] * 3, [True] + [False] * 5, [True] * 6]
    valid = windows.index.masked_fill(~windows.mask, -1).tolist()
    assert valid == [[1, 2, 4, -1, -1, -1], [3, -1, -1, -1, -1, -1], [0, 1, 2, 3, 4, 5]]
    values = torch.arange(18).reshape(3, 6)
    assert windows.gather(values)[0, :3].tolist() == [1, 2, 4]
    with pytest.raises(ValueError, match=r"windows \[1\] have no context token"):
        ContextWindows.from_mask(torch.tensor([[0, 1], [0, 0]]))


def test_decode_maps_spans_back_and_drops_long_ones():
    model = tiny_model(max_answer_length=3, num_candidates=2).eval()
    with torch.no_grad():  # zero transitions: the span scores are the emission gains alone
        for param in model.crf.parameters():
            param.zero_()
    emissions = torch.zeros(2, 12, 3)
    emissions[..., O] = 5.0
    emissions[0, 5, B] = emissions[0, 6, I] = 10.0  # span (5, 6): gain 5 + 5
    emissions[0, 9, B] = 11.0  # span (9, 9) at the context's end: gain 6, beats (5, 5) with gain 5
    emissions[1, 4, B] = 8.0
    emissions[1, 5:9, I] = 6.0  # span (4, 8): 5 tokens > max_answer_length; (4, 6) is the best short one
    windows = ContextWindows.from_mask(context_rows(12, [(4, 9), (3, 10)]))
    start, end, score, null = model.decode(emissions, windows)
    assert start[0].tolist() == [5, 9] and end[0].tolist() == [6, 9]
    assert score[0].tolist() == [10.0, 6.0]
    assert (start[1, 0].item(), end[1, 0].item(), score[1, 0].item()) == (4, 6, 3.0 + 1.0 + 1.0)
    assert (end - start + 1)[start >= 0].max() <= 3
    assert null.tolist() == [0.0, 0.0]
    assert (start.dtype, score.dtype, null.dtype) == (torch.long, torch.float32, torch.float32)


def test_forbidden_transitions_never_decoded_and_stay_fixed():
    model = tiny_model()
    crf = model.crf
    with torch.no_grad():  # raw values that would favour O->I and start->I if they were used
        crf.parametrizations.transitions.original[O, I] = 20.0
        crf.parametrizations.start_transitions.original[I] = 20.0
    assert crf.transitions[O, I].item() == FORBIDDEN_SCORE
    assert crf.start_transitions[I].item() == FORBIDDEN_SCORE

    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(16, 30, 3, generator=generator)
    emissions[..., I] += 4.0  # I is the best tag of every token on its own
    lengths = torch.randint(1, 31, (16,), generator=generator)
    mask = torch.arange(30)[None] < lengths[:, None]
    paths = crf.decode(emissions, mask=mask)
    assert any(I in path for path in paths)
    for path in paths:
        assert path[0] != I
        assert all((a, b) != (O, I) for a, b in itertools.pairwise(path))

    # No gradient reaches the pinned entries, so optimizer updates (weight decay included) cannot move them.
    tags = torch.zeros(16, 30, dtype=torch.long)
    (-crf(emissions, tags, mask=mask, reduction="mean")).backward()
    assert crf.parametrizations.transitions.original.grad[O, I].item() == 0.0
    assert crf.parametrizations.start_transitions.original.grad[I].item() == 0.0
    assert crf.parametrizations.transitions.original.grad.abs().sum() > 0
    torch.optim.AdamW(crf.parameters(), lr=1.0, weight_decay=0.5).step()
    assert crf.transitions[O, I].item() == FORBIDDEN_SCORE


def random_crf_case(seed: int) -> tuple[SpanBertCrfForQuestionAnswering, torch.Tensor, ContextWindows]:
    """A model with random transitions of order 1, emissions and two windows with 5 and 4 context tokens."""
    model = tiny_model(max_answer_length=10, num_candidates=4).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.crf.parameters():
            param.copy_(torch.rand(param.shape, generator=generator) * 2 - 1)
    emissions = torch.randn(2, 9, 3, generator=generator)
    emissions[..., B] += 1.0  # so that the best paths hold spans
    return model, emissions, ContextWindows.from_mask(context_rows(9, [(2, 6), (4, 7)]))


def test_span_log_odds_equal_path_score_differences():
    model, emissions, windows = random_crf_case(seed=3)
    compact = windows.gather(emissions)
    for row, n in enumerate(windows.lengths.tolist()):
        em = compact[row, :n]
        pairs = [(s, e) for s in range(n) for e in range(s, n)]
        starts, ends = (torch.tensor(x) for x in zip(*pairs, strict=True))
        rows = torch.full_like(starts, row)
        closed_form = span_log_odds(model.crf, compact, windows.lengths, rows, starts, ends).tolist()
        all_o = path_score(model.crf, em, [O] * n)
        brute = [path_score(model.crf, em, span_path(n, s, e)) - all_o for s, e in pairs]
        assert closed_form == pytest.approx(brute, abs=1e-5)
        # The same from pytorch-crf's normalised log-likelihoods: the partition function cancels.
        tags = torch.tensor([span_path(n, s, e) for s, e in pairs] + [[O] * n])
        mask = torch.ones(tags.shape, dtype=torch.bool)
        with torch.no_grad():
            llh = model.crf(em.expand(len(tags), n, 3), tags, mask=mask, reduction="none")
        assert closed_form == pytest.approx((llh[:-1] - llh[-1]).tolist(), abs=1e-4)


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_candidates_are_the_best_single_span_paths_and_agree_with_viterbi(seed: int):
    model, emissions, windows = random_crf_case(seed)
    start, end, score, null = model.decode(emissions, windows)
    compact = windows.gather(emissions)
    max_len = model.config.max_answer_length
    for row, n in enumerate(windows.lengths.tolist()):
        em = compact[row, :n]
        all_o = path_score(model.crf, em, [O] * n)
        offset = int(windows.index[row, 0])  # contiguous context: original index = compacted + offset
        brute = sorted(
            (
                (path_score(model.crf, em, span_path(n, s, e)) - all_o, s + offset, e + offset)
                for s in range(n)
                for e in range(s, min(n, s + max_len))
            ),
            reverse=True,
        )[:4]
        found = [c for c in zip(score[row].tolist(), start[row].tolist(), end[row].tolist(), strict=True) if c[1] >= 0]
        assert [c[1:] for c in found] == [c[1:] for c in brute]
        assert [c[0] for c in found] == pytest.approx([c[0] for c in brute], abs=1e-5)
        # pytorch-crf's unrestricted Viterbi path, the reference: a single-span best path is our top candidate,
        # an all-O best path means no span beats "no answer".
        best = model.crf.decode(em.unsqueeze(0), mask=torch.ones(1, n, dtype=torch.bool))[0]
        spans = bio_spans(best)
        if not spans:
            assert found[0][0] <= 1e-6
        elif len(spans) == 1 and spans[0][1] - spans[0][0] < max_len:
            assert found[0][1:] == (spans[0][0] + offset, spans[0][1] + offset) and found[0][0] > 0
    assert null.eq(0).all()


def make_inputs(seq_len: int = 16) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    context = context_rows(seq_len, [(4, 13), (3, 14)])
    return {
        "input_ids": torch.randint(5, 100, (2, seq_len), generator=generator),
        "attention_mask": torch.ones(2, seq_len, dtype=torch.long),
        "token_type_ids": context.clone(),
        "context_mask": context,
        "start_positions": torch.tensor([6, 0]),
        "end_positions": torch.tensor([8, 0]),
    }


def test_save_pretrained_round_trip(tmp_path: Path):
    model = tiny_model(max_answer_length=5, num_candidates=3).eval()
    inputs = make_inputs()
    before = model(**inputs)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = SpanBertCrfForQuestionAnswering.from_pretrained(tmp_path).eval()
    after = loaded(**inputs)
    assert list(after.keys()) == ["loss", "span_start", "span_end", "span_score", "null_score"]
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert (loaded.config.max_answer_length, loaded.config.num_candidates) == (5, 3)
    assert loaded.crf.transitions[O, I].item() == FORBIDDEN_SCORE
    auto = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert isinstance(auto, SpanBertCrfForQuestionAnswering)
    as_tuple = loaded(**inputs, return_dict=False)
    assert len(as_tuple) == 5 and torch.equal(as_tuple[3], after.span_score)


@pytest.mark.parametrize("architecture", [BertForQuestionAnswering, BertModel])
def test_from_encoder_loads_the_encoder_weights(tmp_path: Path, architecture: type):
    # BertForQuestionAnswering keys carry a "bert." prefix, BertModel keys none: both must load.
    torch.manual_seed(5)
    saved = architecture(tiny_encoder())
    saved.save_pretrained(tmp_path)
    encoder = saved if architecture is BertModel else saved.bert
    model = SpanBertCrfForQuestionAnswering.from_encoder(str(tmp_path), max_answer_length=7)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, encoder.encoder.layer[1].output.dense.weight)
    assert model.config.max_answer_length == 7
    assert model.config.encoder["hidden_size"] == 32
    assert model.crf.transitions[O, I].item() == FORBIDDEN_SCORE
    assert model.emission.bias.abs().sum() == 0  # fresh head, as the plain model's qa_outputs


def test_loss_is_a_scalar_mean_over_windows():
    model = tiny_model().eval()  # no dropout: identical windows give identical terms
    one = {k: v[:1] for k, v in make_inputs().items()}
    two = {k: torch.cat([v, v]) for k, v in one.items()}
    loss_one, loss_two = model(**one).loss, model(**two).loss
    assert loss_one.dim() == 0 and loss_one.item() > 0
    assert loss_two.item() == pytest.approx(loss_one.item(), rel=1e-6)


def test_training_mode_skips_decoding_and_requires_context_mask():
    model = tiny_model().train()
    inputs = make_inputs()
    out = model(**inputs)
    assert list(out.keys()) == ["loss"]
    with pytest.raises(ValueError, match="context_mask"):
        model(**{k: v for k, v in inputs.items() if k != "context_mask"})


def test_few_steps_on_a_toy_batch_learn_the_gold_span():
    torch.manual_seed(0)
    encoder = tiny_encoder(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = SpanBertCrfForQuestionAnswering(SpanBertCrfConfig(encoder=encoder.to_dict())).train()
    inputs = make_inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    out = model.eval()(**inputs)
    assert (out.span_start[0, 0].item(), out.span_end[0, 0].item()) == (6, 8)
    assert out.span_score[0, 0].item() > 0  # the span beats the no-answer path
    assert out.span_score[1, 0].item() < 0  # the unanswerable window prefers the all-O path to any span


def model_pair() -> tuple[SpanBertCrfForQuestionAnswering, SpanBertCrfForQuestionAnswering]:
    models = []
    for algorithm in ("parallel", "pytorch_crf"):
        torch.manual_seed(0)
        config = SpanBertCrfConfig(encoder=tiny_encoder().to_dict(), forward_algorithm=algorithm)
        models.append(SpanBertCrfForQuestionAnswering(config).eval())  # eval: no dropout, same forward twice
    return models[0], models[1]


def test_model_loss_and_gradients_do_not_depend_on_the_forward_algorithm():
    parallel, reference = model_pair()
    inputs = make_inputs()
    losses = [model(**inputs).loss for model in (parallel, reference)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-5)
    for loss in losses:
        loss.backward()
    for (name, ours), theirs in zip(parallel.named_parameters(), reference.parameters(), strict=True):
        assert (ours.grad is None) == (theirs.grad is None), name
        if ours.grad is not None:
            torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert parallel.config.forward_algorithm == "parallel"


def test_traced_by_torch_compile_as_one_graph_with_the_eager_loss():
    """trainer.compile=true: no graph break (data checks, host syncs) and one tree width for every batch length."""
    model = tiny_model().eval()  # no dropout, so eager and traced runs see the same numbers
    inputs = make_inputs()
    unlabelled = {k: v for k, v in inputs.items() if not k.endswith("_positions")}
    for batch in (inputs, unlabelled):
        explained = torch._dynamo.explain(model)(**batch)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    torch._dynamo.reset()
    traced = torch.compile(model, backend="eager")  # Dynamo's graph run as is: the traced code path, no compiler
    torch.testing.assert_close(traced(**inputs).loss, model(**inputs).loss)


def test_benchmark_runs_at_tiny_size(capsys: pytest.CaptureFixture[str]):
    result = crf_step.main(["--size", "tiny", "--steps", "2", "--seq-len", "64"])
    printed = capsys.readouterr().out
    assert "CRF / plain step" in printed and "CRF head aten ops" in printed and "pytorch_crf" in printed
    for key in ("plain", "decode", "crf_parallel", "crf_pytorch_crf", "head_parallel", "head_pytorch_crf"):
        assert result[key] > 0, key
    assert result["ratio_parallel"] == pytest.approx(result["crf_parallel"] / result["plain"])
    # pytorch-crf dispatches a handful of operations per context token (the batch's contexts reach 46 tokens);
    # the tree reduction a handful per level (log2 64 = 6 levels).
    assert result["head_ops_pytorch_crf"] > 10 * 46
    assert result["head_ops_parallel"] < result["head_ops_pytorch_crf"] / 4
    # The CRF model is the plain encoder plus its head: the counts add up (the heads differ, hence the slack).
    for algorithm in ("parallel", "pytorch_crf"):
        extra = result[f"crf_ops_{algorithm}"] - result["plain_ops"]
        assert 0.5 * result[f"head_ops_{algorithm}"] < extra < 1.5 * result[f"head_ops_{algorithm}"] + 50
    assert "CRF / plain aten ops" in printed
