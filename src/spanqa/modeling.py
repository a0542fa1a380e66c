"""Tokenizer and model for a `model` config: the plain span head or the CRF head, from the Hub or a local dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoModelForQuestionAnswering, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from spanqa.config import ModelConfig
from spanqa.errors import ModelLoadError
from spanqa.hub import is_local, is_offline

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_local_dir(name_or_path: str, key: str) -> bool:
    """True for a path (not a Hub id); a path must be an existing directory."""
    path = Path(name_or_path).expanduser()
    if not (name_or_path.startswith((".", "/", "~")) or path.exists()):
        return False
    if not path.is_dir():
        raise ModelLoadError(f"{key}={name_or_path!r} does not exist (expected a checkpoint directory or a Hub id)")
    return True


def check_checkpoint(name_or_path: str, key: str = "model.name_or_path") -> None:
    """A local path must be a complete checkpoint; a Hub id needs the Hub or the cache (checked when loading)."""
    if not check_local_dir(name_or_path, key):
        return
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{key}={name_or_path!r} has no config.json: not a saved checkpoint")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(f"{key}={name_or_path!r} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def _unreachable(key: str, name: str, err: Exception) -> ModelLoadError:
    if is_offline() and not is_local(name):
        return ModelLoadError(
            f"{key}={name!r} is not in the local Hugging Face cache and the Hub is unreachable: download it "
            f"where the Hub is reachable (`hf download {name} --local-dir DIR`) and pass {key}=DIR"
        )
    return ModelLoadError(f"{key}={name!r} could not be loaded: {str(err).splitlines()[0]}")


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    name = cfg.tokenizer_name_or_path or cfg.name_or_path
    key = "model.tokenizer_name_or_path" if cfg.tokenizer_name_or_path else "model.name_or_path"
    check_local_dir(name, key)
    try:
        return AutoTokenizer.from_pretrained(name, use_fast=True)
    except Exception as err:
        raise _unreachable(key, name, err) from err


def is_crf_checkpoint(name_or_path: str) -> bool:
    config = Path(name_or_path).expanduser() / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("model_type") == "spanbert_crf"


def load_model(cfg: ModelConfig, max_answer_length: int) -> PreTrainedModel:
    """Plain head: any QA checkpoint via the Auto class. CRF head: a saved CRF model, or a new CRF head on top
    of the encoder of `name_or_path` (same initial weights as the plain model, for a fair comparison)."""
    check_checkpoint(cfg.name_or_path)
    try:
        if cfg.head == "span":
            if is_crf_checkpoint(cfg.name_or_path):
                raise ModelLoadError(
                    f"model.name_or_path={cfg.name_or_path!r} is a CRF checkpoint: use model=spanbert_crf"
                )
            return AutoModelForQuestionAnswering.from_pretrained(
                cfg.name_or_path, trust_remote_code=False, attn_implementation=cfg.attn_implementation
            )
        from spanqa.modeling_crf import SpanBertCrfForQuestionAnswering

        if is_crf_checkpoint(cfg.name_or_path):  # continue from a saved CRF model, decoding as configured now
            return SpanBertCrfForQuestionAnswering.from_pretrained(
                cfg.name_or_path,
                attn_implementation=cfg.attn_implementation,
                max_answer_length=max_answer_length,
                num_candidates=cfg.crf_num_candidates,
                forward_algorithm=cfg.crf_forward_algorithm,
            )
        return SpanBertCrfForQuestionAnswering.from_encoder(
            cfg.name_or_path,
            max_answer_length=max_answer_length,
            num_candidates=cfg.crf_num_candidates,
            forward_algorithm=cfg.crf_forward_algorithm,
            attn_implementation=cfg.attn_implementation,
        )
    except ModelLoadError:
        raise
    except Exception as err:
        raise _unreachable("model.name_or_path", cfg.name_or_path, err) from err


def max_positions(config: Any) -> int | None:
    """The longest window a model accepts (its position embeddings); the CRF model keeps BERT's in `encoder`."""
    encoder = getattr(config, "encoder", None)
    value = encoder.get("max_position_embeddings") if isinstance(encoder, dict) else None
    return value or getattr(config, "max_position_embeddings", None)


def check_window_fits(model: PreTrainedModel, max_length: int) -> None:
    limit = max_positions(model.config)
    if limit is not None and max_length > limit:
        raise ModelLoadError(f"data.max_length={max_length} is invalid: the model has {limit} positions at most")
