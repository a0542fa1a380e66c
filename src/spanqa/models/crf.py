"""SpanBERT with a linear-chain CRF (pytorch-crf) over BIO tags of the context tokens.

The model takes the same inputs and labels as ``BertForQuestionAnswering`` (start/end token positions, (0, 0) for
"no answer in this window") plus a ``context_mask``; it returns, per window, the best single-span paths with
their log-odds against the all-O path (the null score), so both heads feed one post-processing contract.
The CRF's parameters are pytorch-crf's; its training loss is computed by `crf_likelihood` (the same
log-likelihood without a loop over time steps) unless ``forward_algorithm="pytorch_crf"`` asks for the library's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from torch.nn.utils import parametrize
from torchcrf import CRF
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    BertConfig,
    BertModel,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from spanqa.models.crf_likelihood import CrfParams, log_likelihood

TAG_O, TAG_B, TAG_I = 0, 1, 2
NUM_TAGS = 3
# Large enough that no path through a forbidden transition can win Viterbi or carry mass in the partition
# function (exp(-1e4) == 0 in fp32), small enough to stay finite in bf16/fp16 arithmetic.
FORBIDDEN_SCORE = -10000.0
# How the training loss gets the partition function: "parallel" reduces the per-step matrices as a tree
# (crf_likelihood.py, log-depth, few GPU kernels); "pytorch_crf" is the library's loop over time steps.
FORWARD_ALGORITHMS = ("parallel", "pytorch_crf")


@strict
class SpanBertCrfConfig(PreTrainedConfig):
    """Config of the CRF model: a BERT encoder config (as a dict) plus the span-decoding settings."""

    model_type = "spanbert_crf"

    encoder: dict | None = None
    max_answer_length: int = 30
    num_candidates: int = 4
    classifier_dropout: float | int | None = None  # None: the encoder's hidden_dropout_prob
    forward_algorithm: str = "parallel"

    def __post_init__(self, **kwargs) -> None:
        if self.encoder is None:
            self.encoder = BertConfig().to_dict()
        if self.max_answer_length < 1:
            raise ValueError(f"max_answer_length must be >= 1, got {self.max_answer_length}")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1) or None, got {self.classifier_dropout}")
        if self.forward_algorithm not in FORWARD_ALGORITHMS:
            raise ValueError(f"forward_algorithm must be one of {FORWARD_ALGORITHMS}, got {self.forward_algorithm!r}")
        super().__post_init__(**kwargs)


@dataclass
class SpanCrfOutput(ModelOutput):
    """Loss (when labels are given) and, when decoding, K candidate spans per window in original token indices.

    Missing candidates are padded with start = end = -1 and score = -inf. ``null_score`` is the score of the
    all-O path, the reference every span score is measured against, hence 0.
    """

    loss: torch.Tensor | None = None
    span_start: torch.Tensor | None = None
    span_end: torch.Tensor | None = None
    span_score: torch.Tensor | None = None
    null_score: torch.Tensor | None = None


def _eager() -> bool:
    """False while torch.compile traces: a data check needs the values on the host, which splits the graph.
    Compiled runs rely on the data pipeline, which only ever labels spans inside a window's context."""
    return not torch.compiler.is_compiling()


def bio_tags_from_positions(
    start_positions: torch.Tensor, end_positions: torch.Tensor, context_mask: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """BIO tags (B, seq_len) from start/end token indices: B at start, I on start+1..end, O elsewhere.

    (0, 0) is the plain model's "no answer in this window" label and gives all O. Any other span must lie
    inside the window's context tokens, otherwise the labels and the context mask disagree.
    """
    start = start_positions.reshape(-1).long()
    end = end_positions.reshape(-1).long()
    if context_mask.shape != (start.numel(), seq_len):
        raise ValueError(f"context_mask has shape {tuple(context_mask.shape)}, expected ({start.numel()}, {seq_len})")
    positions = torch.arange(seq_len, device=start.device).unsqueeze(0)
    answered = ((start != 0) | (end != 0)).unsqueeze(1)
    in_span = (positions >= start.unsqueeze(1)) & (positions <= end.unsqueeze(1)) & answered
    bad = answered.squeeze(1) & ((end < start) | (start < 0) | (end >= seq_len))
    bad |= (in_span & ~context_mask.bool()).any(dim=1)
    if _eager() and bad.any():
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"window {row}: span ({int(start[row])}, {int(end[row])}) is not inside its context tokens; "
            "use (0, 0) for windows without the answer"
        )
    tags = torch.full_like(in_span, TAG_O, dtype=torch.long)
    tags[in_span] = TAG_I
    tags[in_span & (positions == start.unsqueeze(1))] = TAG_B
    return tags


def bio_spans(path: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each B I* run of a BIO path; an I that continues no span means the constraints broke."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for t, tag in enumerate(path):
        if tag == TAG_I and start is None:
            raise RuntimeError(f"ill-formed BIO path (I after O or at the start, position {t}): {path}")
        if tag != TAG_I and start is not None:
            spans.append((start, t - 1))
            start = None
        if tag == TAG_B:
            start = t
    if start is not None:
        spans.append((start, len(path) - 1))
    return spans


@dataclass
class ContextWindows:
    """Context tokens of each window gathered to the front, as pytorch-crf needs a prefix mask.

    The compacted length stays the window length L rather than the longest context in the batch: trimming
    would need that maximum on the host, a GPU sync (and a torch.compile graph break) in every step.
    """

    context: torch.Tensor  # (B, L) bool, the context_mask
    index: torch.Tensor  # (B, L) original position of compacted position c (valid where mask)
    mask: torch.Tensor  # (B, L) bool prefix mask
    lengths: torch.Tensor  # (B,) context tokens per window

    @classmethod
    def from_mask(cls, context_mask: torch.Tensor) -> ContextWindows:
        context = context_mask.bool()
        lengths = context.sum(dim=1)
        if _eager() and (lengths == 0).any():
            rows = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"windows {rows} have no context token (context_mask all 0); the CRF needs >= 1")
        # A stable sort on "not context" puts context positions first, in their original order.
        order = torch.sort((~context).to(torch.uint8), dim=1, stable=True).indices
        mask = torch.arange(context.size(1), device=context.device).unsqueeze(0) < lengths.unsqueeze(1)
        return cls(context=context, index=order, mask=mask, lengths=lengths)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """values (B, L) or (B, L, T) at the compacted positions, same shape: valid where `mask`."""
        if values.dim() == 2:
            return values.gather(1, self.index)
        return values.gather(1, self.index.unsqueeze(-1).expand(-1, -1, values.size(-1)))


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
    gain_b = emissions[..., TAG_B] - emissions[..., TAG_O]
    cum_gain_i = (emissions[..., TAG_I] - emissions[..., TAG_O]).cumsum(dim=1)
    width = ends - starts  # number of I tokens
    score = gain_b[rows, starts] + cum_gain_i[rows, ends] - cum_gain_i[rows, starts]
    score += torch.where(starts == 0, first[TAG_B] - first[TAG_O], trans[TAG_O, TAG_B] - trans[TAG_O, TAG_O])
    inner = trans[TAG_B, TAG_I] + (width - 1).clamp(min=0) * trans[TAG_I, TAG_I]
    score += torch.where(width > 0, inner, torch.zeros_like(inner)) - width * trans[TAG_O, TAG_O]
    end_tag = torch.where(width > 0, TAG_I, TAG_B)
    at_end = ends == lengths[rows] - 1
    score += torch.where(at_end, last[end_tag] - last[TAG_O], trans[end_tag, TAG_O] - trans[TAG_O, TAG_O])
    return score


class SpanBertCrfForQuestionAnswering(PreTrainedModel):
    """BERT encoder -> dropout -> Linear(hidden, 3) emissions -> CRF over the BIO tags of the context tokens."""

    config_class = SpanBertCrfConfig
    config: SpanBertCrfConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The loss is a mean over windows and ignores num_items_in_batch: let the Trainer scale it for accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: SpanBertCrfConfig) -> None:
        super().__init__(config)
        encoder_config = BertConfig(**config.encoder)
        encoder_config._attn_implementation = config._attn_implementation
        self.bert = BertModel(encoder_config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(encoder_config.hidden_dropout_prob if dropout is None else dropout)
        self.emission = nn.Linear(encoder_config.hidden_size, NUM_TAGS)
        self.crf = CRF(NUM_TAGS, batch_first=True)
        parametrize.register_parametrization(self.crf, "transitions", _FixEntries(((TAG_O, TAG_I),)))
        parametrize.register_parametrization(self.crf, "start_transitions", _FixEntries(((TAG_I,),)))
        self.post_init()

    @classmethod
    def from_encoder(
        cls,
        name_or_path: str,
        config: BertConfig | None = None,
        attn_implementation: str | None = None,
        output_loading_info: bool = False,
        **crf_kwargs,
    ) -> SpanBertCrfForQuestionAnswering | tuple[SpanBertCrfForQuestionAnswering, dict[str, Any]]:
        """The CRF model around the pretrained encoder of a BertModel/BertFor* checkpoint (hub name or dir), in
        float32 whatever the stored dtype; with `output_loading_info`, also the encoder's loading info (missing
        and unused tensors), as ``from_pretrained`` gives it.

        `config` replaces the checkpoint's own (needed when its config.json has no model_type). Head
        initialisation is the one of a fresh model, as ``BertForQuestionAnswering.from_pretrained`` does for its
        qa_outputs layer.
        """
        encoder, info = BertModel.from_pretrained(
            name_or_path,
            config=config,
            add_pooling_layer=False,
            output_loading_info=True,
            attn_implementation=attn_implementation,
            dtype=torch.float32,
        )
        config = SpanBertCrfConfig(encoder=encoder.config.to_dict(), **crf_kwargs)
        config._attn_implementation = encoder.config._attn_implementation
        model = cls(config)
        model.bert.load_state_dict(encoder.state_dict())
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.encoder.get("initializer_range", 0.02))
            init.zeros_(module.bias)
        elif isinstance(module, CRF):  # pytorch-crf's own initialisation
            init.uniform_(module.parametrizations.transitions.original, -0.1, 0.1)
            init.uniform_(module.parametrizations.start_transitions.original, -0.1, 0.1)
            init.uniform_(module.end_transitions, -0.1, 0.1)

    def emission_scores(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # fp32 for the CRF: its sums over hundreds of steps and the -1e4 constants need the precision.
        return self.emission(self.dropout(hidden_states)).float()

    def crf_loss(self, emissions: torch.Tensor, windows: ContextWindows, tags: torch.Tensor) -> torch.Tensor:
        """Mean over windows of the negative log-likelihood of the gold BIO tags (B, L) of the context tokens."""
        compact, compact_tags = windows.gather(emissions), windows.gather(tags)
        with parametrize.cached():
            if self.config.forward_algorithm == "pytorch_crf":
                return -self.crf(compact, compact_tags, mask=windows.mask, reduction="mean")
            # Compiled, a fixed tree width (no window exceeds the position embeddings) makes one graph for all
            # batch lengths; eager, the tree fits each batch.
            width = None if _eager() else self.config.encoder.get("max_position_embeddings", 512)
            return -log_likelihood(compact, compact_tags, windows.mask, CrfParams.of(self.crf), width=width).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, windows: ContextWindows) -> tuple[torch.Tensor, ...]:
        """Top-K answer spans of each window: start, end (original token indices), score, all (B, K), and the
        null score (B,).

        An answer is one span, so decoding is the Viterbi search restricted to paths with at most one span:
        the all-O path or B I..I O..O for a span of at most max_answer_length tokens. Every such path is
        scored exactly, in closed form and vectorised (`span_log_odds`, no loop over time steps), as log-odds
        against the all-O path, so the null score is 0 for every window. When pytorch-crf's unrestricted
        Viterbi path holds a single span, that span is the top candidate; when it is all O, every candidate
        scores <= 0 (tested). Unlike keeping only spans on the Viterbi path, this also grades windows that
        prefer "no answer", which makes the no-answer probability informative.
        """
        compact = windows.gather(emissions)
        batch, c = compact.shape[:2]
        device = compact.device
        width = min(self.config.max_answer_length, c)
        starts = torch.arange(c, device=device).view(1, c, 1).expand(batch, c, width)
        ends = starts + torch.arange(width, device=device).view(1, 1, width)
        valid = (ends < windows.lengths.view(batch, 1, 1)).reshape(batch, -1)
        rows = torch.arange(batch, device=device).view(batch, 1, 1).expand(batch, c, width)
        with parametrize.cached():
            scores = span_log_odds(
                self.crf,
                compact,
                windows.lengths,
                rows.reshape(-1),
                starts.reshape(-1),
                ends.clamp(max=c - 1).reshape(-1),
            )
        scores = scores.float().view(batch, -1).masked_fill(~valid, float("-inf"))
        top_score, top = scores.topk(min(self.config.num_candidates, scores.size(1)), dim=1)
        found = torch.isfinite(top_score)
        first = windows.index.gather(1, top // width)
        last = windows.index.gather(1, (top // width + top % width).clamp(max=c - 1))
        k = self.config.num_candidates
        span_start = torch.full((batch, k), -1, dtype=torch.long, device=device)
        span_end = torch.full((batch, k), -1, dtype=torch.long, device=device)
        span_score = torch.full((batch, k), float("-inf"), dtype=torch.float32, device=device)
        n = top.size(1)
        span_start[:, :n] = torch.where(found, first, -1)
        span_end[:, :n] = torch.where(found, last, -1)
        span_score[:, :n] = top_score
        return span_start, span_end, span_score, torch.zeros(batch, dtype=torch.float32, device=device)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SpanCrfOutput | tuple[torch.Tensor, ...]:
        if context_mask is None:
            raise ValueError("context_mask (1 on the context tokens of each window) is required by the CRF head")
        # Inputs and labels are checked before the encoder runs: a check after it would make the host wait for
        # the whole forward pass (a GPU sync) before it could queue the backward pass.
        windows = ContextWindows.from_mask(context_mask)
        has_labels = start_positions is not None and end_positions is not None
        if has_labels:
            tags = bio_tags_from_positions(start_positions, end_positions, windows.context, context_mask.size(1))
        hidden = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True, **kwargs
        ).last_hidden_state
        emissions = self.emission_scores(hidden)
        loss = self.crf_loss(emissions, windows, tags) if has_labels else None
        candidates: tuple[torch.Tensor | None, ...] = (None,) * 4
        if not (self.training and has_labels):  # training steps never need the spans
            candidates = self.decode(emissions, windows)
        # Built in one go: a ModelOutput only exposes the fields set when it is created.
        output = SpanCrfOutput(loss, *candidates)
        if return_dict is False or (return_dict is None and not self.config.return_dict):
            return output.to_tuple()
        return output


AutoConfig.register(SpanBertCrfConfig.model_type, SpanBertCrfConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(SpanBertCrfConfig, SpanBertCrfForQuestionAnswering, exist_ok=True)
