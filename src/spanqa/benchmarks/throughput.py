"""Benchmark: training and evaluation throughput of both heads at SQuAD v2 window lengths, and what it means
for the full 6-epoch run (options: --help).

Random init (weights do not change speed), SpanBERT's cased vocabulary. Each window's real length is drawn
from 76 + 74·exp(0.62·Z), Z ~ N(0, 1), capped at 384, plus 0.63 % windows of exactly 384: that matches SQuAD
v2 train windows at 384/128 (mean 166, median 150, p90 243, 1.7 % full). A window is [CLS] question(14)
[SEP] context [SEP]; a batch is padded to its longest window (to a multiple of 8 on a GPU), as WindowCollator
does. A step is what the Trainer does: forward, backward, clip to norm 1, AdamW (lr 2e-5, weight decay 0.01
off biases and LayerNorms, fused on CUDA). Evaluation runs windows longest first in batches of 64 and includes
post-processing: `span_candidates` + `select_answers` for the plain head, the CRF's decode + `select_answers`.
FLOPs per step (fwd + bwd) = sum over windows of 6·N·T + 12·layers·hidden·T², T = the batch's padded length,
N = parameters outside the embedding tables (a lookup is no matmul); MFU = FLOPs / time / peak dense TFLOP/s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from spanqa.benchmarks.common import SIZES, VOCAB_SIZE, loadavg, random_model
from spanqa.eval.answers import select_answers
from spanqa.models.candidates import WindowCandidates
from spanqa.models.crf import FORWARD_ALGORITHMS
from spanqa.models.span_decoding import span_candidates

MAX_LEN, NON_CONTEXT = 384, 17  # [CLS] + 14 question tokens + 2 [SEP]
TRAIN_WINDOWS, EVAL_WINDOWS, EPOCHS, EVAL_BATCH = 132_000, 12_078, 6, 64  # SQuAD v2 at 384/128
DEV_QUESTIONS = 11_873
# bf16 dense tensor-core peak (TFLOP/s), first match in the device name wins.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L4", 121.0))
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sample_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    """Real tokens per window (see the module docstring for the fit)."""
    lengths = np.minimum(np.rint(76 + 74 * np.exp(0.62 * rng.standard_normal(n))), MAX_LEN)
    lengths[rng.random(n) < 0.0063] = MAX_LEN
    return lengths.astype(np.int64)


def train_flops(params: int, layers: int, hidden: int, padded: Sequence[int], batch: int) -> float:
    """fwd + bwd FLOPs of training on batches of `batch` windows, one batch per padded length in `padded`."""
    return float(sum(batch * (6 * params * t + 12 * layers * hidden * t * t) for t in padded))


def make_batch(lengths: np.ndarray, multiple: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Windows of the given real lengths padded to the longest; half of them answerable."""
    width = int(-(-lengths.max() // multiple) * multiple)
    keys = ("input_ids", "attention_mask", "token_type_ids", "context_mask")
    batch = {k: torch.zeros(len(lengths), width, dtype=torch.long) for k in keys}
    start, end = torch.zeros(len(lengths), dtype=torch.long), torch.zeros(len(lengths), dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        batch["input_ids"][row, :n] = torch.from_numpy(rng.integers(1000, VOCAB_SIZE, n))
        batch["attention_mask"][row, :n] = 1
        batch["token_type_ids"][row, NON_CONTEXT - 1 : n] = 1
        batch["context_mask"][row, NON_CONTEXT - 1 : n - 1] = 1
        if rng.random() < 0.5:
            s = int(rng.integers(NON_CONTEXT - 1, n - 1))
            start[row], end[row] = s, min(s + int(rng.integers(0, 5)), n - 2)
    return batch | {"start_positions": start, "end_positions": end}


def build_model(head: str, args: argparse.Namespace, device: torch.device) -> PreTrainedModel:
    return random_model("crf" if head == "crf" else "span", args.size, args.attn, args.crf_forward_algorithm).to(device)


def optimizer_for(model: torch.nn.Module, fused: bool) -> torch.optim.AdamW:
    """The Trainer's AdamW: weight decay on everything but biases and LayerNorm weights."""
    groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
    for name, param in model.named_parameters():
        groups[not (name.endswith("bias") or "LayerNorm" in name)].append(param)
    decay = [{"params": ps, "weight_decay": 0.01 if d else 0.0} for d, ps in groups.items()]
    return torch.optim.AdamW(decay, lr=2e-5, fused=fused)


def peak_memory_mib(device: torch.device, reset: bool = False) -> float:
    """CUDA max_memory_allocated, or the peak RSS on CPU (Linux lets it be reset), since the last reset."""
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, IndexError):
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak, in KiB on Linux


def mark(device: torch.device) -> Any:
    """A point in time: a CUDA event on a GPU, so that timing steps needs no sync between them."""
    if device.type != "cuda":
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def intervals(marks: list[Any]) -> list[float]:
    """Seconds between consecutive marks (waits for the GPU to reach the last one)."""
    if marks and not isinstance(marks[0], float):
        marks[-1].synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in itertools.pairwise(marks)]
    return [b - a for a, b in itertools.pairwise(marks)]


def train_phase(model: torch.nn.Module, batches: list[dict], args: argparse.Namespace) -> tuple[Any, dict]:
    """Warmup + timed steps; returns the module that ran them (compiled or not) and the timings."""
    device, dtype = torch.device(args.device), DTYPES[args.precision]
    opt = optimizer_for(model, args.fused_adamw)
    scaler = torch.amp.GradScaler(args.device, enabled=args.precision == "fp16")
    step_model = torch.compile(model) if args.compile else model
    model.train()
    peak_memory_mib(device, reset=True)
    marks: list[Any] = []
    for i, batch in enumerate(batches):
        if i == args.warmup:
            marks.append(mark(device))
        with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
            loss = step_model(**batch).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            marks.append(mark(device))
    times = intervals(marks)
    return step_model, {"step_s": statistics.median(times), "total_s": sum(times), "peak_mib": peak_memory_mib(device)}


def eval_phase(model: torch.nn.Module, head: str, args: argparse.Namespace, rng: np.random.Generator) -> float:
    """Seconds to evaluate args.eval_windows windows: forward, copy to host, post-processing. One untimed
    batch first: a GPU (or torch.compile) meets the no-grad shapes for the first time there."""
    device, dtype = torch.device(args.device), DTYPES[args.precision]
    lengths = -np.sort(-sample_lengths(args.eval_windows, rng))  # longest first, as the eval set is
    n = len(lengths)
    n_examples = max(1, round(n * DEV_QUESTIONS / EVAL_WINDOWS))  # a few questions span two windows
    example_index = np.arange(n) * n_examples // n
    offsets = np.full((n, MAX_LEN, 2), -1, dtype=np.int64)
    for row, length in enumerate(lengths.tolist()):  # 5 characters per context token
        tokens = np.arange(length - NON_CONTEXT)
        offsets[row, NON_CONTEXT - 1 : length - 1] = np.stack([5 * tokens, 5 * tokens + 4], axis=1)
    contexts, ids = ["x" * 5 * MAX_LEN] * n_examples, [f"q{i}" for i in range(n_examples)]
    multiple = 8 if device.type == "cuda" else 1
    batches = [make_batch(lengths[lo : lo + EVAL_BATCH], multiple, rng) for lo in range(0, n, EVAL_BATCH)]
    keys = [k for k in batches[0] if k != "context_mask" or head == "crf"]
    fields = ("start_logits", "end_logits") if head == "plain" else ("span_start", "span_end", "span_score")
    model.eval()
    outputs: list[list[np.ndarray]] = []
    with torch.no_grad(), torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
        model(**{k: batches[0][k].to(device) for k in keys})
        begin = mark(device)
        for batch in batches:
            out = model(**{k: batch[k].to(device, non_blocking=True) for k in keys})
            outputs.append([out[f].float().cpu().numpy() for f in fields])
    if head == "plain":  # concatenated like the Trainer's, padded with -100 to the widest batch
        widen = lambda a: np.pad(a, ((0, 0), (0, MAX_LEN - a.shape[1])), constant_values=-100.0)  # noqa: E731
        start, end = (np.concatenate([widen(o[i]) for o in outputs]) for i in range(2))
        cands = span_candidates(start, end, 20, 30, offsets, offsets[..., 0] >= 0)
    else:
        s, e, sc = (np.concatenate([o[i] for o in outputs]) for i in range(3))
        cands = WindowCandidates(s.astype(np.int64), e.astype(np.int64), sc, null=np.zeros(n, np.float32))
    select_answers(cands, example_index, offsets, contexts, ids, n_best=20, na_prob_thresh=1.0)
    return intervals([begin, mark(device)])[0]


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags (parse_args also checks what they ask for against this machine)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), help="default: base on CUDA, tiny on CPU")
    p.add_argument("--precision", choices=sorted(DTYPES), help="default: bf16 on a GPU that supports it, else fp32")
    p.add_argument("--steps", type=int, help="timed training steps (default 30 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--eval-windows", type=int, help=f"default {EVAL_WINDOWS} (SQuAD v2 dev) on CUDA, 256 on CPU")
    p.add_argument("--fused-adamw", action=argparse.BooleanOptionalAction, help="default: fused on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile (shapes vary per batch: recompiles)")
    p.add_argument("--sdpa", dest="attn", action="store_const", const="sdpa", default="sdpa")
    p.add_argument("--eager", dest="attn", action="store_const", const="eager")
    p.add_argument("--crf-forward-algorithm", choices=FORWARD_ALGORITHMS, default=FORWARD_ALGORITHMS[0])
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, help="fp32 matmuls on TF32 (default on CUDA)")
    p.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s for MFU (default: by GPU name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to torch")
    if args.precision is None:
        args.precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if args.precision == "fp16" and not cuda:
        p.error("--precision fp16 needs CUDA")
    defaults = {"size": ("base", "tiny"), "steps": (30, 3), "warmup": (5, 1), "eval_windows": (EVAL_WINDOWS, 256)}
    for key, (on_gpu, on_cpu) in {**defaults, "fused_adamw": (True, False), "tf32": (True, False)}.items():
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if cuda else on_cpu)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.eval_windows < 1:
        p.error("need --steps >= 1, --warmup >= 0, --batch >= 1, --eval-windows >= 1")
    if args.peak_tflops is None and cuda:
        name = torch.cuda.get_device_name()
        args.peak_tflops = next((t for key, t in PEAK_TFLOPS if key in name), None)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device, cuda = torch.device(args.device), args.device == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    rng = np.random.default_rng(args.seed)
    lengths = sample_lengths(args.batch * (args.warmup + args.steps), rng).reshape(-1, args.batch)
    batches = [{k: v.to(device) for k, v in make_batch(b, 8 if cuda else 1, rng).items()} for b in lengths]
    padded = [b["input_ids"].shape[1] for b in batches[args.warmup :]]
    real_tokens, padded_tokens = int(lengths[args.warmup :].sum()), args.batch * sum(padded)
    cfg, results = SIZES[args.size], {}
    for head in ("plain", "crf"):
        torch.manual_seed(args.seed)
        model = build_model(head, args, device)
        params = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." not in n)
        inputs = [{k: v for k, v in b.items() if k != "context_mask" or head == "crf"} for b in batches]
        step_model, r = train_phase(model, inputs, args)
        flops = train_flops(params, cfg["num_hidden_layers"], cfg["hidden_size"], padded, args.batch)
        eval_s = eval_phase(step_model, head, args, np.random.default_rng(args.seed + 1))
        windows_s = args.batch * args.steps / r["total_s"]
        eval_windows_s = args.eval_windows / eval_s
        tflops = flops / r["total_s"] / 1e12
        results[head] = {
            "matmul_params": params,
            "step_time_ms": 1e3 * r["step_s"],
            "train_windows_per_s": windows_s,
            "real_tokens_per_s": real_tokens / r["total_s"],
            "padded_tokens_per_s": padded_tokens / r["total_s"],
            "peak_memory_mib": r["peak_mib"],
            "achieved_tflops": tflops,
            "mfu_percent": 100 * tflops / args.peak_tflops if args.peak_tflops else None,
            "eval_windows_per_s": eval_windows_s,
            "projected_run_h": (TRAIN_WINDOWS * EPOCHS / windows_s + EPOCHS * EVAL_WINDOWS / eval_windows_s) / 3600,
        }
        del model, step_model
        torch.cuda.empty_cache()  # a no-op without CUDA
    results["crf_plain_step_ratio"] = results["crf"]["step_time_ms"] / results["plain"]["step_time_ms"]
    report(results, args, lengths.reshape(-1), padded, real_tokens / padded_tokens)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return results


def report(results: dict[str, Any], args: argparse.Namespace, lengths: np.ndarray, padded: list, real: float) -> None:
    cuda, cfg = args.device == "cuda", SIZES[args.size]
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    results["setup"] = {**{k: v for k, v in vars(args).items() if k != "json"}, "device_name": device_name}
    print(
        f"{device_name} | {args.size} (hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
        f"{results['plain']['matmul_params'] / 1e6:.2f}M matmul params) | "
        f"{args.precision} | {args.attn} | CRF loss {args.crf_forward_algorithm} | batch {args.batch} | "
        f"{args.warmup} warmup + {args.steps} timed steps"
        f"{' | compiled' if args.compile else ''} | loadavg {loadavg()}\n"
        f"window lengths: mean {lengths.mean():.0f}, median "
        f"{np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, full {np.mean(lengths == MAX_LEN):.1%}; "
        f"timed batches padded to {np.mean(padded):.0f} on average (real tokens {real:.0%})\n"
        "FLOPs/step = sum over windows of 6·N·T + 12·layers·hidden·T² (T padded length, N matmul params)"
    )
    memory = "CUDA max allocated" if cuda else "peak RSS"
    peak = f"{args.peak_tflops:g} TFLOP/s" if args.peak_tflops else "no peak known: --peak-tflops"
    rows = [
        ("step time, median (ms)", "step_time_ms", "{:.1f}"),
        ("train windows/s", "train_windows_per_s", "{:.1f}"),
        ("real tokens/s", "real_tokens_per_s", "{:.0f}"),
        ("padded tokens/s", "padded_tokens_per_s", "{:.0f}"),
        (f"peak memory, {memory} (MiB)", "peak_memory_mib", "{:.0f}"),
        ("achieved TFLOP/s", "achieved_tflops", "{:.4g}"),
        (f"MFU (% of {peak})", "mfu_percent", "{:.2f}"),
        ("eval windows/s (+ post-processing)", "eval_windows_per_s", "{:.1f}"),
        (f"projected {EPOCHS}-epoch run (h)", "projected_run_h", "{:.2f}"),
    ]
    print(f"{'':44}{'plain':>14}{'crf':>14}")
    for label, key, fmt in rows:
        cells = [results[h][key] for h in ("plain", "crf")]
        print(f"{label:44}" + "".join(f"{'n/a' if c is None else fmt.format(c):>14}" for c in cells))
    print(f"{'CRF / plain step time':44}{results['crf_plain_step_ratio']:>14.3f}")
    print(f"(projection: {TRAIN_WINDOWS} x {EPOCHS} / train windows/s + {EPOCHS} x {EVAL_WINDOWS} / eval windows/s)")


if __name__ == "__main__":
    main()
