"""Loading checkpoints as they are released (tiny replicas of the real formats, tests/replicas.py) and the checks
that a tokenizer and a model fit each other."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from spanqa.config import ModelConfig
from spanqa.errors import ModelLoadError


def test_float16_checkpoints_load_as_float32_for_both_heads_and_from_encoder(real: dict[str, Path]) -> None:
    from spanqa.models.heads import load_model

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
    from spanqa.models.heads import load_model
    from spanqa.models.load import load_config

    assert load_config(ModelConfig(name_or_path=str(real["release"]))).model_type == "bert"
    with pytest.raises(ModelLoadError, match=r"^model\.architecture='bort' is invalid: not a transformers model type"):
        load_model(ModelConfig(name_or_path=str(real["release"]), architecture="bort"), max_answer_length=8)


def test_pretraining_heads_and_old_layer_norm_names_load_quietly(real: dict[str, Path], tmp_path: Path, caplog) -> None:
    """Conversions of the raw pre-training checkpoint keep `cls.*` heads, a pooler and LayerNorm gamma/beta."""
    from spanqa.models.heads import load_model

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
    from spanqa.models.heads import load_model

    ckpt = tmp_path / "partial"
    ckpt.mkdir()
    (ckpt / "config.json").write_text((real["release"] / "config.json").read_text())
    state = torch.load(real["release"] / "pytorch_model.bin")
    torch.save({k: v for k, v in state.items() if ".layer.1." not in k}, ckpt / "pytorch_model.bin")
    for head in ("span", "crf"):
        with pytest.raises(ModelLoadError, match=r"could not be loaded: 16 encoder weights are missing"):
            load_model(ModelConfig(name_or_path=str(ckpt), head=head), max_answer_length=8)


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(real: dict[str, Path], tmp_path: Path) -> None:
    """bert-base-cased's vocabulary (here 1,099 tokens) with a model embedding fewer rows (the demo's tiny BERT)."""
    from transformers import AutoTokenizer

    from spanqa.models.heads import load_model
    from spanqa.models.load import check_tokenizer_fits

    small = tmp_path / "small-bert"
    from spanqa.data.demo import save_tiny_bert

    save_tiny_bert(small, vocab_size=500)
    cfg = ModelConfig(name_or_path=str(small), tokenizer_name_or_path=str(real["tokenizer"]))
    with pytest.raises(ModelLoadError) as err:
        check_tokenizer_fits(AutoTokenizer.from_pretrained(real["tokenizer"]), load_model(cfg, 8), cfg)
    assert str(err.value) == (
        f"model.tokenizer_name_or_path={str(real['tokenizer'])!r} has 1,099 tokens but model.name_or_path="
        f"{str(small)!r} embeds only 500: use the tokenizer the model was trained with"
    )


def test_the_spanbert_repos_own_vocab_lowercases_and_is_refused_for_a_cased_model(real: dict[str, Path]) -> None:
    """SpanBERT's Hub repo holds vocab.txt but no tokenizer_config.json: AutoTokenizer loads it lower-casing."""
    from transformers import AutoTokenizer

    from spanqa.models.heads import load_model
    from spanqa.models.load import check_tokenizer_fits, lowercases

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
    from spanqa.models.load import load_tokenizer

    release = str(real["release"])
    with pytest.raises(ModelLoadError, match=r"has no tokenizer files .* set model\.tokenizer_name_or_path="):
        load_tokenizer(ModelConfig(name_or_path=release, tokenizer_name_or_path=None, tokenizer_fallback=None))
    # With the default fallback (BERT's cased tokenizer) missing offline, the error names that setting.
    with pytest.raises(ModelLoadError, match=r"^model\.tokenizer_fallback='google-bert/bert-base-cased' is not in the"):
        load_tokenizer(ModelConfig(name_or_path=release))


def test_a_chosen_tokenizer_must_match_the_checkpoints_own_casing_read_from_its_normaliser(
    tmp_path: Path, tiny_dir: Path
) -> None:
    """A checkpoint whose tokenizer.json lower-cases (no do_lower_case anywhere) and a chosen tokenizer with the same
    vocabulary that keeps case: the model would see text in another case than it was trained on."""
    from spanqa.models.checkpoint import choose_tokenizer
    from spanqa.models.load import load_tokenizer

    lowered = tmp_path / "lowered-bert"
    shutil.copytree(tiny_dir, lowered)
    blob = json.loads((lowered / "tokenizer.json").read_text())
    blob["normalizer"]["lowercase"] = True
    (lowered / "tokenizer.json").write_text(json.dumps(blob))
    assert "do_lower_case" not in (lowered / "tokenizer_config.json").read_text()
    cfg = ModelConfig(name_or_path=str(lowered), tokenizer_name_or_path=str(tiny_dir))
    with pytest.raises(ModelLoadError) as err:
        load_tokenizer(cfg)
    assert str(err.value) == (
        f"model.tokenizer_name_or_path={str(tiny_dir)!r} (1,000 tokens, keeps case) is not the tokenizer "
        f"model.name_or_path={str(lowered)!r} ships (1,000 tokens, lower-cases): leave model.tokenizer_name_or_path "
        "unset to use the checkpoint's own"
    )
    own = ModelConfig(name_or_path=str(lowered))
    assert choose_tokenizer(own).key == "model.name_or_path"
    assert load_tokenizer(own).backend_tokenizer.normalizer.normalize_str("Kobe") == "kobe"


def test_a_bare_vocab_txt_is_not_taken_for_a_tokenizer(real: dict[str, Path], tiny_dir: Path) -> None:
    """SpanBERT's Hub repo ships vocab.txt alone, which transformers loads lower-casing: the fallback (BERT's cased
    tokenizer) is taken instead, after checking it has the same vocabulary."""
    from spanqa.models.checkpoint import choose_tokenizer
    from spanqa.models.load import load_tokenizer, lowercases

    cfg = ModelConfig(name_or_path=str(real["hub_model"]), tokenizer_fallback=str(real["tokenizer"]))
    choice = choose_tokenizer(cfg)
    assert (choice.key, choice.shipped) == ("model.tokenizer_fallback", frozenset({"vocab.txt"}))
    assert not lowercases(load_tokenizer(cfg, choice))
    other = ModelConfig(name_or_path=str(real["hub_model"]), tokenizer_fallback=str(tiny_dir))  # another vocabulary
    with pytest.raises(ModelLoadError) as err:
        load_tokenizer(other)
    assert str(err.value) == (
        f"model.tokenizer_fallback={str(tiny_dir)!r} (1,000 tokens) is not the tokenizer model.name_or_path="
        f"{str(real['hub_model'])!r} ships (1,099 tokens): set model.tokenizer_name_or_path to the tokenizer the "
        "model was trained with"
    )


def test_remote_code_in_a_checkpoint_is_never_run(tmp_path: Path, demo_dir: Path) -> None:
    from spanqa.config import ModelConfig
    from spanqa.models.heads import load_model

    ckpt = shutil.copytree(demo_dir / "tiny-bert", tmp_path / "remote")
    sentinel = tmp_path / "executed"
    (ckpt / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').write('ran')\n")
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoModelForQuestionAnswering": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (ckpt / "config.json").write_text(json.dumps(config))
    with contextlib.suppress(ModelLoadError):  # refusing is fine too; running the file is not
        load_model(ModelConfig(name_or_path=str(ckpt)), max_answer_length=8)
    assert not sentinel.exists()


def test_a_saved_crf_model_decodes_with_the_configured_settings(tmp_path: Path, demo_dir: Path) -> None:
    from spanqa.config import ModelConfig
    from spanqa.models.crf import SpanBertCrfForQuestionAnswering
    from spanqa.models.heads import load_model

    saved = tmp_path / "crf"
    SpanBertCrfForQuestionAnswering.from_encoder(str(demo_dir / "tiny-bert"), max_answer_length=5).save_pretrained(
        saved
    )
    model = load_model(ModelConfig(name_or_path=str(saved), head="crf", num_candidates=3), max_answer_length=7)
    assert (model.config.max_answer_length, model.config.num_candidates) == (7, 3)
