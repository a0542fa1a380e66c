"""What a run leaves in its Hydra run dir, and what a run dir's contents mean when a run starts there again.

run.json is the "finished" marker: Trainer log history, final metrics, wall time, steps/s, parameter count, best
checkpoint and W&B run id, written atomically and last. Beside it, the final eval artifacts (predictions, null odds,
n-best, per-question EM/F1) and `model/` (the best checkpoint, safetensors, loadable by `spanqa.predict` and, for
the start/end head, by `AutoModelForQuestionAnswering.from_pretrained`). `make compare` reads only these files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanqa.errors import ConfigError
from spanqa.files import write_json

if TYPE_CHECKING:  # run_state and read_record serve the first second of a run: nothing heavy at import
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput

    from spanqa.data.windows import EvalSet
    from spanqa.eval.policies import Outcome
    from spanqa.training.tracking import Tracker

RECORD = "run.json"


def run_state(run_dir: Path, resume: bool, multirun: bool) -> str:
    """'fresh', 'resume' or 'done'. Never train over an earlier run's checkpoints. A re-launched multirun
    resumes its interrupted jobs and skips its finished ones."""
    finished = (run_dir / RECORD).is_file()
    has_checkpoints = any((run_dir / "checkpoints").glob("checkpoint-*"))
    if finished and multirun:
        return "done"
    if finished:
        raise ConfigError(f"run dir {str(run_dir)!r} holds a finished run: choose a new hydra.run.dir")
    if has_checkpoints and (resume or multirun):
        return "resume"
    if has_checkpoints:
        raise ConfigError(
            f"run dir {str(run_dir)!r} already holds checkpoints: pass resume=true or a new hydra.run.dir"
        )
    if resume:
        raise ConfigError(
            f"resume=true but run dir {str(run_dir)!r} has no checkpoint: set hydra.run.dir=<earlier run>"
        )
    return "fresh"


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / RECORD).read_text())


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint: one killed while saving lacks trainer_state.json (written last)."""
    complete = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]))) if complete else None


def best_epoch(best_checkpoint: str | None, log_history: list[dict[str, Any]]) -> float | None:
    """The epoch whose evaluation produced the best checkpoint (the one loaded at the end)."""
    if best_checkpoint is None:
        return None
    step = int(best_checkpoint.rsplit("-", 1)[-1])
    return next((h["epoch"] for h in log_history if h.get("step") == step and "eval_f1" in h), None)


def save_final(
    trainer: Trainer,
    outcome: Outcome | None,
    eval_set: EvalSet,
    metrics: dict[str, float],
    train_output: TrainOutput,
    run_dir: Path,
    tracker: Tracker,
) -> dict[str, Any]:
    """Write the final artifacts and, last, run.json; close the W&B run. Returns the metrics with best_epoch."""
    from spanqa.eval.policies import write_artifacts

    trainer.save_model(str(run_dir / "model"))  # every rank takes part; the Trainer writes once
    state = trainer.state
    metrics = {**metrics, "best_epoch": best_epoch(state.best_model_checkpoint, state.log_history)}
    if not trainer.is_world_process_zero():
        return metrics
    assert outcome is not None, "save_final runs after a final evaluation"
    files = write_artifacts(outcome, eval_set, run_dir, nbest=True)
    record: dict[str, Any] = {
        "run_name": trainer.args.run_name,
        "metrics": metrics,
        "null_threshold_policy": outcome.policy,
        "log_history": state.log_history,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "train_steps_per_second": train_output.metrics.get("train_steps_per_second"),
        "global_step": state.global_step,
        "num_parameters": sum(p.numel() for p in trainer.model.parameters()),
        "best_checkpoint": state.best_model_checkpoint,
        "wandb_run_id": tracker.run.id if tracker.run is not None else None,
    }
    write_json(run_dir / RECORD, record)
    tracker.log_files(f"eval-{tracker.run.id}" if tracker.run else "eval", "evaluation", files)
    tracker.finish({k: v for k, v in metrics.items() if v is not None})
    return metrics


def summary_line(run_name: str, metrics: dict[str, Any], run_dir: Path) -> str:
    """One line for the terminal: EM/F1, the splits, and the score of answering "" to everything."""
    nan = float("nan")
    baseline = 100.0 * metrics["eval_NoAns_total"] / metrics["eval_total"] if "eval_NoAns_total" in metrics else 0.0
    return (
        f"{run_name}: EM {metrics['eval_exact']:.2f}  F1 {metrics['eval_f1']:.2f}  "
        f"(HasAns F1 {metrics.get('eval_HasAns_f1', nan):.2f}, NoAns F1 {metrics.get('eval_NoAns_f1', nan):.2f}; "
        f'all-"" baseline F1 {baseline:.2f})  best epoch {metrics.get("best_epoch")}  → {run_dir}'
    )
