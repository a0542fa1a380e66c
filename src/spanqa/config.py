"""Structured-config schemas for the Hydra tree in conf/, and the checks Hydra's type system cannot express.

Hydra merges every YAML node onto these dataclasses, so an unknown key or a wrongly typed value fails while
composing. Range and cross-field checks live in `__post_init__`, which runs when `validate` turns the composed
config into dataclass objects: an impossible value fails in the first second, before any model or data is loaded.
"""

from __future__ import annotations

import difflib
import logging
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from spanqa.errors import ConfigError

log = logging.getLogger(__name__)


# Field metadata of the settings that change how a run goes, not what it computes (logging, workers, batch size at
# evaluation, names): a relaunch may differ in them and still be the same job, and the comparison never splits
# groups by them. `OPERATIONAL_KEYS` below is derived from these marks.
OPERATIONAL = {"operational": True}
UINT32_MAX = 2**32 - 1  # seeds: numpy's and torch's generators take [0, 2^32 - 1]


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _one_of(key: str, value: Any, allowed: tuple[Any, ...]) -> None:
    names = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
    _require(value in allowed and type(value) in {type(a) for a in allowed}, key, value, "allowed values are " + names)


# Allowed values that name code elsewhere: the heads of `spanqa.models.heads.HEADS` and the CRF's training-loss
# algorithms (`spanqa.models.crf.FORWARD_ALGORITHMS`). Written here so that validation imports no model code; a
# test holds them equal.
HEAD_NAMES = ("span", "crf", "bio")
CRF_FORWARD_ALGORITHMS = ("parallel", "pytorch_crf")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # torch.compile's modes

# Single-segment ids the pinned huggingface_hub rejects ("Repository id must be 'namespace/name'"), mapped to the
# canonical repos that replaced them on the Hub.
CANONICAL_DATASETS = {"squad_v2": "rajpurkar/squad_v2", "squad": "rajpurkar/squad"}


def canonical_dataset_id(name: str) -> str:
    """A local dataset dir as given; a Hub id as 'namespace/name', resolving the known single-segment ids."""
    if Path(name).expanduser().exists():
        return name
    if name in CANONICAL_DATASETS:
        log.info("data.dataset_name=%r is the Hub dataset %r", name, CANONICAL_DATASETS[name])
        return CANONICAL_DATASETS[name]
    known = ", ".join(f"{k} -> {v}" for k, v in CANONICAL_DATASETS.items())
    segments = name.split("/")
    _require(
        len(segments) == 2 and all(segments) and not name.startswith((".", "~")),
        "data.dataset_name",
        name,
        f"not a local directory, and Hub dataset ids are 'namespace/name' (known short names: {known})",
    )
    return name


@dataclass
class ModelConfig:
    name: str = "spanbert"
    name_or_path: str = "SpanBERT/spanbert-base-cased"
    tokenizer_name_or_path: str | None = None  # None: the checkpoint's own tokenizer
    # The tokenizer of a checkpoint that ships none stating its casing (SpanBERT ships a bare vocab.txt or nothing).
    tokenizer_fallback: str | None = "google-bert/bert-base-cased"
    # The model type of a checkpoint whose config.json has none (the SpanBERT release has none).
    architecture: str = "bert"
    head: str = "span"
    num_candidates: int = 4  # spans a BIO head (crf, bio) keeps per window
    crf_forward_algorithm: str = "parallel"
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        _one_of("model.head", self.head, HEAD_NAMES)
        _one_of("model.attn_implementation", self.attn_implementation, ("eager", "sdpa", "flash_attention_2"))
        _require(bool(self.name_or_path), "model.name_or_path", self.name_or_path, "a Hub id or a local directory")
        _require(bool(self.architecture), "model.architecture", self.architecture, "a transformers model type (bert)")
        _require(self.num_candidates >= 1, "model.num_candidates", self.num_candidates, "must be >= 1")
        _one_of("model.crf_forward_algorithm", self.crf_forward_algorithm, CRF_FORWARD_ALGORITHMS)


@dataclass
class NullThresholdConfig:
    policy: str = "fixed"
    value: float = 0.5
    held_out_fraction: float = 0.05
    # Whole articles: questions on a held-out paragraph must not stay in training through its other questions.
    held_out_by: str = "article"

    def __post_init__(self) -> None:
        _one_of("data.null_threshold.policy", self.policy, ("fixed", "tune_on_dev", "held_out"))
        _one_of("data.null_threshold.held_out_by", self.held_out_by, ("article", "question"))
        _require(0.0 <= self.value <= 1.0, "data.null_threshold.value", self.value, "a probability in [0, 1]")
        _require(
            0.0 < self.held_out_fraction < 1.0,
            "data.null_threshold.held_out_fraction",
            self.held_out_fraction,
            "must lie strictly between 0 and 1",
        )


@dataclass
class DataConfig:
    dataset_name: str | None = "rajpurkar/squad_v2"
    train_file: str | None = None
    validation_file: str | None = None
    max_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    n_best: int = 20
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_proc: int | None = field(default=None, metadata=OPERATIONAL)
    bad_rows: str = "error"  # a malformed training row: error (stop) | skip (drop it, list it in the run dir)
    null_threshold: NullThresholdConfig = field(default_factory=NullThresholdConfig)

    def __post_init__(self) -> None:
        if self.train_file is not None or self.validation_file is not None:
            _require(
                self.train_file is not None and self.validation_file is not None,
                "data.validation_file" if self.validation_file is None else "data.train_file",
                None,
                "local data needs both data.train_file and data.validation_file",
            )
            self.dataset_name = None  # local files replace the dataset: no need to also pass dataset_name=null
        else:
            _require(
                self.dataset_name is not None,
                "data.dataset_name",
                None,
                "set a Hub dataset id or local dataset dir, or data.train_file and data.validation_file",
            )
            self.dataset_name = canonical_dataset_id(self.dataset_name)  # type: ignore[arg-type]
        _require(self.max_length >= 32, "data.max_length", self.max_length, "must be >= 32")
        _require(
            0 < self.doc_stride < self.max_length,
            "data.doc_stride",
            self.doc_stride,
            f"must be > 0 and < data.max_length={self.max_length}",
        )
        # Window = [CLS] question [SEP] context [SEP]; the overlap must leave room for new context tokens.
        _require(self.max_query_length >= 1, "data.max_query_length", self.max_query_length, "must be >= 1")
        _require(
            self.max_query_length < self.max_length - 3,
            "data.max_query_length",
            self.max_query_length,
            f"must be < data.max_length - 3 = {self.max_length - 3} (a window also holds [CLS], two [SEP] and context)",
        )
        room = self.max_length - self.max_query_length - 3
        _require(
            self.doc_stride < room,
            "data.doc_stride",
            self.doc_stride,
            f"must be < max_length - max_query_length - 3 = {room}",
        )
        _require(self.max_answer_length >= 1, "data.max_answer_length", self.max_answer_length, "must be >= 1")
        _require(self.n_best >= 1, "data.n_best", self.n_best, "must be >= 1")
        _one_of("data.bad_rows", self.bad_rows, ("error", "skip"))
        for key in ("max_train_samples", "max_eval_samples", "num_proc"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"data.{key}", value, "must be null or >= 1")


@dataclass
class OptimizerConfig:
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    head_lr: float | None = None
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optimizer.lr", self.lr, "must be > 0")
        _require(self.head_lr is None or self.head_lr > 0, "optimizer.head_lr", self.head_lr, "null or > 0")
        _require(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "must be >= 0")
        _require(0 <= self.warmup_ratio < 1, "optimizer.warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        for key in ("adam_beta1", "adam_beta2"):
            _require(0 <= getattr(self, key) < 1, f"optimizer.{key}", getattr(self, key), "must be in [0, 1)")
        _require(self.adam_epsilon > 0, "optimizer.adam_epsilon", self.adam_epsilon, "must be > 0")
        _require(self.max_grad_norm > 0, "optimizer.max_grad_norm", self.max_grad_norm, "must be > 0")


@dataclass
class TrainerConfig:
    epochs: int = 6
    batch_size: int = 8
    eval_batch_size: int = field(default=64, metadata=OPERATIONAL)
    evals_per_epoch: int = 1  # evaluations (and checkpoints) per epoch; best checkpoint chosen among them
    grad_accum_steps: int = 1
    max_steps: int = -1
    precision: str = "auto"
    logging_steps: int = field(default=50, metadata=OPERATIONAL)
    save_total_limit: int = field(default=2, metadata=OPERATIONAL)
    # None: 2 on a GPU (collation off the critical path), 0 on CPU
    dataloader_workers: int | None = field(default=None, metadata=OPERATIONAL)
    group_by_length: bool = False
    device: str = "auto"
    # Batches padded to the smallest of these widths that fits (null: each batch to its longest window): a
    # compiled model then sees at most len(pad_widths) shapes, one graph (and CUDA graph) each.
    pad_widths: list[int] | None = None
    compile: bool | str = False  # false | default | reduce-overhead (CUDA graphs) | max-autotune; true = default
    compile_backend: str = "inductor"  # inductor | aot_eager | eager (the last two: debugging, CPU tests)
    cpu_threads: int | None = field(default=None, metadata=OPERATIONAL)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size", "evals_per_epoch", "grad_accum_steps", "logging_steps"):
            _require(getattr(self, key) >= 1, f"trainer.{key}", getattr(self, key), "must be >= 1")
        _require(self.max_steps == -1 or self.max_steps >= 1, "trainer.max_steps", self.max_steps, "-1 or >= 1")
        _require(self.save_total_limit >= 1, "trainer.save_total_limit", self.save_total_limit, "must be >= 1")
        _require(
            self.dataloader_workers is None or self.dataloader_workers >= 0,
            "trainer.dataloader_workers",
            self.dataloader_workers,
            "null (automatic) or >= 0",
        )
        if self.compile is True:
            self.compile = "default"
        _one_of("trainer.compile", self.compile, (False, *COMPILE_MODES))
        _one_of("trainer.compile_backend", self.compile_backend, ("inductor", "aot_eager", "eager"))
        if self.pad_widths is not None:
            _require(
                len(self.pad_widths) >= 1
                and all(w >= 8 for w in self.pad_widths)
                and list(self.pad_widths) == sorted(set(self.pad_widths)),
                "trainer.pad_widths",
                self.pad_widths,
                "null or increasing widths >= 8, e.g. [128, 192, 256, 320, 384]",
            )
        _require(
            self.cpu_threads is None or self.cpu_threads >= 1, "trainer.cpu_threads", self.cpu_threads, "null or >= 1"
        )
        _one_of("trainer.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _one_of("trainer.device", self.device, ("auto", "cpu"))


@dataclass
class LoggerConfig:
    backend: str = "wandb"
    project: str = "spanqa"
    entity: str | None = None
    group: str = "spanbert"
    mode: str = "auto"
    tags: list[str] = field(default_factory=list)
    log_model: bool = False  # W&B: the best model as an artifact at the end

    def __post_init__(self) -> None:
        _one_of("logger.backend", self.backend, ("wandb", "tensorboard", "none"))
        _one_of("logger.mode", self.mode, ("auto", "online", "offline", "disabled"))


@dataclass
class DemoConfig:
    dir: str = "outputs/demo_assets"
    train_examples: int = 4000
    dev_examples: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.train_examples >= 10, "demo.train_examples", self.train_examples, "must be >= 10")
        _require(self.dev_examples >= 10, "demo.dev_examples", self.dev_examples, "must be >= 10")
        _require(0 <= self.seed <= UINT32_MAX, "demo.seed", self.seed, f"must be in [0, {UINT32_MAX}]")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=OPERATIONAL)
    demo: DemoConfig | None = None
    seed: int = 42
    run_name: str = field(default="spanbert-seed42", metadata=OPERATIONAL)
    optimized_metric: str = field(default="eval_f1", metadata=OPERATIONAL)
    resume: bool = field(default=False, metadata=OPERATIONAL)
    # a relaunched job whose config changed: run it again (the old run is kept aside)
    rerun_changed: bool = field(default=False, metadata=OPERATIONAL)

    def __post_init__(self) -> None:
        _require(0 <= self.seed <= UINT32_MAX, "seed", self.seed, f"must be in [0, {UINT32_MAX}]")
        widths = self.trainer.pad_widths
        if widths is not None:
            _require(
                widths[-1] >= self.data.max_length,
                "trainer.pad_widths",
                widths,
                f"the largest width must hold the longest window, data.max_length={self.data.max_length}",
            )


# ---------------------------------------------------------------------------------------------------- the schema's keys
def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names (`DemoConfig | None` → DemoConfig), or None."""
    if is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if getattr(hint, "__origin__", None) is Union or isinstance(hint, types.UnionType):
        return next((a for a in get_args(hint) if is_dataclass(a)), None)  # type: ignore[return-value]
    return None


def _schema_fields(schema: type) -> Iterator[tuple[str, Any, bool]]:
    """(name, type, operational) of each field of a schema dataclass."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        yield f.name, hints[f.name], bool(f.metadata.get("operational"))


def _operational_keys(schema: type, prefix: str = "") -> Iterator[str]:
    for name, hint, marked in _schema_fields(schema):
        sub = _dataclass_in(hint)
        if marked:
            yield prefix + name
        elif sub is not None:
            yield from _operational_keys(sub, f"{prefix}{name}.")


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Dotted keys of a composed config that its schema does not define. Hydra adds a `+key=value` override to a
    structured node without complaint, and `OmegaConf.to_object` then drops it: the run would silently ignore it."""
    known = {name: hint for name, hint, _ in _schema_fields(schema)}
    out = []
    for key in node:
        if key not in known:
            out.append(f"{prefix}{key}")
            continue
        sub, child = _dataclass_in(known[key]), node._get_node(key)
        if sub is not None and isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            out += unknown_keys(child, sub, f"{prefix}{key}.")
    return out


def unknown_key_error(keys: list[str], added: bool = True) -> ConfigError:
    """One line naming the unknown keys, each with its closest known one; `added`: they came in through `+`."""
    known = [k for k in flatten(OmegaConf.to_container(OmegaConf.structured(Config))) if k]
    known += [k.rsplit(".", 1)[0] for k in known if "." in k]

    def named(key: str) -> str:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        return f"{key} (did you mean {close[0]}?)" if close else key

    settings = ", ".join(named(k) for k in keys)
    plus = "; a `+` override adds a key, it does not make one known" if added else ""
    return ConfigError(
        f"{settings}: not {'a setting' if len(keys) == 1 else 'settings'} of spanqa's config (src/spanqa/config.py)"
        + plus
    )


def _non_finite(tree: Any) -> tuple[str, float] | None:
    """The first float of a resolved config that is inf or nan: no setting of the schema may be infinite."""
    return next(((k, v) for k, v in flatten(tree).items() if isinstance(v, float) and not math.isfinite(v)), None)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 3e-05}} → {"optimizer.lr": 3e-05}: a config as its dotted keys."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def register_configs() -> None:
    """Make the schema available to `defaults: [spanqa_schema, ...]` in conf/config.yaml."""
    ConfigStore.instance().store(name="spanqa_schema", node=Config)


def validate(cfg: DictConfig) -> Config:
    """Check that every key is known and every float finite, then resolve interpolations and build the
    dataclasses, which runs every `__post_init__` check."""
    unknown = unknown_keys(cfg, Config)
    if unknown:
        raise unknown_key_error(unknown)
    try:
        bad = _non_finite(OmegaConf.to_container(cfg, resolve=True))
        if bad is not None:
            raise ConfigError(f"{bad[0]}={bad[1]!r} is invalid: must be a finite number")
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except ConfigError:
        raise
    except Exception as err:  # OmegaConf type/interpolation errors: keep their first line, it names the key.
        raise ConfigError(str(err).splitlines()[0]) from err


# The dotted keys (or subtrees) that change how a run goes, not what it computes: derived from the schema's marks.
OPERATIONAL_KEYS: tuple[str, ...] = tuple(_operational_keys(Config))


def is_operational(key: str) -> bool:
    """Whether a dotted key is, or lies under, an operational setting."""
    return any(key == o or key.startswith(o + ".") for o in OPERATIONAL_KEYS)
