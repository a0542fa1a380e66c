"""`python -m spanqa.compare` on run dirs written here the way records.py/evaluation.py write them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import subprocess_env
from spanqa import compare

QUESTIONS = [
    ("What is the capital of {}?", ["Paris"]),
    ("Who founded {}?", ["Victor Hugo", "Hugo"]),
    ("When was {} built?", ["in the year 1990"]),
    ("In which region is {}?", []),
    ("How tall is {}?", ["300 metres"]),
    ("Name the river of {}.", []),
]
N_QUESTIONS = 48


def per_question(rng: np.random.Generator, skill: float) -> dict[str, dict[str, Any]]:
    """Answerable questions get F1 ~ skill, unanswerable ones are abstained on with probability skill."""
    out = {}
    for i in range(N_QUESTIONS):
        template, gold = QUESTIONS[i % len(QUESTIONS)]
        if gold:
            f1 = float(np.clip(rng.normal(skill, 0.25), 0, 1))
            prediction = gold[0] if f1 == 1 else ("" if f1 == 0 else gold[0].split()[-1])
        else:
            f1 = float(rng.random() < skill)
            prediction = "" if f1 else "the city"
        exact = float(f1 == 1)
        out[f"q{i}"] = {"question": template.format(f"town {i}"), "gold": gold, "prediction": prediction}
        out[f"q{i}"] |= {"na_prob": float(rng.random()), "exact": exact, "f1": f1}
    return out


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
) -> dict[str, Any]:
    """A finished run dir: .hydra/config.yaml + overrides.yaml, run.json, per_question.json, eval_results.json."""
    rng = np.random.default_rng(seed * 100 + int(skill * 100))
    head = "crf" if model.endswith("crf") else "span"
    config = {
        "model": {"name": model, "name_or_path": "${demo.dir}/tiny-bert", "head": head, "crf_num_candidates": 4},
        "data": {"dataset_name": None, "train_file": "${demo.dir}/train.json", "max_length": 64},
        "optimizer": {"lr": lr, "weight_decay": 0.01},
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
    pq = per_question(rng, skill)
    metrics = metrics_of(pq, epochs)
    steps_per_epoch = 30
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        for step in range((epoch - 1) * steps_per_epoch + 10, epoch * steps_per_epoch + 1, 10):
            loss = 4.0 * np.exp(-step / 40) + 0.3 * rng.random() + (3.0 if head == "crf" else 0.0)
            history.append({"loss": loss, "grad_norm": 1.0, "learning_rate": lr, "epoch": step / 30, "step": step})
        f1 = metrics["eval_f1"] - 8 * (epochs - epoch) + rng.normal(0, 1)
        em = f1 - 5
        history.append({"eval_loss": 2.0 / epoch, "eval_f1": f1, "eval_exact": em, "epoch": float(epoch)})
        history[-1]["step"] = epoch * steps_per_epoch
    history.append({"train_runtime": 50.0 + seed, "train_steps_per_second": 2.0, "epoch": float(epochs)})
    history.append({"eval_f1": -1.0, "eval_exact": -1.0, "eval_loss": 99.0, "epoch": float(epochs)})  # final eval
    record = {
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
    (run_dir / "run.json").write_text(json.dumps(record, indent=1))
    (run_dir / "per_question.json").write_text(json.dumps(pq))
    (run_dir / "eval_results.json").write_text(json.dumps(metrics | {"null_threshold_policy": policy}))
    (run_dir / "eval" / "step-30").mkdir(parents=True)  # intermediate evaluations: not runs
    (run_dir / "eval" / "step-30" / "per_question.json").write_text(json.dumps(pq))
    return record


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
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


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = compare.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_rows(report: str, first_header: str) -> dict[str, list[str]]:
    """Rows of the markdown table whose header starts with `first_header`, by their first cell."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_report_table_matches_the_runs_saved_metrics(
    multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code, stdout, err = run_main([str(multirun), "--out", str(out), "--resamples", "2000"], capsys)
    assert code == 0, err
    report = (out / "report.md").read_text()
    rows = table_rows(report.split("## Summary")[1], "group")
    assert set(rows) == {"spanbert", "spanbert_crf"}  # seeds and per-run paths/tags do not split groups
    for label in rows:
        records = [json.loads(p.read_text()) for p in sorted(multirun.glob(f"*_{label}-seed[123]/run.json"))]
        assert len(records) == 3
        cells = rows[label]
        assert cells[0] == "3"
        for cell, key in zip(cells[1:5], ("eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1"), strict=True):
            values = [r["metrics"][key] for r in records]
            assert cell == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"
        assert cells[5] == f"{np.mean([r['metrics']['eval_best_f1'] for r in records]):.2f}"
        assert cells[7] == "0.500 (fixed)"
        assert cells[8] == f"{np.mean([r['train_runtime_s'] for r in records]):.0f}"
        assert cells[10] == f"{records[0]['num_parameters']:,}"
    assert "| spanbert_crf | 3 |" in stdout  # the table is printed too


def test_unfinished_run_is_listed_as_skipped(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    finished, unfinished = compare.discover_runs([multirun])
    assert len(finished) == 6 and [p.name for p in unfinished] == ["6_spanbert_crf-seed4"]
    code, stdout, _ = run_main([str(multirun), "--out", str(tmp_path / "r"), "--resamples", "500"], capsys)
    assert code == 0
    assert "6_spanbert_crf-seed4` (unfinished" in (tmp_path / "r" / "report.md").read_text()
    assert "unfinished" in stdout


def test_bootstrap_section_reports_crf_minus_plain(multirun: Path, tmp_path: Path) -> None:
    runs, _ = compare.collect_local([multirun])
    groups = compare.group_runs(runs)
    baseline, candidate = compare.choose_pair(groups, None, None)  # type: ignore[misc]
    assert (baseline.label, candidate.label) == ("spanbert", "spanbert_crf")
    result = compare.compare_groups(baseline, candidate, n_resamples=3_000, seed=0)
    # The bootstrap's mean difference is the difference of the seed-averaged per-question F1.
    per_run = {g.label: [r.per_question for r in g.runs] for g in groups}
    mean_f1 = {k: 100 * np.mean([[t[q]["f1"] for q in t] for t in v]) for k, v in per_run.items()}
    assert result.bootstrap is not None
    assert result.bootstrap.n_questions == N_QUESTIONS
    assert result.bootstrap.mean_diff == pytest.approx(mean_f1["spanbert_crf"] - mean_f1["spanbert"])
    assert result.bootstrap.low < result.bootstrap.mean_diff < result.bootstrap.high
    # Same seeds on both sides: paired per-seed differences of the saved eval_f1.
    f1 = {g.label: [r.metrics["eval_f1"] for r in sorted(g.runs, key=lambda r: r.config["seed"])] for g in groups}
    diffs = np.subtract(f1["spanbert_crf"], f1["spanbert"])
    assert result.seeds.paired
    assert (result.seeds.diff, result.seeds.spread) == pytest.approx((diffs.mean(), diffs.std(ddof=1)))
    text = compare.render_comparison(result)
    assert f"mean difference {result.bootstrap.mean_diff:+.2f} F1" in text
    assert f"[{result.bootstrap.low:+.2f}, {result.bootstrap.high:+.2f}]" in text
    assert "twice the fraction" in text  # the method is stated
    p_value = result.bootstrap.p_value
    assert (f"p = {p_value:.4f}" if p_value > 0 else "p < 0.000333333") in text


def test_explicit_baseline_and_candidate(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    argv = [str(multirun), "--out", str(out), "--baseline", "spanbert_crf", "--candidate", "spanbert"]
    code, _, _ = run_main([*argv, "--resamples", "500"], capsys)
    assert code == 0
    assert "**spanbert** − **spanbert_crf**" in (out / "report.md").read_text()
    code, _, err = run_main([str(multirun), "--out", str(out), "--candidate", "bert-large"], capsys)
    assert code == 2 and err.startswith("error: no group labelled 'bert-large'") and err.count("\n") == 1


def test_grouping_by_a_swept_key(tmp_path: Path) -> None:
    plain = [("spanbert", 2e-5, 1), ("spanbert", 2e-5, 2), ("spanbert", 3e-5, 1)]
    crf = [("spanbert_crf", 3e-5, 1), ("spanbert_crf", 3e-5, 2), ("spanbert_crf", 2e-5, 1)]
    for i, (model, lr, seed) in enumerate(plain + crf):
        write_run(tmp_path / "runs" / f"r{i}", model, seed, 0.5, lr=lr)
    runs, skipped = compare.collect_local([tmp_path / "runs"])
    assert not skipped
    groups = compare.group_runs(runs)
    assert {g.label: len(g.runs) for g in groups} == {
        "spanbert lr=2e-05": 2,
        "spanbert lr=3e-05": 1,
        "spanbert_crf lr=2e-05": 1,
        "spanbert_crf lr=3e-05": 2,
    }
    baseline, candidate = compare.choose_pair(groups, None, None)  # type: ignore[misc]
    assert (baseline.label, candidate.label) == ("spanbert lr=2e-05", "spanbert_crf lr=2e-05")


def test_unfair_comparisons_are_flagged(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_run(tmp_path / "runs" / "a", "spanbert", 1, 0.5, epochs=2, policy="fixed")
    write_run(tmp_path / "runs" / "b", "spanbert_crf", 1, 0.5, epochs=3, policy="tune_on_dev")
    code, _, _ = run_main([str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--resamples", "200"], capsys)
    assert code == 0
    warnings = [line for line in (tmp_path / "r" / "report.md").read_text().splitlines() if "**warning**" in line]
    text = "\n".join(warnings)
    assert "trainer.epochs" in text and "data.null_threshold.policy" in text
    assert "different null-threshold policies: fixed, tune_on_dev" in text
    assert "different numbers of epochs trained: 2, 3" in text
    assert "optimistic" in text
    # One run on its own is not compared with anything.
    runs = [compare.load_run(tmp_path / "runs" / "a")]
    assert compare.fairness_warnings(runs) == []
    assert runs[0].per_question is not None
    for record in runs[0].per_question.values():
        record["prediction"] = ""
    assert compare.fairness_warnings(runs) == [
        "answered no question at all (scores only measure the no-answer rate): a"
    ]


def test_error_analysis_tables(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    assert run_main([str(multirun), "--out", str(out), "--resamples", "200"], capsys)[0] == 0
    report = (out / "report.md").read_text()
    words = table_rows(report, "bucket")  # the first bucket table: question words
    assert list(words) == ["what", "who", "when", "which", "how", "other"]
    assert words["what"][0] == str(N_QUESTIONS // 6)
    runs = [compare.load_run(p) for p in sorted(multirun.glob("*_spanbert-seed[123]"))]
    what = [np.mean([r["f1"] for r in run.per_question.values() if r["question"].startswith("What")]) for run in runs]
    assert words["what"][1] == f"{100 * np.mean(what):.2f}"
    section = report.split("### Unanswerable detection")[1]
    rows = table_rows(section, "group")
    assert rows["spanbert"][0] == str(2 * N_QUESTIONS // 6)  # the "In which" and "Name the" templates


def test_pngs_are_written_and_non_trivial(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    assert run_main([str(multirun), "--out", str(out), "--resamples", "200"], capsys)[0] == 0
    import matplotlib.image

    for name in ("loss_curves.png", "f1_curves.png", "metrics_bars.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        pixels = matplotlib.image.imread(out / name)
        assert pixels.shape[0] >= 500 and pixels.shape[1] >= 900
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
        assert f"({name})" in (out / "report.md").read_text()


def test_curves_skip_the_final_evaluation(tmp_path: Path) -> None:
    from spanqa.plots import history_curves

    record = write_run(tmp_path / "run", "spanbert", 1, 0.5, epochs=3)
    curves = history_curves(record["log_history"])
    assert sorted(curves["eval_f1"]) == [1.0, 2.0, 3.0]
    assert -1.0 not in curves["eval_f1"].values()
    assert sorted(curves["loss"])[:3] == [10.0, 20.0, 30.0]


def test_runs_without_per_question_records_skip_the_bootstrap(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "spanbert", 1, 0.5)
    write_run(tmp_path / "b", "spanbert_crf", 1, 0.6)
    (tmp_path / "b" / "per_question.json").unlink()  # what W&B-only input looks like
    groups = compare.group_runs(compare.collect_local([tmp_path])[0])
    result = compare.compare_groups(*groups, n_resamples=100)
    assert result.bootstrap is None
    assert "bootstrap skipped" in compare.render_comparison(result)


@pytest.mark.parametrize("layout", ["empty", "missing", "only_unfinished"])
def test_no_runs_is_a_one_line_error(layout: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "outputs"
    if layout != "missing":
        target.mkdir()
    if layout == "only_unfinished":
        (target / "run" / ".hydra").mkdir(parents=True)
        (target / "run" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    code, _, err = run_main([str(target), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ("no such file" in err) if layout == "missing" else ("no finished runs" in err)
    assert not (tmp_path / "r").exists()


def test_wandb_without_key_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    code, _, err = run_main(["--wandb", "my-team/spanqa:spanbert_crf"], capsys)
    assert code == 2
    assert re.fullmatch(r"error: W&B unavailable: no API key .*\n", err)
    code, _, err = run_main(["--wandb", "not-a-project-path"], capsys)
    assert code == 2 and "ENTITY/PROJECT" in err


def test_cli_exit_codes(tmp_path: Path) -> None:
    env = subprocess_env(HOME=str(tmp_path))
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    done = subprocess.run(
        [sys.executable, "-m", "spanqa.compare", str(tmp_path / "nowhere")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "spanqa.compare", "--wandb", "e/p"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and "no API key" in done.stderr and "Traceback" not in done.stderr


def test_resamples_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(tmp_path), "--resamples", "0"])
    assert exit_info.value.code == 2
    assert "0 is invalid: must be >= 1" in capsys.readouterr().err
