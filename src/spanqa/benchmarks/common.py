"""What the benchmarks share: the model sizes they build and how busy the machine was while they ran."""

from __future__ import annotations

import os

# BERT-base is SpanBERT-base's shape; tiny keeps CPU smoke runs (and CI) to seconds.
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256},
}
VOCAB_SIZE = 28996  # SpanBERT cased


def loadavg() -> str:
    """The 1/5/15-minute load averages: timings from a shared machine need them to be read."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
