"""QATrainer: a learning rate of its own for either head, and training that stops at a non-finite loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from spanqa.errors import TrainingError
from spanqa.training.trainer import LossWatch
from tests.helpers import demo_config as config
from tests.helpers import demo_trainer as trainer_for


@pytest.mark.parametrize(
    ("model", "head_names"),
    [
        ("spanbert", {"qa_outputs.weight", "qa_outputs.bias"}),
        (
            "spanbert_crf",
            {
                "emission.weight",
                "emission.bias",
                "crf.end_transitions",
                "crf.parametrizations.transitions.original",
                "crf.parametrizations.start_transitions.original",
            },
        ),
    ],
)
def test_head_lr_gives_either_head_its_own_learning_rate(
    tmp_path: Path, demo_dir: Path, model: str, head_names: set[str]
) -> None:
    conf = config(demo_dir, f"model={model}", "optimizer.head_lr=0.01")
    trainer = trainer_for(conf, tmp_path)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    settings = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(settings) == sum(1 for p in trainer.model.parameters() if p.requires_grad)
    assert {n for n, (lr, _) in settings.items() if lr == 0.01} == head_names
    assert all(lr == conf.optimizer.lr for n, (lr, _) in settings.items() if n not in head_names)
    head_weight = "qa_outputs.weight" if model == "spanbert" else "emission.weight"
    assert settings[head_weight][1] == conf.optimizer.weight_decay
    assert settings["bert.embeddings.LayerNorm.weight"][1] == 0.0


def test_loss_watch_names_the_first_non_finite_step_and_where_the_checkpoints_are() -> None:
    watch = LossWatch("/runs/r/checkpoints")
    watch.push(torch.tensor(2.5), step=1, epoch=0.1)
    watch.flush()  # nothing pending on CPU: every loss is read when pushed
    with pytest.raises(TrainingError) as err:
        watch.push(torch.tensor(math.inf), step=2, epoch=0.2)
    assert str(err.value).startswith(
        "training loss is inf at step 2 (epoch 0.20): training diverged and stopped; checkpoints saved before that "
        "step are kept in /runs/r/checkpoints."
    )
    with pytest.raises(TrainingError, match="training loss is nan at step 7"):
        watch.push(torch.tensor(float("nan")), step=7, epoch=0.7)


def test_the_trainer_does_not_filter_nan_losses_out_of_its_logs(tmp_path: Path, demo_dir: Path) -> None:
    """transformers' own filter would replace a NaN by the running mean (and sync every step): off, the watch
    stops the run instead."""
    trainer = trainer_for(config(demo_dir), tmp_path)
    assert trainer.args.logging_nan_inf_filter is False
    assert any(type(cb).__name__ == "_FlushLossWatch" for cb in trainer.callback_handler.callbacks)


class _WidthLog:
    """A collator that notes the (training?, width) of every batch it pads."""

    def __init__(self, collator, trainer) -> None:
        self.collator, self.trainer, self.seen = collator, trainer, set()
        self.pad_token_id = collator.pad_token_id

    def __call__(self, rows):
        batch = self.collator(rows)
        self.seen.add((self.trainer.model.training, batch["input_ids"].shape[1]))
        return batch


@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf", "spanbert_bio"])
def test_a_compiled_model_is_traced_once_per_pad_width_and_mode(tmp_path: Path, demo_dir: Path, model: str) -> None:
    """torch._dynamo's own counters over a real (tiny) training run and evaluation: one graph per (train/eval,
    width) seen, no recompilation beyond that, no graph break. (The eager backend traces as inductor does,
    without its code generation: minutes on this CPU.)"""
    import torch._dynamo
    from torch._dynamo.utils import counters

    conf = config(demo_dir, f"model={model}", "trainer.compile=default", "trainer.compile_backend=eager",
                  "trainer.pad_widths=[40,48,56,64]", "trainer.max_steps=12", "trainer.batch_size=4")  # fmt: skip
    trainer = trainer_for(conf, tmp_path)
    trainer.data_collator = log = _WidthLog(trainer.data_collator, trainer)
    torch._dynamo.reset()
    counters.clear()
    trainer.train()
    trainer.evaluate()
    assert len({width for _, width in log.seen}) >= 2 and {mode for mode, _ in log.seen} == {True, False}
    assert counters["stats"]["unique_graphs"] == len(log.seen)
    assert counters["frames"]["ok"] == counters["frames"]["total"] == len(log.seen)
    assert not counters["graph_break"]
