"""What a checkpoint directory holds, read from its files without loading anything: runs in the first second of a
run, before torch is imported, so a wrong path costs a second rather than a download or a model load."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from spanqa.config import ModelConfig
from spanqa.env import is_offline
from spanqa.errors import ModelLoadError

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
# A tokenizer stating its casing: tokenizer.json holds its normaliser, tokenizer_config.json its do_lower_case.
# A bare vocab.txt (the SpanBERT Hub repo ships one) is loaded lower-casing by transformers, whatever it was.
CASING_FILES = ("tokenizer.json", "tokenizer_config.json")


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


def check_model_source(cfg: ModelConfig) -> None:
    """Local checkpoint and tokenizer dirs exist and hold what loading needs; Hub ids are checked when loading."""
    check_checkpoint(cfg.name_or_path)
    if cfg.tokenizer_name_or_path is not None:
        check_local_dir(cfg.tokenizer_name_or_path, "model.tokenizer_name_or_path")


def shipped_tokenizer_files(name_or_path: str) -> frozenset[str]:
    """The tokenizer files a checkpoint ships: listed for a local dir; for a Hub id, as the local Hugging Face cache
    knows them and, online, as the Hub answers (missing files are remembered in the cache)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return frozenset(f for f in TOKENIZER_FILES if (local / f).is_file())
    if local.exists() or name_or_path.count("/") != 1:
        return frozenset()
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    found = set()
    for name in TOKENIZER_FILES:
        cached = try_to_load_from_cache(name_or_path, name)
        if isinstance(cached, str):
            found.add(name)
        elif cached is None and not is_offline():  # not known here: ask the Hub
            try:
                hf_hub_download(name_or_path, name)
                found.add(name)
            except EntryNotFoundError:
                pass
            except Exception:  # unreachable or private: loading the checkpoint reports it
                pass
    return frozenset(found)


def checkpoint_casing(name_or_path: str) -> bool | None:
    """True for a cased checkpoint, False for an uncased one, None when it does not say: from the tokenizer config
    it ships (`do_lower_case`), else from the Hub naming convention (a name ending in `-cased` or `-uncased`)."""
    tokenizer_config = Path(name_or_path).expanduser() / "tokenizer_config.json"
    if tokenizer_config.is_file():
        lower = json.loads(tokenizer_config.read_text()).get("do_lower_case")
        if isinstance(lower, bool):
            return not lower
    last_word = re.split(r"[-_.]", Path(name_or_path.rstrip("/")).name.lower())[-1]
    return {"cased": True, "uncased": False}.get(last_word)


def saved_model_type(name_or_path: str | Path) -> str | None:
    """The model_type in a local checkpoint's config.json (None for a Hub id or a config without one)."""
    config = Path(name_or_path).expanduser() / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


@dataclass(frozen=True)
class TokenizerChoice:
    """Which tokenizer a model config windows with, and why."""

    name_or_path: str
    key: str  # the setting naming it: model.name_or_path (the checkpoint's own), model.tokenizer_name_or_path,
    # or model.tokenizer_fallback
    shipped: frozenset[str]  # the tokenizer files the checkpoint itself ships


def choose_tokenizer(cfg: ModelConfig) -> TokenizerChoice:
    """The user's `model.tokenizer_name_or_path` when set; else the checkpoint's own tokenizer when it ships one that
    states its casing; else `model.tokenizer_fallback` (SpanBERT: BERT's cased tokenizer)."""
    check_local_dir(cfg.name_or_path, "model.name_or_path")
    shipped = shipped_tokenizer_files(cfg.name_or_path)
    if cfg.tokenizer_name_or_path:
        return TokenizerChoice(cfg.tokenizer_name_or_path, "model.tokenizer_name_or_path", shipped)
    if shipped & set(CASING_FILES):
        return TokenizerChoice(cfg.name_or_path, "model.name_or_path", shipped)
    if cfg.tokenizer_fallback:
        return TokenizerChoice(cfg.tokenizer_fallback, "model.tokenizer_fallback", shipped)
    what = "tokenizer files stating its casing (only vocab.txt)" if shipped else "tokenizer files"
    raise ModelLoadError(
        f"model.name_or_path={cfg.name_or_path!r} has no {what} (the SpanBERT release ships none): set "
        "model.tokenizer_name_or_path=google-bert/bert-base-cased or a local copy of it"
    )
