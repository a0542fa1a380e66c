"""Preemption and time limits: on SIGTERM or SIGUSR1 (and, under submitit, its own preemption signal), finish the
optimizer step in progress, save a complete checkpoint, and stop, so a requeued job loses at most one step.

How the job comes back depends on who launched it:
- the submitit launcher (`hydra/launcher=slurm`): its signal handler, called once the checkpoint is saved,
  requeues the job (`scontrol requeue`); the relaunched sweep resumes the job from that checkpoint;
- a plain sbatch script: the process exits with `spanqa.errors.EXIT_PREEMPTED` (75, "temporary failure, try
  again"), on which the script requeues itself (see conf/hydra/launcher/slurm.yaml for the sbatch lines).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from spanqa.errors import Preempted

log = logging.getLogger(__name__)


def submitit_signal() -> signal.Signals | None:
    """The signal submitit requeues on, when this process is a submitit SLURM job (SUBMITIT_PREEMPT_SIGNAL, else
    USR2, as submitit itself reads it)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper(), None)


class PreemptionCheckpoint(TrainerCallback):
    """Notes the first stop signal; at the next optimizer step's end asks the Trainer to save and stop; once that
    checkpoint is on disk, raises `Preempted` (the handler only notes: saving inside a signal handler could
    interrupt a write half-way)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}  # the handlers ours replace while installed
        self.replaced: dict[int, Any] = {}  # the same, kept after uninstalling, for `hand_over`

    @contextmanager
    def installed(self) -> Iterator[PreemptionCheckpoint]:
        """The signal handlers, for as long as training runs (the Trainer's own handlers are Python's defaults)."""
        self.install()
        try:
            yield self
        finally:
            self.uninstall()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            log.warning("training outside the main thread: no checkpoint on SIGTERM/SIGUSR1")
            return
        wanted = [signal.SIGTERM, signal.SIGUSR1]
        if (extra := submitit_signal()) is not None:
            wanted.append(extra)
        for sig in wanted:
            self.previous[sig] = signal.signal(sig, self._note)

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.replaced, self.previous = self.previous, {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if self.signum is not None:
            raise Preempted(state.global_step, signal.Signals(self.signum).name, args.output_dir)

    def hand_over(self) -> None:
        """After the checkpoint (and the W&B run) are closed: let submitit requeue the job, if it runs this one
        (its handler exits the process); else return, and the caller exits with EXIT_PREEMPTED."""
        sig = submitit_signal()
        handler = self.replaced.get(sig) if sig is not None else None
        if callable(handler):
            handler(sig, None)
