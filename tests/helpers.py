"""What many tests share: paths, the environment of `python -m spanqa…` subprocesses, running the commands, and
reading their one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spanqa.config import Config, validate
from spanqa.data import demo

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


# What an outer `make test` hands its children: a `make` the tests start must see a user's fresh shell instead.
MAKE_STATE = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m spanqa...` and `make` subprocesses: the test isolation (conftest) plus src on the
    path, without the state of a `make` running the tests."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_STATE}
    return {**env, "PYTHONPATH": str(SRC), **extra}


def run_module(module: str, *args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m <module> args…` from the repository root, captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """`make -s args…`, as a user types it (the Makefile's own virtual environment)."""
    return subprocess.run(
        ["make", "-s", *args], cwd=REPO, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line on stderr: where a command's one-line error must be."""
    return proc.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------- hand-made windows
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
CONTEXT = " ".join(WORDS)
_STARTS = [sum(len(w) + 1 for w in WORDS[:i]) for i in range(len(WORDS))]
WORD_OFFSETS = [(s, s + len(w)) for s, w in zip(_STARTS, WORDS, strict=True)]
Q_LEN = 2  # [CLS] q q [SEP] context... [SEP] padding
FIRST = Q_LEN + 2  # position of the window's first context token


def window(
    first_word: int, n_words: int, width: int, is_max: list[bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and max-context rows for a window holding WORDS[first_word : first_word + n_words]."""
    offsets = np.full((width, 2), -1, dtype=np.int64)
    max_context = np.zeros(width, dtype=bool)
    for i in range(n_words):
        offsets[FIRST + i] = WORD_OFFSETS[first_word + i]
        max_context[FIRST + i] = True if is_max is None else is_max[i]
    return offsets, max_context


# ---------------------------------------------------------------------------------------------------- a toy question
TOY_QUESTION = "Where was Talomi born?"
TOY_CONTEXT = "The weather that season was unusually mild. Talomi was born in Kobe. Trains ran twice a day."
RESULT_KEYS = {"answer", "score", "start", "end", "no_answer_probability", "best_span"}  # of one Predictor answer
# The demo's filler sentences but the two whose words clash with answers the inference tests key on (a keyword
# model needs the answer's first and last token to occur once in the context).
FILLER = [s for s in demo.FILLER if not s.startswith(("A small museum", "Trains"))]


def long_context(answer_sentence: str, before: int, after: int) -> str:
    sentences = [FILLER[i % len(FILLER)] for i in range(before)] + [answer_sentence]
    return " ".join(sentences + [FILLER[(i + 3) % len(FILLER)] for i in range(after)])


# ---------------------------------------------------------------------------------------------------- demo runs
def compose_demo(demo_dir: Path, *overrides: str, logger: str = "none") -> DictConfig:
    """The demo experiment on 200 training and 80 dev questions, composed as `make train` composes it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                "experiment=demo",
                f"demo.dir={demo_dir}",
                f"logger={logger}",
                "data.max_train_samples=200",
                "data.max_eval_samples=80",
                *overrides,
            ],
        )


def demo_config(demo_dir: Path, *overrides: str) -> Config:
    """`compose_demo`, validated."""
    return validate(compose_demo(demo_dir, *overrides))


def demo_trainer(conf: Config, run_dir: Path) -> Any:
    """The QATrainer `make train` builds for `conf` (model, windows and all), without training it."""
    from transformers import set_seed

    from spanqa.data.windows import prepare_data
    from spanqa.models.heads import load_model
    from spanqa.models.load import load_tokenizer
    from spanqa.training.arguments import training_arguments
    from spanqa.training.trainer import build_trainer

    set_seed(conf.seed)
    tokenizer = load_tokenizer(conf.model)
    model = load_model(conf.model, conf.data.max_answer_length)
    data = prepare_data(conf.data, tokenizer, conf.seed)
    return build_trainer(conf, training_arguments(conf, run_dir, []), model, tokenizer, data, run_dir)


# ---------------------------------------------------------------------------------------------------- W&B offline runs
def wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline run's .wandb file: wandb's LevelDB-style log (a 7-byte ":W&B" header, then
    32 KiB blocks of records framed as checksum, length, type) of protobuf `Record`s. wandb ships no reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_exit_code(run_dir: Path) -> int | None:
    """The exit code a run dir's offline W&B run was finished with (None: never finished)."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return next((r.exit.exit_code for r in wandb_records(log) if r.HasField("exit")), None)
