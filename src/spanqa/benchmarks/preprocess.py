"""Benchmark: preprocessing throughput (examples → windows) on a cold datasets cache, and a cached re-run.

    PYTHONPATH=src python -m spanqa.benchmarks.preprocess [--questions 12000] [--eval-questions 3000]
        [--context-repeat 1.5] [--num-proc N] [--tokenizer DIR]

Writes demo SQuAD-v2 train and dev JSON (`spanqa.data.demo.make_squad_v2`) into a temp dir, trains a demo WordPiece
tokenizer there (or loads --tokenizer), then times `load_examples` + `build_features` (max_length 384, stride
128) twice in one process: first on a fresh, empty datasets cache (HF_DATASETS_CACHE points into the temp dir),
then the identical call again, which should only read what the first one cached. Tokenizer training and file
writing are not timed.

Demo contexts are short (~66 tokens). --context-repeat K merges consecutive paragraphs into one context, the
number of paragraphs per context drawn geometric with mean K: K=1.5 gives SQuAD-like windows (~150 tokens on
average, per question) with a tail long enough to overflow a 384-token window now and then.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanqa.benchmarks.common import loadavg
from spanqa.data.demo import make_squad_v2, train_tokenizer


def group_sizes(n_paragraphs: int, mean: float, rng: random.Random) -> list[int]:
    """Geometric group sizes (1, 2, ...) with the given mean, cut so that they add up to n_paragraphs."""
    if mean < 1:
        raise ValueError(f"mean={mean}; expected >= 1 paragraph per context")
    stop = 1 / mean  # chance that a group ends after each paragraph
    sizes: list[int] = []
    left = n_paragraphs
    while left > 0:
        size = 1
        while size < left and rng.random() >= stop:
            size += 1
        sizes.append(size)
        left -= size
    return sizes


def merge_paragraphs(paragraphs: list[dict[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Consecutive paragraphs joined by a space into one context per group; answer_start shifted to match."""
    if sum(sizes) != len(paragraphs) or min(sizes, default=1) < 1:
        raise ValueError(f"group sizes {list(sizes)[:8]}... must be >= 1 and add up to {len(paragraphs)}")
    merged = []
    first = 0
    for size in sizes:
        parts, qas, shift = [], [], 0
        for paragraph in paragraphs[first : first + size]:
            for qa in paragraph["qas"]:
                answers = [{**a, "answer_start": a["answer_start"] + shift} for a in qa["answers"]]
                qas.append({**qa, "answers": answers})
            parts.append(paragraph["context"])
            shift += len(paragraph["context"]) + 1
        merged.append({"context": " ".join(parts), "qas": qas})
        first += size
    return merged


def make_dataset(n_questions: int, seed: int, title: str, context_repeat: float) -> dict[str, Any]:
    """Official-format SQuAD v2 with at least n_questions questions and contexts of ~context_repeat paragraphs."""
    blob = make_squad_v2(n_questions, seed=seed, title=title, per_article=n_questions)  # one article: merges span it
    if context_repeat != 1:
        rng = random.Random(seed)
        for article in blob["data"]:
            paragraphs = article["paragraphs"]
            article["paragraphs"] = merge_paragraphs(paragraphs, group_sizes(len(paragraphs), context_repeat, rng))
    return blob


@contextmanager
def fresh_datasets_cache(cache_dir: Path) -> Iterator[None]:
    """Point the datasets cache at cache_dir for this block. `datasets` reads HF_DATASETS_CACHE once, at import
    (possibly long before this call), so its module setting is switched too; both are restored afterwards."""
    import datasets.config

    old_env = os.environ.get("HF_DATASETS_CACHE")
    old_setting = datasets.config.HF_DATASETS_CACHE
    os.environ["HF_DATASETS_CACHE"] = str(cache_dir)
    datasets.config.HF_DATASETS_CACHE = cache_dir
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = old_setting
        if old_env is None:
            os.environ.pop("HF_DATASETS_CACHE", None)
        else:
            os.environ["HF_DATASETS_CACHE"] = old_env


@dataclass
class Run:
    load_s: float  # load_examples: JSON → Dataset (cached by datasets) + row checks
    features_s: float  # build_features: train and eval windows (two cached maps)
    train_windows: int
    eval_windows: int
    new_cache_files: int  # files this run added to the datasets cache

    @property
    def total_s(self) -> float:
        return self.load_s + self.features_s

    @property
    def windows(self) -> int:
        return self.train_windows + self.eval_windows


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def preprocess_once(train_file: Path, dev_file: Path, tokenizer: Any, num_proc: int | None, cache: Path) -> Run:
    """One timed load_examples + build_features call, as training runs it."""
    from spanqa.config import DataConfig
    from spanqa.data.squad import load_examples
    from spanqa.data.windows import build_features

    cfg = DataConfig(
        dataset_name=None,
        train_file=str(train_file),
        validation_file=str(dev_file),
        max_length=384,
        doc_stride=128,
        num_proc=num_proc,
    )
    before = _files(cache)
    t0 = time.perf_counter()
    raw, _ = load_examples(cfg)
    t1 = time.perf_counter()
    train, evaluation = build_features(raw, tokenizer, cfg)
    t2 = time.perf_counter()
    return Run(t1 - t0, t2 - t1, len(train), len(evaluation), len(_files(cache) - before))


def window_tokens(train_file: Path, tokenizer: Any, max_length: int = 384) -> tuple[float, float]:
    """Per question: mean tokens of its first window, and the share whose question + context overflow one."""
    blob = json.loads(train_file.read_text())
    pairs = [(qa["question"], p["context"]) for a in blob["data"] for p in a["paragraphs"] for qa in p["qas"]]
    enc = tokenizer([q for q, _ in pairs], [c for _, c in pairs], verbose=False)
    lengths = [len(ids) for ids in enc["input_ids"]]
    mean = statistics.fmean(min(n, max_length) for n in lengths)
    return mean, sum(n > max_length for n in lengths) / len(lengths)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=12_000, help="train questions (default 12000)")
    parser.add_argument("--eval-questions", type=int, default=None, help="dev questions (default: questions/4)")
    parser.add_argument(
        "--context-repeat", type=float, default=1.5, help="mean paragraphs per context (default 1.5; 1: as made)"
    )
    parser.add_argument("--num-proc", type=int, default=None, help="datasets.map processes (default: none)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a saved fast tokenizer (default: train one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.eval_questions is None:
        args.eval_questions = max(args.questions // 4, 1)
    if args.questions < 1 or args.eval_questions < 1 or args.context_repeat < 1:
        parser.error("--questions and --eval-questions must be >= 1, --context-repeat >= 1")
    if args.num_proc is not None and args.num_proc < 1:
        parser.error(f"--num-proc={args.num_proc}; expected >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM", "(unset)")  # datasets may set it when it forks
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="spanqa-preprocess-") as tmp:
        root = Path(tmp)
        train = make_dataset(args.questions, args.seed, "bench-train", args.context_repeat)
        dev = make_dataset(args.eval_questions, args.seed + 1, "bench-dev", args.context_repeat)
        train_file, dev_file = root / "train.json", root / "dev.json"
        train_file.write_text(json.dumps(train))
        dev_file.write_text(json.dumps(dev))
        if args.tokenizer is None:
            texts = [p["context"] for blob in (train, dev) for a in blob["data"] for p in a["paragraphs"]]
            texts += [qa["question"] for a in train["data"] for p in a["paragraphs"] for qa in p["qas"]]
            train_tokenizer(texts, root / "tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or root / "tokenizer")
        mean_tokens, overflow = window_tokens(train_file, tokenizer)

        cache = root / "hf-datasets"
        cache.mkdir()
        load_before = loadavg()
        bars = is_progress_bar_enabled()
        disable_progress_bar()
        try:
            with fresh_datasets_cache(cache):
                cold = preprocess_once(train_file, dev_file, tokenizer, args.num_proc, cache)
                cached = preprocess_once(train_file, dev_file, tokenizer, args.num_proc, cache)
        finally:
            if bars:
                enable_progress_bar()

    print(
        f"questions: train {args.questions} + eval {args.eval_questions}  context-repeat {args.context_repeat}  "
        f"num_proc {args.num_proc}  TOKENIZERS_PARALLELISM={parallelism}  "
        f"cpus {os.cpu_count()}"
    )
    print(f"loadavg: before {load_before}, after {loadavg()}")
    print(f"train questions: {mean_tokens:.1f} tokens in the first window on average, {overflow:.1%} overflow 384")
    print(f"windows: train {cold.train_windows} + eval {cold.eval_windows} = {cold.windows}")
    print(
        f"cold cache: {cold.total_s:.2f} s = load_examples {cold.load_s:.2f} s + build_features "
        f"{cold.features_s:.2f} s  -> {cold.windows / cold.total_s:,.0f} features/s "
        f"({cold.windows / cold.features_s:,.0f} features/s in build_features)"
    )
    print(
        f"cached re-run: {cached.total_s:.2f} s = load_examples {cached.load_s:.2f} s + build_features "
        f"{cached.features_s:.2f} s  (new cache files: {cached.new_cache_files}, "
        f"first run wrote {cold.new_cache_files})"
    )
    print(f"speed-up of the cached re-run: {cold.total_s / cached.total_s:.1f}x")
    same = (cached.train_windows, cached.eval_windows) == (cold.train_windows, cold.eval_windows)
    print(f"cache hit: {cached.new_cache_files == 0 and same}")


if __name__ == "__main__":
    main()
