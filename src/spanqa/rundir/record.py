"""The run record: what a finished run computed, typed, in run.json. Training writes it last (atomically); inference,
the comparison, relaunch and the model card read it, and nothing else: run.json is the one source of a run's
resolved config (`.hydra/config.yaml` only for runs from before the record held it, and named as such).

`RunIdentity` is a config and the digest of what it computes (the schema's operational settings left out): a
relaunched job is "the same job" exactly when the digests match.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from spanqa.config import flatten, is_operational
from spanqa.errors import DataError
from spanqa.files import write_json
from spanqa.rundir.layout import HYDRA_DIR, RECORD, STARTED

log = logging.getLogger(__name__)
FORMAT = 2  # run.json's layout; records without `format` come from earlier releases and are read as such


def digest_of(items: Any) -> str:
    """A short, stable digest of a JSON-able value (sorted keys)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- the config
def _what(config: dict[str, Any]) -> dict[str, Any]:
    """The dotted keys that define what a run computes."""
    return {k: v for k, v in flatten(config).items() if not is_operational(k)}


@dataclass(frozen=True)
class RunIdentity:
    """The composed config (resolved) and a digest of what it computes."""

    config: dict[str, Any]
    digest: str
    overrides: list[str] = field(default_factory=list)  # the command line's, for the comparison report

    @classmethod
    def of(cls, cfg: DictConfig | dict[str, Any], overrides: list[str] | None = None) -> RunIdentity:
        config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
        return cls(config, digest_of(_what(config)), list(overrides or []))  # type: ignore[arg-type]

    def differences(self, earlier: dict[str, Any]) -> list[str]:
        """'key: earlier → now' for each key that changed what is computed."""
        old, new = _what(earlier), _what(self.config)
        return [f"{k}: {old.get(k, '(unset)')!r} → {new.get(k, '(unset)')!r}" for k in sorted(old.keys() | new.keys())
                if old.get(k) != new.get(k)]  # fmt: skip

    def write_started(self, run_dir: Path) -> None:
        """run_config.json: the config the checkpoints about to be written come from (what a relaunch compares)."""
        write_json(run_dir / STARTED, {"config": self.config, "config_digest": self.digest})


def started_config(run_dir: Path) -> dict[str, Any] | None:
    """The config an unfinished run started with (None: it was never recorded)."""
    blob = _read_json(run_dir / STARTED)
    return blob.get("config") if isinstance(blob, dict) else None


# ---------------------------------------------------------------------------------------------------- the record
@dataclass(frozen=True)
class NullThreshold:
    """The no-answer threshold the final evaluation applied (answer "" when na_prob > value), and how it was set."""

    value: float
    policy: str  # fixed | tune_on_dev | held_out
    held_out_by: str | None = None  # held_out: article | question


@dataclass(frozen=True)
class QuestionSet:
    """Which questions a run was scored on: a comparison pairs runs only on the same set."""

    count: int
    ids_digest: str

    @classmethod
    def of(cls, ids: Iterable[str]) -> QuestionSet:
        ids = sorted(ids)
        return cls(len(ids), digest_of(ids))


@dataclass(frozen=True)
class TokenizerUsed:
    """The tokenizer the run windowed with: where it came from and what its vocabulary is."""

    name_or_path: str
    source: str  # checkpoint | model.tokenizer_name_or_path | model.tokenizer_fallback
    vocab_size: int
    vocab_digest: str
    lowercases: bool

    @classmethod
    def of(cls, name_or_path: str, source: str, vocab: dict[str, int], lowercases: bool) -> TokenizerUsed:
        return cls(name_or_path, source, len(vocab), digest_of(sorted(vocab.items())), lowercases)


@dataclass(frozen=True)
class RowChanges:
    """What the data step did to rows: dropped (data.bad_rows=skip) or normalised (answers trimmed)."""

    skipped: int = 0
    answers_trimmed: int = 0


@dataclass
class RunRecord:
    run_name: str
    config: dict[str, Any]  # the composed config, resolved
    config_digest: str
    metrics: dict[str, Any]  # the final evaluation's eval_* scores, epoch, best_epoch
    null_threshold: NullThreshold
    questions: QuestionSet | None = None
    tokenizer: TokenizerUsed | None = None
    rows: RowChanges = field(default_factory=RowChanges)
    overrides: list[str] = field(default_factory=list)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    train_runtime_s: float | None = None
    train_steps_per_second: float | None = None
    global_step: int | None = None
    num_parameters: int | None = None
    best_checkpoint: str | None = None  # relative to the run dir: a moved run dir still points at its own
    wandb_run_id: str | None = None
    format: int = FORMAT
    config_source: str = RECORD  # where `config` was read from: run.json, or .hydra/config.yaml for older runs

    @property
    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)

    def write(self, run_dir: Path) -> Path:
        blob = asdict(self)
        del blob["config_source"]
        return write_json(run_dir / RECORD, blob)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        """The record of a finished run dir; DataError (one line) for a dir without one or with a broken one."""
        path = run_dir / RECORD
        if not path.is_file():
            raise DataError(f"run dir {str(run_dir)!r} has no {RECORD}: the run did not finish, or is not a spanqa run")
        blob = _read_json(path)
        if not isinstance(blob, dict) or not isinstance(blob.get("metrics"), dict):
            raise DataError(f"{path}: not a run record (no metrics object)")
        try:
            return cls._from_blob(blob) if blob.get("format") == FORMAT else cls._from_earlier(blob, run_dir)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: not a run record of this spanqa ({type(err).__name__}: {err})") from None

    @classmethod
    def _from_blob(cls, blob: dict[str, Any]) -> RunRecord:
        parts = {
            "null_threshold": NullThreshold,
            "questions": QuestionSet,
            "tokenizer": TokenizerUsed,
            "rows": RowChanges,
        }
        typed = {k: (parts[k](**v) if k in parts and v is not None else v) for k, v in blob.items()}
        return cls(**typed)

    @classmethod
    def _from_earlier(cls, blob: dict[str, Any], run_dir: Path) -> RunRecord:
        """A run.json of an earlier release: untyped, the threshold among the metrics, the config perhaps absent
        (then read from .hydra/config.yaml, which a relaunch may have rewritten: `config_source` says so)."""
        metrics = dict(blob["metrics"])
        threshold = metrics.pop("eval_null_threshold", None)
        config, source = blob.get("config"), RECORD
        if not isinstance(config, dict):
            config, source = _hydra_config(run_dir), f"{HYDRA_DIR}/config.yaml"
        policy = blob.get("null_threshold_policy") or flatten(config).get("data.null_threshold.policy") or "fixed"
        best = blob.get("best_checkpoint")
        if best and Path(best).is_absolute() and Path(best).parent.parent == run_dir:
            best = str(Path(best).relative_to(run_dir))
        return cls(
            run_name=blob.get("run_name") or run_dir.name,
            config=config,
            config_digest=blob.get("config_digest") or RunIdentity.of(config).digest,
            metrics=metrics,
            null_threshold=NullThreshold(float(threshold) if threshold is not None else float("nan"), policy),
            rows=RowChanges(skipped=int(blob.get("skipped_rows", 0))),
            overrides=list(blob.get("overrides") or []),
            log_history=list(blob.get("log_history") or []),
            train_runtime_s=blob.get("train_runtime_s"),
            train_steps_per_second=blob.get("train_steps_per_second"),
            global_step=blob.get("global_step"),
            num_parameters=blob.get("num_parameters"),
            best_checkpoint=best,
            wandb_run_id=blob.get("wandb_run_id"),
            format=int(blob.get("format", 1)),
            config_source=source,
        )


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """The config a finished run recorded (None for a record of an earlier release without one): what a relaunch
    compares against. Never .hydra/config.yaml, which the relaunch itself may have written."""
    blob = _read_json(run_dir / RECORD)
    config = blob.get("config") if isinstance(blob, dict) else None
    return config if isinstance(config, dict) else None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None


def _hydra_config(run_dir: Path) -> dict[str, Any]:
    file = run_dir / HYDRA_DIR / "config.yaml"
    if not file.is_file():
        raise DataError(f"{run_dir / RECORD}: records no config and the run dir has no {HYDRA_DIR}/config.yaml")
    try:
        cfg = OmegaConf.load(file)
        try:
            tree = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # Hydra-only resolvers (${now:...}, ${hydra:...}) do not exist outside a Hydra job
            tree = OmegaConf.to_container(cfg, resolve=False)
    except Exception as err:
        raise DataError(f"{file}: unreadable ({str(err).splitlines()[0]})") from None
    log.warning("%s predates config records: its config is read from %s", run_dir / RECORD, file)
    return tree  # type: ignore[return-value]
