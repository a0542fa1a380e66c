"""What a finished run leaves in its Hydra run dir, so `make compare` needs no network:

run.json (composed config, Trainer log history, final metrics, wall time, steps/s, parameter count, best
checkpoint, W&B run id), the final eval artifacts (predictions, null odds, n-best, per-question EM/F1) and
`model/` (the best checkpoint, safetensors, loadable by `spanqa.predict` and, for the plain head, by
`AutoModelForQuestionAnswering.from_pretrained`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers.trainer_utils import TrainOutput

from spanqa.evaluation import write_artifacts
from spanqa.tracking import Tracker
from spanqa.trainer import QATrainer


def last_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint: one killed while saving lacks trainer_state.json (written last)."""
    complete = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[-1]))) if complete else None


def best_epoch(trainer: QATrainer) -> float | None:
    """The epoch whose evaluation produced the best checkpoint (the one loaded at the end)."""
    best = trainer.state.best_model_checkpoint
    if best is None:
        return None
    step = int(best.rsplit("-", 1)[-1])
    return next((h["epoch"] for h in trainer.state.log_history if h.get("step") == step and "eval_f1" in h), None)


def save_final(
    trainer: QATrainer, metrics: dict[str, float], train_output: TrainOutput, run_dir: Path, tracker: Tracker
) -> dict[str, Any]:
    """Write the run record and final artifacts, close the W&B run; returns the metrics with best_epoch."""
    trainer.save_model(str(run_dir / "model"))  # every rank takes part; the Trainer writes once
    metrics = {**metrics, "best_epoch": best_epoch(trainer)}
    outcome = trainer.last_outcome
    if not trainer.is_world_process_zero():
        return metrics
    assert outcome is not None, "save_final runs after a final evaluate()"
    files = write_artifacts(outcome, trainer.eval_set, run_dir, nbest=True)
    model = trainer.model
    record: dict[str, Any] = {
        "run_name": trainer.args.run_name,
        "metrics": metrics,
        "null_threshold_policy": outcome.policy,
        "log_history": trainer.state.log_history,
        "train_runtime_s": train_output.metrics.get("train_runtime"),
        "train_steps_per_second": train_output.metrics.get("train_steps_per_second"),
        "global_step": trainer.state.global_step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "wandb_run_id": tracker.run.id if tracker.run is not None else None,
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=1))
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
