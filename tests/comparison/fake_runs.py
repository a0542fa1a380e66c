"""Finished run dirs written the way a run writes them (the run record through `spanqa.rundir.record`, the eval
artifacts as `spanqa.eval.policies` writes them): what the comparison reads, with known skill per model, for
`make compare` and `spanqa.comparison` tests. `legacy=True` writes a run.json of the first releases instead (no
config, no format; the config only in .hydra/config.yaml)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from spanqa.rundir.record import NullThreshold, QuestionSet, RunIdentity, RunRecord

QUESTIONS = [
    ("What is the capital of {}?", ["Paris"]),
    ("Who founded {}?", ["Victor Hugo", "Hugo"]),
    ("When was {} built?", ["in the year 1990"]),
    ("In which region is {}?", []),
    ("How tall is {}?", ["300 metres"]),
    ("Name the river of {}.", []),
]
N_QUESTIONS = 48


def context_of(i: int) -> str:
    """The paragraph question i is asked about: it holds every gold answer and the wrong one the fakes give."""
    gold = QUESTIONS[i % len(QUESTIONS)][1]
    return f"Town {i // 3} lies by the river, near the city. " + " ".join(f"It has {g}." for g in gold)


def per_question(rng: np.random.Generator, skill: float, n_questions: int = N_QUESTIONS) -> dict[str, dict[str, Any]]:
    """Answerable questions get F1 ~ skill, unanswerable ones are abstained on with probability skill."""
    out = {}
    for i in range(n_questions):
        template, gold = QUESTIONS[i % len(QUESTIONS)]
        if gold:
            f1 = float(np.clip(rng.normal(skill, 0.25), 0, 1))
            prediction = gold[0] if f1 == 1 else ("" if f1 == 0 else gold[0].split()[-1])
        else:
            f1 = float(rng.random() < skill)
            prediction = "" if f1 else "the city"
        exact = float(f1 == 1)
        start = context_of(i).find(prediction) if prediction else None
        # The threshold (0.5) blanked exactly the answers that are "": a consistent no-answer probability.
        na_prob = float(rng.uniform(0.5, 1.0) if prediction == "" else rng.uniform(0.0, 0.5))
        best_span = prediction or (gold[0].split()[0] if gold else "the city")
        out[f"q{i}"] = {"question": template.format(f"town {i}"), "gold": gold, "prediction": prediction}
        out[f"q{i}"] |= {"best_span": best_span, "start": start, "na_prob": na_prob, "exact": exact, "f1": f1}
    return out


def contexts_of(pq: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """contexts.json of a run scored on these questions (each distinct paragraph once)."""
    index: dict[str, int] = {}
    of = {qid: index.setdefault(context_of(int(qid[1:])), len(index)) for qid in pq}
    return {"contexts": list(index), "of": of}


def metrics_of(pq: dict[str, dict[str, Any]], epochs: int) -> dict[str, float]:
    def split(keep: Any) -> dict[str, float]:
        rows = [r for r in pq.values() if keep(r)]
        return {
            "exact": 100 * np.mean([r["exact"] for r in rows]),
            "f1": 100 * np.mean([r["f1"] for r in rows]),
            "total": float(len(rows)),
        }

    m = {f"eval_{k}": v for k, v in split(lambda r: True).items()}
    m |= {f"eval_HasAns_{k}": v for k, v in split(lambda r: r["gold"]).items()}
    m |= {f"eval_NoAns_{k}": v for k, v in split(lambda r: not r["gold"]).items()}
    best = m["eval_f1"] + 1.5
    m |= {"eval_best_exact": best, "eval_best_exact_thresh": 0.6, "eval_best_f1": best, "eval_best_f1_thresh": 0.6}
    return m | {"eval_null_threshold": 0.5, "eval_loss": 1.2, "epoch": float(epochs), "best_epoch": float(epochs)}


def write_run(
    run_dir: Path,
    model: str,
    seed: int,
    skill: float,
    lr: float = 2e-5,
    epochs: int = 2,
    policy: str = "fixed",
    demo_dir: str = "/tmp/demo",
    legacy: bool = False,
    n_questions: int = N_QUESTIONS,
) -> dict[str, Any]:
    """A finished run dir: .hydra/config.yaml + overrides.yaml, run.json, per_question.json, eval_results.json.
    Returns run.json's content."""
    rng = np.random.default_rng(seed * 100 + int(skill * 100))
    head = next((h for h in ("crf", "bio") if model.endswith(h)), "span")
    config = {
        "model": {"name": model, "name_or_path": "${demo.dir}/tiny-bert", "head": head, "num_candidates": 4},
        "data": {"dataset_name": None, "train_file": "${demo.dir}/train.json", "max_length": 64},
        "optimizer": {"lr": lr, "weight_decay": 0.01, "max_grad_norm": 1.0},
        "trainer": {"epochs": epochs, "batch_size": 16, "logging_steps": 10, "dataloader_workers": 0},
        "logger": {"backend": "none", "group": "${model.name}", "tags": ["demo", f"s{seed}"]},
        "demo": {"dir": demo_dir, "dev_examples": N_QUESTIONS},
        "seed": seed,
        "run_name": "${model.name}-seed${seed}",
    }
    config["data"]["null_threshold"] = {"policy": policy, "value": 0.5}
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", f"seed={seed}"]))
    pq = per_question(rng, skill, n_questions)
    metrics = metrics_of(pq, epochs)
    steps_per_epoch = 30
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        for step in range((epoch - 1) * steps_per_epoch + 10, epoch * steps_per_epoch + 1, 10):
            loss = 4.0 * np.exp(-step / 40) + 0.3 * rng.random() + (3.0 if head == "crf" else 0.0)
            grad_norm = 3.0 + rng.random() if head == "crf" else 0.5 + rng.random()  # CRF: always clipped at 1
            history.append(
                {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr, "epoch": step / 30, "step": step}
            )
        f1 = metrics["eval_f1"] - 8 * (epochs - epoch) + rng.normal(0, 1)
        em = f1 - 5
        history.append({"eval_loss": 2.0 / epoch, "eval_f1": f1, "eval_exact": em, "epoch": float(epoch)})
        history[-1]["step"] = epoch * steps_per_epoch
    history.append({"train_runtime": 50.0 + seed, "train_steps_per_second": 2.0, "epoch": float(epochs)})
    history.append({"eval_f1": -1.0, "eval_exact": -1.0, "eval_loss": 99.0, "epoch": float(epochs)})  # final eval
    legacy_record = {
        "run_name": f"{model}-seed{seed}",
        "metrics": metrics,
        "null_threshold_policy": policy,
        "log_history": history,
        "train_runtime_s": 50.0 + seed,
        "train_steps_per_second": 2.0 + seed / 10,
        "global_step": epochs * steps_per_epoch,
        "num_parameters": 200_000 + (4 if head == "crf" else 0),
        "best_checkpoint": str(run_dir / "checkpoints" / "checkpoint-60"),
        "wandb_run_id": None,
    }
    if legacy:
        (run_dir / "run.json").write_text(json.dumps(legacy_record, indent=1))
    else:
        resolved = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        identity = RunIdentity.of(resolved, [f"model={model}", f"seed={seed}"])  # type: ignore[arg-type]
        RunRecord(
            run_name=legacy_record["run_name"],
            config=identity.config,
            config_digest=identity.digest,
            overrides=identity.overrides,
            metrics={k: v for k, v in metrics.items() if k != "eval_null_threshold"},
            null_threshold=NullThreshold(metrics["eval_null_threshold"], policy),
            questions=QuestionSet.of(pq),
            log_history=history,
            train_runtime_s=legacy_record["train_runtime_s"],
            train_steps_per_second=legacy_record["train_steps_per_second"],
            global_step=legacy_record["global_step"],
            num_parameters=legacy_record["num_parameters"],
            best_checkpoint="checkpoints/checkpoint-60",
        ).write(run_dir)
    (run_dir / "per_question.json").write_text(json.dumps(pq))
    if not legacy:
        (run_dir / "contexts.json").write_text(json.dumps(contexts_of(pq)))
    (run_dir / "eval_results.json").write_text(json.dumps(metrics | {"null_threshold_policy": policy}))
    (run_dir / "eval" / "step-30").mkdir(parents=True)  # intermediate evaluations: not runs
    (run_dir / "eval" / "step-30" / "per_question.json").write_text(json.dumps(pq))
    return json.loads((run_dir / "run.json").read_text())


def write_multirun(tmp_path: Path) -> Path:
    """Hydra multirun layout: 2 models × 3 seeds, plus one job that never finished."""
    root = tmp_path / "outputs" / "multirun" / "2026-01-01" / "10-00-00"
    job = 0
    for model, skill in (("spanbert", 0.55), ("spanbert_crf", 0.6)):
        for seed in (1, 2, 3):
            write_run(root / f"{job}_{model}-seed{seed}", model, seed, skill, demo_dir=f"/tmp/demo{seed}")
            job += 1
    unfinished = root / f"{job}_spanbert_crf-seed4"
    (unfinished / ".hydra").mkdir(parents=True)
    (unfinished / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "spanbert_crf"}, "seed": 4}))
    return root
