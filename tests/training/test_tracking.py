"""W&B: the mode decided before wandb starts, and one run per job with the project's name, group and tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanqa.config import Config
from spanqa.training.tracking import resolve_mode


def test_wandb_mode_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = Config()
    assert resolve_mode(cfg) == "offline"  # no key: offline, never a prompt
    cfg.logger.mode = "online"
    with pytest.raises(Exception, match=r"logger\.mode='online' needs a W&B key"):
        resolve_mode(cfg)
    cfg.logger.backend = "none"
    assert resolve_mode(cfg) == "disabled"
