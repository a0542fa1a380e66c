"""Errors that mean "the user asked for something that cannot work", and the one way every command reports them:
`error: <message>` on one line of stderr, exit status 2, no traceback. Also the one early end that is no error:
training stopped by a preemption signal, to be requeued (exit status 75).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL, "try again later": a SLURM job script requeues on it


class SpanQAError(Exception):
    """Base class: the commands print `error: <message>` and exit with status 2."""


class ConfigError(SpanQAError):
    """A config value is unknown, mistyped or impossible."""


class DataError(SpanQAError):
    """Input data is missing, malformed or empty."""


class ModelLoadError(SpanQAError):
    """A checkpoint or tokenizer cannot be found, loaded or used with the other."""


class OutputError(SpanQAError):
    """The output location cannot hold the run."""


class TrainingError(SpanQAError):
    """Training cannot go on: the loss or the model's outputs stopped being finite."""


class Preempted(Exception):
    """Training stopped on a signal after saving a complete checkpoint at `step`; the job is to be requeued."""

    def __init__(self, step: int, signal_name: str, checkpoint_dir: str) -> None:
        super().__init__(f"stopped by {signal_name} after step {step}")
        self.step, self.signal_name, self.checkpoint_dir = step, signal_name, checkpoint_dir


def stop(line: str, status: int) -> NoReturn:
    """End a command with one last line on stderr. A progress bar left open by an interrupted loop would redraw
    itself at exit, after that line, so open bars are closed first."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()
    print(line, file=sys.stderr)
    raise SystemExit(status)


def fail(message: str) -> NoReturn:
    stop(f"error: {message}", EXIT_BAD_INPUT)


@contextmanager
def reported() -> Iterator[None]:
    """Around a command's work: a SpanQAError becomes one `error:` line and exit status 2."""
    try:
        yield
    except SpanQAError as err:
        fail(str(err))


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line the same way (one `error:` line, status 2), not with its usage."""

    def error(self, message: str) -> NoReturn:
        fail(message)
