"""The Trainer-level benchmark runs the real QATrainer at tiny size on CPU and prints every figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spanqa.benchmarks import trainer_steps as ts


def test_generated_windows_have_squad_lengths_and_answers_inside_their_context() -> None:
    rng = np.random.default_rng(0)
    dev = ts.eval_set(200, rng)
    assert len(dev.ids) == 200 and 100 < np.mean(dev.n_tokens) < 250
    answered = [q for q in dev.ids if dev.gold[q]]
    assert 60 < len(answered) < 140  # about half
    for i, qid in enumerate(dev.ids):
        for text in dev.gold[qid]:
            assert text in dev.contexts[i]


def test_tiny_cpu_run_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    results = ts.main(["--size", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--eval-windows", "48",
                       "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for label in ("step time", "optimizer steps/s", "projected 6-epoch run (h)", "eval windows/s", "peak memory",
                  "CRF / start-end step time, compile=false"):  # fmt: skip
        assert label in printed
    for key in ("span/false", "crf/false"):
        figures = results[key]
        assert figures["step_time_ms"] > 0 and figures["eval_windows_per_s"] > 0 and figures["peak_memory_mib"] > 0
        expected_h = (
            132_000 / 8 * 6 * figures["step_time_ms"] / 1e3 + 6 * 12_078 / figures["eval_windows_per_s"]
        ) / 3600
        assert figures["projected_run_h"] == pytest.approx(expected_h)
    assert results["crf_span_ratio/false"] == pytest.approx(
        results["crf/false"]["step_time_ms"] / results["span/false"]["step_time_ms"]
    )
    assert json.loads(out.read_text()) == results
