"""Windows → padded batches: the longest window, a multiple, or the smallest fixed width that holds the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spanqa.data.collate import WindowCollator


def rows(*lengths: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(5, 100, n).tolist()
        out.append(
            {
                "input_ids": ids,
                "token_type_ids": [0] * (n // 2) + [1] * (n - n // 2),
                "attention_mask": [1] * n,
                "context_mask": [0] * (n // 2) + [1] * (n - n // 2 - 1) + [0],
                "start_positions": int(rng.integers(0, n)),
                "end_positions": int(rng.integers(0, n)),
            }
        )
    return out


def naive(batch_rows: list[dict], width: int, pad: int) -> dict[str, torch.Tensor]:
    """Row-by-row padding of Python lists: what the vectorised collator must equal."""
    out = {}
    for key, value in batch_rows[0].items():
        if isinstance(value, list):
            fill = pad if key == "input_ids" else 0
            out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in batch_rows])
        else:
            out[key] = torch.tensor([r[key] for r in batch_rows])
    return out


@pytest.mark.parametrize(
    ("collator", "lengths", "width"),
    [
        (WindowCollator(0), (37, 12, 50), 50),  # the longest window
        (WindowCollator(0, pad_to_multiple_of=8), (37, 12, 50), 56),
        (WindowCollator(0, widths=[32, 64, 96]), (17, 30), 32),  # the smallest width that holds the batch
        (WindowCollator(0, widths=[32, 64, 96]), (17, 33), 64),
        (WindowCollator(0, widths=[32, 64, 96]), (96,), 96),
    ],
)
def test_batches_are_padded_to_their_width_exactly_as_row_by_row_padding(collator, lengths, width) -> None:
    batch_rows = rows(*lengths)
    batch = collator(batch_rows)
    expected = naive(batch_rows, width, collator.pad_token_id)
    assert batch.keys() == expected.keys()
    for key in batch:
        assert batch[key].dtype == torch.long and torch.equal(batch[key], expected[key]), key


def test_fixed_widths_bound_the_shapes_a_model_sees() -> None:
    collator = WindowCollator(0, widths=[32, 64, 96])
    rng = np.random.default_rng(1)
    shapes = {collator(rows(*rng.integers(1, 97, 8).tolist()))["input_ids"].shape[1] for _ in range(50)}
    assert shapes <= {32, 64, 96}
    with pytest.raises(ValueError, match="a window of 97 tokens is longer than the widest pad width 96"):
        collator(rows(97))
