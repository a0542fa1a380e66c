"""End-to-end runs of ``python -m spanqa.score`` on small official-format files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_module

DATA = {
    "version": "v2.0",
    "data": [
        {
            "title": "Super_Bowl_50",
            "paragraphs": [
                {
                    "context": "The Denver Broncos beat the Carolina Panthers.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "Who won?",
                            "answers": [
                                {"text": "Denver Broncos", "answer_start": 4},
                                {"text": "the Broncos", "answer_start": 0},
                            ],
                            "is_impossible": False,
                        },
                        {
                            "id": "q3",
                            "question": "Who sang the anthem?",
                            "answers": [],
                            "is_impossible": True,
                        },
                    ],
                }
            ],
        },
        {
            "title": "Venue",
            "paragraphs": [
                {
                    "context": "Levi's Stadium is in Santa Clara, California.",
                    "qas": [
                        {
                            "id": "q2",
                            "question": "Where is the stadium?",
                            "answers": [{"text": "Santa Clara, California", "answer_start": 21}],
                            "is_impossible": False,
                        },
                        {"id": "q4", "question": "Who built it?", "answers": [], "is_impossible": True},
                    ],
                }
            ],
        },
    ],
}
PREDS = {"q1": "Broncos", "q2": "Santa Clara", "q3": "", "q4": "Levi's Stadium"}
NA_PROBS = {"q1": 0.1, "q2": 0.2, "q3": 0.9, "q4": 0.8}
OFFICIAL_KEYS = [
    "exact", "f1", "total",
    "HasAns_exact", "HasAns_f1", "HasAns_total",
    "NoAns_exact", "NoAns_f1", "NoAns_total",
]  # fmt: skip
BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_module("spanqa.score", *map(str, args), timeout=60)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"data": tmp_path / "dev.json", "pred": tmp_path / "pred.json", "na": tmp_path / "na.json"}
    paths["data"].write_text(json.dumps(DATA))
    paths["pred"].write_text(json.dumps(PREDS))
    paths["na"].write_text(json.dumps(NA_PROBS))
    return paths


def test_scores_with_na_probs_and_threshold(files: dict[str, Path]) -> None:
    proc = run_cli(files["data"], files["pred"], "-n", files["na"], "-t", "0.5")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == OFFICIAL_KEYS + BEST_KEYS
    # q3 (0.9) and q4 (0.8) exceed 0.5 and count as "": per-question EM 1, 0, 1, 1; F1 1, 0.8, 1, 1
    assert out["exact"] == pytest.approx(75.0)
    assert out["f1"] == pytest.approx(95.0)
    assert out["total"] == 4
    assert out["HasAns_exact"] == pytest.approx(50.0)
    assert out["HasAns_f1"] == pytest.approx(90.0)
    assert out["NoAns_exact"] == pytest.approx(100.0)
    # Best thresholds come from the raw scores (see test_metrics for the sweep by hand).
    assert out["best_exact"] == pytest.approx(75.0)
    assert out["best_exact_thresh"] == pytest.approx(0.1)
    assert out["best_f1"] == pytest.approx(95.0)
    assert out["best_f1_thresh"] == pytest.approx(0.2)
    assert proc.stdout.startswith('{\n  "exact"')  # indent=2, like the official script


def test_without_na_probs_omits_best_keys_and_writes_out_file(files: dict[str, Path], tmp_path: Path) -> None:
    out_file = tmp_path / "eval.json"
    proc = run_cli(files["data"], files["pred"], "--out-file", out_file)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    out = json.loads(out_file.read_text())
    assert list(out) == OFFICIAL_KEYS
    assert out["exact"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(70.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)


def test_missing_prediction_is_reported_and_skipped(files: dict[str, Path]) -> None:
    files["pred"].write_text(json.dumps({"q1": "Broncos", "q3": ""}))
    proc = run_cli(files["data"], files["pred"], "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "Missing prediction for q2" in proc.stderr
    out = json.loads(proc.stdout)
    assert out["total"] == 2
    assert out["exact"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("target", "content", "problem"),
    [
        ("data", None, "file not found"),
        ("data", "{not json", "not valid JSON"),
        ("data", json.dumps({"version": "v2.0"}), "not in SQuAD format"),
        ("pred", json.dumps(["Broncos"]), "must be a JSON object"),
        ("pred", json.dumps({"other": "x"}), "no prediction for any"),
        ("na", json.dumps({"q1": 0.1}), "no probability for 3 question(s)"),
        ("na", json.dumps({**NA_PROBS, "q2": "high"}), "not a number"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    files: dict[str, Path], target: str, content: str | None, problem: str
) -> None:
    if content is None:
        files[target].unlink()
    else:
        files[target].write_text(content)
    proc = run_cli(files["data"], files["pred"], "-n", files["na"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(files[target]) in lines[0]
    assert problem in lines[0]
    assert proc.stdout == ""


def test_out_image_dir_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli(files["data"], files["pred"], "-n", files["na"], "--out-image-dir", tmp_path / "img")
    assert proc.returncode == 2
    assert "--out-image-dir" in proc.stderr
    assert "not supported" in proc.stderr
    assert not (tmp_path / "img").exists()


def test_unwritable_out_file_is_one_line(files: dict[str, Path]) -> None:
    proc = run_cli(files["data"], files["pred"], "-o", "/proc/spanqa/eval.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: /proc/spanqa/eval.json: cannot be written (No such file or directory)"
    ]
