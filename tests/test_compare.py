"""`python -m spanqa.compare` (the command) on run dirs written the way a run writes them (fake_runs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spanqa import compare
from spanqa.comparison import runs as comparison
from tests.comparison.fake_runs import N_QUESTIONS, write_multirun, write_run
from tests.helpers import subprocess_env


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    return write_multirun(tmp_path)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main()'s exit status (also for the one-line errors, which exit through SystemExit), stdout, stderr."""
    try:
        code = compare.main(argv)
    except SystemExit as stop:
        code = int(stop.code)
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
    # Learning dynamics beside the scores: the fake CRF runs' norms are all above max_grad_norm, the plain ones' half.
    assert rows["spanbert_crf"][-1] == "100%"
    plain = [h["grad_norm"] for p in sorted(multirun.glob("*_spanbert-seed[123]/run.json"))
             for h in json.loads(p.read_text())["log_history"] if "grad_norm" in h]  # fmt: skip
    assert rows["spanbert"][-1] == f"{100 * np.mean(np.array(plain) > 1.0):.0f}%"
    assert rows["spanbert"][-2] == f"{np.median(plain):.2f}"


def test_unfinished_run_is_listed_as_skipped(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    finished, unfinished = comparison.discover_runs([multirun])
    assert len(finished) == 6 and [p.name for p in unfinished] == ["6_spanbert_crf-seed4"]
    code, stdout, _ = run_main([str(multirun), "--out", str(tmp_path / "r"), "--resamples", "500"], capsys)
    assert code == 0
    assert "6_spanbert_crf-seed4` (unfinished" in (tmp_path / "r" / "report.md").read_text()
    assert "unfinished" in stdout


def test_explicit_baseline_and_candidate(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    argv = [str(multirun), "--out", str(out), "--baseline", "spanbert_crf", "--candidate", "spanbert"]
    code, _, _ = run_main([*argv, "--resamples", "500"], capsys)
    assert code == 0
    assert "**spanbert** − **spanbert_crf**" in (out / "report.md").read_text()
    code, _, err = run_main([str(multirun), "--out", str(out), "--candidate", "bert-large"], capsys)
    assert code == 2 and err.startswith("error: no group labelled 'bert-large'") and err.count("\n") == 1


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
    runs = [comparison.load_run(tmp_path / "runs" / "a")]
    assert comparison.fairness_warnings(runs) == []
    assert runs[0].per_question is not None
    for record in runs[0].per_question.values():
        record["prediction"] = ""
    assert comparison.fairness_warnings(runs) == [
        "answered no question at all (scores only measure the no-answer rate): a"
    ]


def test_a_report_over_three_heads_has_a_section_per_pair(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for model, skill in (("spanbert", 0.5), ("spanbert_crf", 0.6), ("spanbert_bio", 0.55)):
        for seed in (1, 2):
            write_run(tmp_path / "runs" / f"{model}-{seed}", model, seed, skill)
    code, stdout, _ = run_main([str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--resamples", "200"], capsys)
    assert code == 0
    report = (tmp_path / "r" / "report.md").read_text()
    for pair in ("spanbert_bio − spanbert", "spanbert_crf − spanbert", "spanbert_crf − spanbert_bio"):
        assert f"### {pair}" in report
    assert stdout.count("**Paired bootstrap over") == 3


def test_runs_scored_on_different_questions_are_not_paired_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_run(tmp_path / "runs" / "a", "spanbert", 1, 0.5)
    write_run(tmp_path / "runs" / "b", "spanbert_crf", 1, 0.6, n_questions=N_QUESTIONS // 2)
    out = tmp_path / "r"
    code, stdout, err = run_main([str(tmp_path / "runs"), "--out", str(out), "--resamples", "200"], capsys)
    assert code == 2 and err.count("\n") == 1 and not stdout
    assert err == (
        f"error: the runs were scored on different evaluation questions (1 run on {N_QUESTIONS} questions (e.g. a); "
        f"1 run on {N_QUESTIONS // 2} questions (e.g. b)): compare runs of one evaluation set, or pass "
        "--allow-different-questions to pair them on the questions they share\n"
    )
    assert not (out / "report.md").exists()
    argv = [str(tmp_path / "runs"), "--out", str(out), "--resamples", "200", "--allow-different-questions"]
    code, stdout, _ = run_main(argv, capsys)
    assert code == 0
    report = (out / "report.md").read_text()
    assert f"**Paired bootstrap over {N_QUESTIONS // 2} questions**" in report  # the shared ones, and said so
    assert "the runs were scored on different questions, so this mixes the two" in report
    assert "needs per_question.json" not in report


def test_error_analysis_tables(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    assert run_main([str(multirun), "--out", str(out), "--resamples", "200"], capsys)[0] == 0
    report = (out / "report.md").read_text()
    words = table_rows(report, "bucket")  # the first bucket table: question words
    assert list(words) == ["what", "who", "when", "which", "how", "other"]
    assert words["what"][0] == str(N_QUESTIONS // 6)
    runs = [comparison.load_run(p) for p in sorted(multirun.glob("*_spanbert-seed[123]"))]
    what = [np.mean([r["f1"] for r in run.per_question.values() if r["question"].startswith("What")]) for run in runs]
    assert words["what"][1] == f"{100 * np.mean(what):.2f}"
    section = report.split("### Unanswerable detection")[1]
    rows = table_rows(section, "group")
    assert rows["spanbert"][0] == str(2 * N_QUESTIONS // 6)  # the "In which" and "Name the" templates


def test_pngs_are_written_and_non_trivial(multirun: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r"
    assert run_main([str(multirun), "--out", str(out), "--resamples", "200"], capsys)[0] == 0
    import matplotlib.image

    for name in ("loss_curves.png", "f1_curves.png", "threshold_curves.png", "grad_norms.png", "metrics_bars.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        pixels = matplotlib.image.imread(out / name)
        assert pixels.shape[0] >= 500 and pixels.shape[1] >= 900
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
        assert f"({name})" in (out / "report.md").read_text()


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
