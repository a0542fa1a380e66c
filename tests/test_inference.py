"""`spanqa.inference`: answers against the question-answering pipeline's decoding, long contexts over several
windows, batching, the CRF head, and the settings a run dir or a checkpoint dir gives."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from spanqa.config import DataConfig
from spanqa.data.windows import make_windows
from spanqa.errors import ConfigError, DataError
from spanqa.inference import Predictor, check_records, resolve_settings
from spanqa.predict import read_questions
from spanqa.rundir.record import NullThreshold, RunRecord
from tests.helpers import RESULT_KEYS, TOY_CONTEXT, TOY_QUESTION, long_context

SMALL_WINDOWS = {"max_length": 64, "doc_stride": 16, "max_query_length": 16}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="module", params=["crf", "bio"])
def tagging_dir(request: pytest.FixtureRequest, tiny_dir: Path, tokenizer, tmp_path_factory: pytest.TempPathFactory):
    """A saved BIO-head checkpoint (CRF, or tagging-only) on the tiny encoder: (head, dir)."""
    from spanqa.models.crf import SpanBertCrfForQuestionAnswering
    from spanqa.models.tagging import SpanBertBioForQuestionAnswering

    model_cls = {"crf": SpanBertCrfForQuestionAnswering, "bio": SpanBertBioForQuestionAnswering}[request.param]
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp(request.param)
    model = model_cls.from_encoder(str(tiny_dir), max_answer_length=6, num_candidates=4)
    with torch.no_grad():  # favour B and I tags so that the untrained model prefers some spans to no answer
        model.emission.bias.copy_(torch.tensor([0.0, 0.3, 0.5]))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return request.param, out


def test_bio_head_checkpoints(tagging_dir: tuple[str, Path], dev_records: list[dict[str, str]]) -> None:
    head, path = tagging_dir
    records = dev_records[:10]
    one = Predictor.load(path, device="cpu", batch_size=1, null_threshold=1.0, **SMALL_WINDOWS)
    assert one.head.name == head and one.data.max_answer_length == 6  # the checkpoint's own limit
    many = Predictor.load(path, device="cpu", batch_size=64, null_threshold=1.0, **SMALL_WINDOWS)
    a, b = one.predict_many(records), many.predict_many(records)
    answered = 0
    for record in records:
        ra, rb = a[record["id"]], b[record["id"]]
        assert (ra["answer"], ra["start"], ra["end"]) == (rb["answer"], rb["start"], rb["end"])
        if ra["answer"]:
            answered += 1
            assert ra["answer"] == record["context"][ra["start"] : ra["end"]]
            assert len(one.tokenizer(ra["answer"], add_special_tokens=False)["input_ids"]) <= 6
            # A BIO head's null score is 0: na_prob = sigmoid(0 - span log-odds).
            assert ra["no_answer_probability"] == pytest.approx(sigmoid(-ra["score"]), rel=1e-6)
    assert answered >= 5


# ------------------------------------------------------------------------------------ 4. run dirs
DATA = {
    "max_length": 96,
    "doc_stride": 24,
    "max_query_length": 20,
    "max_answer_length": 7,
    "n_best": 9,
    "null_threshold": {"policy": "tune_on_dev", "value": 0.61},
}


def fake_run(tmp_path: Path, tiny_dir: Path, threshold: float = 0.37) -> Path:
    """A finished run dir: model/, and a run record whose config says how to window (and .hydra/ saying otherwise:
    what a relaunch may have rewritten it to)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_dir, run / "model")
    config = {"seed": 1, "data": DATA}
    RunRecord("r", config, "d", {"eval_f1": 50.0}, NullThreshold(threshold, "tune_on_dev")).write(run)
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"seed": 1, "data": {**DATA, "max_length": 384}}), run / ".hydra" / "config.yaml")
    return run


def legacy_run(tmp_path: Path, tiny_dir: Path, policy: str, threshold: float | None) -> Path:
    """A run dir of the first releases: run.json without config or format, the config only in .hydra/."""
    run = tmp_path / "run"
    shutil.copytree(tiny_dir, run / "model")
    (run / ".hydra").mkdir()
    data = {**DATA, "null_threshold": {"policy": policy, "value": 0.61}}
    OmegaConf.save(OmegaConf.create({"seed": 1, "data": data}), run / ".hydra" / "config.yaml")
    metrics = {"eval_f1": 50.0} | ({"eval_null_threshold": threshold} if threshold is not None else {})
    (run / "run.json").write_text(json.dumps({"metrics": metrics, "null_threshold_policy": policy}))
    return run


def test_run_dir_settings(tmp_path: Path, tiny_dir: Path, tokenizer) -> None:
    run = fake_run(tmp_path, tiny_dir)
    predictor = Predictor.load(run, device="cpu")
    d = predictor.data
    # The run record's settings, not the rewritten .hydra/config.yaml's max_length 384.
    assert (d.max_length, d.doc_stride, d.max_query_length, d.max_answer_length, d.n_best) == (96, 24, 20, 7, 9)
    assert predictor.null_threshold == 0.37  # the run's, from run.json
    context = long_context("Talomi was born in Kobe.", before=6, after=6)
    assert len(windows_of(tokenizer, TOY_QUESTION, context, d)) >= 2  # windowed with the run's settings
    result = predictor.predict(TOY_QUESTION, context)
    assert result["answer"] == ("" if result["no_answer_probability"] > 0.37 else result["best_span"])
    # Flags win over the run.
    s = resolve_settings(run, max_length=128, null_threshold=0.9)
    assert (s.data.max_length, s.data.doc_stride, s.null_threshold, s.run_dir) == (128, 24, 0.9, run)
    assert s.model_dir == run / "model" and s.head.name == "span"


def test_run_dir_threshold_fallbacks(tmp_path: Path, tiny_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A record of an earlier release: its config from .hydra/config.yaml, said in a warning; its threshold.
    old = legacy_run(tmp_path / "old", tiny_dir, policy="tune_on_dev", threshold=0.42)
    s = resolve_settings(old)
    assert (s.data.max_length, s.null_threshold) == (96, 0.42)
    assert "predates config records" in caplog.text
    fixed = legacy_run(tmp_path / "a", tiny_dir, policy="fixed", threshold=None)
    assert resolve_settings(fixed).null_threshold == 0.61  # no recorded threshold: the fixed policy's value
    tuned = legacy_run(tmp_path / "b", tiny_dir, policy="tune_on_dev", threshold=None)
    with pytest.raises(ConfigError, match="pass --null-threshold"):
        resolve_settings(tuned)
    assert resolve_settings(tuned, null_threshold=0.2).null_threshold == 0.2
    # A run dir without run.json (the run never finished) is one line, not a guess from .hydra/.
    (tuned / "run.json").unlink()
    with pytest.raises(DataError, match=r"has no run\.json: the run did not finish"):
        resolve_settings(tuned)


def test_checkpoint_dir_defaults(tiny_dir: Path) -> None:
    s = resolve_settings(tiny_dir)
    d = s.data
    assert (d.max_length, d.doc_stride, d.max_query_length, d.max_answer_length, d.n_best) == (384, 128, 64, 30, 20)
    assert (s.null_threshold, s.run_dir, s.head.name) == (0.5, None, "span")


def test_records_are_checked_before_any_window_is_built() -> None:
    assert check_records([{"id": 7, "question": "Who?", "context": "Me."}]) == [
        {"id": "7", "question": "Who?", "context": "Me."}
    ]
    with pytest.raises(DataError, match=r"^record 1: question 'b' has an empty context$"):
        check_records([{"id": "a", "question": "Q?", "context": "C."}, {"id": "b", "question": "Q?", "context": " "}])
    with pytest.raises(DataError, match=r"^the questions: duplicate question id 'a'$"):
        check_records([{"id": "a", "question": "Q?", "context": "C."}] * 2)
