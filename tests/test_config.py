"""Hydra composition of every config group, and the one-line errors for impossible values."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from spanqa.config import Config, DataConfig, register_configs, validate
from spanqa.errors import ConfigError
from tests.helpers import REPO, last_line, run_module, subprocess_env

register_configs()


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose(config_name="config", overrides=list(overrides)))


def test_defaults_are_the_paper_setup() -> None:
    cfg = composed()
    assert (cfg.model.name, cfg.model.head, cfg.model.name_or_path) == (
        "spanbert",
        "span",
        "SpanBERT/spanbert-base-cased",
    )
    # The checkpoint's own tokenizer unless it ships none stating its casing (SpanBERT): then BERT's cased one.
    assert cfg.model.tokenizer_name_or_path is None
    assert cfg.model.tokenizer_fallback == "google-bert/bert-base-cased"  # namespaced Hub ids only
    assert (cfg.data.dataset_name, cfg.data.max_length, cfg.data.doc_stride) == ("rajpurkar/squad_v2", 384, 128)
    assert (cfg.data.max_answer_length, cfg.data.n_best) == (30, 20)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (2e-5, 0.01)
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (6, 8)
    assert cfg.logger.backend == "wandb" and cfg.logger.group == "spanbert"
    assert cfg.run_name == "spanbert-seed42"


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (["model=spanbert_crf"], lambda c: c.model.head == "crf" and c.logger.group == "spanbert_crf"),
        (["logger=none"], lambda c: c.logger.backend == "none"),
        (["experiment=demo"], lambda c: c.demo is not None and c.data.dataset_name is None and c.data.max_length == 64),
        (
            ["experiment=demo", "model=spanbert_crf"],
            lambda c: c.model.head == "crf" and c.model.name_or_path.endswith("tiny-bert"),
        ),
        (["seed=7", "model=spanbert_crf"], lambda c: c.run_name == "spanbert_crf-seed7"),
        (
            ["data.train_file=/d/train.json", "data.validation_file=/d/dev.json"],
            lambda c: c.data.train_file == "/d/train.json" and c.data.dataset_name is None,
        ),
        (
            ["experiment=spanbert_paper"],
            lambda c: (
                (c.data.max_length, c.trainer.batch_size, c.trainer.epochs, c.optimizer.lr) == (512, 32, 4, 2e-5)
                and c.data.null_threshold.policy == "tune_on_dev"
                and c.trainer.evals_per_epoch == 10
            ),
        ),
        (
            ["experiment=smoke", "model=spanbert_crf"],
            lambda c: (
                c.trainer.max_steps == 20
                and c.data.dataset_name == "rajpurkar/squad_v2"
                and c.model.name_or_path == "SpanBERT/spanbert-base-cased"
                and c.logger.backend == "wandb"
            ),
        ),
    ],
)
def test_every_group_composes(overrides: list[str], check) -> None:
    assert check(composed(*overrides))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.doc_stride=384", "data.doc_stride=384 is invalid"),
        ("data.doc_stride=320", "data.doc_stride=320 is invalid: must be < max_length - max_query_length - 3 = 317"),
        ("optimizer.lr=-1e-5", "optimizer.lr=-1e-05 is invalid: must be > 0"),
        ("optimizer.lr=0", "optimizer.lr=0.0 is invalid: must be > 0"),
        ("trainer.batch_size=0", "trainer.batch_size=0 is invalid: must be >= 1"),
        ("trainer.precision=fp8", "trainer.precision='fp8' is invalid: allowed values are auto, fp32, bf16, fp16"),
        ("data.null_threshold.policy=magic", "allowed values are fixed, tune_on_dev, held_out"),
        ("data.train_file=/x.json", "data.validation_file=None is invalid: local data needs both data.train_file"),
        ("data.dataset_name=squad_v3", "data.dataset_name='squad_v3' is invalid: not a local directory, and Hub"),
        ("data.max_query_length=0", "data.max_query_length=0 is invalid: must be >= 1"),
        ("logger.mode=sometimes", "logger.mode='sometimes' is invalid"),
        ("seed=-1", "seed=-1 is invalid: must be in [0, 4294967295]"),
        ("seed=4294967296", "seed=4294967296 is invalid: must be in [0, 4294967295]"),
        ("optimizer.lr=inf", "optimizer.lr=inf is invalid: must be a finite number"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan is invalid: must be a finite number"),
        ("data.null_threshold.value=-inf", "data.null_threshold.value=-inf is invalid: must be a finite number"),
        ("data.max_query_length=381", "data.max_query_length=381 is invalid: must be < data.max_length - 3 = 381"),
    ],
)
def test_impossible_values_fail_with_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        composed(override)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_question_cap_past_the_window_names_that_key() -> None:
    with pytest.raises(ConfigError) as err:
        composed("data.max_length=64", "data.doc_stride=16", "data.max_query_length=100")
    assert str(err.value).startswith("data.max_query_length=100 is invalid: must be < data.max_length - 3 = 61")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+data.max_lenght=32"], "data.max_lenght (did you mean data.max_length?): not a setting of spanqa's config"),
        (
            ["+data.null_threshold.valeu=0.3", "+trainer.epoch=3"],
            "data.null_threshold.valeu (did you mean data.null_threshold.value?), trainer.epoch (did you mean "
            "trainer.epochs?): not settings of spanqa's config",
        ),
        (["+colour=blue"], "colour: not a setting"),
        (["experiment=demo", "+demo.size=3"], "demo.size: not a setting"),
    ],
)
def test_a_key_added_with_plus_is_checked_like_any_other(overrides: list[str], message: str) -> None:
    """Hydra's own error for a typo suggests the `+` form; the schema would then drop the key silently."""
    with pytest.raises(ConfigError) as err:
        composed(*overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_the_operational_settings_are_derived_from_the_schema() -> None:
    from spanqa.config import OPERATIONAL_KEYS, is_operational

    assert {"logger", "trainer.logging_steps", "trainer.cpu_threads", "data.num_proc", "rerun_changed"} <= set(
        OPERATIONAL_KEYS
    )
    assert is_operational("logger.project") and not is_operational("trainer.epochs")
    assert not is_operational("seed") and not is_operational("data.max_length")


def test_unknown_key_and_wrong_type_are_rejected_while_composing() -> None:
    with pytest.raises(ConfigCompositionException, match=r"data\.max_lenght"):
        composed("data.max_lenght=256")
    with pytest.raises(ConfigCompositionException, match=r"optimizer\.lr"):
        composed("optimizer.lr=fast")


def test_unknown_model_group_names_the_options() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        composed("model=bert_large")
    assert "bert_large" in str(err.value)


def run_train(*overrides: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_module("spanqa.train", *overrides, timeout=120, **env)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("+data.max_lenght=32", "error: data.max_lenght (did you mean data.max_length?): not a setting of spanqa's"),
        ("seed=-1", "error: seed=-1 is invalid: must be in [0, 4294967295]"),
        ("optimizer.lr=inf", "error: optimizer.lr=inf is invalid: must be a finite number"),
    ],
)
def test_cli_rejects_what_would_run_as_something_else(tmp_path: Path, override: str, line: str) -> None:
    proc = run_train(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert last_line(proc).startswith(line) and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "run_config.json").exists()


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model=bert_large", "error: In 'config': Could not find 'model/bert_large'; available options in 'model': "
         "spanbert, spanbert_bio, spanbert_crf"),
        ("data.max_lenght=3", "error: data.max_lenght (did you mean data.max_length?): not a setting of spanqa's "
         "config (src/spanqa/config.py)"),
        ("optimizer.lr=fast", "error: optimizer.lr=fast: Value 'fast' of type 'str' could not be converted to Float"),
        ("seed=[1", "error: no viable alternative at input '[1'; See https://hydra.cc/docs/1.2/advanced/"
         "override_grammar/basic for details"),
    ],
)  # fmt: skip
def test_hydras_composition_errors_are_one_line_and_status_2(tmp_path: Path, override: str, line: str) -> None:
    proc = run_train(override, f"hydra.run.dir={tmp_path / 'run'}")
    assert (proc.returncode, proc.stderr) == (2, line + "\n")


def test_hydra_flags_may_follow_the_overrides(tmp_path: Path) -> None:
    """`make train model=x ARGS="--multirun …"` puts an override before Hydra's flags."""
    proc = run_train("model=spanbert_crf", "--cfg", "job", "seed=3")
    assert proc.returncode == 0, proc.stderr
    assert "name: spanbert_crf" in proc.stdout and "seed: 3" in proc.stdout


def test_cli_fails_fast_with_one_line_and_exit_code(tmp_path: Path) -> None:
    start = time.perf_counter()
    proc = run_train("data.doc_stride=500", f"hydra.run.dir={tmp_path / 'run'}")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.doc_stride=500 is invalid: must be > 0 and < data.max_length=384"
    )
    assert "Traceback" not in proc.stderr
    assert elapsed < 15  # interpreter + Hydra start-up; no torch, data or model loading happened
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unreachable_hub_fails_in_seconds_naming_the_fix(tmp_path: Path) -> None:
    # The Hub is unreachable here: without HF_HUB_OFFLINE the probe must switch to offline mode by itself.
    env = subprocess_env()
    env.pop("HF_HUB_OFFLINE")
    env.pop("HF_DATASETS_OFFLINE")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "spanqa.train", "model=spanbert", "logger=none", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "bert-base-cased" in last and "Hub is unreachable" in last and "=DIR" in last
    assert time.perf_counter() - start < 40


def test_an_offline_run_names_every_missing_artifact_at_once(tmp_path: Path, real: dict[str, Path]) -> None:
    """The first offline contact: one try lists what is missing, each with its download line and override."""
    from tests import replicas

    home = tmp_path / "hf"
    run = tmp_path / "run"
    proc = run_train("logger=none", f"hydra.run.dir={run}", HF_HOME=str(home))  # an empty cache: all three
    assert proc.returncode == 2
    assert last_line(proc) == (
        "error: the Hub is unreachable and 3 of the run's artifacts are neither local nor in the Hugging Face cache: "
        "model.name_or_path='SpanBERT/spanbert-base-cased' (`hf download SpanBERT/spanbert-base-cased --local-dir "
        "DIR`, then model.name_or_path=DIR); model.tokenizer_fallback='google-bert/bert-base-cased' (`hf download "
        'google-bert/bert-base-cased --include "*.json" --include "*.txt" --local-dir DIR`, then '
        "model.tokenizer_fallback=DIR); "
        "data.dataset_name='rajpurkar/squad_v2' (`hf download rajpurkar/squad_v2 --repo-type dataset --local-dir "
        "DIR`, then data.dataset_name=DIR)"
    )
    replicas.hub_cache_snapshot(home, "SpanBERT/spanbert-base-cased", real["hub_model"])  # one of them cached
    proc = run_train("logger=none", f"hydra.run.dir={run}", HF_HOME=str(home))
    assert proc.returncode == 2
    assert "and 2 of the run's artifacts are" in last_line(proc) and "SpanBERT" not in last_line(proc)
    assert not (run / "run_config.json").exists()


def test_composed_config_round_trips_to_yaml() -> None:
    cfg = composed("model=spanbert_crf")
    text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    assert "head: crf" in text


def test_dataset_ids_are_namespaced_and_local_files_replace_the_dataset(tmp_path: Path) -> None:
    assert DataConfig().dataset_name == "rajpurkar/squad_v2"
    assert DataConfig(dataset_name="squad_v2").dataset_name == "rajpurkar/squad_v2"
    assert DataConfig(dataset_name="squad").dataset_name == "rajpurkar/squad"
    assert DataConfig(dataset_name=str(tmp_path)).dataset_name == str(tmp_path)
    assert DataConfig(train_file="a.json", validation_file="b.json").dataset_name is None
    for bad in ("squad_v3", "a/b/c", "/no/such/dir"):
        with pytest.raises(ConfigError, match=rf"^data\.dataset_name='{bad}' is invalid: .*'namespace/name'"):
            DataConfig(dataset_name=bad)
