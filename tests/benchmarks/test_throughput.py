"""The throughput benchmark: its window-length model, its FLOP count, its batches, and a tiny CPU run whose
printed figures must agree with each other and with the formulas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from spanqa.benchmarks import throughput as tp


def test_window_lengths_match_squad_v2_train_windows() -> None:
    lengths = tp.sample_lengths(400_000, np.random.default_rng(1))
    assert lengths.mean() == pytest.approx(166, abs=1.5)
    assert np.median(lengths) == pytest.approx(150, abs=1)
    assert np.percentile(lengths, 90) == pytest.approx(243, abs=2)
    assert np.mean(lengths == 384) == pytest.approx(0.017, abs=0.001)
    assert lengths.max() == 384 and lengths.min() > tp.NON_CONTEXT  # every window has context tokens


def test_train_flops_hand_computed() -> None:
    # batch 2 padded to 3: 2 * (6*10*3 + 12*2*4*9) = 2088; batch 2 padded to 5: 2 * (6*10*5 + 12*2*4*25) = 5400
    assert tp.train_flops(params=10, layers=2, hidden=4, padded=[3, 5], batch=2) == 7488


def test_batch_layout_padding_and_labels() -> None:
    batch = tp.make_batch(np.array([20, 18]), multiple=8, rng=np.random.default_rng(0))
    assert batch["input_ids"].shape == (2, 24)  # the longest window, rounded up to a multiple of 8
    assert batch["attention_mask"].sum(dim=1).tolist() == [20, 18]
    assert batch["context_mask"].sum(dim=1).tolist() == [3, 1]  # length - [CLS], 14 question tokens, 2 [SEP]
    assert batch["context_mask"][0].nonzero().flatten().tolist() == [16, 17, 18]
    assert batch["token_type_ids"][1].nonzero().flatten().tolist() == [16, 17]  # context + final [SEP]
    assert (batch["input_ids"][1, 18:] == 0).all()
    for row in range(2):
        start, end = int(batch["start_positions"][row]), int(batch["end_positions"][row])
        assert (start, end) == (0, 0) or (batch["context_mask"][row, start : end + 1] == 1).all()


def parse_table(out: str) -> dict[str, list[str]]:
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    return {row[0]: row[1:] for row in rows if len(row) in (2, 3)}


def test_tiny_cpu_run_prints_consistent_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "figures.json"
    argv = ["--device", "cpu", "--size", "tiny", "--steps", "2", "--warmup", "1", "--eval-windows", "64"]
    tp.main([*argv, "--peak-tflops", "2", "--json", str(out_json)])
    table = parse_table(capsys.readouterr().out)
    labels = [
        "step time, median (ms)", "train windows/s", "real tokens/s", "padded tokens/s",
        "peak memory, peak RSS (MiB)", "achieved TFLOP/s", "MFU (% of 2 TFLOP/s)",
        "eval windows/s (+ post-processing)", "projected 6-epoch run (h)",
    ]  # fmt: skip
    for label in labels:
        assert len(table[label]) == 2 and all(float(cell) > 0 for cell in table[label]), label
    figures = json.loads(out_json.read_text())
    ratio = figures["crf"]["step_time_ms"] / figures["plain"]["step_time_ms"]
    assert float(table["CRF / plain step time"][0]) == pytest.approx(ratio, abs=1e-3)

    # The same seed gives the same windows: 3 batches of 8, the last 2 timed, padded to their longest (CPU).
    lengths = tp.sample_lengths(24, np.random.default_rng(0)).reshape(3, 8)[1:]
    real, padded = lengths.sum(), [int(row.max()) for row in lengths]
    for head, fig in ((h, figures[h]) for h in ("plain", "crf")):
        windows = fig["train_windows_per_s"]
        assert float(table["train windows/s"][head == "crf"]) == pytest.approx(windows, abs=0.051)
        assert fig["real_tokens_per_s"] / windows == pytest.approx(real / 16)
        assert fig["padded_tokens_per_s"] / windows == pytest.approx(8 * sum(padded) / 16)
        flops = tp.train_flops(fig["matmul_params"], 2, 64, padded, 8)
        assert fig["achieved_tflops"] / windows == pytest.approx(flops / 16 / 1e12)
        assert fig["mfu_percent"] == pytest.approx(100 * fig["achieved_tflops"] / 2)
        hours = (132_000 * 6 / windows + 6 * 12_078 / fig["eval_windows_per_s"]) / 3600
        assert fig["projected_run_h"] == pytest.approx(hours)
    # Same encoder; heads: emissions 64x3 + 3 and CRF 3 + 3 + 3x3 against qa_outputs 64x2 + 2.
    crf_head, plain_head = 64 * 3 + 3 + 3 + 3 + 9, 64 * 2 + 2
    assert figures["crf"]["matmul_params"] - figures["plain"]["matmul_params"] == crf_head - plain_head
