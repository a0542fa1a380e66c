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


def test_the_run_is_offline_named_grouped_and_tagged_and_resumes_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real offline W&B run: what the UI groups by, and the same run id when the run dir is resumed."""
    from spanqa.training.tracking import RUN_ID_FILE, Tracker

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = Config()
    cfg.model.name, cfg.model.head, cfg.seed, cfg.run_name = "spanbert_crf", "crf", 3, "spanbert_crf-seed3"
    cfg.logger.group = "spanbert_vs_crf"
    tracker = Tracker.start(cfg, {"seed": 3, "model": {"name": "spanbert_crf"}}, tmp_path, "offline")
    run = tracker.run
    assert (run.name, run.group, run.project) == ("spanbert_crf-seed3", "spanbert_vs_crf", "spanqa")
    assert {"model:spanbert_crf", "head:crf", "seed:3"} <= set(run.tags)
    assert (tmp_path / RUN_ID_FILE).read_text() == run.id
    tracker.finish({"eval_f1": 12.5})
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run.id}"))
    again = Tracker.start(cfg, {"seed": 3}, tmp_path, "offline")
    assert again.run.id == run.id
    again.finish({})
    assert Tracker.start(cfg, {}, tmp_path, "disabled").run is None
