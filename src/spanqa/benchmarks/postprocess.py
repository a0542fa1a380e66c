"""Benchmark: vectorised post-processing vs a per-window Python loop (HF `run_qa.py` style), dev-sized input.

    PYTHONPATH=src python -m spanqa.benchmarks.postprocess [--examples 12000] [--repeats 9] [--ref-repeats 3]

Builds SQuAD-v2-dev-shaped eval features (12,000 examples, ~12,200 windows of 384 tokens, ~166 real
tokens per window, max-context flags as in the BERT reference), random seeded logits, then checks that
both paths give identical answers, best spans and n-best lists and prints the timings.

What is timed: the reference loop as a whole (it builds its n-best dicts as it goes); the fast path as
span_candidates + select_answers, i.e. everything evaluation reads (answers, best spans, score_diff,
na_prob), with the n-best lists left as arrays; and, on its own line, building the n-best dicts on the
first read of `Predictions.nbest` (only nbest_predictions.json needs them). Runs of both paths interleave;
medians of wall and of CPU (process) time are printed, the latter being steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from spanqa.benchmarks.common import loadavg
from spanqa.data.windows import max_context_flags
from spanqa.eval.answers import Predictions, select_answers
from spanqa.models.candidates import WindowCandidates
from spanqa.models.span_decoding import span_candidates

T = TypeVar("T")


@dataclass
class BenchInputs:
    start_logits: np.ndarray  # (N, L) float32
    end_logits: np.ndarray  # (N, L) float32
    offsets: np.ndarray  # (N, L, 2) int64, -1 outside the context
    max_context: np.ndarray  # (N, L) bool
    example_index: np.ndarray  # (N,) int64
    contexts: list[str]
    example_ids: list[str]
    n_tokens: np.ndarray  # (N,) non-padding tokens per window


def _doc_spans(n_tokens: int, capacity: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over the context tokens, as BERT's run_squad slides them."""
    spans = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, capacity)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans


def _max_context(spans: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """(n_spans, n_tokens) bool: the window in which each token has the most context, by the rule training uses."""
    best = np.zeros((len(spans), n_tokens), dtype=bool)
    for i, ((start, length), flags) in enumerate(zip(spans, max_context_flags(spans), strict=True)):
        best[i, start : start + length] = flags
    return best


def make_inputs(n_examples: int, seed: int = 0, max_length: int = 384, doc_stride: int = 128) -> BenchInputs:
    """Dev-shaped eval features: [CLS] question [SEP] context [SEP] padding, one or more windows each."""
    rng = np.random.default_rng(seed)
    # Context tokens: log-normal, tuned to SQuAD v2 dev (~166 real tokens per window, ~1.7% full).
    n_ctx = np.clip(rng.lognormal(math.log(130), 0.48, n_examples).astype(np.int64), 10, 1200)
    n_question = rng.integers(6, 25, n_examples)

    # Random words: token i covers chars [word_start, word_start + word_len), words split by one space.
    word_len = rng.integers(1, 9, int(n_ctx.sum()))
    step = word_len + 1
    global_start = np.cumsum(step) - step
    text = rng.integers(97, 123, int(step.sum()), dtype=np.uint8)
    text[global_start + word_len] = ord(" ")
    big = text.tobytes().decode("ascii")
    first_tok = np.concatenate([[0], np.cumsum(n_ctx)[:-1]])
    last_tok = first_tok + n_ctx - 1
    base = global_start[first_tok]
    ctx_chars = global_start[last_tok] + word_len[last_tok] - base
    contexts = [big[b : b + c] for b, c in zip(base.tolist(), ctx_chars.tolist(), strict=True)]

    windows: list[tuple[int, int, int, int, np.ndarray]] = []  # (example, question len, start, len, maxctx)
    for i in range(n_examples):
        n_tok, q = int(n_ctx[i]), int(n_question[i])
        spans = _doc_spans(n_tok, max_length - q - 3, doc_stride)
        best = _max_context(spans, n_tok) if len(spans) > 1 else np.ones((1, n_tok), dtype=bool)
        for j, (start, length) in enumerate(spans):
            windows.append((i, q, start, length, best[j, start : start + length]))

    n_windows = len(windows)
    offsets = np.full((n_windows, max_length, 2), -1, dtype=np.int64)
    max_context = np.zeros((n_windows, max_length), dtype=bool)
    example_index = np.empty(n_windows, dtype=np.int64)
    n_tokens = np.empty(n_windows, dtype=np.int64)
    for w, (i, q, start, length, is_max) in enumerate(windows):
        tok = first_tok[i] + start + np.arange(length)
        lo = q + 2  # after [CLS] question [SEP]
        offsets[w, lo : lo + length, 0] = global_start[tok] - base[i]
        offsets[w, lo : lo + length, 1] = global_start[tok] + word_len[tok] - base[i]
        max_context[w, lo : lo + length] = is_max
        example_index[w] = i
        n_tokens[w] = q + 3 + length

    start_logits = rng.standard_normal((n_windows, max_length), dtype=np.float32)
    end_logits = rng.standard_normal((n_windows, max_length), dtype=np.float32)
    # Lift CLS so that null and span both win often enough to exercise the threshold.
    start_logits[:, 0] += 1.5
    end_logits[:, 0] += 1.5
    ids = [f"q{i:06d}" for i in range(n_examples)]
    return BenchInputs(start_logits, end_logits, offsets, max_context, example_index, contexts, ids, n_tokens)


def reference_postprocess(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    max_context: np.ndarray,
    example_index: np.ndarray,
    contexts: list[str],
    example_ids: list[str],
    n_best: int = 20,
    max_answer_length: int = 30,
    na_prob_thresh: float = 0.5,
) -> Predictions:
    """Per-window Python loop in the shape of HF `run_qa.py`'s `postprocess_qa_predictions` (SQuAD v2):
    top-n_best starts × ends per window, the same filters, dict candidates sorted per example; plus the
    tie rule (stable top-n, then window, start, end) and the na_prob of `spanqa.eval.answers`."""
    windows_of = defaultdict(list)
    for w, ex in enumerate(np.asarray(example_index).tolist()):
        windows_of[ex].append(w)

    answers, best_span, score_diff, na_prob, nbest = {}, {}, {}, {}, {}
    for ex, (eid, context) in enumerate(zip(example_ids, contexts, strict=True)):
        min_null_score = None
        prelim_predictions = []
        for w in windows_of[ex]:
            window_start_logits = np.asarray(start_logits[w], dtype=np.float32)
            window_end_logits = np.asarray(end_logits[w], dtype=np.float32)
            offset_mapping = offsets[w].tolist()
            token_is_max_context = max_context[w].tolist()
            window_null_score = window_start_logits[0] + window_end_logits[0]
            if min_null_score is None or window_null_score < min_null_score:
                min_null_score = window_null_score
            start_indexes = np.argsort(-window_start_logits, kind="stable")[:n_best].tolist()
            end_indexes = np.argsort(-window_end_logits, kind="stable")[:n_best].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    # Out of scope: past the offsets, or not a context token (question, specials, padding).
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index][0] < 0
                        or offset_mapping[end_index][0] < 0
                    ):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    if not token_is_max_context[start_index]:
                        continue
                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": window_start_logits[start_index] + window_end_logits[end_index],
                            "window": w,
                            "start_index": start_index,
                            "end_index": end_index,
                        }
                    )
        predictions = sorted(
            prelim_predictions, key=lambda p: (-p["score"], p["window"], p["start_index"], p["end_index"])
        )[:n_best]
        if predictions:
            scores = np.array([p["score"] for p in predictions], dtype=np.float64)
            exp_scores = np.exp(scores - np.max(scores))
            probs = exp_scores / exp_scores.sum()
            nbest[eid] = [
                {
                    "text": context[p["offsets"][0] : p["offsets"][1]],
                    "score": float(p["score"]),
                    "probability": float(prob),
                    "start": p["offsets"][0],
                    "end": p["offsets"][1],
                }
                for p, prob in zip(predictions, probs, strict=True)
            ]
            best_span[eid] = nbest[eid][0]["text"]
            diff = float(min_null_score) - nbest[eid][0]["score"]
        else:
            nbest[eid] = []
            best_span[eid] = ""
            diff = math.inf
        score_diff[eid] = diff
        na_prob[eid] = 1 / (1 + math.exp(-diff)) if diff >= 0 else math.exp(diff) / (1 + math.exp(diff))
        answers[eid] = "" if na_prob[eid] > na_prob_thresh else best_span[eid]
    return Predictions(answers, best_span, score_diff, na_prob, nbest)


def fast_postprocess(
    inputs: BenchInputs, n_best: int = 20, max_answer_length: int = 30, na_prob_thresh: float = 0.5
) -> Predictions:
    cands = span_candidates(
        inputs.start_logits, inputs.end_logits, n_best, max_answer_length, inputs.offsets, inputs.max_context
    )
    return select_answers(
        cands,
        inputs.example_index,
        inputs.offsets,
        inputs.contexts,
        inputs.example_ids,
        n_best=n_best,
        na_prob_thresh=na_prob_thresh,
    )


def _close(a: float, b: float, tol: float) -> bool:
    return a == b or abs(a - b) <= tol


def compare_predictions(a: Predictions, b: Predictions, tol: float = 1e-5) -> list[str]:
    """Differences between two prediction sets (empty when they agree); scores compared within tol."""
    diffs = []
    if a.answers.keys() != b.answers.keys():
        return ["different example ids"]
    for eid in a.answers:
        if a.answers[eid] != b.answers[eid]:
            diffs.append(f"{eid}: answer {a.answers[eid]!r} != {b.answers[eid]!r}")
        if a.best_span[eid] != b.best_span[eid]:
            diffs.append(f"{eid}: best span {a.best_span[eid]!r} != {b.best_span[eid]!r}")
        if not _close(a.score_diff[eid], b.score_diff[eid], tol) or not _close(a.na_prob[eid], b.na_prob[eid], tol):
            diffs.append(
                f"{eid}: score_diff/na_prob {a.score_diff[eid]}/{a.na_prob[eid]} vs "
                f"{b.score_diff[eid]}/{b.na_prob[eid]}"
            )
        na, nb = a.nbest[eid], b.nbest[eid]
        if len(na) != len(nb):
            diffs.append(f"{eid}: {len(na)} n-best entries != {len(nb)}")
            continue
        for x, y in zip(na, nb, strict=True):
            same_span = (x["text"], x["start"], x["end"]) == (y["text"], y["start"], y["end"])
            if (
                not same_span
                or not _close(x["score"], y["score"], tol)
                or not _close(x["probability"], y["probability"], tol)
            ):
                diffs.append(f"{eid}: n-best entry {x} != {y}")
                break
    return diffs


class _Clock:
    """Wall and CPU (process) time of repeated runs. CPU time is the steadier figure on a busy machine:
    it leaves out the time other processes hold the cores."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, fn: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    def __add__(self, other: _Clock) -> _Clock:
        total = _Clock()
        total.wall = [a + b for a, b in zip(self.wall, other.wall, strict=True)]
        total.cpu = [a + b for a, b in zip(self.cpu, other.cpu, strict=True)]
        return total

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)

    def __str__(self) -> str:
        wall, cpu = self.median()
        return f"{wall:.4f} s (cpu {cpu:.4f} s)"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12_000, help="number of examples (default 12000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=9, help="fast-path runs; medians are reported")
    parser.add_argument("--ref-repeats", type=int, default=3, help="reference runs; medians are reported")
    args = parser.parse_args(argv)
    if min(args.examples, args.repeats, args.ref_repeats) < 1:
        parser.error("--examples, --repeats and --ref-repeats must all be >= 1")

    inputs = make_inputs(args.examples, seed=args.seed)
    print(
        f"examples: {len(inputs.example_ids)}  windows: {len(inputs.example_index)}  "
        f"L: {inputs.offsets.shape[1]}  real tokens/window: mean {inputs.n_tokens.mean():.1f}, "
        f"median {np.median(inputs.n_tokens):.0f}  cpus: {os.cpu_count()}  loadavg: {loadavg()}"
    )

    def reference() -> Predictions:
        return reference_postprocess(
            inputs.start_logits,
            inputs.end_logits,
            inputs.offsets,
            inputs.max_context,
            inputs.example_index,
            inputs.contexts,
            inputs.example_ids,
            args.n_best,
            args.max_answer_length,
        )

    def candidates() -> WindowCandidates:
        return span_candidates(
            inputs.start_logits,
            inputs.end_logits,
            args.n_best,
            args.max_answer_length,
            inputs.offsets,
            inputs.max_context,
        )

    # Runs interleave, so that both paths see the same background load.
    ref_clock, cand_clock, select_clock, nbest_clock = _Clock(), _Clock(), _Clock(), _Clock()
    for run in range(max(args.repeats, args.ref_repeats)):
        if run < args.ref_repeats:
            ref = ref_clock.run(reference)
        if run < args.repeats:
            cands = cand_clock.run(candidates)
            fast = select_clock.run(
                lambda cands=cands: select_answers(
                    cands,
                    inputs.example_index,
                    inputs.offsets,
                    inputs.contexts,
                    inputs.example_ids,
                    args.n_best,
                )
            )
            nbest_clock.run(lambda fast=fast: fast.nbest)  # materialises the n-best dicts
    fast_clock = cand_clock + select_clock
    full_clock = fast_clock + nbest_clock

    diffs = compare_predictions(fast, ref)
    n_null = sum(1 for text in fast.answers.values() if not text)
    n_entries = sum(len(group) for group in fast.nbest.values())
    print(f"answered: {len(fast.answers) - n_null}  no answer: {n_null}  n-best entries: {n_entries}")
    print(
        f"reference: per-window loop, incl. its n-best dicts (median of {args.ref_repeats}): {ref_clock}  "
        f"wall runs [{', '.join(f'{t:.3f}' for t in ref_clock.wall)}]"
    )
    print(
        f"fast, evaluation path: answers, best spans, score_diff, na_prob; n-best kept as arrays "
        f"(median of {args.repeats}): {fast_clock}\n"
        f"  = span_candidates {cand_clock} + select_answers {select_clock}"
    )
    print(f"fast, n-best dicts, built on first access of .nbest (not in the line above): {nbest_clock}")
    print(f"fast, everything incl. n-best dicts: {full_clock}")
    (ref_wall, ref_cpu), (fast_wall, fast_cpu), (full_wall, full_cpu) = (
        c.median() for c in (ref_clock, fast_clock, full_clock)
    )
    print(f"ratio, reference / evaluation path: {ref_wall / fast_wall:.1f}x wall, {ref_cpu / fast_cpu:.1f}x cpu")
    print(
        f"ratio, reference / everything incl. n-best dicts: {ref_wall / full_wall:.1f}x wall, "
        f"{ref_cpu / full_cpu:.1f}x cpu"
    )
    print(f"loadavg after: {loadavg()}")
    print(f"identical: {not diffs}")
    if diffs:
        raise AssertionError(f"{len(diffs)} differences, first: " + "; ".join(diffs[:3]))


if __name__ == "__main__":
    main()
