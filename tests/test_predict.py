"""`spanqa.inference` and `spanqa.predict`: answers against the question-answering pipeline's decoding, long
contexts over several windows, batching, the CRF head, run dirs, and the command line (single and file mode, bad
input)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertForQuestionAnswering
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from conftest import subprocess_env
from spanqa.config import DataConfig
from spanqa.errors import ConfigError, DataError, ModelLoadError
from spanqa.features import make_windows
from spanqa.inference import Predictor, resolve_settings
from spanqa.predict import main, read_questions

TOY_QUESTION = "Where was Talomi born?"
TOY_CONTEXT = "The weather that season was unusually mild. Talomi was born in Kobe. Trains ran twice a day."
RESULT_KEYS = {"answer", "score", "start", "end", "no_answer_probability", "best_span"}
SMALL_WINDOWS = {"max_length": 64, "doc_stride": 16, "max_query_length": 16}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def tiny_dir(demo_dir: Path) -> Path:
    return demo_dir / "tiny-bert"


@pytest.fixture(scope="module")
def trained_dir(tiny_dir: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT after 40 Adam steps on TOY_QUESTION: its logits point at "Kobe", far from a tie."""
    torch.manual_seed(0)
    start = TOY_CONTEXT.index("Kobe")
    batch = {
        "id": ["toy"],
        "question": [TOY_QUESTION],
        "context": [TOY_CONTEXT],
        "answers": [{"text": ["Kobe"], "answer_start": [start]}],
    }
    window = make_windows(batch, tokenizer, DataConfig(), for_eval=False)
    inputs = {k: torch.tensor(window[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    labels = {k: torch.tensor(window[k]) for k in ("start_positions", "end_positions")}
    assert labels["start_positions"].item() > 0  # the answer is inside the window
    model = BertForQuestionAnswering.from_pretrained(tiny_dir)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        model(**inputs, **labels).loss.backward()
        optimizer.step()
    out = tmp_path_factory.mktemp("trained")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def dev_records(demo_dir: Path) -> list[dict[str, str]]:
    return read_questions(demo_dir / "dev.json")


# ------------------------------------------------------------------------------------ 1. the pipeline's decoding
def pipeline_answer(model: Any, tokenizer: Any, question: str, context: str, max_answer_len: int) -> dict[str, Any]:
    """What `pipeline("question-answering", handle_impossible_answer=False, top_k=1, align_to_words=False)` of
    transformers 4.x answered for a context that fits one window. Transformers 5 removed that pipeline; this is
    its preprocessing (fast tokenizer, question first, 384/128) and its decoding `select_starts_ends`, which 5.x
    keeps for the document QA pipeline. Also returns the runner-up probability, to check there is no tie."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=384,
        stride=128,
        return_tensors="np",
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert len(enc["input_ids"]) == 1, "the comparison needs a context that fits one window"
    # p_mask: 1 where the answer cannot be (question, special tokens), CLS kept for the softmax.
    p_mask = np.array([int(s != 1) for s in enc.sequence_ids(0)])
    p_mask[enc["input_ids"][0] == tokenizer.cls_token_id] = 0
    with torch.no_grad():
        out = model(**{k: torch.tensor(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask")})
    logits = out.start_logits.numpy(), out.end_logits.numpy()
    mask = enc["attention_mask"]
    starts, ends, probs, _ = select_starts_ends(*logits, p_mask, mask, top_k=2, max_answer_len=max_answer_len)
    top1 = select_starts_ends(*logits, p_mask, mask, top_k=1, max_answer_len=max_answer_len)
    assert (top1[0][0], top1[1][0]) == (starts[0], ends[0])
    offsets = enc["offset_mapping"][0]
    begin, end = int(offsets[starts[0]][0]), int(offsets[ends[0]][1])
    return {"answer": context[begin:end], "start": begin, "end": end, "prob": probs[0], "runner_up": probs[1]}


def test_trained_model_answers_like_the_pipeline(trained_dir: Path) -> None:
    predictor = Predictor.load(trained_dir, device="cpu")  # DataConfig defaults: n_best 20, 30 tokens, 0.5
    ours = predictor.predict(TOY_QUESTION, TOY_CONTEXT)
    reference = pipeline_answer(predictor.model, predictor.tokenizer, TOY_QUESTION, TOY_CONTEXT, 30)
    kobe = TOY_CONTEXT.index("Kobe")
    assert reference["runner_up"] < 0.5 * reference["prob"]  # unambiguous
    assert (reference["answer"], reference["start"], reference["end"]) == ("Kobe", kobe, kobe + 4)
    assert (ours["answer"], ours["start"], ours["end"]) == ("Kobe", kobe, kobe + 4)
    assert ours["best_span"] == "Kobe" and ours["no_answer_probability"] < 0.5
    assert set(ours) == RESULT_KEYS


def test_random_model_decodes_like_the_pipeline(tiny_dir: Path, dev_records: list[dict[str, str]]) -> None:
    """Untrained logits give arbitrary spans, so agreement tests the decoding rule itself. The pipeline pairs
    every start with every end; we pair the top n_best of each, so n_best is raised to the window length here
    (with the default 20, a best pair whose start is not among the 20 best start logits would differ).
    Threshold 1 answers every question, as handle_impossible_answer=False does. Float32 near-ties (the demo
    tokenizer, hence the random model, changes between sessions) are left out: either order is right."""
    predictor = Predictor.load(tiny_dir, device="cpu", n_best=384, null_threshold=1.0, max_answer_length=15)
    records = dev_records[:40]
    answers = predictor.predict_many(records)
    compared = 0
    for record in records:
        reference = pipeline_answer(predictor.model, predictor.tokenizer, record["question"], record["context"], 15)
        if reference["runner_up"] > reference["prob"] * (1 - 1e-5):
            continue
        ours = answers[record["id"]]
        assert [ours[k] for k in ("answer", "start", "end")] == [reference[k] for k in ("answer", "start", "end")]
        assert ours["answer"] == record["context"][ours["start"] : ours["end"]]
        compared += 1
    assert compared >= 32


# ------------------------------------------------------------------------------------ 2. several windows
class KeywordModel(torch.nn.Module):
    """Start logit 8 on `first`, end logit 8 on `last`, 3 on CLS (null score 6), 0 elsewhere: the answer is
    where those tokens are, wherever the window cut the context."""

    def __init__(self, first: int, last: int) -> None:
        super().__init__()
        self.first, self.last = first, last

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> QuestionAnsweringModelOutput:
        cls = torch.zeros_like(input_ids, dtype=torch.float32)
        cls[:, 0] = 3.0
        return QuestionAnsweringModelOutput(
            start_logits=8.0 * (input_ids == self.first).float() + cls,
            end_logits=8.0 * (input_ids == self.last).float() + cls,
        )


# Filler without the keywords the tests look for (the demo's own filler mentions a "harbour").
FILLER = [
    "The weather that season was unusually mild.",
    "Local newspapers covered many stories that year.",
    "Several roads in the region were rebuilt after the floods.",
    "The market opened early on most days of the week.",
    "Historians still argue about the details of that period.",
    "Most families in the valley kept a garden behind the house.",
]


def long_context(answer_sentence: str, before: int, after: int) -> str:
    sentences = [FILLER[i % len(FILLER)] for i in range(before)] + [answer_sentence]
    return " ".join(sentences + [FILLER[(i + 3) % len(FILLER)] for i in range(after)])


def keyword_predictor(tokenizer, context: str, answer: str, **window: int) -> Predictor:
    """A KeywordModel keyed on the first and last token of `answer`, which must occur nowhere else."""
    begin = context.index(answer)
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < begin + len(answer) and e > begin]
    first, last = enc["input_ids"][inside[0]], enc["input_ids"][inside[-1]]
    assert enc["input_ids"].count(first) == 1 and enc["input_ids"].count(last) == 1
    return Predictor(KeywordModel(first, last), tokenizer, DataConfig(**window), 0.5, "span", device="cpu")


def windows_of(tokenizer, question: str, context: str, cfg: DataConfig) -> list[tuple[int, int]]:
    """(first, last) context character covered by each window."""
    batch = {"id": ["q"], "question": [question], "context": [context], "answers": [{"text": [], "answer_start": []}]}
    offsets = make_windows(batch, tokenizer, cfg, for_eval=True)["offset_mapping"]
    return [(min(s for s, _ in w if s >= 0), max(e for _, e in w)) for w in offsets]


@pytest.mark.parametrize("before", [9, 11])
def test_long_context_answer_comes_from_its_window(tokenizer, before: int) -> None:
    answer = "Esbjerg harbour"
    context = long_context(f"Talomi was born in {answer} long ago.", before=before, after=9)
    question = "Where was Talomi born?"
    predictor = keyword_predictor(tokenizer, context, answer, **SMALL_WINDOWS, max_answer_length=8)
    spans = windows_of(tokenizer, question, context, predictor.data)
    begin = context.index(answer)
    holding = [i for i, (s, e) in enumerate(spans) if s <= begin and begin + len(answer) <= e]
    assert len(spans) >= 5 and holding and holding[0] >= 2  # deep inside a long context
    result = predictor.predict(question, context)
    assert (result["answer"], result["start"], result["end"]) == (answer, begin, begin + len(answer))
    # Span 8 + 8; the example's null is its windows' minimum, 3 + 3: na_prob = sigmoid(6 - 16).
    assert result["score"] == pytest.approx(16.0)
    assert result["no_answer_probability"] == pytest.approx(sigmoid(6.0 - 16.0))


def test_long_context_without_the_answer_says_nothing(tokenizer) -> None:
    answer = "Esbjerg harbour"
    context = long_context(f"Talomi was born in {answer} long ago.", before=9, after=9)
    predictor = keyword_predictor(tokenizer, context, answer, **SMALL_WINDOWS)
    other = long_context("Talomi was a baker.", before=9, after=9)
    result = predictor.predict("Where was Talomi born?", other)
    # Every span scores 0 against a null of 6; ties go to the earliest start and end: the first token.
    assert result["no_answer_probability"] == pytest.approx(sigmoid(6.0))
    assert result["score"] == pytest.approx(0.0)
    assert (result["answer"], result["start"], result["end"], result["best_span"]) == ("", None, None, "The")


# ------------------------------------------------------------------------------------ batching, CRF head
def test_batching_does_not_change_answers(tiny_dir: Path, dev_records: list[dict[str, str]]) -> None:
    records = dev_records[:10]
    one = Predictor.load(tiny_dir, device="cpu", batch_size=1, **SMALL_WINDOWS)
    many = Predictor.load(tiny_dir, device="cpu", batch_size=64, **SMALL_WINDOWS)
    a, b = one.predict_many(records), many.predict_many(records)
    assert list(a) == [r["id"] for r in records]
    for qid in a:
        assert {k: a[qid][k] for k in ("answer", "start", "end", "best_span")} == {
            k: b[qid][k] for k in ("answer", "start", "end", "best_span")
        }
        assert a[qid]["score"] == pytest.approx(b[qid]["score"], abs=1e-4)
        assert a[qid]["no_answer_probability"] == pytest.approx(b[qid]["no_answer_probability"], abs=1e-5)
    assert one.predict(records[3]["question"], records[3]["context"]) == a[records[3]["id"]]


@pytest.fixture(scope="module")
def crf_dir(tiny_dir: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spanqa.modeling_crf import SpanBertCrfForQuestionAnswering

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("crf")
    model = SpanBertCrfForQuestionAnswering.from_encoder(str(tiny_dir), max_answer_length=6, num_candidates=4)
    with torch.no_grad():  # favour B and I tags so that the untrained Viterbi paths hold spans
        model.emission.bias.copy_(torch.tensor([0.0, 0.3, 0.5]))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_crf_checkpoint(crf_dir: Path, dev_records: list[dict[str, str]]) -> None:
    records = dev_records[:10]
    one = Predictor.load(crf_dir, device="cpu", batch_size=1, null_threshold=1.0, **SMALL_WINDOWS)
    assert one.head == "crf" and one.data.max_answer_length == 6  # the checkpoint's own limit
    many = Predictor.load(crf_dir, device="cpu", batch_size=64, null_threshold=1.0, **SMALL_WINDOWS)
    a, b = one.predict_many(records), many.predict_many(records)
    answered = 0
    for record in records:
        ra, rb = a[record["id"]], b[record["id"]]
        assert (ra["answer"], ra["start"], ra["end"]) == (rb["answer"], rb["start"], rb["end"])
        if ra["answer"]:
            answered += 1
            assert ra["answer"] == record["context"][ra["start"] : ra["end"]]
            assert len(one.tokenizer(ra["answer"], add_special_tokens=False)["input_ids"]) <= 6
            # CRF null score is 0: na_prob = sigmoid(0 - span log-odds).
            assert ra["no_answer_probability"] == pytest.approx(sigmoid(-ra["score"]), rel=1e-6)
    assert answered >= 5


# ------------------------------------------------------------------------------------ 4. run dirs
def fake_run(tmp_path: Path, tiny_dir: Path, policy: str = "tune_on_dev", run_threshold: float | None = 0.37) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_dir, run / "model")
    (run / ".hydra").mkdir()
    data = {
        "max_length": 96,
        "doc_stride": 24,
        "max_query_length": 20,
        "max_answer_length": 7,
        "n_best": 9,
        "null_threshold": {"policy": policy, "value": 0.61},
    }
    OmegaConf.save(OmegaConf.create({"seed": 1, "data": data}), run / ".hydra" / "config.yaml")
    if run_threshold is not None:
        (run / "run.json").write_text(json.dumps({"metrics": {"eval_f1": 50.0, "eval_null_threshold": run_threshold}}))
    return run


def test_run_dir_settings(tmp_path: Path, tiny_dir: Path, tokenizer) -> None:
    run = fake_run(tmp_path, tiny_dir)
    predictor = Predictor.load(run, device="cpu")
    d = predictor.data
    assert (d.max_length, d.doc_stride, d.max_query_length, d.max_answer_length, d.n_best) == (96, 24, 20, 7, 9)
    assert predictor.null_threshold == 0.37  # the run's, from run.json
    context = long_context("Talomi was born in Kobe.", before=6, after=6)
    assert len(windows_of(tokenizer, TOY_QUESTION, context, d)) >= 2  # windowed with the run's settings
    result = predictor.predict(TOY_QUESTION, context)
    assert result["answer"] == ("" if result["no_answer_probability"] > 0.37 else result["best_span"])
    # Flags win over the run.
    s = resolve_settings(run, max_length=128, null_threshold=0.9)
    assert (s.data.max_length, s.data.doc_stride, s.null_threshold, s.run_dir) == (128, 24, 0.9, run)
    assert s.model_dir == run / "model" and s.head == "span"


def test_run_dir_threshold_fallbacks(tmp_path: Path, tiny_dir: Path) -> None:
    fixed = fake_run(tmp_path / "a", tiny_dir, policy="fixed", run_threshold=None)
    assert resolve_settings(fixed).null_threshold == 0.61  # no run.json: the fixed policy's value
    tuned = fake_run(tmp_path / "b", tiny_dir, policy="tune_on_dev", run_threshold=None)
    with pytest.raises(ConfigError, match="pass --null-threshold"):
        resolve_settings(tuned)
    assert resolve_settings(tuned, null_threshold=0.2).null_threshold == 0.2


def test_checkpoint_dir_defaults(tiny_dir: Path) -> None:
    s = resolve_settings(tiny_dir)
    d = s.data
    assert (d.max_length, d.doc_stride, d.max_query_length, d.max_answer_length, d.n_best) == (384, 128, 64, 30, 20)
    assert (s.null_threshold, s.run_dir, s.head) == (0.5, None, "span")


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
    (rc1, out1, err1), (rc2, _, err2), (rc3, _, err3) = (finish(p) for p in procs)
    assert (rc1, rc2, rc3) == (0, 0, 0), err1 + err2 + err3

    single = json.loads(out1)
    kobe = TOY_CONTEXT.index("Kobe")
    assert set(single) == RESULT_KEYS
    assert (single["answer"], single["start"], single["end"]) == ("Kobe", kobe, kobe + 4)

    predictor = Predictor.load(trained_dir, device="cpu")
    expected = predictor.predict_many(read_questions(squad))
    official = json.loads((tmp_path / "squad" / "predictions.json").read_text())
    full = json.loads((tmp_path / "squad" / "predictions_full.json").read_text())
    assert official == {qid: r["answer"] for qid, r in expected.items()} and official["a1"] == "Kobe"
    assert list(full) == ["a1", "a2"] and all(set(r) == RESULT_KEYS for r in full.values())
    assert full["a2"]["best_span"] == expected["a2"]["best_span"]
    assert full["a2"]["score"] == pytest.approx(expected["a2"]["score"], abs=1e-5)

    official = json.loads((tmp_path / "j" / "preds.json").read_text())
    full = json.loads((tmp_path / "j" / "preds_full.json").read_text())
    assert list(official) == ["j1", "7"] and official["j1"] == "Kobe"
    assert full["7"]["answer"] == official["7"]

    # An existing output is not replaced without --overwrite (checked before the model loads) ...
    before = (tmp_path / "squad" / "predictions.json").read_bytes()
    rc, out, err = finish(cli("--model", str(trained_dir), "--file", str(squad), cwd=tmp_path / "squad"))
    assert (rc, out) == (2, "") and err == "error: predictions.json already exists: pass --overwrite to replace it\n"
    assert (tmp_path / "squad" / "predictions.json").read_bytes() == before
    # ... also when only the _full sibling is in the way; --overwrite replaces both.
    (tmp_path / "squad" / "predictions.json").unlink()
    out_path = str(tmp_path / "squad" / "predictions.json")
    assert main(["--model", str(trained_dir), "--file", str(squad), "--out", out_path]) == 2
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
