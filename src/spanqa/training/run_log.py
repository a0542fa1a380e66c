"""train.log, the run as a person reads it afterwards: what was run (config summary), progress at every logging
step, each evaluation's scores, and the final summary line. The terminal keeps the Trainer's progress bar; these
lines go to the log file Hydra opens in the run dir, and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spanqa.config import Config

_LOGGER = "spanqa.run"


def run_log() -> logging.Logger:
    """A logger that writes to the run dir's train.log only: the root logger's file handlers (Hydra's job log),
    none of its console ones. Outside a Hydra job it has no handler and writes nothing."""
    logger = logging.getLogger(_LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return logger


def log_plan(conf: Config, state: str, tokenizer: str, train_windows: int, eval_questions: int) -> None:
    """What this run is, in a few lines, before its first step."""
    m, d, o, t = conf.model, conf.data, conf.optimizer, conf.trainer
    data = d.dataset_name or f"{d.train_file} / {d.validation_file}"
    budget = f"{t.max_steps} steps" if t.max_steps > 0 else f"{t.epochs} epochs"
    log = run_log()
    log.info("%s: %s run, seed %d", conf.run_name, "resumed" if state == "resume" else "new", conf.seed)
    log.info("model %s (head %s) from %s; tokenizer %s", m.name, m.head, m.name_or_path, tokenizer)
    log.info(
        "data %s: %d training windows, %d evaluation questions; windows %d tokens, stride %d, questions <= %d tokens",
        data, train_windows, eval_questions, d.max_length, d.doc_stride, d.max_query_length,
    )  # fmt: skip
    log.info("optimizer AdamW lr %g (head %s), weight decay %g, warmup %g", o.lr, o.head_lr or "same", o.weight_decay,
             o.warmup_ratio)  # fmt: skip
    log.info("%s, batch %d x %d, precision %s, null threshold %s", budget, t.batch_size, t.grad_accum_steps,
             t.precision, d.null_threshold.policy)  # fmt: skip


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


SCORES = ("eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_null_threshold", "eval_loss")


class RunLog(TrainerCallback):
    """Each Trainer log entry as one line of train.log: training progress, evaluation scores, the end of training,
    and the final evaluation (of the best checkpoint, loaded at the end)."""

    def __init__(self) -> None:
        self.trained = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        where = f"step {state.global_step}/{state.max_steps} (epoch {state.epoch or 0:.2f})"
        log = run_log()
        if "eval_f1" in logs:
            scores = ", ".join(f"{k[5:]} {_number(logs[k])}" for k in SCORES if k in logs)
            log.info(
                "%s: %s", "final evaluation, best checkpoint" if self.trained else f"evaluation at {where}", scores
            )
        elif "train_runtime" in logs:
            self.trained = True
            log.info("training done at %s in %.0f s", where, logs["train_runtime"])
        elif "loss" in logs:
            log.info("%s: %s", where, ", ".join(f"{k} {_number(v)}" for k, v in logs.items() if k != "epoch"))
