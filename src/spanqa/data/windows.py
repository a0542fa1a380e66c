"""Checked SQuAD v2 examples → question/context windows with labels, and the data a run trains on
and is evaluated on (`QAData`: training windows, and `EvalSet`s that keep what post-processing needs).

Feature contract (the shape of Hugging Face's run_qa.py, made vectorisable):
- every window: input_ids, token_type_ids, attention_mask, context_mask (1 on context tokens),
  start_positions/end_positions (token indices of the first gold answer, (0, 0) = CLS when the answer is not
  fully inside the window or there is none). Eval windows carry them too, so the Trainer reports eval_loss.
- eval windows also: example_id, offset_mapping ((-1, -1) outside the context instead of None, so offsets
  stack into one int array) and max_context (1 where this window gives the token its maximal context).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from spanqa.config import DataConfig
from spanqa.data.squad import RowReport, load_examples
from spanqa.errors import DataError


# ---------------------------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class WindowSettings:
    """The part of DataConfig that decides the windows."""

    max_length: int
    doc_stride: int
    max_query_length: int

    @classmethod
    def of(cls, cfg: DataConfig) -> WindowSettings:
        return cls(cfg.max_length, cfg.doc_stride, cfg.max_query_length)


def _cut_questions(questions: list[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int) -> list[str]:
    """Strip leading blanks (they waste tokens) and cut questions to max_tokens, as the reference does."""
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    return [
        q if len(o) <= max_tokens else q[: o[max_tokens - 1][1]]
        for q, o in zip(questions, enc["offset_mapping"], strict=True)
    ]


def _answer_tokens(
    offsets: list[tuple[int, int]], seq_ids: list[int | None], start_char: int, end_char: int
) -> tuple[int, int]:
    """Token span of [start_char, end_char) inside the window's context, or (0, 0) when not fully inside."""
    ctx_start = seq_ids.index(1)
    ctx_end = len(seq_ids) - 1 - seq_ids[::-1].index(1)
    if offsets[ctx_start][0] > start_char or offsets[ctx_end][1] < end_char:
        return 0, 0
    start = ctx_start
    while start <= ctx_end and offsets[start][0] <= start_char:
        start += 1
    end = ctx_end
    while end >= ctx_start and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def max_context_flags(window_spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """For windows covering global context tokens [s, s+n), mark the tokens each window sees with most context.

    Score = min(tokens left, tokens right) + 0.01 * window length (BERT/SpanBERT reference); first max wins.
    """
    total = max(s + n for s, n in window_spans)
    best = np.full(total, -1.0)
    owner = np.full(total, -1)
    for w, (s, n) in enumerate(window_spans):
        pos = np.arange(n)
        score = np.minimum(pos, n - 1 - pos) + 0.01 * n
        better = score > best[s : s + n]
        best[s : s + n][better] = score[better]
        owner[s : s + n][better] = w
    return [owner[s : s + n] == w for w, (s, n) in enumerate(window_spans)]


def make_windows(
    batch: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, cfg: DataConfig | WindowSettings, for_eval: bool
) -> dict[str, list[Any]]:
    """Batched `datasets.map` function: examples → windows (see the module docstring for the columns)."""
    questions = _cut_questions(batch["question"], tokenizer, cfg.max_query_length)
    enc = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=cfg.max_length,
        stride=cfg.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    sample_of = enc.pop("overflow_to_sample_mapping")
    all_offsets = enc.pop("offset_mapping")
    out: dict[str, list[Any]] = {"context_mask": [], "start_positions": [], "end_positions": []}
    if for_eval:
        out |= {"example_id": [], "offset_mapping": [], "max_context": []}
    ctx_offsets_of_example: dict[int, list[list[tuple[int, int]]]] = {}
    for i, offsets in enumerate(all_offsets):
        seq_ids = enc.sequence_ids(i)
        ex = sample_of[i]
        answers = batch["answers"][ex]
        start, end = 0, 0
        if answers["answer_start"]:
            first_char = answers["answer_start"][0]
            start, end = _answer_tokens(offsets, seq_ids, first_char, first_char + len(answers["text"][0]))
        out["start_positions"].append(start)
        out["end_positions"].append(end)
        out["context_mask"].append([int(s == 1) for s in seq_ids])
        if for_eval:
            out["example_id"].append(batch["id"][ex])
            out["offset_mapping"].append(
                [list(o) if s == 1 else [-1, -1] for o, s in zip(offsets, seq_ids, strict=True)]
            )
            ctx = [tuple(o) for o, s in zip(offsets, seq_ids, strict=True) if s == 1]
            ctx_offsets_of_example.setdefault(ex, []).append(ctx)
    if for_eval:
        out["max_context"] = _max_context_per_window(ctx_offsets_of_example, out["context_mask"])
    return {**enc, **out}


def _max_context_per_window(
    ctx_offsets_of_example: dict[int, list[list[tuple[int, int]]]], context_masks: list[list[int]]
) -> list[list[int]]:
    """Per window, 1 on the context tokens for which this window is the max-context one (0 elsewhere)."""
    result: list[list[int]] = []
    for windows in ctx_offsets_of_example.values():  # windows of one example are consecutive
        # Global index of each window's first context token: where it reappears in the previous window.
        starts = [0]
        for prev, cur in itertools.pairwise(windows):
            step = prev.index(cur[0]) if cur[0] in prev else len(prev)
            starts.append(starts[-1] + step)
        flags = max_context_flags([(s, len(w)) for s, w in zip(starts, windows, strict=True)])
        for flag in flags:
            mask = np.zeros(len(context_masks[len(result)]), dtype=np.int8)
            mask[np.flatnonzero(context_masks[len(result)])] = flag
            result.append(mask.tolist())
    return result


def windows(
    examples: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, for_eval: bool, desc: str
) -> Dataset:
    return examples.map(
        make_windows,
        batched=True,
        num_proc=cfg.num_proc,
        remove_columns=examples.column_names,
        # Only what shapes the windows goes into the cache key: changing n_best or a threshold re-tokenises nothing.
        fn_kwargs={"tokenizer": tokenizer, "cfg": WindowSettings.of(cfg), "for_eval": for_eval},
        desc=desc,
    )


def build_features(raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """Train and eval windows; both maps are cached by `datasets` (keyed on data, tokenizer and settings)."""
    if not tokenizer.is_fast:
        raise DataError("the tokenizer must be a fast (Rust) tokenizer: windows need offset mappings")
    if tokenizer.padding_side != "right":
        raise DataError(f"tokenizer.padding_side={tokenizer.padding_side!r}: only 'right' is supported")

    train = windows(raw["train"], tokenizer, cfg, for_eval=False, desc="train windows")
    evaluation = windows(raw["validation"], tokenizer, cfg, for_eval=True, desc="eval windows")
    if len(train) == 0 or len(evaluation) == 0:
        raise DataError("no windows left after preprocessing: check data.max_train_samples/max_eval_samples")
    return train, evaluation


EVAL_COLUMNS = ("example_id", "offset_mapping", "max_context")


@dataclass
class EvalSet:
    """Eval windows (model inputs + EVAL_COLUMNS) and their examples, with stacked arrays for post-processing."""

    name: str
    features: Dataset
    ids: list[str]
    questions: list[str]
    contexts: list[str]
    gold: dict[str, list[str]]
    example_index: np.ndarray  # (N,) window → example
    offsets: np.ndarray  # (N, L, 2) char offsets, -1 outside the context
    max_context: np.ndarray  # (N, L) bool
    n_tokens: np.ndarray  # (N,) tokens per window; logits past them come from batch padding

    @classmethod
    def build(cls, name: str, examples: Dataset, features: Dataset) -> EvalSet:
        ids = list(examples["id"])
        position = {qid: i for i, qid in enumerate(ids)}
        columns = features.select_columns(list(EVAL_COLUMNS))[:]
        width = max((len(o) for o in columns["offset_mapping"]), default=1)
        offsets = np.full((len(features), width, 2), -1, dtype=np.int64)
        max_context = np.zeros((len(features), width), dtype=bool)
        for i, (off, mc) in enumerate(zip(columns["offset_mapping"], columns["max_context"], strict=True)):
            offsets[i, : len(off)] = off
            max_context[i, : len(mc)] = mc
        return cls(
            name=name,
            features=features,
            ids=ids,
            questions=list(examples["question"]),
            contexts=list(examples["context"]),
            gold={qid: list(a["text"]) for qid, a in zip(ids, examples["answers"], strict=True)},
            example_index=np.array([position[e] for e in columns["example_id"]], dtype=np.int64),
            offsets=offsets,
            max_context=max_context,
            n_tokens=np.array([len(o) for o in columns["offset_mapping"]], dtype=np.int64),
        )

    def model_inputs(self) -> Dataset:
        return self.features.remove_columns(list(EVAL_COLUMNS))


@dataclass
class QAData:
    train: Dataset  # training windows (model inputs + labels)
    eval_set: EvalSet  # the reported evaluation set
    held_out_set: EvalSet | None  # training questions held out to tune the null threshold
    rows: RowReport = field(default_factory=RowReport)  # rows dropped (data.bad_rows=skip) or trimmed


def prepare_data(cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> QAData:
    raw, rows = load_examples(cfg)
    held_out = None
    if cfg.null_threshold.policy == "held_out":  # split before windowing
        raw["train"], held_out = hold_out(
            raw["train"], cfg.null_threshold.held_out_fraction, cfg.null_threshold.held_out_by, seed
        )
    train, evaluation = build_features(raw, tokenizer, cfg)
    eval_set = EvalSet.build("validation", raw["validation"], _longest_first(evaluation))
    held_out_set = None
    if held_out is not None:
        held_out_feats = windows(held_out, tokenizer, cfg, for_eval=True, desc="held-out windows")
        held_out_set = EvalSet.build("held_out", held_out, _longest_first(held_out_feats))
    return QAData(train, eval_set, held_out_set, rows)


def hold_out(train: Dataset, fraction: float, by: str, seed: int) -> tuple[Dataset, Dataset]:
    """(kept, held out) training questions. By article: whole titles, drawn in a seeded order until `fraction` of
    the questions are held out, so no held-out paragraph stays in training through its other questions (which
    would make the threshold tuned on them optimistic). By question: a seeded random split of the questions."""
    if by == "question":
        split = train.train_test_split(test_size=fraction, seed=seed)
        return split["train"], split["test"]
    titles = train["title"]
    distinct = sorted(set(titles))
    if len(distinct) < 2:
        raise DataError(
            f"data.null_threshold.held_out_by=article needs articles: the training data has {len(distinct)} "
            "distinct title; use data.null_threshold.held_out_by=question"
        )
    size = Counter(titles)
    held: set[str] = set()
    held_questions = 0
    for i in np.random.default_rng(seed).permutation(len(distinct)):
        if held_questions >= fraction * len(titles) or len(held) == len(distinct) - 1:
            break
        held.add(distinct[i])
        held_questions += size[distinct[i]]
    out = np.array([t in held for t in titles])
    return train.select(np.flatnonzero(~out)), train.select(np.flatnonzero(out))


def _longest_first(features: Dataset) -> Dataset:
    """Eval order does not matter to post-processing (windows carry example ids); sorted, each padded batch is
    tight, and an out-of-memory error shows on the first batch rather than the last."""
    lengths = np.fromiter((len(x) for x in features["input_ids"]), dtype=np.int64, count=len(features))
    return features.select(np.argsort(-lengths, kind="stable"))
