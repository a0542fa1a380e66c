"""Windows → padded batches for the model.

A batch is padded to its longest window (most SQuAD windows are far shorter than 384 tokens: fixed padding would
spend over half of the encoder's work on padding), rounded up to a multiple (8 on GPUs, for tensor cores), or, with
`widths`, to the smallest of a few fixed widths that holds it: a compiled model then sees at most len(widths)
shapes, one graph (and one CUDA graph) each, instead of recompiling for new lengths.

Collation is vectorised: each column's rows are flattened into one array and scattered into the padded batch
under a length mask, instead of padding Python lists row by row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np


class WindowCollator:
    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None = None, widths: Sequence[int] | None = None
    ) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.widths = sorted(widths) if widths else None

    def width(self, longest: int) -> int:
        """The padded width of a batch whose longest window has `longest` tokens."""
        if self.widths is not None:
            fitting = [w for w in self.widths if w >= longest]
            if not fitting:
                raise ValueError(f"a window of {longest} tokens is longer than the widest pad width {self.widths[-1]}")
            return fitting[0]
        if self.pad_to_multiple_of:
            return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return longest

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        lengths = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int64, count=len(rows))
        width = self.width(int(lengths.max()))
        inside = np.arange(width) < lengths[:, None]  # (B, width): the positions that hold a token
        total = int(lengths.sum())
        batch: dict[str, Any] = {}
        for key, first in rows[0].items():
            if isinstance(first, list):  # a per-token column: as long as input_ids in every row
                padded = np.full((len(rows), width), self.pad_token_id if key == "input_ids" else 0, dtype=np.int64)
                padded[inside] = np.fromiter(itertools.chain.from_iterable(r[key] for r in rows), np.int64, total)
                batch[key] = torch.from_numpy(padded)
            else:
                batch[key] = torch.tensor([r[key] for r in rows])
        return batch
