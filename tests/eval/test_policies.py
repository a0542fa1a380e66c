"""QATrainer evaluation on a real tiny model: the three null-threshold policies, eval loss, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from spanqa.config import Config, register_configs, validate
from spanqa.eval.policies import postprocess, tuned_threshold
from spanqa.training.trainer import QATrainer
from tests.helpers import REPO

register_configs()


def config(demo_dir: Path, *overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=demo",
                f"demo.dir={demo_dir}",
                "logger=none",
                "data.max_train_samples=200",
                "data.max_eval_samples=80",
                *overrides,
            ],
        )
    return validate(cfg)


def trainer_for(conf: Config, run_dir: Path) -> QATrainer:
    from transformers import set_seed

    from spanqa.data.windows import prepare_data
    from spanqa.models.load import load_model, load_tokenizer
    from spanqa.training.arguments import training_arguments
    from spanqa.training.trainer import build_trainer

    set_seed(conf.seed)
    tokenizer = load_tokenizer(conf.model)
    model = load_model(conf.model, conf.data.max_answer_length)
    data = prepare_data(conf.data, tokenizer, conf.seed)
    return build_trainer(conf, training_arguments(conf, run_dir, []), model, tokenizer, data, run_dir)


@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf"])
def test_fixed_threshold_eval_loss_and_artifacts(tmp_path: Path, demo_dir: Path, model: str) -> None:
    conf = config(demo_dir, f"model={model}", "data.null_threshold.policy=fixed", "data.null_threshold.value=0.3")
    trainer = trainer_for(conf, tmp_path)
    metrics = trainer.evaluate()
    assert metrics["eval_null_threshold"] == 0.3
    assert metrics["eval_loss"] > 0 and metrics["eval_total"] == 80
    step_dir = tmp_path / "eval" / "step-0"
    predictions = json.loads((step_dir / "predictions.json").read_text())
    na_probs = json.loads((step_dir / "na_probs.json").read_text())
    best = trainer.last_outcome.predictions.best_span
    assert len(predictions) == 80
    # The fixed threshold decides: "" exactly where the no-answer probability exceeds it.
    assert all(predictions[q] == ("" if na_probs[q] > 0.3 else best[q]) for q in predictions)
    results = json.loads((step_dir / "eval_results.json").read_text())
    assert results["null_threshold_policy"] == "fixed" and results["f1"] == pytest.approx(metrics["eval_f1"])


def test_tune_on_dev_reports_the_best_threshold(tmp_path: Path, demo_dir: Path) -> None:
    trainer = trainer_for(config(demo_dir, "data.null_threshold.policy=tune_on_dev"), tmp_path)
    metrics = trainer.evaluate()
    assert metrics["eval_null_threshold"] == metrics["eval_best_f1_thresh"]
    assert metrics["eval_f1"] == pytest.approx(metrics["eval_best_f1"])
    assert trainer.last_outcome.policy == "tune_on_dev"


def test_held_out_threshold_is_tuned_on_held_out_training_questions(tmp_path: Path, demo_dir: Path) -> None:
    conf = config(demo_dir, "data.null_threshold.policy=held_out", "data.null_threshold.held_out_fraction=0.25")
    trainer = trainer_for(conf, tmp_path)
    held_out = trainer.held_out_set
    assert held_out is not None and len(held_out.ids) == 50  # 25% of the 200 training questions
    metrics = trainer.evaluate()
    # The same threshold, recomputed independently from the held-out predictions.
    trainer.compute_metrics = None  # plain predictions, scored here rather than against the dev set
    out = trainer.predict(held_out.model_inputs())
    expected = tuned_threshold(postprocess(trainer._candidates(out.predictions, held_out), held_out, 10), held_out.gold)
    assert metrics["eval_null_threshold"] == pytest.approx(expected)
    assert not set(held_out.ids) & set(trainer.eval_set.ids)


@pytest.mark.parametrize(
    ("model", "head_names"),
    [
        ("spanbert", {"qa_outputs.weight", "qa_outputs.bias"}),
        (
            "spanbert_crf",
            {
                "emission.weight",
                "emission.bias",
                "crf.end_transitions",
                "crf.parametrizations.transitions.original",
                "crf.parametrizations.start_transitions.original",
            },
        ),
    ],
)
def test_head_lr_gives_either_head_its_own_learning_rate(
    tmp_path: Path, demo_dir: Path, model: str, head_names: set[str]
) -> None:
    conf = config(demo_dir, f"model={model}", "optimizer.head_lr=0.01")
    trainer = trainer_for(conf, tmp_path)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    settings = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(settings) == sum(1 for p in trainer.model.parameters() if p.requires_grad)
    assert {n for n, (lr, _) in settings.items() if lr == 0.01} == head_names
    assert all(lr == conf.optimizer.lr for n, (lr, _) in settings.items() if n not in head_names)
    head_weight = "qa_outputs.weight" if model == "spanbert" else "emission.weight"
    assert settings[head_weight][1] == conf.optimizer.weight_decay
    assert settings["bert.embeddings.LayerNorm.weight"][1] == 0.0
