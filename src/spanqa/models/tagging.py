"""Question answering as BIO tagging of the context tokens: what the CRF head (`crf.py`) and the tagging-only head
share, and the tagging-only head itself.

Both take the inputs and labels of ``BertForQuestionAnswering`` (start/end token positions, (0, 0) for "no answer in
this window") plus a ``context_mask``: BERT encoder → dropout → Linear(hidden, 3) emissions over O/B/I, on the
context tokens of each window gathered to the front. Both return, per window, the K best single-span paths (B I*
within max_answer_length, the rest O) with their log-odds against the all-O path, the null score, so every head
feeds one post-processing contract. They differ in one place, the sequence model over the tags:

- the CRF head (`crf.py`): a linear-chain CRF, whose transitions score tag pairs;
- the tagging-only head (`SpanBertBioForQuestionAnswering`): each token's tag independent given the encoder, a
  softmax per token. Its loss is the sequence negative log-likelihood of the gold tags, summed over the context
  tokens and averaged over windows: the CRF's own objective without transitions. Comparing the two isolates what
  the transitions add to BIO tagging; comparing it with the start/end head, what the tagging objective does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
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

TAG_O, TAG_B, TAG_I = 0, 1, 2
NUM_TAGS = 3


def is_eager() -> bool:
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
    if is_eager() and bad.any():
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
    """Context tokens of each window gathered to the front, as a prefix mask (what pytorch-crf needs).

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
        if is_eager() and (lengths == 0).any():
            rows = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"windows {rows} have no context token (context_mask all 0); BIO tagging needs >= 1")
        # A stable sort on "not context" puts context positions first, in their original order.
        order = torch.sort((~context).to(torch.uint8), dim=1, stable=True).indices
        mask = torch.arange(context.size(1), device=context.device).unsqueeze(0) < lengths.unsqueeze(1)
        return cls(context=context, index=order, mask=mask, lengths=lengths)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """values (B, L) or (B, L, T) at the compacted positions, same shape: valid where `mask`."""
        if values.dim() == 2:
            return values.gather(1, self.index)
        return values.gather(1, self.index.unsqueeze(-1).expand(-1, -1, values.size(-1)))


def emission_log_odds(
    emissions: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """The emissions' part of S(span path) - S(all-O path), per span [start, end], on compacted emissions: the
    gain of B over O at the start, and of I over O on the rest of the span."""
    gain_b = emissions[..., TAG_B] - emissions[..., TAG_O]
    cum_gain_i = (emissions[..., TAG_I] - emissions[..., TAG_O]).cumsum(dim=1)
    return gain_b[rows, starts] + cum_gain_i[rows, ends] - cum_gain_i[rows, starts]


@dataclass
class SpanTaggingOutput(ModelOutput):
    """Loss (when labels are given) and, when decoding, K candidate spans per window in original token indices.

    Missing candidates are padded with start = end = -1 and score = -inf. ``null_score`` is the score of the
    all-O path, the reference every span score is measured against, hence 0.
    """

    loss: torch.Tensor | None = None
    span_start: torch.Tensor | None = None
    span_end: torch.Tensor | None = None
    span_score: torch.Tensor | None = None
    null_score: torch.Tensor | None = None


@strict
class SpanBertTaggingConfig(PreTrainedConfig):
    """A BERT encoder config (as a dict) plus the span-decoding settings every BIO head has."""

    encoder: dict | None = None
    max_answer_length: int = 30
    num_candidates: int = 4
    classifier_dropout: float | int | None = None  # None: the encoder's hidden_dropout_prob

    def __post_init__(self, **kwargs) -> None:
        if self.encoder is None:
            self.encoder = BertConfig().to_dict()
        if self.max_answer_length < 1:
            raise ValueError(f"max_answer_length must be >= 1, got {self.max_answer_length}")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1) or None, got {self.classifier_dropout}")
        super().__post_init__(**kwargs)


class SpanBertTaggingModel(PreTrainedModel):
    """BERT encoder → dropout → Linear(hidden, 3) emissions over the BIO tags of the context tokens; a subclass
    gives the sequence model: its loss (`tagging_loss`) and its span scores (`span_log_odds`)."""

    config: SpanBertTaggingConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The loss is a mean over windows and ignores num_items_in_batch: let the Trainer scale it for accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: SpanBertTaggingConfig) -> None:
        super().__init__(config)
        encoder_config = BertConfig(**config.encoder)
        encoder_config._attn_implementation = config._attn_implementation
        self.bert = BertModel(encoder_config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(encoder_config.hidden_dropout_prob if dropout is None else dropout)
        self.emission = nn.Linear(encoder_config.hidden_size, NUM_TAGS)

    @classmethod
    def from_encoder(
        cls,
        name_or_path: str,
        config: BertConfig | None = None,
        attn_implementation: str | None = None,
        output_loading_info: bool = False,
        **head_kwargs: Any,
    ) -> Any:
        """The model around the pretrained encoder of a BertModel/BertFor* checkpoint (hub name or dir), in
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
        model_config = cls.config_class(encoder=encoder.config.to_dict(), **head_kwargs)
        model_config._attn_implementation = encoder.config._attn_implementation
        model = cls(model_config)
        model.bert.load_state_dict(encoder.state_dict())
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.encoder.get("initializer_range", 0.02))
            init.zeros_(module.bias)

    def emission_scores(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # fp32 for the sequence model: its sums over hundreds of tokens need the precision.
        return self.emission(self.dropout(hidden_states)).float()

    def tagging_loss(self, emissions: torch.Tensor, windows: ContextWindows, tags: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def span_log_odds(
        self, compact: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """log P(path tagging [start, end] as B I..I, the rest O) - log P(all-O path), per span, on compacted
        emissions: > 0 exactly when the model prefers that span to answering nothing."""
        raise NotImplementedError

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, windows: ContextWindows) -> tuple[torch.Tensor, ...]:
        """Top-K answer spans of each window: start, end (original token indices), score, all (B, K), and the
        null score (B,).

        An answer is one span, so decoding searches the paths with at most one span: the all-O path or B I..I
        O..O for a span of at most max_answer_length tokens. Every such path is scored exactly, in closed form and
        vectorised (`span_log_odds`, no loop over time steps), as log-odds against the all-O path, so the null
        score is 0 for every window. This also grades windows that prefer "no answer", which makes the
        no-answer probability informative.
        """
        compact = windows.gather(emissions)
        batch, c = compact.shape[:2]
        device = compact.device
        width = min(self.config.max_answer_length, c)
        starts = torch.arange(c, device=device).view(1, c, 1).expand(batch, c, width)
        ends = starts + torch.arange(width, device=device).view(1, 1, width)
        valid = (ends < windows.lengths.view(batch, 1, 1)).reshape(batch, -1)
        rows = torch.arange(batch, device=device).view(batch, 1, 1).expand(batch, c, width)
        scores = self.span_log_odds(
            compact, windows.lengths, rows.reshape(-1), starts.reshape(-1), ends.clamp(max=c - 1).reshape(-1)
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
        **kwargs: Any,
    ) -> SpanTaggingOutput | tuple[torch.Tensor, ...]:
        if context_mask is None:
            raise ValueError("context_mask (1 on the context tokens of each window) is required by a BIO head")
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
        loss = self.tagging_loss(emissions, windows, tags) if has_labels else None
        candidates: tuple[torch.Tensor | None, ...] = (None,) * 4
        if not (self.training and has_labels):  # training steps never need the spans
            candidates = self.decode(emissions, windows)
        # Built in one go: a ModelOutput only exposes the fields set when it is created.
        output = SpanTaggingOutput(loss, *candidates)
        if return_dict is False or (return_dict is None and not self.config.return_dict):
            return output.to_tuple()
        return output


# ---------------------------------------------------------------------------------------------------- tagging only
@strict
class SpanBertBioConfig(SpanBertTaggingConfig):
    """Config of the tagging-only head: the shared settings, nothing else."""

    model_type = "spanbert_bio"


class SpanBertBioForQuestionAnswering(SpanBertTaggingModel):
    """BIO tagging with a softmax per token: the CRF head's model without the CRF."""

    config_class = SpanBertBioConfig
    config: SpanBertBioConfig

    def __init__(self, config: SpanBertBioConfig) -> None:
        super().__init__(config)
        self.post_init()

    def tagging_loss(self, emissions: torch.Tensor, windows: ContextWindows, tags: torch.Tensor) -> torch.Tensor:
        """Mean over windows of -log P(gold tags) = -sum over context tokens of log softmax(emissions)[tag]."""
        log_probs = windows.gather(emissions).log_softmax(dim=-1)
        gold = log_probs.gather(-1, windows.gather(tags).unsqueeze(-1)).squeeze(-1)
        return -(gold * windows.mask).sum(dim=1).mean()

    def span_log_odds(
        self, compact: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """With independent tags, a path's log-probability is the sum of its tokens' log-probabilities, so only the
        span's own tokens differ from the all-O path."""
        return emission_log_odds(compact.log_softmax(dim=-1), rows, starts, ends)


AutoConfig.register(SpanBertBioConfig.model_type, SpanBertBioConfig, exist_ok=True)
AutoModelForQuestionAnswering.register(SpanBertBioConfig, SpanBertBioForQuestionAnswering, exist_ok=True)
