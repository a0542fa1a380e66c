"""`make push`: the upload it would send (files, repo id, private), and one line, before anything is sent, for each
thing that stops it. No upload reaches a Hub here: the Hub is unreachable."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers import last_line, make, run_module

TINY = [
    "experiment=demo",
    "data.max_train_samples=60",
    "data.max_eval_samples=20",
    "trainer.max_steps=2",
    "logger=none",
]


@pytest.fixture(scope="module")
def finished(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("push") / "run"
    proc = run_module("spanqa.train", *TINY, f"demo.dir={demo_dir}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_the_dry_run_is_exactly_the_upload(finished: Path) -> None:
    proc = make("push", f"RUN={finished}", "REPO=someone/spanbert-squad2", "ARGS=--dry-run")
    assert proc.returncode == 0, proc.stderr
    upload = json.loads(proc.stdout)
    files = sorted(str(p.relative_to(finished / "model")) for p in (finished / "model").rglob("*") if p.is_file())
    f1 = json.loads((finished / "run.json").read_text())["metrics"]["eval_f1"]
    assert upload == {
        "repo_id": "someone/spanbert-squad2",
        "private": True,
        "folder": str(finished / "model"),
        "files": files,
        "commit_message": f"spanbert-seed42: SQuAD v2 F1 {f1:.2f}",
    }
    assert "README.md" in files and "model.safetensors" in files and not [f for f in files if f.endswith(".bin")]
    public = run_module("spanqa.push", str(finished), "--repo", "someone/x", "--public", "--dry-run")
    assert json.loads(public.stdout)["private"] is False


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--repo", "spanbert"], {}, "error: --repo='spanbert' is invalid: a Hub model repo id is 'namespace/name'"),
        (["--repo", "a/b"], {"HF_TOKEN": ""}, "error: no Hugging Face token: run `hf auth login` or set HF_TOKEN"),
        (["--repo", "a/b"], {"HF_TOKEN": "hf_" + "x" * 34, "HF_HUB_OFFLINE": ""},
         "error: cannot upload: the Hub cannot be reached (no network?); nothing was sent"),
        (["--repo", "a/b"], {"HF_TOKEN": "hf_" + "x" * 34, "HF_HUB_OFFLINE": "1"},
         "error: cannot upload: HF_HUB_OFFLINE is set; nothing was sent"),
    ],
)  # fmt: skip
def test_what_stops_an_upload_is_one_line(finished: Path, args: list[str], env: dict[str, str], line: str) -> None:
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", **env}
    proc = run_module("spanqa.push", str(finished), *args, timeout=60, **env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert last_line(proc).startswith(line) and proc.stderr.count("\n") == 1


def test_a_run_that_did_not_finish_or_predates_cards_is_refused(finished: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished, unfinished, ignore=shutil.ignore_patterns("run.json"))
    proc = run_module("spanqa.push", str(unfinished), "--repo", "a/b", "--dry-run")
    assert proc.returncode == 2 and "has no run.json: the run did not finish" in last_line(proc)
    older = tmp_path / "older"
    shutil.copytree(finished, older)
    (older / "model" / "README.md").unlink()
    (older / "model" / "training_args.bin").write_bytes(b"pickle")
    proc = run_module("spanqa.push", str(older), "--repo", "a/b", "--dry-run")
    assert proc.returncode == 2 and "has no README.md (a model card)" in last_line(proc)
