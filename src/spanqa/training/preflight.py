"""Offline, before anything loads: is every Hub artifact the run needs on this machine? Each is looked up where the
libraries will look (the Hugging Face hub cache for models and tokenizers, the `datasets` cache for a dataset
loaded once before), and all that are missing are named at once, each with the `hf download` line that fetches
it and the override that points the run at the copy: one failed try, not one per artifact.

Local paths are not looked at here (the first second's checks do that); online, the libraries download.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from spanqa.config import Config
from spanqa.env import is_local
from spanqa.errors import ModelLoadError
from spanqa.models.checkpoint import TOKENIZER_FILES, WEIGHT_FILES, choose_tokenizer


@dataclass(frozen=True)
class Missing:
    key: str  # the setting naming the artifact
    name: str  # its Hub id
    download: str  # the `hf download` line that fetches it

    def __str__(self) -> str:
        return f"{self.key}={self.name!r} (`{self.download}`, then {self.key}=DIR)"


def _cached(repo_id: str, filename: str, repo_type: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)


def _datasets_cache() -> Path:
    """Where `datasets` keeps the datasets it has prepared (its config.HF_DATASETS_CACHE, read without importing it)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "datasets"


def _dataset_prepared(repo_id: str) -> bool:
    """Whether `load_dataset(repo_id)` has run here before: offline, `datasets` reuses what it prepared then, in
    <cache>/<namespace>___<name in snake case>/<config>/<version>/<hash>/."""
    namespace, name = repo_id.split("/")
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # datasets' camelcase_to_snakecase
    return any(Path(p).is_dir() for p in glob.glob(str(_datasets_cache() / f"{namespace}___{snake}" / "*" / "*" / "*")))


def missing_artifacts(cfg: Config) -> list[Missing]:
    """The Hub ids of model, tokenizer and dataset that are neither local nor cached."""
    missing = []
    model = cfg.model.name_or_path
    if not is_local(model) and not (_cached(model, "config.json") and any(_cached(model, f) for f in WEIGHT_FILES)):
        missing.append(Missing("model.name_or_path", model, f"hf download {model} --local-dir DIR"))
    choice = choose_tokenizer(cfg.model)
    tokenizer = choice.name_or_path
    if tokenizer != model and not is_local(tokenizer) and not any(_cached(tokenizer, f) for f in TOKENIZER_FILES):
        files = f'hf download {tokenizer} --include "*.json" --include "*.txt" --local-dir DIR'
        missing.append(Missing(choice.key, tokenizer, files))
    dataset = cfg.data.dataset_name
    if dataset is not None and not is_local(dataset) and not _dataset_prepared(dataset):
        missing.append(
            Missing("data.dataset_name", dataset, f"hf download {dataset} --repo-type dataset --local-dir DIR")
        )
    return missing


def check_offline_artifacts(cfg: Config) -> None:
    """One line listing every artifact an offline run cannot find."""
    missing = missing_artifacts(cfg)
    if missing:
        what = "is" if len(missing) == 1 else "are"
        raise ModelLoadError(
            f"the Hub is unreachable and {len(missing)} of the run's artifacts {what} neither local nor in the "
            f"Hugging Face cache: {'; '.join(map(str, missing))}"
        )
