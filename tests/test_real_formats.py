"""The real artifacts a run consumes, as tiny replicas of their exact formats (tests/replicas.py), through the real
code: the SpanBERT release, BERT's cased tokenizer, the Hub dataset's parquet layout, proxies, and the library
behaviours this project works around (a test here fails when a library changes them)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import replicas
from conftest import REPO, subprocess_env
from spanqa.config import DataConfig, ModelConfig
from spanqa.errors import ConfigError, DataError, ModelLoadError

WINDOWS = ["data.max_length=64", "data.doc_stride=16", "data.max_query_length=16", "trainer.device=cpu"]


@pytest.fixture(scope="module")
def real(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Replicas over the demo's text: its word pieces in BERT's vocabulary layout, so answers are learnable."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("real")
    tokenizer = AutoTokenizer.from_pretrained(demo_dir / "tiny-bert")
    vocab = replicas.bert_vocab([t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])])
    train, dev = (json.loads((demo_dir / f).read_text()) for f in ("train.json", "dev.json"))
    return {
        "release": replicas.spanbert_release(root / "spanbert_hf_base", vocab),
        "hub_model": replicas.spanbert_release(root / "spanbert-base-cased", vocab, hub_layout=True),
        "tokenizer": replicas.bert_base_cased_tokenizer(root / "bert-base-cased", vocab),
        "dataset": replicas.squad_v2_hub_dataset(root / "squad_v2", train, dev),
        "no_question": replicas.squad_v2_hub_dataset(root / "no_question", train, dev, drop="question"),
    }


def make(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------- the SpanBERT release
@pytest.mark.parametrize("model", ["spanbert", "spanbert_crf"])
def test_the_spanbert_release_trains_through_make_train(real: dict[str, Path], tmp_path: Path, model: str) -> None:
    """config.json without model_type, fp16 pytorch_model.bin, no tokenizer files; the Hub dataset layout."""
    run = tmp_path / "run"
    args = [
        f"model.name_or_path={real['release']}",
        f"model.tokenizer_name_or_path={real['tokenizer']}",
        f"data.dataset_name={real['dataset']}",
        *WINDOWS,
        "data.max_train_samples=64",
        "data.max_eval_samples=32",
        "trainer.max_steps=3",
        "logger=none",
        f"hydra.run.dir={run}",
    ]
    proc = make("train", f"model={model}", "ARGS=" + " ".join(args))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["global_step"] == 3 and record["metrics"]["eval_total"] == 32
    # The encoder came from the checkpoint in full: no loading report, no warning about its weights.
    assert "LOAD REPORT" not in proc.stderr and "MISSING" not in proc.stderr and "unused" not in proc.stderr
    from safetensors import safe_open

    with safe_open(run / "model" / "model.safetensors", "pt") as saved:
        assert {saved.get_tensor(k).dtype for k in saved.keys()} == {torch.float32}  # noqa: SIM118


def test_smoke_runs_the_real_configuration_offline_on_the_demo_assets(demo_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "smoke"
    args = [
        f"model.name_or_path={demo_dir / 'tiny-bert'}",
        "model.tokenizer_name_or_path=null",
        f"data.train_file={demo_dir / 'train.json'}",
        f"data.validation_file={demo_dir / 'dev.json'}",
        *WINDOWS,
        f"hydra.run.dir={run}",
    ]
    env_wandb = os.environ.pop("WANDB_MODE")  # the real logger settings: W&B with no key → an offline run
    try:
        proc = make("smoke", "model=spanbert_crf", "ARGS=" + " ".join(args))
    finally:
        os.environ["WANDB_MODE"] = env_wandb
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["global_step"] == 20
    assert record["metrics"]["eval_total"] == 200  # experiment=smoke: 200 dev questions
    assert [h["step"] for h in record["log_history"] if "loss" in h] == [1, 5, 10, 15, 20]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1


def test_float16_checkpoints_load_as_float32_for_both_heads_and_from_encoder(real: dict[str, Path]) -> None:
    from spanqa.modeling import load_model

    for head in ("span", "crf"):
        model = load_model(ModelConfig(name_or_path=str(real["hub_model"]), head=head), max_answer_length=8)
        assert {p.dtype for p in model.parameters()} == {torch.float32}, head
    stored = torch.load(real["hub_model"] / "pytorch_model.bin")
    reloaded = load_model(ModelConfig(name_or_path=str(real["release"])), max_answer_length=8)
    key = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(reloaded.state_dict()[key], stored[key].float())  # the stored values, widened


def test_transformers_still_needs_the_workarounds(real: dict[str, Path]) -> None:
    """If one of these starts failing, transformers changed: re-check `load_config` and the float32 loading."""
    from transformers import AutoConfig, BertForQuestionAnswering

    with pytest.raises(ValueError, match="Should have a `model_type` key"):
        AutoConfig.from_pretrained(real["release"])
    model = BertForQuestionAnswering.from_pretrained(real["hub_model"])
    assert next(model.parameters()).dtype == torch.float16  # the stored dtype, not float32


def test_a_config_without_model_type_is_read_as_model_architecture(real: dict[str, Path]) -> None:
    from spanqa.modeling import load_config, load_model

    assert load_config(ModelConfig(name_or_path=str(real["release"]))).model_type == "bert"
    with pytest.raises(ModelLoadError, match=r"^model\.architecture='bort' is invalid: not a transformers model type"):
        load_model(ModelConfig(name_or_path=str(real["release"]), architecture="bort"), max_answer_length=8)


def test_pretraining_heads_and_old_layer_norm_names_load_quietly(real: dict[str, Path], tmp_path: Path, caplog) -> None:
    """Conversions of the raw pre-training checkpoint keep `cls.*` heads, a pooler and LayerNorm gamma/beta."""
    from spanqa.modeling import load_model

    ckpt = tmp_path / "converted"
    ckpt.mkdir()
    (ckpt / "config.json").write_text((real["release"] / "config.json").read_text())
    state = torch.load(real["release"] / "pytorch_model.bin")
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state.items()}  # fmt: skip
    hidden = state["bert.embeddings.LayerNorm.gamma"].numel()
    state["bert.embeddings.LayerNorm.gamma"] = torch.rand(hidden).half()
    state |= {"cls.predictions.bias": torch.zeros(7), "bert.pooler.dense.weight": torch.zeros(hidden, hidden)}
    torch.save(state, ckpt / "pytorch_model.bin")
    with caplog.at_level("WARNING", logger="spanqa"):
        model = load_model(ModelConfig(name_or_path=str(ckpt)), max_answer_length=8)
    assert not [r for r in caplog.records if r.name.startswith("spanqa")]
    assert torch.equal(model.bert.embeddings.LayerNorm.weight, state["bert.embeddings.LayerNorm.gamma"].float())


def test_a_checkpoint_missing_encoder_weights_is_refused(real: dict[str, Path], tmp_path: Path) -> None:
    from spanqa.modeling import load_model

    ckpt = tmp_path / "partial"
    ckpt.mkdir()
    (ckpt / "config.json").write_text((real["release"] / "config.json").read_text())
    state = torch.load(real["release"] / "pytorch_model.bin")
    torch.save({k: v for k, v in state.items() if ".layer.1." not in k}, ckpt / "pytorch_model.bin")
    for head in ("span", "crf"):
        with pytest.raises(ModelLoadError, match=r"could not be loaded: 16 encoder weights are missing"):
            load_model(ModelConfig(name_or_path=str(ckpt), head=head), max_answer_length=8)


# ------------------------------------------------------------------------------------------- tokenizer and model
def test_a_tokenizer_larger_than_the_embedding_table_fails_before_preprocessing(
    real: dict[str, Path], demo_dir: Path, tmp_path: Path
) -> None:
    """bert-base-cased's vocabulary (here 1,099 tokens) with a model embedding fewer rows (the demo's tiny BERT)."""
    from transformers import AutoTokenizer

    from spanqa.modeling import check_tokenizer_fits, load_model

    small = tmp_path / "small-bert"
    from spanqa.demo import save_tiny_bert

    save_tiny_bert(small, vocab_size=500)
    cfg = ModelConfig(name_or_path=str(small), tokenizer_name_or_path=str(real["tokenizer"]))
    with pytest.raises(ModelLoadError) as err:
        check_tokenizer_fits(AutoTokenizer.from_pretrained(real["tokenizer"]), load_model(cfg, 8), cfg)
    assert str(err.value) == (
        f"model.tokenizer_name_or_path={str(real['tokenizer'])!r} has 1,099 tokens but model.name_or_path="
        f"{str(small)!r} embeds only 500: use the tokenizer the model was trained with"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "spanqa.train", f"model.name_or_path={small}",
         f"model.tokenizer_name_or_path={real['tokenizer']}", f"data.dataset_name={real['dataset']}", *WINDOWS,
         "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and last_line(proc) == f"error: {err.value}"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_spanbert_repos_own_vocab_lowercases_and_is_refused_for_a_cased_model(real: dict[str, Path]) -> None:
    """SpanBERT's Hub repo holds vocab.txt but no tokenizer_config.json: AutoTokenizer loads it lower-casing."""
    from transformers import AutoTokenizer

    from spanqa.modeling import check_tokenizer_fits, load_model, lowercases

    hub = str(real["hub_model"])
    tokenizer = AutoTokenizer.from_pretrained(hub)
    assert lowercases(tokenizer) and not lowercases(AutoTokenizer.from_pretrained(real["tokenizer"]))
    cfg = ModelConfig(name_or_path=hub, tokenizer_name_or_path=hub)
    with pytest.raises(ModelLoadError, match=r"lower-cases its input but model\.name_or_path=.* is cased"):
        check_tokenizer_fits(tokenizer, load_model(cfg, 8), cfg)
    check_tokenizer_fits(
        AutoTokenizer.from_pretrained(real["tokenizer"]), load_model(cfg, 8), ModelConfig(name_or_path=hub)
    )


def test_a_checkpoint_without_tokenizer_files_names_the_setting(real: dict[str, Path]) -> None:
    from spanqa.modeling import load_tokenizer

    with pytest.raises(ModelLoadError, match=r"has no tokenizer files .* set model\.tokenizer_name_or_path="):
        load_tokenizer(ModelConfig(name_or_path=str(real["release"]), tokenizer_name_or_path=None))


# ------------------------------------------------------------------------------------------- the Hub dataset
def test_the_hub_dataset_layout_loads_through_dataset_name_like_the_official_json(
    real: dict[str, Path], demo_dir: Path, tmp_path: Path
) -> None:
    from spanqa.data import load_examples

    hub = load_examples(DataConfig(dataset_name=str(real["dataset"])))
    files = load_examples(
        DataConfig(train_file=str(demo_dir / "train.json"), validation_file=str(demo_dir / "dev.json"))
    )
    for split in ("train", "validation"):
        assert hub[split].features == files[split].features
        assert hub[split][:] == files[split][:]
    # A copy saved with DatasetDict.save_to_disk works the same way.
    hub.save_to_disk(str(tmp_path / "saved"))
    assert load_examples(DataConfig(dataset_name=str(tmp_path / "saved")))["validation"][:] == files["validation"][:]


def test_a_dataset_in_another_schema_names_the_missing_columns(real: dict[str, Path]) -> None:
    from spanqa.data import load_examples

    with pytest.raises(DataError, match=r"its train split lacks the SQuAD column\(s\) question \(has id, title"):
        load_examples(DataConfig(dataset_name=str(real["no_question"])))


def test_a_hub_dataset_that_cannot_be_reached_keeps_the_librarys_reason() -> None:
    from spanqa.data import load_examples

    with pytest.raises(DataError) as err:
        load_examples(DataConfig(dataset_name="rajpurkar/squad_v2"))
    assert str(err.value).startswith(
        "data.dataset_name='rajpurkar/squad_v2' could not be loaded (the Hub is unreachable and it is not in the "
        "local cache): ConnectionError: Couldn't reach 'rajpurkar/squad_v2' on the Hub (OfflineModeIsEnabled)"
    )


def test_dataset_ids_are_namespaced_and_local_files_replace_the_dataset(tmp_path: Path) -> None:
    assert DataConfig().dataset_name == "rajpurkar/squad_v2"
    assert DataConfig(dataset_name="squad_v2").dataset_name == "rajpurkar/squad_v2"
    assert DataConfig(dataset_name="squad").dataset_name == "rajpurkar/squad"
    assert DataConfig(dataset_name=str(tmp_path)).dataset_name == str(tmp_path)
    assert DataConfig(train_file="a.json", validation_file="b.json").dataset_name is None
    for bad in ("squad_v3", "a/b/c", "/no/such/dir"):
        with pytest.raises(ConfigError, match=rf"^data\.dataset_name='{bad}' is invalid: .*'namespace/name'"):
            DataConfig(dataset_name=bad)


def test_huggingface_hub_still_rejects_single_segment_ids() -> None:
    """Why `canonical_dataset_id` exists; if this fails, the pinned huggingface_hub accepts them again."""
    from huggingface_hub import HfFileSystem

    with pytest.raises(ValueError, match="Repository id must be 'namespace/name'"):
        HfFileSystem().resolve_path("squad_v2")


def test_a_missing_data_file_fails_before_torch_or_any_model_is_loaded(tmp_path: Path) -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['spanqa.train', 'data.train_file=/no/train.json', 'data.validation_file=/no/dev.json',"
        f" 'logger=none', 'hydra.run.dir={tmp_path / 'run'}']\n"
        "try:\n    runpy.run_module('spanqa.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True)
    assert proc.stdout.split("\n")[-2] == "2 []"
    assert last_line(proc) == "error: data.train_file='/no/train.json' does not exist"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "is not valid JSON"), ('{"version": "v2.0"}', "is not in SQuAD format (expected an object with a 'data'")],
)
def test_unreadable_local_files_are_named_in_the_first_check(tmp_path: Path, content: str, message: str) -> None:
    from spanqa.data import check_data_source

    bad = tmp_path / "train.json"
    bad.write_text(content)
    with pytest.raises(DataError, match=rf"^data\.train_file='{re.escape(str(bad))}' {re.escape(message)}"):
        check_data_source(DataConfig(train_file=str(bad), validation_file=str(bad)))


# ------------------------------------------------------------------------------------------- proxies
class FakeProxy:
    """A local listener standing in for an HTTP proxy: records each request line, answers CONNECT with `status`."""

    def __init__(self, status: str = "200 Connection established") -> None:
        self.status = status
        self.requests: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                    data += chunk
                self.requests.append(data.split(b"\r\n")[0].decode())
                conn.sendall(f"HTTP/1.1 {self.status}\r\n\r\n".encode())

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProxy]:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeProxy()
    monkeypatch.setenv("HTTPS_PROXY", fake.url)
    yield fake
    fake.close()


def test_the_probe_goes_through_the_proxy_and_honours_no_proxy(proxy: FakeProxy, monkeypatch) -> None:
    from spanqa.network import reachable

    # hub.invalid resolves nowhere: only the proxy can reach it.
    assert reachable("https://hub.invalid", timeout=2)
    assert proxy.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    monkeypatch.setenv("no_proxy", "example.org,hub.invalid")
    assert not reachable("https://hub.invalid", timeout=2)  # direct: DNS fails
    assert len(proxy.requests) == 1


def test_a_proxy_that_refuses_the_tunnel_means_unreachable(monkeypatch) -> None:
    from spanqa.network import reachable

    refusing = FakeProxy("403 Forbidden")
    monkeypatch.setenv("https_proxy", refusing.url)
    try:
        assert not reachable("https://hub.invalid", timeout=2)
        assert refusing.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    finally:
        refusing.close()


def test_hub_offline_mode_follows_the_proxy_and_an_explicit_hf_hub_offline_0_is_trusted(
    proxy: FakeProxy, monkeypatch
) -> None:
    from spanqa import hub

    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    assert hub.settle_offline_mode() is False  # reachable through the proxy: stay online
    assert proxy.requests == ["CONNECT hub.invalid:443 HTTP/1.1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: a probe would fail
    assert hub.settle_offline_mode() is False and len(proxy.requests) == 1  # not probed


def test_the_wandb_probe_targets_wandbs_own_server_through_the_proxy(proxy: FakeProxy, monkeypatch) -> None:
    from wandb.sdk.lib import urls

    from spanqa.tracking import wandb_base_url, wandb_server_reachable

    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert wandb_base_url() == urls.DEFAULT_BASE_URL
    assert wandb_server_reachable(timeout=2)
    host = re.sub(r"^https://", "", urls.DEFAULT_BASE_URL)
    assert proxy.requests == [f"CONNECT {host}:443 HTTP/1.1"]


@pytest.mark.parametrize("host", ["api.wandb.ai", "api.forge.coreweave.com"])
def test_a_wandb_key_in_netrc_is_found_for_the_server_or_the_api_host_behind_it(
    host: str, tmp_path: Path, monkeypatch
) -> None:
    from spanqa.tracking import wandb_key_configured

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    netrc.write_text("machine example.org login user password x\n")
    netrc.chmod(0o600)
    assert not wandb_key_configured()
    netrc.write_text(f"machine {host} login user password {'k' * 40}\n")
    assert wandb_key_configured()


# ------------------------------------------------------------------------------------------- divergence
def test_a_nan_loss_stops_the_run_at_its_step_and_keeps_earlier_checkpoints(demo_dir: Path, tmp_path: Path) -> None:
    """lr 100 with weight decay 0.1: every decay step multiplies the weights by -9, so training diverges within
    a few steps; checkpoints every quarter epoch leave one saved before that."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "spanqa.train", "experiment=demo", f"demo.dir={demo_dir}",
         "data.max_train_samples=200", "data.max_eval_samples=40", "trainer.evals_per_epoch=4",
         "optimizer.lr=100", "optimizer.weight_decay=0.1", "optimizer.warmup_ratio=0", "logger=none",
         f"hydra.run.dir={run}"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    found = re.fullmatch(
        r"error: training loss is (nan|inf|-inf) at step (\d+) \(epoch [0-9.]+\): training diverged and stopped; "
        rf"checkpoints saved before that step are kept in {re.escape(str(run / 'checkpoints'))}\. .*",
        last_line(proc),
    )
    assert found, last_line(proc)
    from safetensors.torch import load_file

    kept = sorted((run / "checkpoints").glob("checkpoint-*"))
    assert kept and all(int(p.name.split("-")[1]) < int(found.group(2)) for p in kept)
    for checkpoint in kept:
        assert (checkpoint / "trainer_state.json").is_file()
        assert all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())
    assert not (run / "run.json").exists()
