"""The answer heads, in one registry: for each, how its model is loaded, which outputs it returns, and how those
become per-window candidate spans. Adding a head means adding one `Head` here and its name to `config.HEAD_NAMES`.

Every head hands post-processing (`spanqa.eval.answers.select_answers`) the same `WindowCandidates`: up to K spans
per window with scores, and the window's null (no-answer) score on the same scale. The start/end head's outputs
are logits per token, decoded by `span_decoding`; the BIO heads (CRF, tagging-only) decode inside their model and
return the candidates.
This module imports nothing heavy (post-processing uses it without torch): loaders import the models when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spanqa.errors import ConfigError, ModelLoadError
from spanqa.models.candidates import WindowCandidates
from spanqa.models.checkpoint import check_checkpoint, saved_model_type
from spanqa.models.span_decoding import span_candidates

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from spanqa.config import ModelConfig
    from spanqa.data.windows import EvalSet


@dataclass(frozen=True)
class Head:
    name: str  # the value of model.head
    outputs: tuple[str, ...]  # the ModelOutput fields post-processing reads, in this order
    per_token: bool  # outputs are (windows, positions), padded to each batch's width: positions past a window masked
    checkpoint_type: str | None  # config.json model_type of this head's saved models; None: any other QA checkpoint
    load: Callable[[ModelConfig, int], PreTrainedModel]  # (model config, max_answer_length) -> float32 model
    candidates: Callable[[tuple[np.ndarray, ...], EvalSet, int, int], WindowCandidates]  # (outputs, set, n_best, len)


# ---------------------------------------------------------------------------------------------------- start/end
def _load_span(cfg: ModelConfig, max_answer_length: int) -> PreTrainedModel:
    from spanqa.models.load import load_span_model

    return load_span_model(cfg)


def _span_candidates(
    outputs: tuple[np.ndarray, ...], es: EvalSet, n_best: int, max_answer_length: int
) -> WindowCandidates:
    width = np.asarray(outputs[0]).shape[1]
    # Positions past a window's own tokens are padding, as wide as its batch happened to be (batch size, world
    # size, batch-mates): their logits must not take top-n slots, or the answers would depend on the batching.
    padding = np.arange(width) >= es.n_tokens[:, None]
    start_logits, end_logits = (np.where(padding, -np.inf, np.asarray(p, dtype=np.float32)) for p in outputs[:2])
    offsets, max_context = es.offsets, es.max_context
    if width > offsets.shape[1]:  # logits padded past the longest window
        pad = width - offsets.shape[1]
        offsets = np.pad(offsets, ((0, 0), (0, pad), (0, 0)), constant_values=-1)
        max_context = np.pad(max_context, ((0, 0), (0, pad)))
    return span_candidates(
        start_logits, end_logits, n_best, max_answer_length, offsets[:, :width], max_context[:, :width]
    )


# ---------------------------------------------------------------------------------------------------- BIO heads
def _load_tagging(cfg: ModelConfig, max_answer_length: int) -> PreTrainedModel:
    from spanqa.models.load import load_tagging_model

    return load_tagging_model(cfg, max_answer_length)


def _tagging_candidates(
    outputs: tuple[np.ndarray, ...], es: EvalSet, n_best: int, max_answer_length: int
) -> WindowCandidates:
    """Already decoded by the model (the BIO heads), spans in the context of at most max_answer_length tokens."""
    start, end, score, null = (np.asarray(p) for p in outputs[:4])
    return WindowCandidates(start=start.astype(np.int64), end=end.astype(np.int64), score=score, null=null)


def _bio_head(name: str) -> Head:
    """A BIO head (crf, bio): decoded inside its model, saved under its own model type spanbert_<name>."""
    return Head(
        name=name,
        outputs=("span_start", "span_end", "span_score", "null_score"),
        per_token=False,
        checkpoint_type=f"spanbert_{name}",
        load=_load_tagging,
        candidates=_tagging_candidates,
    )


HEADS: dict[str, Head] = {
    "span": Head(
        name="span",
        outputs=("start_logits", "end_logits"),
        per_token=True,
        checkpoint_type=None,
        load=_load_span,
        candidates=_span_candidates,
    ),
    **{name: _bio_head(name) for name in ("crf", "bio")},
}
BASELINE = "span"  # the head comparisons measure the others against


def get_head(name: str) -> Head:
    if name not in HEADS:
        raise ConfigError(f"model.head={name!r} is invalid: allowed values are {', '.join(HEADS)}")
    return HEADS[name]


def head_of_checkpoint(path: str | Path) -> Head:
    """The head a saved checkpoint belongs to, from its config.json's model_type (a Hub id or a checkpoint of
    any other model type: the start/end head, whose Auto class loads it)."""
    model_type = saved_model_type(path)
    return next((h for h in HEADS.values() if h.checkpoint_type and h.checkpoint_type == model_type), HEADS[BASELINE])


def load_model(cfg: ModelConfig, max_answer_length: int) -> PreTrainedModel:
    """The float32 model of `cfg.head`, by its loader (`spanqa.models.load`). A checkpoint saved by another head
    that has a model type of its own (a CRF checkpoint for the start/end head) is refused; any encoder can start
    any head."""
    check_checkpoint(cfg.name_or_path)
    saved = head_of_checkpoint(cfg.name_or_path)
    if saved.name != cfg.head and saved.checkpoint_type is not None:
        raise ModelLoadError(
            f"model.name_or_path={cfg.name_or_path!r} is a saved {saved.name} model: use model.head={saved.name}"
        )
    return get_head(cfg.head).load(cfg, max_answer_length)
