"""Real end-to-end runs: Hydra → data → QATrainer → W&B offline → metrics and run records, on the demo stand-ins."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import compose_demo, last_line, run_module, wandb_exit_code, wandb_records


def train(run_dir: Path, demo_dir: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = run_module(
        "spanqa.train",
        "experiment=demo",
        f"demo.dir={demo_dir}",
        "demo.train_examples=4000",
        "demo.dev_examples=400",
        f"hydra.run.dir={run_dir}",
        *overrides,
        timeout=600,
        **env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_tiny_run_writes_wandb_offline_run_metrics_and_artifacts(tmp_path: Path, demo_dir: Path) -> None:
    run = tmp_path / "run"
    proc = train(run, demo_dir, "trainer.epochs=1", "data.max_train_samples=300", "logger.mode=auto",
                 "logger.log_model=true", WANDB_MODE="")  # fmt: skip
    record = json.loads((run / "run.json").read_text())
    metrics = record["metrics"]
    for key in (
        "eval_exact",
        "eval_f1",
        "eval_HasAns_f1",
        "eval_NoAns_f1",
        "eval_best_f1",
        "eval_best_f1_thresh",
        "eval_loss",
    ):
        assert key in metrics
    # The threshold the final evaluation applied, recorded once, with its policy.
    assert record["null_threshold"] == {"value": 0.5, "policy": "fixed", "held_out_by": None}
    assert "eval_null_threshold" not in metrics
    assert record["wandb_run_id"] and record["num_parameters"] > 0
    offline_runs = list((run / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and record["wandb_run_id"] in offline_runs[0].name
    assert any(offline_runs[0].glob("*.wandb"))
    # Train loss logged during training, eval loss + F1 at the epoch's end.
    assert any("loss" in h for h in record["log_history"])
    assert any("eval_loss" in h and "eval_f1" in h for h in record["log_history"])
    predictions = json.loads((run / "predictions.json").read_text())
    official = json.loads((demo_dir / "dev.json").read_text())
    dev_ids = {qa["id"] for a in official["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert set(predictions) == dev_ids
    for name in ("null_odds.json", "nbest_predictions.json", "eval_results.json", "per_question.json"):
        assert (run / name).is_file()
    assert (run / "model" / "model.safetensors").is_file()
    check_wandb_run(offline_runs[0], record)
    check_model_card(run)
    # The offline run's own sync command; train.log tells the run's story in lines a person reads.
    assert f"W&B run saved offline in {offline_runs[0]}: upload it with `wandb sync {offline_runs[0]}`" in proc.stdout
    log = (run / "train.log").read_text()
    for said in ("spanbert-seed42: new run, seed 42", "model spanbert (head span) from ", "tokenizer ",
                 "training windows, 400 evaluation questions", "optimizer AdamW lr 0.001", "1 epochs, batch 16 x 1",
                 f"step 25/{record['global_step']} (epoch ", "evaluation at step ", "final evaluation, best checkpoint",
                 proc.stdout.strip().splitlines()[-1]):  # fmt: skip
        assert said in log, said
    # The official-format command-line scorer agrees with what the Trainer reported.
    proc = run_module("spanqa.evaluate", str(demo_dir / "dev.json"), str(run / "predictions.json"))  # the alias
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["f1"] == pytest.approx(metrics["eval_f1"])
    # Re-scoring reproduces every figure of the run, the best-threshold ones too: the best non-null spans with the
    # no-answer probabilities, at the threshold that was applied (as README's Metrics section says).
    results = json.loads((run / "eval_results.json").read_text())
    proc = run_module(
        "spanqa.score", str(demo_dir / "dev.json"), str(run / "best_spans.json"),
        "--na-prob-file", str(run / "na_probs.json"), "--na-prob-thresh", str(results["null_threshold"]),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rescored = json.loads(proc.stdout)
    assert rescored.keys() == results.keys() - {"null_threshold", "null_threshold_policy"}
    assert rescored == pytest.approx({k: results[k] for k in rescored})
    # The comparison's threshold sweep, at the threshold applied, is the run's own F1.
    from spanqa.comparison.stats import threshold_curve

    _, f1, _ = threshold_curve(json.loads((run / "per_question.json").read_text()))
    assert f1[round(results["null_threshold"] * 200)] == pytest.approx(results["f1"])


def check_wandb_run(offline_run: Path, record: dict) -> None:
    """The W&B run a user compares heads in: the answers as a Table, the best model as an artifact, the final
    scores in the summary once (eval/f1, not also eval_f1), a config of the composed (nested) keys only."""
    (log,) = offline_run.glob("run-*.wandb")
    records = list(wandb_records(log))
    (config,) = [sorted(i.key for i in r.run.config.update) for r in records if r.HasField("run")]
    assert set(config) - {"_wandb"} == set(record["config"])  # no flat TrainingArguments or model-config keys
    summary = {i.key or "/".join(i.nested_key) for r in records if r.HasField("summary") for i in r.summary.update}
    assert {"eval/f1", "eval/exact", "best_epoch", "eval/answers/path"} <= summary and "eval_f1" not in summary
    artifacts = {(r.artifact.name, r.artifact.type) for r in records if r.HasField("artifact")}
    assert (f"model-{record['wandb_run_id']}", "model") in artifacts
    (table_file,) = offline_run.glob("files/media/table/eval/answers_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["id", "question", "gold", "prediction", "exact", "f1", "no_answer_probability", "head"]
    per_question = json.loads((offline_run.parents[1] / "per_question.json").read_text())
    assert {row[0]: row[3] for row in table["data"]} == {q: r["prediction"] for q, r in per_question.items()}
    assert {row[7] for row in table["data"]} == {"span"}


def check_model_card(run: Path) -> None:
    """model/README.md: a card whose model-index holds the run's own official scores; safetensors only."""
    from huggingface_hub import ModelCard

    model = run / "model"
    assert not (model / "training_args.bin").exists() and (model / "model.safetensors").is_file()
    card = ModelCard.load(model / "README.md")
    results = json.loads((run / "eval_results.json").read_text())
    listed = {r.metric_name: r for r in card.data.eval_results}
    assert listed["F1"].metric_value == pytest.approx(results["f1"], abs=1e-4)
    assert listed["Exact match"].metric_value == pytest.approx(results["exact"], abs=1e-4)
    assert listed["HasAns F1"].metric_value == pytest.approx(results["HasAns_f1"], abs=1e-4)
    assert listed["NoAns F1"].metric_value == pytest.approx(results["NoAns_f1"], abs=1e-4)
    assert listed["F1"].metric_args == {"null_threshold": results["null_threshold"],
                                        "null_threshold_policy": results["null_threshold_policy"]}  # fmt: skip
    assert listed["Best F1 (threshold tuned on these questions)"].metric_args == {
        "best_f1_thresh": results["best_f1_thresh"]
    }
    assert card.data.pipeline_tag == "question-answering" and "head-span" in card.data.tags
    assert f"| F1 | {results['f1']:.2f} |" in card.text and "Predictor.load" in card.text


@pytest.mark.slow
@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf", "spanbert_bio"])
def test_demo_model_beats_the_all_empty_baseline(tmp_path: Path, demo_dir: Path, model: str) -> None:
    run = tmp_path / "run"
    train(run, demo_dir, f"model={model}", "logger=none")
    metrics = json.loads((run / "run.json").read_text())["metrics"]
    baseline_f1 = 100.0 * metrics["eval_NoAns_total"] / metrics["eval_total"]  # "" for every question
    assert metrics["eval_HasAns_f1"] > 0
    assert metrics["eval_f1"] > baseline_f1 + 5


@pytest.mark.slow
def test_best_checkpoint_is_selected_by_eval_f1(tmp_path: Path, demo_dir: Path) -> None:
    run = tmp_path / "run"
    train(
        run,
        demo_dir,
        "trainer.epochs=3",
        "data.max_train_samples=200",
        "data.max_eval_samples=80",
        "optimizer.lr=3e-3",
        "logger=none",
    )
    record = json.loads((run / "run.json").read_text())
    per_epoch = [h for h in record["log_history"] if "eval_f1" in h][:-1]  # the last entry re-scores the best model
    assert len(per_epoch) == 3
    best = max(per_epoch, key=lambda h: h["eval_f1"])
    assert record["metrics"]["eval_f1"] == pytest.approx(best["eval_f1"])
    assert record["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert record["metrics"]["best_epoch"] == best["epoch"]


@pytest.mark.slow
def test_a_failed_job_closes_its_wandb_run_as_failed_and_the_next_job_gets_its_own(
    tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs in one process, as a Hydra multirun runs them: the first diverges (lr 100 with weight decay),
    the second trains. Each is exactly one W&B run, the first finished with a failure exit code."""
    import wandb

    from spanqa.errors import TrainingError
    from spanqa.train import train

    monkeypatch.delenv("WANDB_MODE")
    diverging = compose_demo(demo_dir, "logger.mode=offline", "trainer.max_steps=20", "optimizer.lr=100",
                             "optimizer.weight_decay=0.1", "optimizer.warmup_ratio=0", logger="wandb")  # fmt: skip
    with pytest.raises(TrainingError, match="training loss is nan"):
        train(diverging, tmp_path / "0_job", multirun=True)
    assert wandb.run is None  # closed, not left for the next job's wandb.init to attach to
    trained = compose_demo(demo_dir, "logger.mode=offline", "trainer.max_steps=6", logger="wandb")
    metrics = train(trained, tmp_path / "1_job", multirun=True)
    assert metrics["eval_total"] == 80
    first, second = ((tmp_path / job / "wandb_run_id.txt").read_text() for job in ("0_job", "1_job"))
    assert first != second
    assert (wandb_exit_code(tmp_path / "0_job"), wandb_exit_code(tmp_path / "1_job")) == (1, 0)


@pytest.mark.slow
def test_bad_training_rows_are_skipped_and_reported_on_request(tmp_path: Path, demo_dir: Path) -> None:
    blob = json.loads((demo_dir / "train.json").read_text())
    paragraph = blob["data"][0]["paragraphs"][0]
    answerable = next(qa for qa in paragraph["qas"] if qa["answers"])
    shifted = {**answerable, "id": "bad-offset", "answers": [{**answerable["answers"][0], "answer_start": 0}]}
    flagged = {**answerable, "id": "bad-flag", "is_impossible": True}
    # An answer given with the spaces around it, at its place in the context (users' own data often has this).
    context = paragraph["context"]
    qa, gold = next(
        (qa, a) for qa in paragraph["qas"] for a in qa["answers"][:1]
        if context[a["answer_start"] - 1] == " " == context[a["answer_start"] + len(a["text"])]
    )  # fmt: skip
    at = gold["answer_start"]
    spaced = {**qa, "id": "spaced", "answers": [{"text": f" {gold['text']} ", "answer_start": at - 1}]}
    assert context[at - 1 : at + len(gold["text"]) + 1] == spaced["answers"][0]["text"]
    paragraph["qas"] += [shifted, flagged, spaced]
    train_file = tmp_path / "train.json"
    train_file.write_text(json.dumps(blob))
    common = ["experiment=demo", f"demo.dir={demo_dir}", f"data.train_file={train_file}", "data.max_train_samples=200",
              "data.max_eval_samples=40", "trainer.max_steps=3", "logger=none"]  # fmt: skip
    proc = run_module("spanqa.train", *common, f"hydra.run.dir={tmp_path / 'strict'}")
    assert proc.returncode == 2
    assert last_line(proc).startswith(
        f"error: train: question 'bad-offset' has an answer {shifted['answers'][0]['text']!r} not at answer_start=0"
    )
    run = tmp_path / "run"
    proc = run_module("spanqa.train", *common, "data.bad_rows=skip", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "skipped_rows.json").read_text()) == [
        {"id": "bad-offset", "split": "train", "reason": f"has an answer {shifted['answers'][0]['text']!r} not at "
         "answer_start=0 of its context"},
        {"id": "bad-flag", "split": "train", "reason": "has is_impossible=true but also answers"},
    ]  # fmt: skip
    assert json.loads((run / "run.json").read_text())["rows"] == {"skipped": 2, "answers_trimmed": 1}
    assert "(2 malformed training rows skipped: skipped_rows.json)" in proc.stdout
    assert "(1 answer trimmed of surrounding whitespace: trimmed_answers.json)" in proc.stdout
    assert json.loads((run / "trimmed_answers.json").read_text()) == [
        {"id": "spaced", "split": "train", "text": f" {gold['text']} ", "answer_start": at - 1,
         "trimmed_text": gold["text"], "trimmed_start": at}
    ]  # fmt: skip


@pytest.mark.slow
def test_tensorboard_logs_the_run_for_clusters_without_wandb(tmp_path: Path, demo_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(run, demo_dir, "logger=tensorboard", "data.max_train_samples=64", "data.max_eval_samples=40",
          "trainer.epochs=2", "trainer.logging_steps=2")  # fmt: skip
    (events,) = {p.parent for p in (run / "tensorboard").rglob("events.out.tfevents.*")}
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/grad_norm", "eval/f1", "eval/loss"} <= set(scalars)
    assert not (run / "wandb").exists()
    record = json.loads((run / "run.json").read_text())
    assert record["wandb_run_id"] is None and record["config"]["logger"]["backend"] == "tensorboard"


@pytest.mark.slow
def test_the_compiled_fixed_width_path_answers_as_the_eager_one(tmp_path: Path, demo_dir: Path) -> None:
    """The demo (5 epochs: until the model answers), eager and padded to the longest window, against torch.compile
    (aot_eager: dynamo's tracing and AOT autograd, without code generation, which takes minutes per graph on this
    CPU) with batches padded to fixed widths. Padding is masked, so only float summation order may differ: the
    answers must agree (measured here: all 400, metrics identical)."""
    eager, fast = tmp_path / "eager", tmp_path / "fast"
    train(eager, demo_dir, "logger=none")
    train(fast, demo_dir, "logger=none", "trainer.compile=default", "trainer.compile_backend=aot_eager",
          "trainer.pad_widths=[32,48,64]")  # fmt: skip
    a, b = (json.loads((run / "per_question.json").read_text()) for run in (eager, fast))
    assert sum(a[q]["prediction"] != "" for q in a) >= 50  # the model answers: the comparison means something
    assert sum(a[q]["prediction"] == b[q]["prediction"] for q in a) >= 0.99 * len(a)
    ma, mb = (json.loads((run / "run.json").read_text())["metrics"] for run in (eager, fast))
    assert mb["eval_f1"] == pytest.approx(ma["eval_f1"], abs=0.5)
