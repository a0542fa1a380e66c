"""Benchmark: the project's own QATrainer (not a hand-written loop) for N optimizer steps and one evaluation, per
head and per compile mode, and what that means for the full 6-epoch run (options: --help).

Inputs are generated windows with SQuAD v2's train-window lengths at 384/128 (`throughput.sample_lengths`: mean
166 real tokens, 1.7 % full), one question per window, half of them answerable, on a randomly initialised
model of BERT-base's shape (weights do not change speed; nothing is downloaded). The Trainer runs as `make train`
builds it: the same TrainingArguments (precision, fused AdamW, workers), collator (fixed pad widths or the longest
window), torch.compile mode and callbacks. Reported per head and compile mode:
- step time: the median over timed optimizer steps (after the warmup steps, which include compilation), steps/s;
- the projected 6-epoch wall time: 132,000 windows / batch per epoch at that step time, plus 6 evaluations of the
  12,078 dev windows at the measured eval rate;
- eval windows/s: `trainer.evaluate()` end to end (model, post-processing, official scoring), its second call
  (the first compiles);
- peak memory (CUDA max allocated, or peak RSS on CPU) and the CRF / start-end step-time ratio per mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainerCallback

from spanqa.benchmarks.common import SIZES, VOCAB_SIZE, loadavg, random_model
from spanqa.benchmarks.throughput import (
    EPOCHS,
    EVAL_WINDOWS,
    MAX_LEN,
    NON_CONTEXT,
    TRAIN_WINDOWS,
    peak_memory_mib,
    sample_lengths,
)
from spanqa.config import COMPILE_MODES, HEAD_NAMES, Config
from spanqa.data.windows import EvalSet, QAData
from spanqa.training.arguments import training_arguments
from spanqa.training.trainer import build_trainer

HEADS = HEAD_NAMES
MODES = ("false", *COMPILE_MODES)
WIDTHS = (128, 192, 256, 320, 384)


# ---------------------------------------------------------------------------------------------------- inputs
def windows(lengths: np.ndarray, rng: np.random.Generator, for_eval: bool) -> dict[str, list[Any]]:
    """One window per question: [CLS] question [SEP] context [SEP] with the given real lengths; the context is the
    words w0 w1 ... (one token each), half of the questions answered by a span of 1-5 of them."""
    out: dict[str, list[Any]] = {k: [] for k in ("input_ids", "token_type_ids", "attention_mask", "context_mask")}
    out |= {"start_positions": [], "end_positions": []}
    if for_eval:
        out |= {"example_id": [], "offset_mapping": [], "max_context": []}
    for i, n in enumerate(lengths.tolist()):
        context = n - NON_CONTEXT  # tokens between the two [SEP]s
        out["input_ids"].append([101, *rng.integers(1000, VOCAB_SIZE, n - 2).tolist(), 102])
        out["token_type_ids"].append([0] * (NON_CONTEXT - 1) + [1] * (n - NON_CONTEXT + 1))
        out["attention_mask"].append([1] * n)
        out["context_mask"].append([0] * (NON_CONTEXT - 1) + [1] * context + [0])
        start = end = 0
        if rng.random() < 0.5:
            start = int(rng.integers(NON_CONTEXT - 1, n - 1))
            end = min(start + int(rng.integers(0, 5)), n - 2)
        out["start_positions"].append(start)
        out["end_positions"].append(end)
        if for_eval:
            out["example_id"].append(f"q{i}")
            words = [[int(_START[t]), int(_START[t + 1]) - 1] for t in range(context)]  # each word without its space
            out["offset_mapping"].append([[-1, -1]] * (NON_CONTEXT - 1) + words + [[-1, -1]])
            out["max_context"].append([0] * (NON_CONTEXT - 1) + [1] * context + [0])
    return out


def _words(n: int) -> str:
    """The first n context words, each followed by a space."""
    return "".join(f"w{i} " for i in range(n))


_START = np.cumsum([0] + [len(f"w{i} ") for i in range(MAX_LEN)])  # character offset of context word i


def eval_set(n: int, rng: np.random.Generator) -> EvalSet:
    lengths = sample_lengths(n, rng)
    feats = windows(lengths, rng, for_eval=True)
    examples = {
        "id": [f"q{i}" for i in range(n)],
        "question": ["q?"] * n,
        "context": [_words(int(k) - NON_CONTEXT).rstrip() for k in lengths],
        "answers": [],
    }
    for i, (s, e) in enumerate(zip(feats["start_positions"], feats["end_positions"], strict=True)):
        text = " ".join(f"w{t - NON_CONTEXT + 1}" for t in range(s, e + 1)) if s else ""
        start = int(_START[s - NON_CONTEXT + 1]) if s else 0
        examples["answers"].append({"text": [text], "answer_start": [start]} if s else {"text": [], "answer_start": []})
        assert not s or examples["context"][i][start : start + len(text)] == text
    return EvalSet.build("dev", Dataset.from_dict(examples), Dataset.from_dict(feats))


# ---------------------------------------------------------------------------------------------------- timing
class StepClock(TrainerCallback):
    """The wall time of each optimizer step (the device drained at each step end, so steps are not overlapped)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available() and not args.use_cpu:
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())


def measure(head: str, mode: str, args: argparse.Namespace, train: Dataset, dev: EvalSet) -> dict[str, Any]:
    cfg = Config()
    cfg.model.head = head
    t = cfg.trainer
    t.batch_size, t.eval_batch_size, t.device, t.precision = args.batch, 64, args.device, args.precision
    t.pad_widths = None if args.pad_widths == "none" else [int(w) for w in args.pad_widths.split(",")]
    t.compile, t.compile_backend = (False if mode == "false" else mode), args.backend
    t.max_steps = args.warmup + args.steps
    torch.manual_seed(args.seed)
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as tmp:
        targs = training_arguments(cfg, Path(tmp), report_to=[])
        targs = replace(targs, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
        model = random_model(head, args.size)
        clock = StepClock()
        data = QAData(train, dev, None)
        trainer = build_trainer(cfg, targs, model, _NoTokenizer(), data, Path(tmp), callbacks=[clock])
        peak_memory_mib(targs.device, reset=True)
        trainer.train()
        steps = np.diff(clock.ends[args.warmup - 1 :]) if args.warmup else np.diff([clock.ends[0], *clock.ends])
        trainer.evaluate()  # compiles the evaluation graphs
        start = time.perf_counter()
        metrics = trainer.evaluate()
        eval_s = time.perf_counter() - start
        peak = peak_memory_mib(targs.device)
    step_s = float(statistics.median(steps))
    eval_rate = len(dev.ids) / eval_s
    return {
        "step_time_ms": 1e3 * step_s,
        "steps_per_s": 1 / step_s,
        "projected_run_h": (TRAIN_WINDOWS / args.batch * EPOCHS * step_s + EPOCHS * EVAL_WINDOWS / eval_rate) / 3600,
        "eval_windows_per_s": eval_rate,
        "peak_memory_mib": peak,
        "eval_f1": metrics["eval_f1"],
    }


class _NoTokenizer:
    """The collator needs only the pad id; the generated windows are already token ids."""

    pad_token_id = 0


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command line's flags (parse_args also checks what they ask for against this machine)."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: CUDA when there is one")
    p.add_argument("--size", choices=sorted(SIZES), default="base" if cuda else "tiny")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--heads", default=",".join(HEADS), help=f"comma list of {', '.join(HEADS)}")
    p.add_argument("--compile-modes", default=",".join(MODES) if cuda else "false", help=f"of {', '.join(MODES)}")
    p.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"])
    p.add_argument("--pad-widths", default=",".join(map(str, WIDTHS)), help="comma list, or none (longest window)")
    p.add_argument("--steps", type=int, default=30 if cuda else 3, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=10 if cuda else 1, help="untimed steps first (compilation)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-windows", type=int, default=2000 if cuda else 64, help="dev windows evaluated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    bad = [h for h in args.heads.split(",") if h not in HEADS] + [
        m for m in args.compile_modes.split(",") if m not in MODES
    ]
    if bad or args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.eval_windows < 1:
        p.error(f"unknown {bad}" if bad else "need --steps >= 1, --warmup >= 0, --batch >= 1, --eval-windows >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    lengths = sample_lengths(args.batch * (args.warmup + args.steps), rng)
    train = Dataset.from_dict({k: v for k, v in windows(lengths, rng, for_eval=False).items()})
    dev = eval_set(args.eval_windows, np.random.default_rng(args.seed + 1))
    heads, modes = args.heads.split(","), args.compile_modes.split(",")
    results: dict[str, Any] = {f"{h}/{m}": measure(h, m, args, train, dev) for m in modes for h in heads}
    for m in modes:
        if set(HEADS) <= set(heads):
            results[f"crf_span_ratio/{m}"] = results[f"crf/{m}"]["step_time_ms"] / results[f"span/{m}"]["step_time_ms"]
    report(results, args, heads, modes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def report(results: dict[str, Any], args: argparse.Namespace, heads: list[str], modes: list[str]) -> None:
    cuda = torch.cuda.is_available() and args.device != "cpu"
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"{name} | torch {torch.__version__} | {args.size} | precision {args.precision} | batch {args.batch} | "
        f"pad widths {args.pad_widths} | backend {args.backend} | {args.warmup} warmup + {args.steps} timed steps | "
        f"eval {args.eval_windows} windows (max {MAX_LEN}) | loadavg {loadavg()}"
    )
    columns = [f"{h}/{m}" for m in modes for h in heads]
    rows = [
        ("step time, median (ms)", "step_time_ms", "{:.1f}"),
        ("optimizer steps/s", "steps_per_s", "{:.2f}"),
        (f"projected {EPOCHS}-epoch run (h)", "projected_run_h", "{:.2f}"),
        ("eval windows/s (+ post-processing, scoring)", "eval_windows_per_s", "{:.1f}"),
        (f"peak memory, {'CUDA max allocated' if cuda else 'peak RSS'} (MiB)", "peak_memory_mib", "{:.0f}"),
    ]
    width = max(22, *(len(c) + 2 for c in columns))
    print(f"{'':46}" + "".join(f"{c:>{width}}" for c in columns))
    for label, key, fmt in rows:
        print(f"{label:46}" + "".join(f"{fmt.format(results[c][key]):>{width}}" for c in columns))
    for m in modes:
        if f"crf_span_ratio/{m}" in results:
            print(f"{'CRF / start-end step time, compile=' + m:46}{results[f'crf_span_ratio/{m}']:>{width}.3f}")
    print(f"(projection: {TRAIN_WINDOWS} / {args.batch} x {EPOCHS} steps + {EPOCHS} x {EVAL_WINDOWS} dev windows)")


if __name__ == "__main__":
    main()
