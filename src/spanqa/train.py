"""`make train …` → `python -m spanqa.train …`: compose, validate, check, train, evaluate, record. Returns the
`optimized_metric` so Hydra sweepers (Optuna) can maximise it.

Everything that can be wrong with a command is checked first, in the first second: the config (every key known,
every value possible), the run dir (not another process's, not a finished run, not another config's), local
files and the W&B setup. Only then is the run's body (`spanqa.training.job`: torch, transformers, datasets)
imported. Hydra does not write the run's .hydra/ files here (`hydra.output_subdir: null`): the job writes them
once it is sure to run, so a refused relaunch leaves a finished run byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spanqa.config import Config, register_configs, unknown_key_error, validate
from spanqa.data.squad import check_data_source
from spanqa.env import settle_offline_mode
from spanqa.errors import EXIT_PREEMPTED, Preempted, fail, reported, stop
from spanqa.models.checkpoint import check_model_source
from spanqa.rundir.layout import is_finished, write_launch_files
from spanqa.rundir.lock import RunLock
from spanqa.rundir.record import RunIdentity, RunRecord
from spanqa.training.preflight import check_offline_artifacts
from spanqa.training.relaunch import decide, run_state
from spanqa.training.tracking import resolve_mode

register_configs()
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def train(
    cfg: DictConfig, run_dir: Path, multirun: bool = False, overrides: list[str] | None = None
) -> dict[str, float]:
    """The story: validate → claim the run dir → check → train → evaluate → record."""
    conf: Config = validate(cfg)  # unknown keys and impossible values fail here, in well under a second
    # What this job computes, as validated (local files imply no dataset name, short ids are resolved): the record
    # holds what the run used, and a relaunched sweep skips the job only if that is unchanged.
    identity = RunIdentity.of(OmegaConf.structured(conf), overrides)
    relaunch = (run_dir, conf.resume, multirun, identity, conf.rerun_changed)
    # A finished run is final: decided without the lock, so nothing of it is touched (or it is refused at once).
    if is_finished(run_dir) and decide(*relaunch) == "done":
        return skipped(conf, run_dir)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 holds and prepares the dir for all ranks
    with RunLock.held(run_dir) if rank0 else contextlib.nullcontext():  # a second process stops here
        state = run_state(*relaunch) if rank0 else decide(*relaunch).replace("supersede", "fresh")
        if state == "done":  # finished by the process that held the lock before this one
            return skipped(conf, run_dir)
        if conf.demo is None:  # the demo builds its files in the job
            check_data_source(conf.data)  # local files: exist, readable, JSON
            check_model_source(conf.model)  # local checkpoint and tokenizer dirs: exist, complete
        wandb_mode = resolve_mode(conf)  # a W&B setup that cannot work fails here too
        if settle_offline_mode() and conf.demo is None:  # before transformers/datasets import: they read it then
            check_offline_artifacts(conf)  # every missing model, tokenizer and dataset, in one line
        if rank0 and HydraConfig.initialized():
            write_launch_files(run_dir, cfg)

        from spanqa.training.job import run_job  # torch, transformers, datasets: only past the checks above

        return run_job(conf, run_dir, identity, state, wandb_mode)


def skipped(conf: Config, run_dir: Path) -> dict[str, float]:
    print(f"{conf.run_name}: already finished in {run_dir}, skipped")
    return RunRecord.read(run_dir).metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    with reported():
        try:
            run_dir, overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
            metrics = train(cfg, run_dir, multirun=hydra_cfg.mode == RunMode.MULTIRUN, overrides=overrides)
        except Preempted as preempted:
            stop(
                f"{cfg.run_name}: stopped by {preempted.signal_name} after step {preempted.step}, checkpoint saved in "
                f"{preempted.checkpoint_dir}; relaunch the same command (resume=true, or the same hydra.sweep.dir) "
                "to continue from it",
                EXIT_PREEMPTED,
            )
    return metrics.get(cfg.optimized_metric)


# ---------------------------------------------------------------------------------------------------- the command line
# Hydra's flags that take a value (`--cfg job`); --info takes one of INFO_TOPICS when one follows.
VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd", "--experimental-rerun"}  # fmt: skip
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def flags_first(argv: list[str]) -> list[str]:
    """Hydra's flags before its overrides, in whatever order they came: argparse rejects a flag after an override
    ("unrecognized arguments"), which `make train model=… ARGS="--multirun …"` would otherwise produce."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        takes_value = "=" not in arg and (
            arg in VALUED_FLAGS or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO_TOPICS)
        )
        if arg.startswith("-"):
            flags += argv[i : i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
        else:
            overrides.append(arg)
            i += 1
    return flags + overrides


def composition_error(err: BaseException) -> str:
    """Hydra's multi-line composition errors as one line: what is wrong and what is allowed."""
    text = str(err).split("Config search path:")[0].strip()
    cause = (str(err.__cause__).strip().splitlines() or [""])[0] if err.__cause__ is not None else ""
    override = re.match(r"Could not override '([^']+)'", text)
    if override and " not in '" in cause:  # an unknown key: named, with the closest known one (no `+` advice)
        return str(unknown_key_error([override.group(1)], added=False))
    merging = re.match(r"Error merging override (\S+)", text)
    if merging and cause:  # a value of the wrong type
        return f"{merging.group(1)}: {cause}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("To append")]
    options = [line for line in lines if line.startswith("Available options in")]
    if options:  # an unknown group option: the available ones on the same line
        listed = lines[lines.index(options[0]) + 1 :]
        return f"{lines[0]}; {options[0].rstrip(':').lower()}: {', '.join(listed)}"
    return "; ".join(lines + ([cause] if cause else []))


def cli() -> None:
    """`python -m spanqa.train`: flags first, and Hydra's own errors (composition, override syntax) reported like
    every other error, one `error:` line and exit status 2."""
    from hydra.errors import HydraException

    sys.argv[1:] = flags_first(sys.argv[1:])
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing: reported below, or in full
    try:
        main()
    except HydraException as err:
        fail(composition_error(err))


if __name__ == "__main__":
    cli()
