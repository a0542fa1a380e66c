"""The post-processing benchmark runs at a small size and prints its figures."""

from __future__ import annotations

import pytest

from spanqa.benchmarks.postprocess import main


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]):
    main(["--examples", "40", "--repeats", "1", "--ref-repeats", "1"])
    out = capsys.readouterr().out
    assert "examples: 40" in out and "identical: True" in out
