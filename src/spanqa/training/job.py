"""The body of one training job, once `spanqa.train` has made its first-second checks and holds the run dir:
assets, tokenizer, model, windows, Trainer, fit, the final evaluation, the records. torch, transformers and
datasets are imported here, and only here on the way in."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import set_seed

from spanqa.config import Config
from spanqa.data.demo import build_demo_assets
from spanqa.data.squad import check_data_source
from spanqa.data.windows import prepare_data
from spanqa.env import check_free_space, checkpoint_bytes
from spanqa.errors import Preempted
from spanqa.models.checkpoint import check_model_source, choose_tokenizer
from spanqa.models.heads import load_model
from spanqa.models.load import check_tokenizer_fits, check_window_fits, load_tokenizer, lowercases, planned_model
from spanqa.rundir.record import RowChanges, RunIdentity, TokenizerUsed
from spanqa.training.arguments import training_arguments
from spanqa.training.distributed import end_distributed, shared_run_dir
from spanqa.training.preemption import PreemptionCheckpoint
from spanqa.training.relaunch import last_checkpoint
from spanqa.training.results import save_final, summary_line, write_row_reports
from spanqa.training.run_log import RunLog, log_plan, run_log
from spanqa.training.tracking import Tracker, report_targets
from spanqa.training.trainer import build_trainer


def run_job(conf: Config, run_dir: Path, identity: RunIdentity, state: str, wandb_mode: str) -> dict[str, float]:
    """Train and evaluate one job in `run_dir` ('fresh' or 'resume'); returns the final metrics."""
    if conf.trainer.cpu_threads is not None:
        torch.set_num_threads(conf.trainer.cpu_threads)
    set_seed(conf.seed)
    args = training_arguments(conf, run_dir, report_to=report_targets(conf, wandb_mode))
    run_dir = shared_run_dir(run_dir, args)  # under torchrun: rank 0's, whatever timestamp the others resolved
    if state == "fresh" and args.process_index == 0:
        identity.write_started(run_dir)
    with args.main_process_first(desc="assets, tokenizer, windows, model"):  # under DDP: rank 0 fills the caches
        if conf.demo is not None:
            build_demo_assets(conf.demo.dir, conf.demo.train_examples, conf.demo.dev_examples, conf.demo.seed)
            check_data_source(conf.data)  # what the first second checks for every other run
            check_model_source(conf.model)
        choice = choose_tokenizer(conf.model)
        tokenizer = load_tokenizer(conf.model, choice)
        # Everything the model's shape decides, checked on its meta-device twin before any data or weights load.
        planned = planned_model(conf.model)
        check_window_fits(planned, conf.data.max_length)
        check_tokenizer_fits(tokenizer, planned, conf.model)
        check_free_space(run_dir, checkpoint_bytes(planned.num_parameters(), conf.trainer.save_total_limit))
        data = prepare_data(conf.data, tokenizer, conf.seed)  # row checks, then windows: before the model loads
        model = load_model(conf.model, conf.data.max_answer_length)
    used = TokenizerUsed.of(choice.name_or_path, choice.key, tokenizer.get_vocab(), lowercases(tokenizer))
    rows = RowChanges(skipped=len(data.rows.skipped), answers_trimmed=len(data.rows.trimmed))
    if args.process_index == 0:
        write_row_reports(run_dir, data.rows)
    if args.process_index == 0:
        log_plan(conf, state, f"{used.name_or_path} ({used.source})", len(data.train), len(data.eval_set.ids))
    tracker = Tracker.start(conf, identity.config, run_dir, wandb_mode)
    preemption = PreemptionCheckpoint()  # SIGTERM/SIGUSR1: checkpoint at the next step, then stop
    try:
        with tracker.closed_on_failure():  # every job is one W&B run, finished whatever stops it
            callbacks = [preemption, RunLog()]
            trainer = build_trainer(conf, args, model, tokenizer, data, run_dir, callbacks=callbacks)
            with preemption.installed():
                checkpoint = last_checkpoint(run_dir) if state == "resume" else None
                train_output = trainer.train(resume_from_checkpoint=checkpoint)
            metrics = trainer.evaluate()  # the best epoch's model, loaded at the end of training
            metrics = save_final(trainer, data.eval_set, metrics, train_output, run_dir, tracker, identity, used, rows)
    except Preempted:
        preemption.hand_over()  # under submitit: requeue the job (and exit)
        raise
    if trainer.is_world_process_zero():
        line = summary_line(conf.run_name, metrics, run_dir, rows)
        print(line)
        run_log().info(line)
    end_distributed()
    return metrics
