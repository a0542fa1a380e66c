"""The head registry: the one place that knows each head, held against the config schema, checkpoints and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spanqa.config import CRF_FORWARD_ALGORITHMS, HEAD_NAMES, ModelConfig
from spanqa.data.windows import EvalSet
from spanqa.errors import ConfigError, ModelLoadError
from spanqa.models.heads import BASELINE, HEADS, get_head, head_of_checkpoint, load_model


def test_the_schema_allows_exactly_the_registered_heads_and_crf_algorithms() -> None:
    from spanqa.models.crf import FORWARD_ALGORITHMS

    assert set(HEAD_NAMES) == set(HEADS) and BASELINE in HEADS
    assert set(CRF_FORWARD_ALGORITHMS) == set(FORWARD_ALGORITHMS)
    with pytest.raises(ConfigError, match=r"^model\.head='pointer' is invalid: allowed values are span, crf, bio$"):
        get_head("pointer")
    from spanqa.models.crf import SpanBertCrfConfig
    from spanqa.models.tagging import SpanBertBioConfig

    assert (HEADS["crf"].checkpoint_type, HEADS["bio"].checkpoint_type) == (
        SpanBertCrfConfig.model_type,
        SpanBertBioConfig.model_type,
    )


def test_each_heads_model_returns_the_outputs_it_declares(demo_dir: Path, tokenizer) -> None:
    import torch

    enc = tokenizer(["Where was Kalo born?"], ["Kalo was born in Dakar."], return_tensors="pt")
    context = torch.tensor([[int(s == 1) for s in enc.sequence_ids(0)]])
    for name, spec in HEADS.items():
        model = load_model(ModelConfig(name_or_path=str(demo_dir / "tiny-bert"), head=name), max_answer_length=5)
        out = model.eval()(**enc, context_mask=context) if name != "span" else model.eval()(**enc)
        shapes = [tuple(getattr(out, field).shape) for field in spec.outputs]
        assert all(s[0] == 1 for s in shapes), name
        assert spec.per_token == (shapes[0][1:] == (enc["input_ids"].shape[1],)), name


def test_a_saved_checkpoint_names_its_head(tmp_path: Path, demo_dir: Path) -> None:
    assert head_of_checkpoint(demo_dir / "tiny-bert").name == "span"
    assert head_of_checkpoint("SpanBERT/spanbert-base-cased").name == "span"  # a Hub id: start/end by default
    crf = tmp_path / "crf"
    crf.mkdir()
    (crf / "config.json").write_text(json.dumps({"model_type": HEADS["crf"].checkpoint_type}))
    (crf / "model.safetensors").write_text("")
    assert head_of_checkpoint(crf).name == "crf"
    with pytest.raises(ModelLoadError, match=r"is a saved crf model: use model\.head=crf$"):
        load_model(ModelConfig(name_or_path=str(crf), head="span"), max_answer_length=5)


def test_start_end_candidates_ignore_positions_past_each_window(tokenizer) -> None:
    """Padding logits (whatever the batch made them) never become candidates: only each window's own tokens."""
    from datasets import Dataset

    from spanqa.config import DataConfig
    from spanqa.data.windows import make_windows

    rows = {
        "id": ["a", "b"],
        "question": ["Where was Kalo born?", "What?"],
        "context": ["Kalo was born in Dakar, far from here.", "Dakar."],
        "answers": [{"text": [], "answer_start": []}] * 2,
    }
    windows = make_windows(rows, tokenizer, DataConfig(), for_eval=True)
    es = EvalSet.build("t", Dataset.from_dict(rows), Dataset.from_dict(windows))
    width = 40
    rng = np.random.default_rng(0)
    start, end = rng.standard_normal((2, len(es.ids), width)).astype(np.float32)
    start[:, es.n_tokens.min() :] += 100.0  # huge logits on the shorter window's padding
    cands = HEADS["span"].candidates((start, end), es, 5, 10)
    valid = cands.start >= 0
    assert (cands.start[valid] < np.repeat(es.n_tokens, cands.start.shape[1]).reshape(cands.start.shape)[valid]).all()
