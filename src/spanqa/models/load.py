"""Tokenizer and models for a `model` config, from the Hub or a local dir, and the checks that they fit each other.
Each head's loader is here; `spanqa.models.heads.load_model` picks the one of `model.head`.

Checkpoints are taken as their authors ship them. The SpanBERT release has a config.json without `model_type`
(transformers 5 no longer guesses one from the name), `pytorch_model.bin` weights under pre-training names
(`bert.*`, plus `cls.*` heads and a pooler the QA models do not use) and no tokenizer files: the config is then
read as `model.architecture`, the encoder must load completely, and the pre-training heads are dropped quietly.
Weights are always loaded as float32, whatever dtype they were stored in: training keeps fp32 master weights and
runs bf16/fp16 in autocast (`trainer.precision`), as AdamW updates of lr 2e-5 vanish in half-precision weights.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    BertConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from spanqa.config import ModelConfig
from spanqa.env import is_local, is_offline
from spanqa.errors import ModelLoadError
from spanqa.models.checkpoint import (
    CASING_FILES,
    TokenizerChoice,
    check_local_dir,
    checkpoint_casing,
    choose_tokenizer,
    saved_model_type,
)

log = logging.getLogger(__name__)

# Checkpoint tensors a QA model has no place for: BERT pre-training heads (MLM, NSP, SpanBERT's span boundary
# objective) and the pooler. Dropping them is expected; any other unused tensor is worth a warning.
PRETRAINING_ONLY = re.compile(r"^(cls\.|bert\.pooler\.|pooler\.)")


def _unreachable(key: str, name: str, err: Exception) -> ModelLoadError:
    if is_offline() and not is_local(name):
        return ModelLoadError(
            f"{key}={name!r} is not in the local Hugging Face cache and the Hub is unreachable: download it "
            f"where the Hub is reachable (`hf download {name} --local-dir DIR`) and pass {key}=DIR"
        )
    return ModelLoadError(f"{key}={name!r} could not be loaded: {str(err).splitlines()[0]}")


def _from_pretrained(name: str, key: str) -> PreTrainedTokenizerBase:
    check_local_dir(name, key)
    try:
        return AutoTokenizer.from_pretrained(name, use_fast=True)
    except Exception as err:
        raise _unreachable(key, name, err) from err


def _described(tokenizer: PreTrainedTokenizerBase, with_casing: bool) -> str:
    casing = ", lower-cases" if lowercases(tokenizer) else ", keeps case"
    return f"{len(tokenizer.get_vocab()):,} tokens" + (casing if with_casing else "")


def load_tokenizer(cfg: ModelConfig, choice: TokenizerChoice | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer `choose_tokenizer` picks. One other than the checkpoint's own must agree with the tokenizer
    files the checkpoint ships (same vocabulary; same lower-casing when those files state it), or the model would
    read token ids it was never trained on."""
    choice = choice or choose_tokenizer(cfg)
    tokenizer = _from_pretrained(choice.name_or_path, choice.key)
    if choice.key == "model.name_or_path" or not choice.shipped:
        return tokenizer
    own = _from_pretrained(cfg.name_or_path, "model.name_or_path")
    with_casing = bool(choice.shipped & set(CASING_FILES))
    if own.get_vocab() != tokenizer.get_vocab() or (with_casing and lowercases(own) != lowercases(tokenizer)):
        advice = (
            "leave model.tokenizer_name_or_path unset to use the checkpoint's own"
            if choice.key == "model.tokenizer_name_or_path"
            else "set model.tokenizer_name_or_path to the tokenizer the model was trained with"
        )
        raise ModelLoadError(
            f"{choice.key}={choice.name_or_path!r} ({_described(tokenizer, with_casing)}) is not the tokenizer "
            f"model.name_or_path={cfg.name_or_path!r} ships ({_described(own, with_casing)}): {advice}"
        )
    return tokenizer


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers prints a table of every unused or new tensor; `_check_loaded` reports what matters instead."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_config(cfg: ModelConfig) -> PreTrainedConfig:
    """The checkpoint's config; one without `model_type` (the SpanBERT release) is read as `model.architecture`."""
    config_dict, _ = PreTrainedConfig.get_config_dict(cfg.name_or_path)
    if "model_type" in config_dict:
        return AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=False)
    if cfg.architecture not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"model.architecture={cfg.architecture!r} is invalid: not a transformers model type (e.g. bert); it "
            f"is needed because model.name_or_path={cfg.name_or_path!r} has a config.json without model_type"
        )
    log.info("%s: config.json has no model_type, read as model.architecture=%s", cfg.name_or_path, cfg.architecture)
    return CONFIG_MAPPING[cfg.architecture].from_dict(config_dict)


def _check_loaded(name: str, info: dict[str, Any], new_head: tuple[str, ...]) -> None:
    """The encoder must come from the checkpoint in full; only the task head may be new."""
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(new_head))
    if missing:
        preview = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise ModelLoadError(
            f"model.name_or_path={name!r} could not be loaded: {len(missing)} encoder weights are missing from the "
            f"checkpoint ({preview}); is it a checkpoint of model.architecture's type?"
        )
    if info.get("mismatched_keys"):
        raise ModelLoadError(
            f"model.name_or_path={name!r} could not be loaded: weights of the wrong shape: "
            f"{info['mismatched_keys'][:3]}"
        )
    unused = sorted(k for k in info["unexpected_keys"] if not PRETRAINING_ONLY.match(k))
    if unused:
        log.warning("%s: %d checkpoint tensors unused: %s", name, len(unused), ", ".join(unused[:5]))
    new = sorted(k for k in info["missing_keys"] if k.startswith(new_head))
    if new:
        log.info("%s: new task head initialised (%s)", name, ", ".join(new))


Loaded = TypeVar("Loaded")


def _loading(load: Callable[..., Loaded]) -> Callable[..., Loaded]:
    """A loader that reports any failure as one ModelLoadError naming model.name_or_path, with transformers' own
    loading report silenced (`_check_loaded` says what matters)."""

    @functools.wraps(load)
    def checked(cfg: ModelConfig, *args: Any) -> Loaded:
        try:
            with _quiet_transformers():
                return load(cfg, *args)
        except ModelLoadError:
            raise
        except Exception as err:
            raise _unreachable("model.name_or_path", cfg.name_or_path, err) from err

    return checked


@_loading
def load_span_model(cfg: ModelConfig) -> PreTrainedModel:
    """The start/end head: any QA checkpoint through the Auto class, or a new qa_outputs layer on an encoder."""
    model, info = AutoModelForQuestionAnswering.from_pretrained(
        cfg.name_or_path,
        config=load_config(cfg),
        dtype=torch.float32,
        trust_remote_code=False,
        attn_implementation=cfg.attn_implementation,
        output_loading_info=True,
    )
    _check_loaded(cfg.name_or_path, info, new_head=("qa_outputs.",))
    return model


def _tagging_model(head: str) -> type:
    """The model class of a BIO head: the CRF head's or the tagging-only one's."""
    from spanqa.models.crf import SpanBertCrfForQuestionAnswering
    from spanqa.models.tagging import SpanBertBioForQuestionAnswering

    return {"crf": SpanBertCrfForQuestionAnswering, "bio": SpanBertBioForQuestionAnswering}[head]


def _tagging_settings(cfg: ModelConfig, max_answer_length: int) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_answer_length": max_answer_length, "num_candidates": cfg.num_candidates}
    return settings | ({"forward_algorithm": cfg.crf_forward_algorithm} if cfg.head == "crf" else {})


@_loading
def load_tagging_model(cfg: ModelConfig, max_answer_length: int) -> PreTrainedModel:
    """A BIO head (`model.head` crf or bio): a saved model of that head, decoding as configured now, or a new head
    on the encoder of `name_or_path` (the same initial weights as the start/end model, for a fair comparison)."""
    model_cls = _tagging_model(cfg.head)
    settings = _tagging_settings(cfg, max_answer_length)
    if saved_model_type(cfg.name_or_path) == model_cls.config_class.model_type:
        return model_cls.from_pretrained(
            cfg.name_or_path, attn_implementation=cfg.attn_implementation, dtype=torch.float32, **settings
        )
    config = load_config(cfg)
    if not isinstance(config, BertConfig):
        raise ModelLoadError(
            f"model.name_or_path={cfg.name_or_path!r} is a {config.model_type} checkpoint: the {cfg.head} head wraps "
            "a BERT encoder (model.architecture=bert)"
        )
    model, info = model_cls.from_encoder(
        cfg.name_or_path,
        config=config,
        attn_implementation=cfg.attn_implementation,
        output_loading_info=True,
        **settings,
    )
    _check_loaded(cfg.name_or_path, info, new_head=())
    return model


@_loading
def planned_model(cfg: ModelConfig) -> PreTrainedModel:
    """The model of `cfg` as its config.json describes it, built on the meta device: no memory used, no weights read.
    Whatever its shape decides (parameters for the disk space its checkpoints need, positions for the window,
    embedding rows for the tokenizer) is checked on it before preprocessing and before any weights load."""
    tagging = cfg.head in ("crf", "bio")
    with torch.device("meta"):
        if tagging and saved_model_type(cfg.name_or_path) == _tagging_model(cfg.head).config_class.model_type:
            model_cls = _tagging_model(cfg.head)
            return model_cls(model_cls.config_class.from_pretrained(cfg.name_or_path))
        config = load_config(cfg)
        if tagging and isinstance(config, BertConfig):
            model_cls = _tagging_model(cfg.head)
            return model_cls(model_cls.config_class(encoder=config.to_dict()))
        return AutoModelForQuestionAnswering.from_config(config)


def max_positions(config: Any) -> int | None:
    """The longest window a model accepts (its position embeddings); the CRF model keeps BERT's in `encoder`."""
    encoder = getattr(config, "encoder", None)
    value = encoder.get("max_position_embeddings") if isinstance(encoder, dict) else None
    return value or getattr(config, "max_position_embeddings", None)


def check_window_fits(model: PreTrainedModel, max_length: int) -> None:
    limit = max_positions(model.config)
    if limit is not None and max_length > limit:
        raise ModelLoadError(f"data.max_length={max_length} is invalid: the model has {limit} positions at most")


def lowercases(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer lower-cases its input: asked of its normalizer, whatever the tokenizer class."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if normalizer is not None:
        return normalizer.normalize_str("A") == "a"
    return bool(getattr(tokenizer, "do_lower_case", False))


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, cfg: ModelConfig) -> None:
    """Tokenizer and model must agree before anything is tokenised: token ids beyond the embedding table crash deep
    in torch (or, when they happen not to occur, train silently on the wrong rows), and a lower-casing tokenizer
    feeds a cased model text it never saw."""
    tokenizer_name = cfg.tokenizer_name_or_path or cfg.name_or_path
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ModelLoadError(
            f"model.tokenizer_name_or_path={tokenizer_name!r} has {len(tokenizer):,} tokens but "
            f"model.name_or_path={cfg.name_or_path!r} embeds only {rows:,}: use the tokenizer the model was trained "
            "with"
        )
    cased = checkpoint_casing(cfg.name_or_path)
    if cased is not None and cased == lowercases(tokenizer):
        does = "lower-cases" if cased else "keeps the case of"
        raise ModelLoadError(
            f"model.tokenizer_name_or_path={tokenizer_name!r} {does} its input but model.name_or_path="
            f"{cfg.name_or_path!r} is {'cased' if cased else 'uncased'}: use a matching tokenizer"
        )
