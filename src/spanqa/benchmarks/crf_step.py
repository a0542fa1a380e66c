"""Benchmark: training-step time of plain BertForQuestionAnswering vs the CRF model, same encoder config.

    PYTHONPATH=src python -m spanqa.benchmarks.crf_step [--size base|tiny] [--batch 8] [--seq-len 384]
        [--steps 3] [--warmup 1] [--device cpu|cuda]

Random init (weights do not change speed), SpanBERT's cased vocabulary size, windows laid out as
[CLS] question(15) [SEP] context(uniform 100-330 of 384, scaled with --seq-len) [SEP] padding, half of them
answerable. A step is forward + backward + AdamW step; plain and CRF steps alternate so that drift in machine
speed hits both alike, and the median over --steps follows --warmup untimed steps. The CRF model's loss runs
with both forward algorithms: "parallel" (crf_likelihood.py, the default) and "pytorch_crf" (the library's loop
over time steps). The CRF head alone (emissions + CRF NLL, forward + backward, on random hidden states) gives
the head's share of the CRF step. Operation counts (aten operations dispatched in forward + backward, views
aside; on a GPU each launches one kernel or more) stand in for kernel launches: at batch 8 a GPU runs many
kernels faster than the host can queue them, so the ratio of counts is what CRF / plain tends to when launches
dominate. The decode (the best single-span paths) is timed too, as it is what evaluation pays on top of the
encoder.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import BertConfig, BertForQuestionAnswering

from spanqa.benchmarks.common import SIZES, VOCAB_SIZE, loadavg
from spanqa.models.crf import FORWARD_ALGORITHMS, SpanBertCrfConfig, SpanBertCrfForQuestionAnswering
from spanqa.models.tagging import ContextWindows, bio_tags_from_positions

QUESTION_TOKENS = 15
CONTEXT_SHARE = (100 / 384, 330 / 384)  # context tokens per window, as a share of the window length


def make_batch(batch: int, seq_len: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random windows with the real layout, labels and context mask (on CPU)."""
    question = min(QUESTION_TOKENS, seq_len // 4)
    room = seq_len - question - 3  # [CLS] and two [SEP]
    low = max(1, min(room, round(seq_len * CONTEXT_SHARE[0])))
    high = max(low, min(room, round(seq_len * CONTEXT_SHARE[1])))
    input_ids = torch.zeros(batch, seq_len, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    context_mask = torch.zeros_like(input_ids)
    start_positions = torch.zeros(batch, dtype=torch.long)
    end_positions = torch.zeros(batch, dtype=torch.long)
    for row in range(batch):
        context = int(torch.randint(low, high + 1, (1,), generator=generator))
        first = question + 2
        used = first + context + 1
        input_ids[row, :used] = torch.randint(1000, VOCAB_SIZE, (used,), generator=generator)
        attention_mask[row, :used] = 1
        token_type_ids[row, first:used] = 1
        context_mask[row, first : first + context] = 1
        if torch.rand((), generator=generator) < 0.5:
            length = int(torch.randint(1, min(10, context) + 1, (1,), generator=generator))
            start = first + int(torch.randint(0, context - length + 1, (1,), generator=generator))
            start_positions[row], end_positions[row] = start, start + length - 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "context_mask": context_mask,
        "start_positions": start_positions,
        "end_positions": end_positions,
    }


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - begin


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active, backward included, views left out: an operation
    that is not a view computes or copies, which on a GPU means at least one kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> int:
    counter = OpCounter()
    with counter:
        fn()
    return counter.count


def _fwd_bwd(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags (parse_args also checks what they ask for against this machine)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error(f"need --batch >= 1, --steps >= 1, --warmup >= 0; got {args.batch}, {args.steps}, {args.warmup}")
    if not 16 <= args.seq_len <= 512:
        parser.error(f"--seq-len must be in [16, 512] (BERT positions), got {args.seq_len}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    encoder = BertConfig(vocab_size=VOCAB_SIZE, **SIZES[args.size])
    plain = BertForQuestionAnswering(encoder).to(device).train()
    crf = SpanBertCrfForQuestionAnswering(SpanBertCrfConfig(encoder=encoder.to_dict())).to(device).train()
    batch = {k: v.to(device) for k, v in make_batch(args.batch, args.seq_len, torch.Generator().manual_seed(0)).items()}
    plain_batch = {k: v for k, v in batch.items() if k != "context_mask"}
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=2e-5)
    crf_opt = torch.optim.AdamW(crf.parameters(), lr=2e-5)

    hidden = torch.randn(args.batch, args.seq_len, encoder.hidden_size, device=device, requires_grad=True)
    windows = ContextWindows.from_mask(batch["context_mask"])
    tags = bio_tags_from_positions(batch["start_positions"], batch["end_positions"], windows.context, args.seq_len)

    def with_algorithm(algorithm: str, fn: Callable[[], None]) -> Callable[[], None]:
        """fn with the CRF loss computed by `algorithm`: one model (same weights) serves both variants, and
        tagging_loss reads the algorithm from its config at every call."""

        def run() -> None:
            crf.config.forward_algorithm = algorithm
            fn()

        return run

    def head_step() -> None:
        crf.tagging_loss(crf.emission_scores(hidden), windows, tags).backward()
        crf_opt.zero_grad(set_to_none=True)  # the head's gradients must not leak into the next CRF step

    def head_decode() -> None:
        with torch.no_grad():
            crf.decode(crf.emission_scores(hidden), windows)

    runs: dict[str, Callable[[], None]] = {
        "plain": lambda: _train_step(plain, plain_opt, plain_batch),
        "decode": head_decode,
    }
    for algorithm in FORWARD_ALGORITHMS:
        runs[f"crf_{algorithm}"] = with_algorithm(algorithm, lambda: _train_step(crf, crf_opt, batch))
        runs[f"head_{algorithm}"] = with_algorithm(algorithm, head_step)
    times: dict[str, list[float]] = {key: [] for key in runs}
    for step in range(args.warmup + args.steps):
        for key, fn in runs.items():  # interleaved, so that drift in machine speed hits every variant alike
            seconds = _timed(fn, device)
            if step >= args.warmup:
                times[key].append(seconds)
    result = {key: statistics.median(values) for key, values in times.items()}
    # Forward + backward without the optimizer, whose operation count depends on the device (fused on CUDA).
    result["plain_ops"] = count_ops(lambda: _fwd_bwd(plain, plain_batch))
    for algorithm in FORWARD_ALGORITHMS:
        result[f"head_ops_{algorithm}"] = count_ops(runs[f"head_{algorithm}"])
        result[f"crf_ops_{algorithm}"] = count_ops(with_algorithm(algorithm, lambda: _fwd_bwd(crf, batch)))
        # What CRF / plain would be if every operation cost the same launch overhead (a GPU at small batches).
        result[f"ops_ratio_{algorithm}"] = result[f"crf_ops_{algorithm}"] / result["plain_ops"]
        result[f"ratio_{algorithm}"] = result[f"crf_{algorithm}"] / result["plain"]
        # The CRF model is the plain encoder plus this head: an estimate that holds when noise swamps the ratio.
        result[f"ratio_from_head_{algorithm}"] = (result["plain"] + result[f"head_{algorithm}"]) / result["plain"]
    crf.config.forward_algorithm = FORWARD_ALGORITHMS[0]

    lengths = batch["context_mask"].sum(dim=1).float()
    print(
        f"device {args.device} | size {args.size} (hidden {encoder.hidden_size}, {encoder.num_hidden_layers} layers)"
        f" | batch {args.batch} x {args.seq_len} | context tokens {int(lengths.min())}-{int(lengths.max())}"
        f" (mean {lengths.mean():.0f}) | {args.warmup} warmup + {args.steps} timed steps, median | loadavg {loadavg()}"
    )
    print(f"{'':40}{'parallel':>14}{'pytorch_crf':>14}")
    rows = [
        ("CRF model step (ms)", "crf_{}", 1e3, "{:.1f}"),
        ("CRF / plain step", "ratio_{}", 1, "{:.3f}x"),
        ("CRF head alone, fwd+bwd (ms)", "head_{}", 1e3, "{:.2f}"),
        ("(plain + head) / plain", "ratio_from_head_{}", 1, "{:.3f}x"),
        ("CRF head aten ops (no views), fwd+bwd", "head_ops_{}", 1, "{:.0f}"),
        ("CRF model aten ops (no views), fwd+bwd", "crf_ops_{}", 1, "{:.0f}"),
        ("CRF / plain aten ops", "ops_ratio_{}", 1, "{:.3f}x"),
    ]
    for label, key, scale, fmt in rows:
        print(f"{label:40}" + "".join(f"{fmt.format(result[key.format(a)] * scale):>14}" for a in FORWARD_ALGORITHMS))
    print(f"plain BertForQuestionAnswering step (ms) {result['plain'] * 1e3:13.1f}")
    print(f"plain model aten ops (no views), fwd+bwd {result['plain_ops']:13d}")
    print(f"CRF head decode, eval (ms)               {result['decode'] * 1e3:13.2f}")
    return result


if __name__ == "__main__":
    main()
