"""The composed config → TrainingArguments: evaluation cadence and precision."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanqa.config import Config
from spanqa.errors import ConfigError
from spanqa.training.arguments import evaluation_schedule, precision_flags, training_arguments


def test_evaluations_per_epoch_become_a_fraction_of_all_steps() -> None:
    assert evaluation_schedule(1, 6, -1) == {"eval_strategy": "epoch", "save_strategy": "epoch"}
    ten = evaluation_schedule(10, 4, -1)
    assert (ten["eval_strategy"], ten["save_strategy"]) == ("steps", "steps")
    assert ten["eval_steps"] == ten["save_steps"] == pytest.approx(1 / 40)  # saves line up with evaluations
    assert evaluation_schedule(10, 4, 20)["eval_strategy"] == "epoch"  # max_steps runs (smoke) evaluate once


def test_arguments_follow_the_config(tmp_path: Path) -> None:
    cfg = Config()
    cfg.trainer.device, cfg.trainer.evals_per_epoch = "cpu", 4
    args = training_arguments(cfg, tmp_path, report_to=[])
    assert (args.learning_rate, args.weight_decay, args.per_device_train_batch_size) == (2e-5, 0.01, 8)
    assert args.eval_steps == args.save_steps == pytest.approx(1 / 24)
    assert args.output_dir == str(tmp_path / "checkpoints") and args.metric_for_best_model == "f1"


def test_half_precision_needs_a_gpu() -> None:
    assert precision_flags("auto", "cpu") == {"bf16": False, "fp16": False, "tf32": False}
    with pytest.raises(ConfigError, match=r"^trainer\.precision='bf16' needs a GPU; allowed on CPU: fp32, auto$"):
        precision_flags("bf16", "cpu")
