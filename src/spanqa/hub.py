"""Reachability of the Hugging Face Hub, decided once, before `transformers`/`datasets` are imported.

Both libraries read HF_HUB_OFFLINE at import time. Without it, an unreachable Hub costs 20-100 s of retries
before every failure; with it, anything already in the local cache still loads and anything else fails at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from spanqa.network import reachable

log = logging.getLogger(__name__)


def hub_reachable(timeout: float = 3.0) -> bool:
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in _TRUE


def settle_offline_mode() -> bool:
    """Switch to offline mode when the Hub cannot be reached; returns True when running offline.

    HF_HUB_OFFLINE=0 set by the user means "the Hub is reachable, do not probe": trusted as it is, for networks
    that the probe (proxy-aware as it is) cannot judge."""
    if is_offline():
        return True
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE:
        return False
    if hub_reachable():
        return False
    log.warning("the Hugging Face Hub is unreachable: using only local paths and the local cache (HF_HUB_OFFLINE=1)")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


def is_local(name_or_path: str | None) -> bool:
    return name_or_path is not None and Path(name_or_path).expanduser().exists()
