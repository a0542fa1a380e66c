"""`make train …` → `python -m spanqa.train …`: compose, validate, train, evaluate, record. Returns the
`optimized_metric` so Hydra sweepers (Optuna) can maximise it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spanqa.config import Config, register_configs, validate
from spanqa.data import check_data_source
from spanqa.errors import ConfigError, SpanQAError
from spanqa.hub import settle_offline_mode
from spanqa.preflight import check_model_source
from spanqa.tracking import resolve_mode

register_configs()
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def run_state(run_dir: Path, resume: bool, multirun: bool) -> str:
    """'fresh', 'resume' or 'done'. Never train over an earlier run's checkpoints. A re-launched multirun
    resumes its interrupted jobs and skips its finished ones."""
    finished = (run_dir / "run.json").is_file()
    has_checkpoints = any((run_dir / "checkpoints").glob("checkpoint-*"))
    if finished and multirun:
        return "done"
    if finished:
        raise ConfigError(f"run dir {str(run_dir)!r} holds a finished run: choose a new hydra.run.dir")
    if has_checkpoints and (resume or multirun):
        return "resume"
    if has_checkpoints:
        raise ConfigError(
            f"run dir {str(run_dir)!r} already holds checkpoints: pass resume=true or a new hydra.run.dir"
        )
    if resume:
        raise ConfigError(
            f"resume=true but run dir {str(run_dir)!r} has no checkpoint: set hydra.run.dir=<earlier run>"
        )
    return "fresh"


def train(cfg: DictConfig, run_dir: Path, multirun: bool = False) -> dict[str, float]:
    """The story: validate → data → model → Trainer → fit → evaluate → record."""
    conf: Config = validate(cfg)  # impossible values fail here, in well under a second
    state = run_state(run_dir, conf.resume, multirun)
    if state == "done":
        print(f"{conf.run_name}: already finished in {run_dir}, skipped")
        return json.loads((run_dir / "run.json").read_text())["metrics"]
    if conf.demo is None:  # the demo builds its files below
        check_data_source(conf.data)  # local files: exist, readable, JSON
        check_model_source(conf.model)  # local checkpoint and tokenizer dirs: exist, complete
    wandb_mode = resolve_mode(conf)  # a W&B setup that cannot work fails here too
    settle_offline_mode()  # decided before transformers/datasets are imported: they read it at import

    # torch, transformers and datasets are imported only past the checks above.
    import torch
    from transformers import set_seed

    from spanqa.demo import build_demo_assets
    from spanqa.features import prepare_data
    from spanqa.modeling import check_tokenizer_fits, check_window_fits, load_model, load_tokenizer
    from spanqa.preflight import check_free_space, checkpoint_bytes
    from spanqa.records import last_checkpoint, save_final, summary_line
    from spanqa.tracking import Tracker
    from spanqa.trainer import build_trainer, end_distributed, shared_run_dir, training_arguments

    if conf.trainer.cpu_threads is not None:
        torch.set_num_threads(conf.trainer.cpu_threads)
    set_seed(conf.seed)
    args = training_arguments(conf, run_dir, report_to=[] if wandb_mode == "disabled" else ["wandb"])
    run_dir = shared_run_dir(run_dir, args)  # under torchrun: rank 0's, whatever timestamp the others resolved
    with args.main_process_first(desc="assets, tokenizer, model, windows"):  # under DDP: rank 0 fills the caches
        if conf.demo is not None:
            build_demo_assets(conf.demo.dir, conf.demo.train_examples, conf.demo.dev_examples, conf.demo.seed)
        tokenizer = load_tokenizer(conf.model)
        model = load_model(conf.model, conf.data.max_answer_length)  # a missing model fails before preprocessing
        check_window_fits(model, conf.data.max_length)
        check_tokenizer_fits(tokenizer, model, conf.model)
        check_free_space(run_dir, checkpoint_bytes(model.num_parameters(), conf.trainer.save_total_limit))
        data = prepare_data(conf.data, tokenizer, conf.seed)
    tracker = Tracker.start(conf, OmegaConf.to_container(cfg, resolve=True), run_dir, wandb_mode)
    trainer = build_trainer(conf, args, model, tokenizer, data, run_dir)
    train_output = trainer.train(resume_from_checkpoint=last_checkpoint(run_dir) if state == "resume" else None)
    metrics = trainer.evaluate()  # the best epoch's model, loaded at the end of training
    metrics = save_final(trainer, metrics, train_output, run_dir, tracker)
    if trainer.is_world_process_zero():
        print(summary_line(conf.run_name, metrics, run_dir))
    end_distributed()
    return metrics


def _close_progress_bars() -> None:
    """A bar left open by an interrupted loop redraws itself at exit, after the error line: close it first."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        hydra_cfg = HydraConfig.get()
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), multirun=hydra_cfg.mode == RunMode.MULTIRUN)
    except SpanQAError as err:
        _close_progress_bars()
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return metrics.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
