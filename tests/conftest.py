"""Offline, isolated test environment and the session-wide stand-ins (importable helpers live in tests/helpers.py).

The Hub and W&B are unreachable here: HF_HUB_OFFLINE makes Hub calls fail at once instead of retrying for
20-100 s, and HF_HOME/WANDB_DIR point into a temp dir so nothing touches the user's caches. These variables
are read when transformers/datasets are imported, hence set before any import below.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="spanqa-tests-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    HF_HOME=str(_TMP / "hf"),
    WANDB_DIR=str(_TMP / "wandb"),
    WANDB_CONFIG_DIR=str(_TMP / "wandb-config"),
    WANDB_CACHE_DIR=str(_TMP / "wandb-cache"),
    WANDB_MODE="disabled",
    WANDB_SILENT="true",
    TOKENIZERS_PARALLELISM="false",
    OMP_NUM_THREADS="1",  # tiny models: one thread is faster, and parallel subprocesses don't oversubscribe
)
for name in ("WANDB_API_KEY", "HYDRA_FULL_ERROR"):  # what a user's shell may hold: the commands decide it themselves
    os.environ.pop(name, None)

import pytest  # noqa: E402

from spanqa.config import register_configs  # noqa: E402

register_configs()  # the structured schema conf/config.yaml's defaults list starts with


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """Small demo assets (SQuAD-v2 JSON, WordPiece tokenizer, tiny BERT), built once per session."""
    from spanqa.data.demo import build_demo_assets

    return build_demo_assets(_TMP / "demo", train_examples=4000, dev_examples=400, seed=0)


@pytest.fixture(scope="session")
def tokenizer(demo_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_dir / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_dir(demo_dir: Path) -> Path:
    """The demo's untrained tiny BERT checkpoint (with its tokenizer)."""
    return demo_dir / "tiny-bert"


@pytest.fixture(scope="session")
def trained_dir(tiny_dir: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT after 40 Adam steps on TOY_QUESTION: its logits point at "Kobe", far from a tie."""
    import torch
    from transformers import BertForQuestionAnswering

    from spanqa.config import DataConfig
    from spanqa.data.windows import make_windows
    from tests.helpers import TOY_CONTEXT, TOY_QUESTION

    torch.manual_seed(0)
    start = TOY_CONTEXT.index("Kobe")
    batch = {
        "id": ["toy"],
        "question": [TOY_QUESTION],
        "context": [TOY_CONTEXT],
        "answers": [{"text": ["Kobe"], "answer_start": [start]}],
    }
    window = make_windows(batch, tokenizer, DataConfig(), for_eval=False)
    inputs = {k: torch.tensor(window[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    labels = {k: torch.tensor(window[k]) for k in ("start_positions", "end_positions")}
    assert labels["start_positions"].item() > 0  # the answer is inside the window
    model = BertForQuestionAnswering.from_pretrained(tiny_dir)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        model(**inputs, **labels).loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("trained")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def real(demo_dir: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Replicas over the demo's text: its word pieces in BERT's vocabulary layout, so answers are learnable."""
    from tests import replicas

    root = tmp_path_factory.mktemp("real")
    vocab = replicas.bert_vocab([t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])])
    train, dev = (json.loads((demo_dir / f).read_text()) for f in ("train.json", "dev.json"))
    return {
        "release": replicas.spanbert_release(root / "spanbert_hf_base", vocab),
        "hub_model": replicas.spanbert_release(root / "spanbert-base-cased", vocab, hub_layout=True),
        "tokenizer": replicas.bert_base_cased_tokenizer(root / "bert-base-cased", vocab),
        "dataset": replicas.squad_v2_hub_dataset(root / "squad_v2", train, dev),
        "no_question": replicas.squad_v2_hub_dataset(root / "no_question", train, dev, drop="question"),
    }


@pytest.fixture(scope="session")
def hub_cache(real: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME as a machine has it after one online run of the defaults: SpanBERT/spanbert-base-cased and
    google-bert/bert-base-cased in the hub cache, rajpurkar/squad_v2 prepared by `datasets`. With it, the documented
    commands run offline as written."""
    from tests import replicas

    home = tmp_path_factory.mktemp("hf_home")
    replicas.hub_cache_snapshot(home, "SpanBERT/spanbert-base-cased", real["hub_model"])
    replicas.hub_cache_snapshot(home, "google-bert/bert-base-cased", real["tokenizer"])
    replicas.prepared_hub_dataset(home, "rajpurkar/squad_v2", "squad_v2", real["dataset"])
    return home
