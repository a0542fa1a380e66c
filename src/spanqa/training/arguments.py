"""The composed config → `transformers.TrainingArguments`: schedule, evaluation and checkpoint cadence, precision,
and the device-dependent choices (fused AdamW, pinned memory) made once here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from spanqa.config import Config
from spanqa.errors import ConfigError


def uses_gpu(device: str) -> bool:
    """Whether a run with `trainer.device` trains on a GPU (auto: when there is one)."""
    return device != "cpu" and torch.cuda.is_available()


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    """auto → bf16 on an Ampere or newer GPU, fp32 otherwise (CPU autocast gains nothing for training)."""
    on_gpu = uses_gpu(device)
    ampere = on_gpu and torch.cuda.get_device_capability()[0] >= 8  # native bf16 and TF32 (V100/T4 emulate bf16)
    if precision == "auto":
        precision = "bf16" if ampere else "fp32"
    if precision != "fp32" and not on_gpu:
        raise ConfigError(f"trainer.precision={precision!r} needs a GPU; allowed on CPU: fp32, auto")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "tf32": ampere and precision != "fp16"}


def evaluation_schedule(evals_per_epoch: int, epochs: int, max_steps: int) -> dict[str, Any]:
    """Evaluate and checkpoint once per epoch, or `evals_per_epoch` times: as a fraction of all training steps
    (TrainingArguments reads a float < 1 so), saving at the same steps, as best-checkpoint selection needs."""
    if evals_per_epoch == 1 or max_steps > 0:
        return {"eval_strategy": "epoch", "save_strategy": "epoch"}
    every = 1.0 / (evals_per_epoch * epochs)
    return {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": every, "save_steps": every}


def training_arguments(cfg: Config, run_dir: Path, report_to: list[str]) -> TrainingArguments:
    """Creating TrainingArguments also sets up torch.distributed when launched by torchrun/accelerate."""
    t, o = cfg.trainer, cfg.optimizer
    on_gpu = uses_gpu(t.device)
    workers = (2 if on_gpu else 0) if t.dataloader_workers is None else t.dataloader_workers
    return TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        run_name=cfg.run_name,
        seed=cfg.seed,
        data_seed=cfg.seed,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum_steps,
        learning_rate=o.lr,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_ratio,  # a float < 1 is a fraction of all steps
        adam_beta1=o.adam_beta1,
        adam_beta2=o.adam_beta2,
        adam_epsilon=o.adam_epsilon,
        max_grad_norm=o.max_grad_norm,
        lr_scheduler_type="linear",
        **evaluation_schedule(t.evals_per_epoch, t.epochs, t.max_steps),
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        greater_is_better=True,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        use_cpu=t.device == "cpu",
        report_to=report_to or "none",
        optim="adamw_torch_fused" if on_gpu else "adamw_torch",
        ddp_find_unused_parameters=False,  # both heads use every parameter; True costs a graph traversal per step
        dataloader_pin_memory=on_gpu,
        label_names=["start_positions", "end_positions"],
        logging_nan_inf_filter=False,  # syncs the host every step and hides divergence; QATrainer.loss_watch stops it
        **precision_flags(t.precision, t.device),
    )
