"""QATrainer evaluation on a real tiny model: the three null-threshold policies, eval loss, artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spanqa.eval.policies import postprocess, tuned_threshold
from tests.helpers import demo_config as config
from tests.helpers import demo_trainer as trainer_for


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


def test_held_out_threshold_is_tuned_on_held_out_training_articles(tmp_path: Path, demo_dir: Path) -> None:
    conf = config(demo_dir, "data.null_threshold.policy=held_out", "data.null_threshold.held_out_fraction=0.25")
    trainer = trainer_for(conf, tmp_path)
    held_out = trainer.held_out_set
    assert held_out is not None and len(held_out.ids) >= 50  # at least 25% of the 200 training questions
    metrics = trainer.evaluate()
    # The same threshold, recomputed independently from the held-out predictions.
    trainer.compute_metrics = None  # plain predictions, scored here rather than against the dev set
    out = trainer.predict(held_out.model_inputs())
    cands = trainer.head.candidates(out.predictions, held_out, 10, conf.data.max_answer_length)
    expected = tuned_threshold(postprocess(cands, held_out, 10), held_out.gold)
    assert metrics["eval_null_threshold"] == pytest.approx(expected)
    assert not set(held_out.ids) & set(trainer.eval_set.ids)
    eval_results = json.loads(
        (tmp_path / "eval" / f"step-{trainer.state.global_step}" / "eval_results.json").read_text()
    )
    assert (eval_results["null_threshold_policy"], eval_results["null_threshold_held_out_by"]) == (
        "held_out",
        "article",
    )
