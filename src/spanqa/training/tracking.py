"""Weights & Biases: online when a key is configured and the server answers, offline otherwise, never a hang.

W&B's own behaviour is harsh on offline machines: no key and no WANDB_MODE raises a UsageError, and a key
without network hangs ~100 s. So the mode is decided here, before `wandb.init`, from what can be checked in
milliseconds. The run is created here (name, group, tags, full config); the Trainer's WandbCallback reuses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanqa.config import Config
from spanqa.env import wandb_key_configured, wandb_server_reachable
from spanqa.errors import EXIT_PREEMPTED, ConfigError, Preempted

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"


def resolve_mode(cfg: Config) -> str:
    """'online', 'offline' or 'disabled'. WANDB_MODE set by the user wins over logger.mode=auto. Only `auto` probes
    the server (through the configured proxy, as wandb itself connects); an explicit `online` is trusted."""
    if cfg.logger.backend != "wandb" or cfg.logger.mode == "disabled":
        return "disabled"
    requested = cfg.logger.mode
    if requested == "auto" and os.environ.get("WANDB_MODE") in ("online", "offline", "disabled", "dryrun"):
        requested = "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    if requested in ("offline", "disabled"):
        return requested
    has_key = wandb_key_configured()
    if requested == "online" and not has_key:
        raise ConfigError("logger.mode='online' needs a W&B key: run `wandb login` or set WANDB_API_KEY")
    if requested == "online":  # asked for explicitly: trusted, not probed
        return "online"
    if not has_key:
        return "offline"
    if not wandb_server_reachable():
        log.warning("W&B server unreachable: logging offline (the run's `wandb sync` line is printed at its end)")
        return "offline"
    return "online"


def report_targets(cfg: Config, wandb_mode: str) -> list[str]:
    """The Trainer's `report_to`: W&B (in the decided mode) or TensorBoard event files, or nothing."""
    if cfg.logger.backend == "tensorboard":
        return ["tensorboard"]
    return [] if wandb_mode == "disabled" else ["wandb"]


@dataclass
class Tracker:
    mode: str
    run: Any = None
    log_model_dir: bool = False  # logger.log_model

    @classmethod
    def start(cls, cfg: Config, config_dict: dict[str, Any], run_dir: Path, mode: str) -> Tracker:
        """Create (or, for a resumed run dir, continue) the W&B run; with logger=tensorboard, point the Trainer's
        TensorBoard callback at <run dir>/tensorboard."""
        if cfg.logger.backend == "tensorboard":
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
        if mode == "disabled" or int(os.environ.get("RANK", "0")) != 0:  # one W&B run per job, from rank 0
            return cls(mode)
        import wandb

        os.environ["WANDB_MODE"] = mode  # the Trainer's callback and wandb's service read it
        os.environ.setdefault("WANDB_SILENT", "true")
        id_file = run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None  # a resumed run keeps its id
        run = wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group,
            name=cfg.run_name,
            job_type="train",
            tags=[*cfg.logger.tags, f"model:{cfg.model.name}", f"head:{cfg.model.head}", f"seed:{cfg.seed}"],
            config=config_dict,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
        )
        id_file.write_text(run.id)
        return cls(mode, run, cfg.logger.log_model)

    def log_answers(self, rows: dict[str, dict[str, Any]], head: str) -> None:
        """Every evaluation question with its gold answers, the prediction and its scores, as the W&B Table
        `eval/answers`: in the UI, the heads' answers side by side."""
        if self.run is None:
            return
        import wandb

        columns = ["id", "question", "gold", "prediction", "exact", "f1", "no_answer_probability", "head"]
        table = wandb.Table(columns=columns)
        for qid, r in rows.items():
            table.add_data(qid, r["question"], " | ".join(r["gold"]), r["prediction"], r["exact"], r["f1"],
                           r["na_prob"], head)  # fmt: skip
        self.run.log({"eval/answers": table})

    def log_model(self, model_dir: Path) -> None:
        """With logger.log_model=true, the best model (model/, its card included) as the artifact model-<run id>."""
        if self.run is None or not self.log_model_dir:
            return
        import wandb

        artifact = wandb.Artifact(name=f"model-{self.run.id}", type="model", metadata={"run_name": self.run.name})
        artifact.add_dir(str(model_dir))
        self.run.log_artifact(artifact, aliases=["best"])

    def log_files(self, name: str, kind: str, files: list[Path]) -> None:
        if self.run is None:
            return
        import wandb

        artifact = wandb.Artifact(name=name, type=kind)
        for f in files:
            if f.is_file():
                artifact.add_file(str(f))
        self.run.log_artifact(artifact)

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        """Close the run (exit_code != 0 marks it failed). Once: later calls do nothing."""
        if self.run is None:
            return
        run, self.run = self.run, None
        run.summary.update(summary)
        offline_dir = Path(run.dir).parent  # <run dir>/wandb/offline-run-<time>-<id>/files → the run's own dir
        run.finish(exit_code=exit_code)
        if self.mode == "offline":
            line = f"W&B run saved offline in {offline_dir}: upload it with `wandb sync {offline_dir}`"
            print(line)
            logging.getLogger("spanqa.run").info(line)

    @contextmanager
    def closed_on_failure(self) -> Iterator[None]:
        """Whatever stops the job, its W&B run is finished, as failed, before the exception goes on: in a multirun
        process, the next job's `wandb.init` must not attach to this one."""
        try:
            yield
        except BaseException as err:
            self.finish({}, exit_code=EXIT_PREEMPTED if isinstance(err, Preempted) else 1)
            raise
