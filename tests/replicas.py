"""Tiny, byte-for-byte-shaped replicas of the real artifacts a run consumes, so tests run the real loading code.

Each builder follows the real file layout (documented with the builder); only the sizes are tiny:
- `spanbert_release`: SpanBERT as its authors ship it (`spanbert_hf_base.tar.gz`) and as the Hub repo
  `SpanBERT/spanbert-base-cased` serves it (`hub_layout=True`). config.json without `model_type` (the tarball and
  the Hub copy until April 2020) or with it (the Hub copy since), keys serialised sorted with indent 2;
  `pytorch_model.bin` as a 2020-era legacy (non-zip) pickle of an OrderedDict of **fp16** tensors named `bert.*`
  only: no pooler, no `cls.*` pre-training heads, no position_ids. The Hub copy also holds BERT's cased `vocab.txt`
  and no tokenizer_config.json, so `AutoTokenizer` loads it lower-casing.
- `bert_base_cased_tokenizer`: the tokenizer files of `google-bert/bert-base-cased`: vocab.txt with BERT's special
  token ids ([PAD]=0, [unused1..99], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), tokenizer.json,
  tokenizer_config.json `{"do_lower_case": false, "model_max_length": 512}` and a config.json (model_type bert).
- `hub_cache_snapshot`: a Hub repo as huggingface_hub's cache holds it after a download (`HF_HOME/hub/
  models--<org>--<name>/`: `refs/main` naming the commit, `blobs/<sha256>` holding each file once, and
  `snapshots/<commit>/<file>` as relative symlinks to the blobs): what `from_pretrained(<repo id>)` reads with
  HF_HUB_OFFLINE=1, e.g. `google-bert/bert-base-cased` cached by an earlier SpanBERT run.
- `prepared_hub_dataset`: a Hub dataset as the `datasets` cache holds it once `load_dataset(<repo id>)` has run
  online (`HF_HOME/datasets/<namespace>___<name>/<config>/0.0.0/<hash>/`: dataset_info.json and
  `<name>-<split>.arrow`), which is what `load_dataset(<repo id>)` reuses offline.
- `squad_v2_hub_dataset`: a local copy of the Hub dataset `rajpurkar/squad_v2` (what `hf download
  rajpurkar/squad_v2 --repo-type dataset --local-dir DIR` gives): README.md whose YAML front matter declares the
  `squad_v2` config and its features, and `squad_v2/{train,validation}-00000-of-00001.parquet` with columns id,
  title, context, question and answers as a struct of lists {text: list<string>, answer_start: list<int32>}.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _write_json(path: Path, blob: dict[str, Any]) -> None:
    path.write_text(json.dumps(blob, indent=2, sort_keys=True) + "\n")


def bert_vocab(word_pieces: list[str]) -> list[str]:
    """A vocabulary laid out like bert-base-cased's: its special tokens at their ids, then the word pieces."""
    return SPECIALS + [t for t in word_pieces if t not in SPECIALS and not (t.startswith("[") and t.endswith("]"))]


def bert_base_cased_tokenizer(out: Path, vocab: list[str]) -> Path:
    from transformers import BertTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "model_max_length": 512}))
    # tokenizer.json: the same WordPiece model, cased BERT normaliser, as the Hub file holds.
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False).backend_tokenizer.save(
        str(out / "tokenizer.json")
    )
    _write_json(
        out / "config.json",
        {
            "architectures": ["BertForMaskedLM"],
            "attention_probs_dropout_prob": 0.1,
            "gradient_checkpointing": False,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512,
            "model_type": "bert",
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "transformers_version": "4.6.0.dev0",
            "type_vocab_size": 2,
            "use_cache": True,
            "vocab_size": len(vocab),
            **TINY_ENCODER,
        },
    )
    return out


def spanbert_state_dict(config: dict[str, int], seed: int = 0) -> collections.OrderedDict:
    """Encoder weights under `bert.*` in fp16, LayerNorm weight/bias, nothing else."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).half()

    sd: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
    sd["bert.embeddings.word_embeddings.weight"] = rand(config["vocab_size"], h)
    sd["bert.embeddings.position_embeddings.weight"] = rand(config["max_position_embeddings"], h)
    sd["bert.embeddings.token_type_embeddings.weight"] = rand(config["type_vocab_size"], h)
    sd["bert.embeddings.LayerNorm.weight"] = torch.ones(h).half()
    sd["bert.embeddings.LayerNorm.bias"] = torch.zeros(h).half()
    for layer in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{layer}."
        for name in ("query", "key", "value"):
            sd[f"{p}attention.self.{name}.weight"], sd[f"{p}attention.self.{name}.bias"] = rand(h, h), rand(h)
        sd[f"{p}attention.output.dense.weight"], sd[f"{p}attention.output.dense.bias"] = rand(h, h), rand(h)
        sd[f"{p}attention.output.LayerNorm.weight"] = torch.ones(h).half()
        sd[f"{p}attention.output.LayerNorm.bias"] = torch.zeros(h).half()
        sd[f"{p}intermediate.dense.weight"], sd[f"{p}intermediate.dense.bias"] = rand(i, h), rand(i)
        sd[f"{p}output.dense.weight"], sd[f"{p}output.dense.bias"] = rand(h, i), rand(h)
        sd[f"{p}output.LayerNorm.weight"] = torch.ones(h).half()
        sd[f"{p}output.LayerNorm.bias"] = torch.zeros(h).half()
    return sd


def spanbert_release(out: Path, vocab: list[str], hub_layout: bool = False, seed: int = 0) -> Path:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "attention_probs_dropout_prob": 0.1,
        "directionality": "bidi",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "vocab_size": len(vocab),
        **TINY_ENCODER,
    }
    if hub_layout:
        config |= {"layer_norm_eps": 1e-12, "model_type": "bert", "pad_token_id": 0}
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    _write_json(out / "config.json", config)
    torch.save(spanbert_state_dict(config, seed), out / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    return out


def hub_cache_snapshot(hf_home: Path, repo_id: str, files: Path, commit: str = "a" * 40) -> Path:
    """Every file of the dir `files` as the cached snapshot of model repo `repo_id`; returns the snapshot dir."""
    import hashlib
    import os

    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(files.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / f.name)
    return snapshot


SQUAD_V2_CARD = """---
language:
- en
license: cc-by-sa-4.0
pretty_name: SQuAD2.0
task_categories:
- question-answering
task_ids:
- open-domain-qa
- extractive-qa
dataset_info:
  config_name: squad_v2
  features:
  - name: id
    dtype: string
  - name: title
    dtype: string
  - name: context
    dtype: string
  - name: question
    dtype: string
  - name: answers
    sequence:
    - name: text
      dtype: string
    - name: answer_start
      dtype: int32
  splits:
  - name: train
    num_bytes: {train_bytes}
    num_examples: {train_rows}
  - name: validation
    num_bytes: {validation_bytes}
    num_examples: {validation_rows}
configs:
- config_name: squad_v2
  data_files:
  - split: train
    path: squad_v2/train-*
  - split: validation
    path: squad_v2/validation-*
  default: true
---

# Dataset Card for SQuAD 2.0 (tiny replica)
"""


def squad_rows(blob: dict[str, Any]) -> list[dict[str, Any]]:
    """Official-format SQuAD JSON → the Hub dataset's rows."""
    return [
        {
            "id": qa["id"],
            "title": article.get("title", ""),
            "context": paragraph["context"],
            "question": qa["question"],
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            },
        }
        for article in blob["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def squad_v2_hub_dataset(out: Path, train: dict[str, Any], validation: dict[str, Any], drop: str | None = None) -> Path:
    """`drop` leaves one column out of both splits (a dataset in another schema)."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features(
        {
            "id": Value("string"),
            "title": Value("string"),
            "context": Value("string"),
            "question": Value("string"),
            "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
        }
    )
    (out / "squad_v2").mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}
    for split, blob in (("train", train), ("validation", validation)):
        ds = Dataset.from_list(squad_rows(blob), features=features)
        if drop is not None:
            ds = ds.remove_columns(drop)
        ds.to_parquet(str(out / "squad_v2" / f"{split}-00000-of-00001.parquet"))
        sizes[f"{split}_rows"], sizes[f"{split}_bytes"] = len(ds), ds.data.nbytes
    card = SQUAD_V2_CARD.format(**sizes)
    if drop is not None:  # the card describes what the files hold
        card = card.replace(f"  - name: {drop}\n    dtype: string\n", "")
    (out / "README.md").write_text(card)
    return out


def prepared_hub_dataset(hf_home: Path, repo_id: str, config_name: str, hub_dir: Path) -> Path:
    """`hub_dir` (a `squad_v2_hub_dataset` copy of the repo) prepared into the datasets cache as `repo_id`, the way
    an online `load_dataset(repo_id)` leaves it; returns the prepared dir."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    files = {split: [str(p) for p in sorted((hub_dir / config_name).glob(f"{split}-*.parquet"))]
             for split in ("train", "validation")}  # fmt: skip
    cache = hf_home / "datasets"
    # The Hub builder names the dir <namespace>___<name>/<config>/0.0.0/<hash> and its files <name>-<split>.arrow;
    # built here from local files, the same parquet builder needs that name given whole, and its config dir renamed
    # from "<config>-<digest of the data files>" to the config's name.
    builder = Parquet(cache_dir=str(cache), dataset_name=f"{namespace}___{name}", config_name=config_name,
                      data_files=files, hash="0" * 16)  # fmt: skip
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    for arrow in prepared.glob(f"{namespace}___{name}-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace(f"{namespace}___{name}-", f"{name}-")))
    info = json.loads((prepared / "dataset_info.json").read_text())
    (prepared / "dataset_info.json").write_text(json.dumps({**info, "dataset_name": name, "config_name": config_name}))
    config_dir = prepared.parents[1]
    config_dir.rename(config_dir.with_name(config_name))
    for lock in cache.rglob("*.lock"):
        lock.unlink()
    return config_dir.with_name(config_name) / prepared.parent.name / prepared.name
