"""The preemption callback: a stop signal is noted, the next step saves and stops, `Preempted` follows the save,
and under submitit its own handler (which requeues the job) is called once the checkpoint is on disk."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from spanqa.errors import Preempted
from spanqa.training.preemption import PreemptionCheckpoint, submitit_signal


def test_a_signal_saves_at_the_next_step_then_stops(tmp_path) -> None:
    args, state, control = (
        TrainingArguments(output_dir=str(tmp_path), report_to="none"),
        TrainerState(),
        TrainerControl(),
    )
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptionCheckpoint().installed() as callback:
        callback.on_step_end(args, state, control)
        assert not (control.should_save or control.should_training_stop)  # no signal yet: nothing changes
        os.kill(os.getpid(), signal.SIGUSR1)
        state.global_step = 42
        callback.on_step_end(args, state, control)
        assert control.should_save and control.should_training_stop
        with pytest.raises(Preempted) as stop:
            callback.on_save(args, state, control)
    assert (stop.value.step, stop.value.signal_name, stop.value.checkpoint_dir) == (42, "SIGUSR1", str(tmp_path))
    assert signal.getsignal(signal.SIGUSR1) is before  # the process's own handlers are back


def test_under_submitit_its_requeue_handler_runs_after_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    assert submitit_signal() == signal.SIGUSR2
    calls = []
    before = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))  # submitit's, in a real job
    try:
        with PreemptionCheckpoint().installed() as callback:
            os.kill(os.getpid(), signal.SIGTERM)  # preemption: submitit itself ignores SIGTERM
            assert callback.signum == signal.SIGTERM and calls == []  # noted, not acted on mid-step
        callback.hand_over()
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, before)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    assert submitit_signal() is None


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    seen = []

    def job() -> None:
        with PreemptionCheckpoint().installed() as callback:
            seen.append(callback.previous)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == [{}]
