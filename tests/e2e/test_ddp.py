"""Two-process DDP on CPU (torchrun, Gloo) against one process with the same global batch, on the demo stand-ins.

Why the two runs can be compared tightly: accelerate gives both the same shuffled order (its seedable sampler,
seeded with data_seed), each DDP rank takes one half of every global batch, and DDP averages the two half-batch
mean gradients, which is the mean over the whole batch. With dropout off (the only randomness inside a step),
what remains is float summation order (two half-batch reductions plus an all-reduce instead of one reduction):
measured ~1e-7 relative on the per-step loss. Left to run, Adam at the demo's lr 1e-3 amplifies that noise
(identical to 7 digits until step ~20, 0.1 % apart at step 30, ~1 % after 100 steps), so the runs stop at 12
steps, where the tolerance can stay at 1e-4 relative, and the evaluation must then agree question by question.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, subprocess_env

pytestmark = pytest.mark.slow

SQUAD_KEYS = ("eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_best_f1", "eval_best_f1_thresh")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# Runs spanqa.train as torchrun's entry script, logging per rank every file written with Path.write_text and
# every file an atomic write renames into place (Path.replace's target): the records, eval artifacts and W&B id
# are all written one of those ways, so the test can tell which rank wrote what.
PROBE = """
import os, pathlib, runpy

_write_text, _replace = pathlib.Path.write_text, pathlib.Path.replace

def _log(path):
    log = os.path.join(os.environ["PROBE_DIR"], "writes-rank" + os.environ["RANK"] + ".txt")
    with open(log, "a", encoding="utf-8") as f:
        f.write(str(path) + "\\n")

def _logged_write(self, *args, **kwargs):
    _log(self)
    return _write_text(self, *args, **kwargs)

def _logged_replace(self, target):
    _log(target)
    return _replace(self, target)

pathlib.Path.write_text, pathlib.Path.replace = _logged_write, _logged_replace
runpy.run_module("spanqa.train", run_name="__main__", alter_sys=True)
"""


def demo_overrides(demo_dir: Path) -> list[str]:
    return [
        "experiment=demo", f"demo.dir={demo_dir}", "demo.train_examples=4000", "demo.dev_examples=400",
        "data.max_train_samples=200", "data.max_eval_samples=200",
    ]  # fmt: skip


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(**env), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def dropout_free_copy(demo_dir: Path, dest: Path) -> Path:
    """The demo checkpoint with dropout off, so that a training step is a deterministic function of its batch."""
    shutil.copytree(demo_dir / "tiny-bert", dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def train_logs(record: dict) -> list[tuple[int, float, float, float]]:
    return [(h["step"], h["loss"], h["grad_norm"], h["learning_rate"]) for h in record["log_history"] if "loss" in h]


@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf"])
def test_ddp_matches_one_process_with_the_same_global_batch(tmp_path: Path, demo_dir: Path, model: str) -> None:
    checkpoint = dropout_free_copy(demo_dir, tmp_path / "tiny-bert-no-dropout")
    common = [
        *demo_overrides(demo_dir), f"model={model}", f"model.name_or_path={checkpoint}", "logger=none",
        "trainer.max_steps=12", "trainer.logging_steps=1",
    ]  # fmt: skip
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([sys.executable, "-m", "spanqa.train", *common, "trainer.batch_size=16", f"hydra.run.dir={single}"])
    proc = run([*TORCHRUN, "-m", "spanqa.train", *common, "trainer.batch_size=8", f"hydra.run.dir={ddp}"])
    assert proc.stdout.count(f"{model}-seed42: EM") == 1  # the summary comes from rank 0 only

    one, two = (json.loads((d / "run.json").read_text()) for d in (single, ddp))
    assert one["global_step"] == two["global_step"] == 12
    # Step by step: same windows, same averaged gradient (its norm is logged before clipping), same schedule.
    logs_one, logs_two = train_logs(one), train_logs(two)
    assert [s for s, *_ in logs_one] == [s for s, *_ in logs_two] == list(range(1, 13))
    for (step, loss, norm, lr), (_, loss2, norm2, lr2) in zip(logs_one, logs_two, strict=True):
        assert loss2 == pytest.approx(loss, rel=1e-4), step
        assert norm2 == pytest.approx(norm, rel=1e-4), step
        assert lr2 == lr, step
    # Evaluation: the two ranks' shards gathered back in order, the padded last batch trimmed, metrics scored
    # on rank 0 and broadcast. Same weights up to rounding, so the same answers for every question.
    for key in SQUAD_KEYS:
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-6), key
    assert two["metrics"]["eval_total"] == one["metrics"]["eval_total"] == 200
    assert json.loads((ddp / "predictions.json").read_text()) == json.loads((single / "predictions.json").read_text())
    nbest_one, nbest_two = (json.loads((d / "nbest_predictions.json").read_text()) for d in (single, ddp))
    assert {q: [c["text"] for c in cands] for q, cands in nbest_two.items()} == {
        q: [c["text"] for c in cands] for q, cands in nbest_one.items()
    }
    na_one, na_two = (json.loads((d / "na_probs.json").read_text()) for d in (single, ddp))
    assert na_one.keys() == na_two.keys()
    assert max(abs(na_one[q] - na_two[q]) for q in na_one) < 1e-5
    # eval_loss is only close: accelerate tops up the last eval batch of rank 1 with copies of the first
    # (longest) windows and the Trainer counts that batch's mean loss for its real windows; the start/end
    # cross-entropy also runs over padding positions, whose number follows the batch width.
    assert two["metrics"]["eval_loss"] == pytest.approx(one["metrics"]["eval_loss"], rel=0.1)


def test_ddp_writes_records_once_into_rank_0s_run_dir(tmp_path: Path, demo_dir: Path) -> None:
    """W&B offline, CRF head, and a run dir that differs per rank (microseconds: with the default seconds it
    differs when the ranks start either side of a second). Everything lands in rank 0's dir, written by rank 0;
    one W&B run; the checkpoints hold both ranks' RNG states (needed to resume)."""
    probe, probe_dir, runs = tmp_path / "probe.py", tmp_path / "writes", tmp_path / "runs"
    probe.write_text(PROBE)
    probe_dir.mkdir()
    overrides = [
        *demo_overrides(demo_dir), "model=spanbert_crf", "logger.mode=offline", "trainer.max_steps=3",
        "trainer.batch_size=4", "data.max_eval_samples=50", f"hydra.run.dir={runs}/${{now:%H-%M-%S-%f}}",
    ]  # fmt: skip
    proc = run([*TORCHRUN, str(probe), *overrides], PROBE_DIR=str(probe_dir))
    assert proc.stdout.count("spanbert_crf-seed42: EM") == 1

    dirs = sorted(runs.iterdir())
    assert len(dirs) == 2  # Hydra creates one per rank (and its log); rank 0 alone writes .hydra/, in its own
    finished = [d for d in dirs if (d / "run.json").is_file()]
    assert len(finished) == 1
    run_dir, other = finished[0], next(d for d in dirs if d != finished[0])
    assert sorted(p.name for p in other.iterdir()) == ["train.log"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    record = json.loads((run_dir / "run.json").read_text())
    assert record["global_step"] == 3 and record["metrics"]["eval_total"] == 50
    writes = {rank: (probe_dir / f"writes-rank{rank}.txt") for rank in (0, 1)}
    assert not writes[1].exists()  # rank 1 writes no record, artifact or W&B id
    written = writes[0].read_text().splitlines()
    assert written.count(str(run_dir / "run.json")) == 1
    assert all(Path(p).is_relative_to(run_dir) for p in written)
    for name in ("predictions", "na_probs", "per_question", "eval_results"):
        assert str(run_dir / "eval" / "step-3" / f"{name}.json") in written  # renamed into place
    assert not list(run_dir.rglob("*.tmp"))  # no half-written file left behind

    checkpoints = list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((c / f"rng_state_{r}.pth").is_file() for c in checkpoints for r in (0, 1))
    offline_runs = list(tmp_path.rglob("offline-run-*"))
    assert len(offline_runs) == 1 and offline_runs[0].parent == run_dir / "wandb"
    assert record["wandb_run_id"] and offline_runs[0].name.endswith(record["wandb_run_id"])
