"""Windows → padded batches for the model."""

from __future__ import annotations

from typing import Any


class WindowCollator:
    """Pads each batch to its longest window (not to max_length): most SQuAD windows are far shorter than 384."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, Any] = {}
        for key, value in rows[0].items():
            if isinstance(value, list):
                pad = self.pad_token_id if key == "input_ids" else 0
                batch[key] = torch.tensor([r[key] + [pad] * (longest - len(r[key])) for r in rows])
            else:
                batch[key] = torch.tensor([r[key] for r in rows])
        return batch
