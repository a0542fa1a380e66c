"""What the benchmarks share: the models they build (random init, in a few sizes) and how busy the machine was
while they ran."""

from __future__ import annotations

import os

from transformers import BertConfig, BertForQuestionAnswering, PreTrainedModel

from spanqa.models.crf import SpanBertCrfConfig, SpanBertCrfForQuestionAnswering
from spanqa.models.tagging import SpanBertBioConfig, SpanBertBioForQuestionAnswering

# BERT-base is SpanBERT-base's shape; tiny keeps CPU smoke runs (and CI) to seconds.
SIZES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 256},
}
VOCAB_SIZE = 28996  # SpanBERT cased


def loadavg() -> str:
    """The 1/5/15-minute load averages: timings from a shared machine need them to be read."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def random_model(head: str, size: str, attn: str = "sdpa", forward_algorithm: str = "parallel") -> PreTrainedModel:
    """A randomly initialised QA model of a head (span, crf, bio) and a benchmark size: weights do not change speed,
    and nothing is downloaded."""
    encoder = BertConfig(vocab_size=VOCAB_SIZE, **SIZES[size])
    config: BertConfig | SpanBertCrfConfig | SpanBertBioConfig = encoder
    if head == "crf":
        config = SpanBertCrfConfig(encoder=encoder.to_dict(), forward_algorithm=forward_algorithm)
    elif head == "bio":
        config = SpanBertBioConfig(encoder=encoder.to_dict())
    config._attn_implementation = attn  # a BIO model hands it on to its encoder
    model_cls = {"crf": SpanBertCrfForQuestionAnswering, "bio": SpanBertBioForQuestionAnswering}
    return model_cls.get(head, BertForQuestionAnswering)(config)
