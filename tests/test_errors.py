"""The one way every command reports bad input: one `error:` line on stderr, exit status 2, nothing after it."""

from __future__ import annotations

import pytest

from spanqa.errors import ArgumentParser, DataError, reported


def test_a_spanqa_error_becomes_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop, reported():
        raise DataError("data.train_file='x.json' does not exist")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: data.train_file='x.json' does not exist\n"


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(KeyError), reported():
        raise KeyError("a bug stays a traceback")


def test_an_open_progress_bar_is_closed_before_the_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tqdm import tqdm

    bar = tqdm(total=10)
    bar.update(3)
    with pytest.raises(SystemExit), reported():
        raise DataError("stopped")
    err = capsys.readouterr().err
    assert err.endswith("error: stopped\n")  # the bar drew itself before, never after
    assert bar.disable or bar.n == 3


def test_a_bad_command_line_is_reported_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    parser = ArgumentParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--n", "many"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: argument --n: invalid int value: 'many'\n"
