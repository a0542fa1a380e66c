"""Offline, isolated test environment and the tiny stand-ins every test shares.

The Hub and W&B are unreachable here: HF_HUB_OFFLINE makes Hub calls fail at once instead of retrying for
20-100 s, and HF_HOME/WANDB_DIR point into a temp dir so nothing touches the user's caches. These variables
are read when transformers/datasets are imported, hence set before any import below.
"""

from __future__ import annotations

import os
import sys
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
    HYDRA_FULL_ERROR="0",
)
os.environ.pop("WANDB_API_KEY", None)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:  # also works without `pip install -e .`
    sys.path.insert(0, str(SRC))

from spanqa.config import register_configs  # noqa: E402

register_configs()  # the structured schema conf/config.yaml's defaults list starts with


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """Small demo assets (SQuAD-v2 JSON, WordPiece tokenizer, tiny BERT), built once per session."""
    from spanqa.demo import build_demo_assets

    return build_demo_assets(_TMP / "demo", train_examples=4000, dev_examples=400, seed=0)


@pytest.fixture(scope="session")
def tokenizer(demo_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_dir / "tiny-bert")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m spanqa...` subprocesses: the test isolation plus src on the path."""
    return {**os.environ, "PYTHONPATH": str(SRC), **extra}
