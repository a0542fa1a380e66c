"""`python -m spanqa.predict`: single and file mode, input formats, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spanqa.errors import DataError, ModelLoadError
from spanqa.inference import Predictor, resolve_settings
from spanqa.predict import main, read_questions
from tests.helpers import RESULT_KEYS, TOY_CONTEXT, TOY_QUESTION, long_context, subprocess_env


# ------------------------------------------------------------------------------------ 3. command line
def cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spanqa.predict", *args],
        cwd=cwd,
        env=subprocess_env(OMP_NUM_THREADS="1"),  # tiny models: one thread each, no spinning on shared cores
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def squad_file(path: Path) -> Path:
    paragraphs = [
        {
            "context": TOY_CONTEXT,
            "qas": [{"id": "a1", "question": TOY_QUESTION, "answers": [], "is_impossible": True}],
        },
        {"context": long_context("Talomi worked as a pilot.", 3, 3), "qas": [{"id": "a2", "question": "What job?"}]},
    ]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    return path


def test_cli_single_and_file_modes(trained_dir: Path, tmp_path: Path) -> None:
    squad = squad_file(tmp_path / "in.json")
    jsonl = tmp_path / "in.jsonl"
    rows = [
        {"id": "j1", "question": TOY_QUESTION, "context": TOY_CONTEXT},
        {"id": 7, "question": "Who?", "context": "Nobody."},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "squad").mkdir()
    # Three processes at once: each spends most of its time importing torch and transformers.
    procs = [
        cli("--model", str(trained_dir), "--question", TOY_QUESTION, "--context", TOY_CONTEXT, cwd=tmp_path),
        cli("--model", str(trained_dir), "--file", str(squad), cwd=tmp_path / "squad"),
        cli("--model", str(trained_dir), "--file", str(jsonl), "--out", str(tmp_path / "j/preds.json"), cwd=tmp_path),
    ]
    (rc1, out1, err1), (rc2, out2, err2), (rc3, _, err3) = (finish(p) for p in procs)
    assert (rc1, rc2, rc3) == (0, 0, 0), err1 + err2 + err3
    # Without --out, file mode writes under outputs/predict/<time>_<model dir>/ and says where.
    (default_out,) = (tmp_path / "squad" / "outputs" / "predict").glob(f"*_{trained_dir.name}")
    assert out2 == f"wrote 2 answers to {default_out.relative_to(tmp_path / 'squad')}/predictions.json and " \
        f"{default_out.relative_to(tmp_path / 'squad')}/predictions_full.json\n"  # fmt: skip
    assert "answering: 100%" in err2  # the progress bar, on stderr

    single = json.loads(out1)
    kobe = TOY_CONTEXT.index("Kobe")
    assert set(single) == RESULT_KEYS
    assert (single["answer"], single["start"], single["end"]) == ("Kobe", kobe, kobe + 4)

    predictor = Predictor.load(trained_dir, device="cpu")
    expected = predictor.predict_many(read_questions(squad))
    official = json.loads((default_out / "predictions.json").read_text())
    full = json.loads((default_out / "predictions_full.json").read_text())
    assert official == {qid: r["answer"] for qid, r in expected.items()} and official["a1"] == "Kobe"
    assert list(full) == ["a1", "a2"] and all(set(r) == RESULT_KEYS for r in full.values())
    assert full["a2"]["best_span"] == expected["a2"]["best_span"]
    assert full["a2"]["score"] == pytest.approx(expected["a2"]["score"], abs=1e-5)

    official = json.loads((tmp_path / "j" / "preds.json").read_text())
    full = json.loads((tmp_path / "j" / "preds_full.json").read_text())
    assert list(official) == ["j1", "7"] and official["j1"] == "Kobe"
    assert full["7"]["answer"] == official["7"]

    # An existing output is not replaced without --overwrite (checked before the model loads) ...
    shutil.copy(default_out / "predictions.json", tmp_path / "squad" / "predictions.json")
    shutil.copy(default_out / "predictions_full.json", tmp_path / "squad" / "predictions_full.json")
    before = (tmp_path / "squad" / "predictions.json").read_bytes()
    argv = ("--model", str(trained_dir), "--file", str(squad), "--out", "predictions.json")
    rc, out, err = finish(cli(*argv, cwd=tmp_path / "squad"))
    assert (rc, out) == (2, "") and err == "error: predictions.json already exists: pass --overwrite to replace it\n"
    assert (tmp_path / "squad" / "predictions.json").read_bytes() == before
    # ... also when only the _full sibling is in the way; --overwrite replaces both.
    (tmp_path / "squad" / "predictions.json").unlink()
    out_path = str(tmp_path / "squad" / "predictions.json")
    assert run_main(["--model", str(trained_dir), "--file", str(squad), "--out", out_path]) == 2
    assert main(["--model", str(trained_dir), "--file", str(squad), "--out", out_path, "--overwrite"]) == 0
    assert json.loads(Path(out_path).read_text())["a1"] == "Kobe"


def bad_inputs(tmp: Path, tiny_dir: Path) -> dict[str, tuple[list[str], str]]:
    """name → (arguments, the expected stderr line after 'error: ')."""
    (tmp / "not.json").write_text('{"data": [\n  {"paragraphs": ]}\n')
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "nested.json").write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    (tmp / "bad.jsonl").write_text('{"id": "1", "question": "Who?", "context": "Me."}\n\n{"id": "2", "question": \n')
    (tmp / "short.jsonl").write_text('{"id": "1", "question": "Who?", "context": "Me."}\n{"id": "2", "context": "x"}\n')
    (tmp / "empty_q.jsonl").write_text('{"id": "e1", "question": "  ", "context": "Me."}\n')
    (tmp / "dup.jsonl").write_text('{"id": "d", "question": "A?", "context": "B."}\n' * 2)
    empty_ctx = {"data": [{"paragraphs": [{"context": " ", "qas": [{"id": "s9", "question": "Why?"}]}]}]}
    (tmp / "empty_ctx.json").write_text(json.dumps(empty_ctx))
    (tmp / "no_weights").mkdir()
    shutil.copy(tiny_dir / "config.json", tmp / "no_weights" / "config.json")
    model = ["--model", str(tiny_dir)]
    single = ["--question", "Q?", "--context", "C."]
    return {
        "missing model": (["--model", str(tmp / "nope"), *single], f"--model={str(tmp / 'nope')!r} does not exist"),
        "no weights": (
            ["--model", str(tmp / "no_weights"), *single],
            f"--model={str(tmp / 'no_weights')!r} has no weights (model.safetensors or pytorch_model.bin)",
        ),
        "missing file": ([*model, "--file", str(tmp / "absent.json")], f"{tmp / 'absent.json'}: file not found"),
        "not json": (
            [*model, "--file", str(tmp / "not.json")],
            f"{tmp / 'not.json'}: not valid JSON (Expecting value: line 2 column 18",
        ),
        "neither format": ([*model, "--file", str(tmp / "list.json")], f"{tmp / 'list.json'}: neither SQuAD JSON"),
        "squad without context": (
            [*model, "--file", str(tmp / "nested.json")],
            f"{tmp / 'nested.json'}: not in SQuAD format",
        ),
        "jsonl bad line": ([*model, "--file", str(tmp / "bad.jsonl")], f"{tmp / 'bad.jsonl'}: line 3: not valid JSON"),
        "jsonl missing key": (
            [*model, "--file", str(tmp / "short.jsonl")],
            f"{tmp / 'short.jsonl'}: line 2: has no 'question'",
        ),
        "empty question": (
            [*model, "--file", str(tmp / "empty_q.jsonl")],
            f"{tmp / 'empty_q.jsonl'}: line 1: question 'e1' has an empty question",
        ),
        "empty context": (
            [*model, "--file", str(tmp / "empty_ctx.json")],
            f"{tmp / 'empty_ctx.json'}: question 's9' has an empty context",
        ),
        "duplicate id": ([*model, "--file", str(tmp / "dup.jsonl")], f"{tmp / 'dup.jsonl'}: duplicate question id 'd'"),
        "empty single question": ([*model, "--question", " ", "--context", "C."], "--question is empty"),
        "no question": ([*model, "--context", "C."], "pass --question and --context, or --file"),
        "out without file": ([*model, *single, "--out", "x.json"], "--out applies to --file mode only"),
        "bad stride": ([*model, *single, "--doc-stride", "400"], "data.doc_stride=400 is invalid"),
        "bad threshold": ([*model, *single, "--null-threshold", "1.5"], "--null-threshold=1.5 is invalid"),
        "bad batch size": ([*model, *single, "--batch-size", "0"], "--batch-size=0 is invalid"),
    }


def run_main(args: list[str]) -> int:
    """main()'s exit status, also for the usage errors argparse reports by raising SystemExit."""
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code)


def test_cli_bad_input_in_process(tmp_path: Path, tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (args, message) in bad_inputs(tmp_path, tiny_dir).items():
        assert run_main(args) == 2, name
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"error: {message}") and err.count("\n") == 1, (name, err)


@pytest.mark.parametrize("name", ["missing model", "jsonl bad line", "empty single question", "no question"])
def test_cli_bad_input_exit_status(name: str, tmp_path: Path, tiny_dir: Path) -> None:
    args, message = bad_inputs(tmp_path, tiny_dir)[name]
    rc, out, err = finish(cli(*args, cwd=tmp_path))
    assert (rc, out) == (2, "") and err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_read_questions_formats(tmp_path: Path) -> None:
    squad = read_questions(squad_file(tmp_path / "in.json"))
    assert [r["id"] for r in squad] == ["a1", "a2"] and squad[0]["context"] == TOY_CONTEXT
    one_line = tmp_path / "one.jsonl"
    one_line.write_text('{"id": 3, "question": "Who?", "context": "Me.", "answers": []}')
    assert read_questions(one_line) == [{"id": "3", "question": "Who?", "context": "Me."}]
    with pytest.raises(DataError, match="holds no questions"):
        read_questions(_write(tmp_path / "none.json", {"data": []}))
    with pytest.raises(ModelLoadError, match="neither a checkpoint dir"):
        resolve_settings(tmp_path)


def _write(path: Path, blob: Any) -> Path:
    path.write_text(json.dumps(blob))
    return path
