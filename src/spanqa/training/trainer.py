"""`QATrainer`: a `transformers.Trainer` whose evaluation ends in SQuAD v2 answers and official scores.

Only `compute_metrics` is plugged in (post-processing + threshold policy + scorer), so everything the Trainer
does around evaluation keeps working: eval_loss from the windows' labels, `eval_` prefixes, logging to W&B,
best-checkpoint selection by eval_f1. Each evaluation also leaves its artifacts in `<run>/eval/step-N/`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.integrations import WandbCallback

from spanqa.config import Config, DataConfig
from spanqa.data.collate import WindowCollator
from spanqa.data.windows import EvalSet, QAData
from spanqa.env import disk_full_reported
from spanqa.errors import TrainingError
from spanqa.eval.answers import Predictions
from spanqa.eval.policies import Outcome, postprocess, score, tuned_threshold, write_artifacts
from spanqa.files import write_json
from spanqa.models.heads import Head, get_head
from spanqa.training.arguments import uses_gpu
from spanqa.training.distributed import broadcast

log = logging.getLogger(__name__)


class LossWatch:
    """Finds the first optimizer step whose training loss is not finite, without making the host wait for the GPU.

    A per-step `loss.item()` (or the Trainer's own `isnan` filter) blocks the host until the device has run every
    queued kernel, so it can no longer queue the next step ahead: at batch 8 that idles a fast GPU. Here each
    loss is copied into pinned host memory asynchronously and read once its copy is known to be done (at once
    on CPU); `flush` waits for all of them, before anything is logged, saved or evaluated.
    """

    def __init__(self, checkpoint_dir: str) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.pending: deque[tuple[torch.Tensor, Any, int, float]] = deque()

    def push(self, loss: torch.Tensor, step: int, epoch: float) -> None:
        if loss.device.type != "cuda":
            self._check(float(loss), step, epoch)
            return
        host = torch.empty((), dtype=loss.dtype, pin_memory=True)
        host.copy_(loss.detach(), non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending.append((host, done, step, epoch))
        while self.pending and self.pending[0][1].query():
            self._pop()

    def flush(self) -> None:
        while self.pending:
            self.pending[0][1].synchronize()
            self._pop()

    def _pop(self) -> None:
        host, _, step, epoch = self.pending.popleft()
        self._check(float(host), step, epoch)

    def _check(self, value: float, step: int, epoch: float) -> None:
        if not math.isfinite(value):
            raise TrainingError(
                f"training loss is {value} at step {step} (epoch {epoch:.2f}): training diverged and stopped; "
                f"checkpoints saved before that step are kept in {self.checkpoint_dir}. Lower optimizer.lr or raise "
                "optimizer.warmup_ratio (with trainer.precision=fp16, try bf16 or fp32)"
            )


class _FlushLossWatch(TrainerCallback):
    """Nothing computed after a non-finite loss is logged, saved as a checkpoint or evaluated."""

    def __init__(self, watch: LossWatch) -> None:
        self.watch = watch

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.watch.flush()

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.watch.flush()


class QATrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        eval_set: EvalSet,
        data_cfg: DataConfig,
        head: Head,
        run_dir: Path,
        held_out_set: EvalSet | None = None,
        head_lr: float | None = None,
        cuda_graphs: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, eval_dataset=eval_set.model_inputs(), compute_metrics=self._squad_metrics, **kwargs)
        policy = data_cfg.null_threshold.policy
        if policy == "held_out" and held_out_set is None:
            raise ValueError("null_threshold.policy='held_out' needs held-out training questions")
        self.eval_set, self.held_out_set = eval_set, held_out_set
        self.data_cfg, self.head, self.run_dir, self.head_lr = data_cfg, head, run_dir, head_lr
        self.last_outcome: Outcome | None = None
        self.loss_watch = LossWatch(self.args.output_dir)
        self.add_callback(_FlushLossWatch(self.loss_watch))
        self.cuda_graphs = cuda_graphs

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        if self.cuda_graphs:  # a new iteration: outputs of the last replay may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.loss_watch.push(loss, self.state.global_step + 1, self.state.epoch or 0.0)
        return loss

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        """As the Trainer's; under CUDA graphs the outputs live in the graph's memory, which the next batch's replay
        overwrites while the evaluation loop still holds them: they are copied out first."""
        if not self.cuda_graphs:
            return super().prediction_step(model, inputs, *args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(_copied(x) for x in super().prediction_step(model, inputs, *args, **kwargs))

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """As the Trainer's; a disk that fills mid-save is one line, and the half-written checkpoint is removed
        (the earlier ones are whole: the Trainer deletes old checkpoints only after a save succeeds)."""
        name = f"checkpoint-{self.state.global_step}"
        partial = Path(self.args.output_dir) / name
        earlier = sorted(Path(self.args.output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        intact = [p.name for p in earlier if p.name != name]
        with disk_full_reported(
            self.run_dir,
            f"{name} into {self.args.output_dir}",
            partial=partial,
            intact=(f"{', '.join(intact)} intact: free space, then relaunch with resume=true" if intact else ""),
        ):
            super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------------------------------------ evaluation
    def _answers(self, predictions: np.ndarray | tuple[np.ndarray, ...], es: EvalSet) -> Predictions:
        """The evaluation loop's gathered outputs on `es` → pooled answers (no threshold applied yet)."""
        outputs = predictions if isinstance(predictions, tuple) else (predictions,)
        self._check_finite(outputs)
        cands = self.head.candidates(outputs, es, self.data_cfg.n_best, self.data_cfg.max_answer_length)
        return postprocess(cands, es, self.data_cfg.n_best)

    def _squad_metrics(self, p: EvalPrediction) -> dict[str, float]:
        policy = self.data_cfg.null_threshold.policy
        held_out = self._held_out_predictions() if policy == "held_out" else None  # collective: every rank
        metrics: dict[str, float] | None = None
        if self.is_world_process_zero():  # predictions are gathered on every rank: score them once
            preds = self._answers(p.predictions, self.eval_set)
            if policy == "fixed":
                threshold = self.data_cfg.null_threshold.value
            elif policy == "tune_on_dev":
                threshold = tuned_threshold(preds, self.eval_set.gold)
            else:
                assert held_out is not None and self.held_out_set is not None
                threshold = tuned_threshold(held_out, self.held_out_set.gold)
            held_out_by = self.data_cfg.null_threshold.held_out_by
            self.last_outcome = score(preds, self.eval_set, threshold, policy, held_out_by)
            metrics = self.last_outcome.metrics
        return broadcast(metrics)

    def _check_finite(self, predictions: tuple[np.ndarray, ...]) -> None:
        """NaN outputs mean broken weights: say so in one line rather than fail inside post-processing. (-inf is
        legitimate: the CRF head marks missing candidates with it.)"""
        if any(np.isnan(p).any() for p in map(np.asarray, predictions) if p.dtype.kind == "f"):
            raise TrainingError(
                f"the model's outputs contain NaN at evaluation (step {self.state.global_step}): its weights are not "
                "finite; lower optimizer.lr or train with trainer.precision=fp32"
            )

    def _held_out_predictions(self) -> Predictions | None:
        """Predictions on the held-out training questions. Without labels the loop computes no loss, calls no
        compute_metrics and fires no logging callback: nothing of it reaches the run's logs or W&B."""
        es = self.held_out_set
        assert es is not None
        inputs = es.model_inputs().remove_columns(["start_positions", "end_positions"])
        out = self.evaluation_loop(
            self.get_eval_dataloader(inputs), "Held-out", prediction_loss_only=False, metric_key_prefix="held_out"
        )
        if not self.is_world_process_zero():
            return None
        return self._answers(out.predictions, es)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        if eval_dataset is not None:
            raise ValueError("QATrainer evaluates its EvalSet; build a new trainer for another set")
        metrics = super().evaluate(ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if self.last_outcome is not None and self.is_world_process_zero():
            out_dir = self.run_dir / "eval" / f"step-{self.state.global_step}"
            write_artifacts(self.last_outcome, self.eval_set, out_dir, nbest=False)
            write_json(out_dir / "trainer_metrics.json", metrics)
        return metrics

    # ------------------------------------------------------------------------------------------ optimiser
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Same AdamW as the Trainer's, with an optional lr for the task head: every parameter outside the encoder
        (qa_outputs of the plain head; emissions and CRF transitions of the CRF head), both heads alike."""
        if self.head_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = model or self.model
        decay = set(self.get_decay_parameter_names(model))
        encoder = model.base_model_prefix + "."
        head = {name for name, _ in model.named_parameters() if not name.startswith(encoder)}
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((name in head, name in decay), []).append(param)
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [
                {
                    "params": params,
                    "lr": self.head_lr if is_head else self.args.learning_rate,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
                for (is_head, decays), params in groups.items()
            ],
            **kwargs,
        )
        return self.optimizer


def _copied(x: Any) -> Any:
    """A tensor (or nested tuple of them, or None) copied out of the memory it lives in."""
    if isinstance(x, tuple):
        return tuple(_copied(v) for v in x)
    return None if x is None else x.clone()


def build_trainer(
    cfg: Config,
    args: TrainingArguments,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: QAData,
    run_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> QATrainer:
    t = cfg.trainer
    on_gpu = uses_gpu(t.device)
    compile_model(model, t.compile, t.compile_backend, t.pad_widths)
    trainer = QATrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        data_collator=WindowCollator(tokenizer.pad_token_id, 8 if on_gpu else None, t.pad_widths),
        processing_class=tokenizer,
        eval_set=data.eval_set,
        held_out_set=data.held_out_set,
        data_cfg=cfg.data,
        head=get_head(cfg.model.head),
        run_dir=run_dir,
        head_lr=cfg.optimizer.head_lr,
        cuda_graphs=t.compile == "reduce-overhead" and on_gpu,
        callbacks=callbacks,
    )
    if "wandb" in args.report_to:
        trainer.remove_callback(WandbCallback)
        trainer.add_callback(RunWandbCallback())
    return trainer


class RunWandbCallback(WandbCallback):
    """The Trainer's W&B logging, minus what its setup adds to the run's config: every TrainingArguments field and
    model-config key, flat (130-odd keys, `project: huggingface` and `hub_token` among them), beside the nested
    composed config the run was created with (`spanqa.training.tracking`)."""

    def setup(self, args: TrainingArguments, state: Any, model: Any, **kwargs: Any) -> None:
        self._initialized = True
        if not state.is_world_process_zero or self._wandb.run is None:
            return
        self._wandb.define_metric("train/global_step")
        self._wandb.define_metric("*", step_metric="train/global_step", step_sync=True)


def compile_model(model: PreTrainedModel, mode: str | bool, backend: str, widths: list[int] | None) -> None:
    """torch.compile the model in place (its type, parameter names and save_pretrained stay as they are).

    With fixed pad widths every width is its own static graph: training, evaluation (labels, decoding) and
    label-free predictions each compile once per width, so the recompile limit is raised to hold them all, and a
    CUDA graph is recorded per shape. Without them, shapes are marked dynamic after the first new length."""
    if mode is False:
        return
    import torch._dynamo

    if widths:
        limit = 3 * len(widths) + 2  # train / eval / predict per width, and a little room
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
    model.compile(backend=backend, dynamic=False if widths else None, **options)
