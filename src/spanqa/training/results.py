"""What a finished job leaves: model/, the final evaluation's files, the row reports and, written last, the run
record (run.json); and the one summary line the terminal gets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanqa.data.squad import RowReport
from spanqa.env import disk_full_reported
from spanqa.eval.policies import answer_rows, write_artifacts
from spanqa.files import write_json
from spanqa.rundir.card import write_card
from spanqa.rundir.layout import MODEL_DIR, SKIPPED, TRIMMED
from spanqa.rundir.record import NullThreshold, QuestionSet, RowChanges, RunIdentity, RunRecord, TokenizerUsed

if TYPE_CHECKING:
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput

    from spanqa.data.windows import EvalSet
    from spanqa.training.tracking import Tracker


def best_epoch(best_checkpoint: str | None, log_history: list[dict[str, Any]]) -> float | None:
    """The epoch whose evaluation produced the best checkpoint (the one loaded at the end)."""
    if best_checkpoint is None:
        return None
    step = int(best_checkpoint.rsplit("-", 1)[-1])
    return next((h["epoch"] for h in log_history if h.get("step") == step and "eval_f1" in h), None)


def write_row_reports(run_dir: Path, rows: RowReport) -> None:
    """skipped_rows.json and trimmed_answers.json, each when it has entries (run.json keeps their counts)."""
    if rows.skipped:
        write_json(run_dir / SKIPPED, rows.skipped)
    if rows.trimmed:
        write_json(run_dir / TRIMMED, rows.trimmed)


def _relative(path: str | None, run_dir: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return path


def save_final(
    trainer: Trainer,
    eval_set: EvalSet,
    metrics: dict[str, float],
    train_output: TrainOutput,
    run_dir: Path,
    tracker: Tracker,
    identity: RunIdentity,
    tokenizer: TokenizerUsed,
    rows: RowChanges,
) -> dict[str, Any]:
    """Write the final artifacts and, last, run.json; close the W&B run. Returns the metrics with best_epoch."""
    with disk_full_reported(run_dir, "the final model and records", intact="the checkpoints are intact"):
        trainer.save_model(str(run_dir / MODEL_DIR))  # every rank takes part; the Trainer writes once
        state = trainer.state
        metrics = {**metrics, "best_epoch": best_epoch(state.best_model_checkpoint, state.log_history)}
        if not trainer.is_world_process_zero():
            return metrics
        outcome = trainer.last_outcome  # type: ignore[attr-defined]
        assert outcome is not None, "save_final runs after a final evaluation"
        files = write_artifacts(outcome, eval_set, run_dir, nbest=True)
        record = RunRecord(
            run_name=trainer.args.run_name or run_dir.name,
            config=identity.config,
            config_digest=identity.digest,
            overrides=identity.overrides,
            metrics={k: v for k, v in metrics.items() if k != "eval_null_threshold"},  # recorded once, below
            null_threshold=NullThreshold(outcome.threshold, outcome.policy, outcome.held_out_by),
            questions=QuestionSet.of(eval_set.ids),
            tokenizer=tokenizer,
            rows=rows,
            log_history=state.log_history,
            train_runtime_s=train_output.metrics.get("train_runtime"),
            train_steps_per_second=train_output.metrics.get("train_steps_per_second"),
            global_step=state.global_step,
            num_parameters=sum(p.numel() for p in trainer.model.parameters()),
            best_checkpoint=_relative(state.best_model_checkpoint, run_dir),
            wandb_run_id=tracker.run.id if tracker.run is not None else None,
        )
        write_card(record, run_dir / MODEL_DIR)  # model/README.md: its scores, recipe and how to load it
        (run_dir / MODEL_DIR / "training_args.bin").unlink(missing_ok=True)  # a pickle: model/ is safetensors only
        record.write(run_dir)
    tracker.log_answers(answer_rows(outcome, eval_set), str(identity.config["model"]["head"]))
    tracker.log_model(run_dir / MODEL_DIR)
    tracker.log_files(f"eval-{tracker.run.id}" if tracker.run else "eval", "evaluation", files)
    tracker.finish({"best_epoch": metrics["best_epoch"]})  # the eval/* scores are the callback's, logged once
    return metrics


def summary_line(run_name: str, metrics: dict[str, Any], run_dir: Path, rows: RowChanges | None = None) -> str:
    """One line for the terminal: EM/F1, the splits, the score of answering "" to everything, and what the data
    step changed."""
    nan, rows = float("nan"), rows or RowChanges()
    baseline = 100.0 * metrics["eval_NoAns_total"] / metrics["eval_total"] if "eval_NoAns_total" in metrics else 0.0
    changed = []
    if rows.skipped:
        changed.append(f"{rows.skipped} malformed training rows skipped: {SKIPPED}")
    if rows.answers_trimmed:
        n = rows.answers_trimmed
        changed.append(f"{n} answer{'s' if n > 1 else ''} trimmed of surrounding whitespace: {TRIMMED}")
    return (
        f"{run_name}: EM {metrics['eval_exact']:.2f}  F1 {metrics['eval_f1']:.2f}  "
        f"(HasAns F1 {metrics.get('eval_HasAns_f1', nan):.2f}, NoAns F1 {metrics.get('eval_NoAns_f1', nan):.2f}; "
        f'all-"" baseline F1 {baseline:.2f})  best epoch {metrics.get("best_epoch")}'
        + "".join(f"  ({c})" for c in changed)
        + f"  → {run_dir}"
    )
