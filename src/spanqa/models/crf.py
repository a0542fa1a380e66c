"""SpanBERT with a linear-chain CRF (pytorch-crf) over BIO tags of the context tokens.

The BIO tagging model and its decoding are `tagging.py`'s; this head adds the CRF's transitions. Its parameters are
pytorch-crf's; its training loss is computed by `crf_likelihood` (the same log-likelihood without a loop over time
steps) unless ``forward_algorithm="pytorch_crf"`` asks for the library's.
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn.utils import parametrize
from torchcrf import CRF
from transformers import AutoConfig, AutoModelForQuestionAnswering
from transformers import initialization as init

from spanqa.models.crf_likelihood import CrfParams, log_likelihood
from spanqa.models.tagging import (
    NUM_TAGS,
    TAG_B,
    TAG_I,
    TAG_O,
    ContextWindows,
    SpanBertTaggingConfig,
    SpanBertTaggingModel,
    emission_log_odds,
    is_eager,
)

# Large enough that no path through a forbidden transition can win Viterbi or carry mass in the partition
# function (exp(-1e4) == 0 in fp32), small enough to stay finite in bf16/fp16 arithmetic.
FORBIDDEN_SCORE = -10000.0
# How the training loss gets the partition function: "parallel" reduces the per-step matrices as a tree
# (crf_likelihood.py, log-depth, few GPU kernels); "pytorch_crf" is the library's loop over time steps.
FORWARD_ALGORITHMS = ("parallel", "pytorch_crf")


@strict
class SpanBertCrfConfig(SpanBertTaggingConfig):
    """Config of the CRF model: the BIO heads' settings and the CRF's training-loss algorithm."""

    model_type = "spanbert_crf"

    forward_algorithm: str = "parallel"

    def __post_init__(self, **kwargs) -> None:
        if self.forward_algorithm not in FORWARD_ALGORITHMS:
            raise ValueError(f"forward_algorithm must be one of {FORWARD_ALGORITHMS}, got {self.forward_algorithm!r}")
        super().__post_init__(**kwargs)


class _FixEntries(nn.Module):
    """Parametrization that pins some entries of a tensor to FORBIDDEN_SCORE.

    Forbidden transitions (O->I, start->I) stay exact constants whatever the optimizer, weight decay or a loaded
    checkpoint do, and they receive no gradient: the stored parameter keeps its shape, so pytorch-crf's own
    forward/decode read ``crf.transitions`` unchanged. Re-applying the value after each optimizer step would
    depend on every training loop remembering to do it.
    """

    def __init__(self, entries: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self.entries = entries

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        fixed = raw.clone()
        for entry in self.entries:
            fixed[entry] = FORBIDDEN_SCORE
        return fixed


def span_log_odds(
    crf: CRF,
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    rows: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
) -> torch.Tensor:
    """S(path tagging [start, end] as B I..I, rest O) - S(all-O path), per span, on compacted emissions.

    The partition function cancels in the difference, so this is log P(span path) / P(all-O path): a span
    scores > 0 exactly when the CRF prefers it to answering nothing. Only the transitions around and inside the
    span and its emissions differ from the all-O path, which gives the closed form below.
    """
    trans, first, last = crf.transitions, crf.start_transitions, crf.end_transitions
    width = ends - starts  # number of I tokens
    score = emission_log_odds(emissions, rows, starts, ends)
    score += torch.where(starts == 0, first[TAG_B] - first[TAG_O], trans[TAG_O, TAG_B] - trans[TAG_O, TAG_O])
    inner = trans[TAG_B, TAG_I] + (width - 1).clamp(min=0) * trans[TAG_I, TAG_I]
    score += torch.where(width > 0, inner, torch.zeros_like(inner)) - width * trans[TAG_O, TAG_O]
    end_tag = torch.where(width > 0, TAG_I, TAG_B)
    at_end = ends == lengths[rows] - 1
    score += torch.where(at_end, last[end_tag] - last[TAG_O], trans[end_tag, TAG_O] - trans[TAG_O, TAG_O])
    return score


class SpanBertCrfForQuestionAnswering(SpanBertTaggingModel):
    """BERT encoder -> dropout -> Linear(hidden, 3) emissions -> CRF over the BIO tags of the context tokens."""

    config_class = SpanBertCrfConfig
    config: SpanBertCrfConfig

    def __init__(self, config: SpanBertCrfConfig) -> None:
        super().__init__(config)
        self.crf = CRF(NUM_TAGS, batch_first=True)
        parametrize.register_parametrization(self.crf, "transitions", _FixEntries(((TAG_O, TAG_I),)))
        parametrize.register_parametrization(self.crf, "start_transitions", _FixEntries(((TAG_I,),)))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CRF):  # pytorch-crf's own initialisation
            init.uniform_(module.parametrizations.transitions.original, -0.1, 0.1)
            init.uniform_(module.parametrizations.start_transitions.original, -0.1, 0.1)
            init.uniform_(module.end_transitions, -0.1, 0.1)

    def tagging_loss(self, emissions: torch.Tensor, windows: ContextWindows, tags: torch.Tensor) -> torch.Tensor:
        """Mean over windows of the negative log-likelihood of the gold BIO tags (B, L) of the context tokens."""
        compact, compact_tags = windows.gather(emissions), windows.gather(tags)
        with parametrize.cached():
            if self.config.forward_algorithm == "pytorch_crf":
                return -self.crf(compact, compact_tags, mask=windows.mask, reduction="mean")
            # Compiled, a fixed tree width (no window exceeds the position embeddings) makes one graph for all
            # batch lengths; eager, the tree fits each batch.
            width = None if is_eager() else self.config.encoder.get("max_position_embeddings", 512)
            return -log_likelihood(compact, compact_tags, windows.mask, CrfParams.of(self.crf), width=width).mean()

    def span_log_odds(
        self, compact: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """Every single-span path scored exactly against the all-O path (module-level `span_log_odds`). When
        pytorch-crf's unrestricted Viterbi path holds a single span, that span is the top candidate; when it is
        all O, every candidate scores <= 0 (tested)."""
        with parametrize.cached():
            return span_log_odds(self.crf, compact, lengths, rows, starts, ends)


AutoConfig.register(SpanBertCrfConfig.model_type, SpanBertCrfConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(SpanBertCrfConfig, SpanBertCrfForQuestionAnswering, exist_ok=True)
