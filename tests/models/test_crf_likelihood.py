"""The loop-free CRF log-likelihood against pytorch-crf and against brute-force enumeration of every tag path."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torchcrf import CRF

from spanqa.config import ModelConfig
from spanqa.errors import ConfigError
from spanqa.models.crf import FORBIDDEN_SCORE, SpanBertCrfConfig
from spanqa.models.crf_likelihood import CrfParams, log_likelihood, log_partition, path_score
from spanqa.models.tagging import TAG_B, TAG_I, TAG_O


def random_crf(seed: int) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(3, batch_first=True)
    with torch.no_grad():
        for param in crf.parameters():
            param.uniform_(-2.0, 2.0)
        crf.transitions[TAG_O, TAG_I] = crf.start_transitions[TAG_I] = FORBIDDEN_SCORE  # as the model pins them
    return crf


def bio_batch(batch: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged prefix mask (one full row, one of length 1) and well-formed tags: at most one B I* span per row."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0], lengths[-1] = steps, 1
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.full((batch, steps), TAG_O)
    for row, n in enumerate(lengths.tolist()):
        if row % 3:
            start = int(torch.randint(0, n, (1,), generator=generator))
            end = min(n - 1, start + int(torch.randint(0, 5, (1,), generator=generator)))
            tags[row, start], tags[row, start + 1 : end + 1] = TAG_B, TAG_I
    return mask, tags


def grads(value: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    found = torch.autograd.grad(value, inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found, strict=True)]


# Powers of two and their neighbours exercise the identity padding of the tree; 383 is a 384-token window.
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8, 9, 31, 64, 383])
def test_equals_pytorch_crf_values_and_gradients(steps: int):
    crf = random_crf(steps)
    mask, tags = bio_batch(7, steps, torch.Generator().manual_seed(steps))
    emissions = 3 * torch.randn(7, steps, 3)
    # The reference is pytorch-crf in float64: over hundreds of steps its own float32 loop drifts by up to
    # 4e-4 in the emission gradients, the tree (fewer roundings in sequence) by 5e-5.
    reference = copy.deepcopy(crf).double()
    ref_inputs = [emissions.double().requires_grad_(), *reference.parameters()]
    expected = reference(ref_inputs[0], tags, mask=mask, reduction="none")
    inputs = [emissions.clone().requires_grad_(), *crf.parameters()]
    got = log_likelihood(inputs[0], tags, mask, CrfParams.of(crf))

    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-3)
    got_grads = grads(got.sum(), inputs)
    for ours, theirs in zip(got_grads, grads(expected.sum(), ref_inputs), strict=True):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=1e-4)
    masked_out = ~mask.unsqueeze(-1).expand_as(emissions)
    assert (got_grads[0][masked_out] == 0).all()  # nothing past a sequence's end counts


def test_ill_formed_tags_score_through_the_forbidden_transitions_as_pytorch_crf_does():
    crf = random_crf(1)
    mask = torch.ones(2, 6, dtype=torch.bool)
    tags = torch.tensor([[TAG_I, TAG_I, TAG_O, TAG_I, TAG_B, TAG_I], [TAG_O, TAG_B, TAG_B, TAG_I, TAG_O, TAG_O]])
    emissions = torch.randn(2, 6, 3)
    got = log_likelihood(emissions, tags, mask, CrfParams.of(crf))
    torch.testing.assert_close(got, crf(emissions, tags, mask=mask, reduction="none"), rtol=1e-6, atol=1e-2)
    assert got[0] < 2 * FORBIDDEN_SCORE + 100 and got[1] > FORBIDDEN_SCORE


def test_partition_and_path_score_equal_brute_force_enumeration():
    crf = random_crf(2)
    lengths = [5, 1, 3, 4]
    mask = torch.arange(5).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    emissions = torch.randn(4, 5, 3, dtype=torch.float64)
    double = CrfParams(*(p.detach().double() for p in CrfParams.of(crf)))
    start, trans, end = double
    log_z = log_partition(emissions, mask, double)
    for row, n in enumerate(lengths):
        scores = []
        for path in itertools.product(range(3), repeat=n):
            tags = torch.tensor(list(path) + [TAG_O] * (5 - n)).unsqueeze(0)
            score = path_score(emissions[row : row + 1], tags, mask[row : row + 1], double)
            by_hand = start[path[0]] + end[path[-1]] + sum(emissions[row, t, tag] for t, tag in enumerate(path))
            by_hand += sum(trans[a, b] for a, b in itertools.pairwise(path))
            assert score.item() == pytest.approx(float(by_hand), abs=1e-9)
            scores.append(score)
        assert log_z[row].item() == pytest.approx(torch.logsumexp(torch.cat(scores), 0).item(), abs=1e-9)


def test_unknown_forward_algorithm_is_refused_in_the_model_and_the_hydra_config():
    with pytest.raises(ValueError, match="forward_algorithm must be one of"):
        SpanBertCrfConfig(forward_algorithm="viterbi")
    with pytest.raises(ConfigError, match=r"model\.crf_forward_algorithm='loop'.*parallel, pytorch_crf"):
        ModelConfig(head="crf", crf_forward_algorithm="loop")


def test_a_fixed_tree_width_gives_the_same_result_and_must_cover_the_steps():
    crf = random_crf(3)
    mask, tags = bio_batch(4, 20, torch.Generator().manual_seed(3))
    emissions = torch.randn(4, 20, 3)
    fitted = log_likelihood(emissions, tags, mask, CrfParams.of(crf))
    for width in (19, 32, 100, 512):
        torch.testing.assert_close(log_likelihood(emissions, tags, mask, CrfParams.of(crf), width=width), fitted)
    with pytest.raises(ValueError, match="width=18 is below the 19 step matrices"):
        log_partition(emissions, mask, CrfParams.of(crf), width=18)
