"""`make train …` → `python -m spanqa.train …`: compose, validate, train, evaluate, record. Returns the
`optimized_metric` so Hydra sweepers (Optuna) can maximise it."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spanqa.config import Config, register_configs, validate
from spanqa.data.squad import check_data_source
from spanqa.env import settle_offline_mode
from spanqa.errors import EXIT_PREEMPTED, Preempted, reported, stop
from spanqa.models.checkpoint import check_model_source
from spanqa.training.records import RunIdentity, read_record, run_state
from spanqa.training.tracking import resolve_mode

register_configs()
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def train(
    cfg: DictConfig, run_dir: Path, multirun: bool = False, overrides: list[str] | None = None
) -> dict[str, float]:
    """The story: validate → data → model → Trainer → fit → evaluate → record."""
    conf: Config = validate(cfg)  # impossible values fail here, in well under a second
    identity = RunIdentity.of(cfg, overrides)  # what this job computes: a relaunched sweep skips it only if unchanged
    state = run_state(run_dir, conf.resume, multirun, identity, conf.rerun_changed)
    if state == "done":
        print(f"{conf.run_name}: already finished in {run_dir}, skipped")
        return read_record(run_dir)["metrics"]
    if conf.demo is None:  # the demo builds its files below
        check_data_source(conf.data)  # local files: exist, readable, JSON
        check_model_source(conf.model)  # local checkpoint and tokenizer dirs: exist, complete
    wandb_mode = resolve_mode(conf)  # a W&B setup that cannot work fails here too
    settle_offline_mode()  # decided before transformers/datasets are imported: they read it at import

    # torch, transformers and datasets are imported only past the checks above.
    import torch
    from transformers import set_seed

    from spanqa.data.demo import build_demo_assets
    from spanqa.data.windows import prepare_data
    from spanqa.env import check_free_space, checkpoint_bytes
    from spanqa.models.heads import load_model
    from spanqa.models.load import check_tokenizer_fits, check_window_fits, load_tokenizer
    from spanqa.training.arguments import training_arguments
    from spanqa.training.distributed import end_distributed, shared_run_dir
    from spanqa.training.preemption import PreemptionCheckpoint
    from spanqa.training.records import last_checkpoint, record_start, save_final, summary_line, write_skipped
    from spanqa.training.tracking import Tracker, report_targets
    from spanqa.training.trainer import build_trainer

    if conf.trainer.cpu_threads is not None:
        torch.set_num_threads(conf.trainer.cpu_threads)
    set_seed(conf.seed)
    args = training_arguments(conf, run_dir, report_to=report_targets(conf, wandb_mode))
    run_dir = shared_run_dir(run_dir, args)  # under torchrun: rank 0's, whatever timestamp the others resolved
    if state == "fresh" and args.process_index == 0:
        record_start(run_dir, identity)
    with args.main_process_first(desc="assets, tokenizer, model, windows"):  # under DDP: rank 0 fills the caches
        if conf.demo is not None:
            build_demo_assets(conf.demo.dir, conf.demo.train_examples, conf.demo.dev_examples, conf.demo.seed)
        tokenizer = load_tokenizer(conf.model)
        model = load_model(conf.model, conf.data.max_answer_length)  # a missing model fails before preprocessing
        check_window_fits(model, conf.data.max_length)
        check_tokenizer_fits(tokenizer, model, conf.model)
        check_free_space(run_dir, checkpoint_bytes(model.num_parameters(), conf.trainer.save_total_limit))
        data = prepare_data(conf.data, tokenizer, conf.seed)
    extra = write_skipped(run_dir, data.skipped) if args.process_index == 0 else {}
    tracker = Tracker.start(conf, identity.config, run_dir, wandb_mode)
    preemption = PreemptionCheckpoint()  # SIGTERM/SIGUSR1: checkpoint at the next step, then stop
    try:
        with tracker.closed_on_failure():  # every job is one W&B run, finished whatever stops it
            trainer = build_trainer(conf, args, model, tokenizer, data, run_dir, callbacks=[preemption])
            with preemption.installed():
                checkpoint = last_checkpoint(run_dir) if state == "resume" else None
                train_output = trainer.train(resume_from_checkpoint=checkpoint)
            metrics = trainer.evaluate()  # the best epoch's model, loaded at the end of training
            outcome = trainer.last_outcome
            metrics = save_final(
                trainer, outcome, data.eval_set, metrics, train_output, run_dir, tracker, identity, extra
            )
    except Preempted:
        preemption.hand_over()  # under submitit: requeue the job (and exit)
        raise
    if trainer.is_world_process_zero():
        print(summary_line(conf.run_name, metrics, run_dir, extra.get("skipped_rows", 0)))
    end_distributed()
    return metrics


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


if __name__ == "__main__":
    main()
