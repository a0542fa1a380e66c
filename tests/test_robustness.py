"""The README's troubleshooting table, row by row: each bad input fails fast with one line, or falls back safely."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env
from spanqa.config import Config
from spanqa.errors import ModelLoadError
from spanqa.preflight import OutputError, check_free_space, checkpoint_bytes
from spanqa.tracking import resolve_mode

TINY = ["experiment=demo", "data.max_train_samples=60", "data.max_eval_samples=20", "trainer.max_steps=3"]


def train(demo_dir: Path, run_dir: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spanqa.train", *TINY, f"demo.dir={demo_dir}", f"hydra.run.dir={run_dir}", *overrides],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d, tmp: str(tmp / "nowhere"), "does not exist (expected a checkpoint directory or a Hub id)"),
        (
            lambda d, tmp: str(
                shutil.copytree(d / "tiny-bert", tmp / "no-weights", ignore=shutil.ignore_patterns("*.safetensors"))
            ),
            "has no weights",
        ),
    ],
)
def test_missing_or_incomplete_checkpoint(tmp_path: Path, demo_dir: Path, setup, message: str) -> None:
    path = setup(demo_dir, tmp_path)
    proc = train(demo_dir, tmp_path / "run", f"model.name_or_path={path}", "logger=none")
    assert proc.returncode == 2
    assert last_line(proc).startswith(f"error: model.name_or_path={path!r}") and message in last_line(proc)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_remote_code_in_a_checkpoint_is_never_run(tmp_path: Path, demo_dir: Path) -> None:
    from spanqa.config import ModelConfig
    from spanqa.modeling import load_model

    ckpt = shutil.copytree(demo_dir / "tiny-bert", tmp_path / "remote")
    sentinel = tmp_path / "executed"
    (ckpt / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModelForQuestionAnswering": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (ckpt / "config.json").write_text(json.dumps(config))
    with contextlib.suppress(ModelLoadError):  # refusing is fine too; running the file is not
        load_model(ModelConfig(name_or_path=str(ckpt)), max_answer_length=8)
    assert not sentinel.exists()


def test_wandb_key_without_network_falls_back_offline_and_the_key_is_never_saved(
    tmp_path: Path, demo_dir: Path
) -> None:
    key = "0123456789abcdef0123456789abcdef01234567"
    env = {"WANDB_API_KEY": key, "WANDB_MODE": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens there
    start = time.perf_counter()
    proc = train(demo_dir, tmp_path / "run", "logger.mode=auto", **env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - start < 120  # W&B itself would hang ~100 s before giving up
    assert "W&B server unreachable: logging offline" in proc.stdout + proc.stderr
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert leaked == []
    assert key not in proc.stdout + proc.stderr
    # Weights are saved as safetensors only.
    saved = [p.name for p in (tmp_path / "run").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".safetensors")]
    assert "model.safetensors" in saved and not [n for n in saved if n.endswith(".bin") and "model" in n]


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


def test_unwritable_output_dir_fails_in_one_line(tmp_path: Path, demo_dir: Path) -> None:
    proc = train(demo_dir, Path("/proc/spanqa-run"), "logger=none")
    assert proc.returncode == 2
    assert last_line(proc) == (
        "error: hydra.run.dir='/proc/spanqa-run' is not writable (No such file or directory): choose another directory"
    )


def test_disk_space_is_checked_against_the_checkpoints_to_keep(tmp_path: Path) -> None:
    assert checkpoint_bytes(num_parameters=110_000_000, checkpoints_kept=2) == 110_000_000 * 4 * 7
    check_free_space(tmp_path, needed=1)
    with pytest.raises(OutputError, match="GB free but the run's checkpoints need about"):
        check_free_space(tmp_path, needed=shutil.disk_usage(tmp_path).free * 2)


def test_windows_longer_than_the_model_fail_before_preprocessing(tmp_path: Path, demo_dir: Path) -> None:
    proc = train(demo_dir, tmp_path / "run", "data.max_length=600", "data.doc_stride=128", "logger=none")
    assert proc.returncode == 2
    assert last_line(proc) == "error: data.max_length=600 is invalid: the model has 512 positions at most"


def test_a_saved_crf_model_decodes_with_the_configured_settings(tmp_path: Path, demo_dir: Path) -> None:
    from spanqa.config import ModelConfig
    from spanqa.modeling import load_model
    from spanqa.modeling_crf import SpanBertCrfForQuestionAnswering

    saved = tmp_path / "crf"
    SpanBertCrfForQuestionAnswering.from_encoder(str(demo_dir / "tiny-bert"), max_answer_length=5).save_pretrained(
        saved
    )
    model = load_model(ModelConfig(name_or_path=str(saved), head="crf", crf_num_candidates=3), max_answer_length=7)
    assert (model.config.max_answer_length, model.config.num_candidates) == (7, 3)
