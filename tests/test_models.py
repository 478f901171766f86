"""load_model: local directories, in-memory models, hub ids offline, llama2.c checkpoints, adapters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

import interp_tests as it
from interp_tests.errors import ModelLoadError, UnsupportedArchitectureError, WeightsUnavailableError
from test_engine import PAIRS, build

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260K"


def test_local_directory_round_trip(tmp_path):
    model = build("gpt2")
    model.hf.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    loaded = it.load_model(tmp_path)
    # Identified by its files (known before loading it), the in-memory model by its weights: never the same key.
    assert loaded.fingerprint().startswith("files:") and model.fingerprint().startswith("weights:")
    np.testing.assert_allclose(it.patch(loaded, PAIRS, "mlp").mean, it.patch(model, PAIRS, "mlp").mean, atol=1e-6)


def test_fingerprint_changes_with_any_weight():
    model = build("gpt2")
    before = model.fingerprint()
    other = build("gpt2")
    with torch.no_grad():
        other.hf.transformer.h[1].mlp.c_fc.weight[0, 0] += 1e-3
    assert other.fingerprint() != before == build("gpt2").fingerprint()


def test_hub_id_without_weights_says_they_are_unavailable_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="not available on this machine.*HF_HUB_OFFLINE"):
        it.load_model("openai-community/gpt2")


def test_missing_and_broken_directories(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        it.load_model(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="needs config.json, the weights"):
        it.load_model(tmp_path)


def test_unsupported_architecture_names_the_supported_ones():
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8, vocab_size=20))
    with pytest.raises(UnsupportedArchitectureError, match=r"'bert'.*gpt2.*llama.*register_adapter"):
        it.load_model(bert, tokenizer=build("gpt2").tokenizer)


def test_in_memory_model_needs_a_tokenizer():
    with pytest.raises(ModelLoadError, match="tokenizer=tokenizer"):
        it.load_model(build("gpt2").hf)


def test_register_adapter_teaches_a_new_model_type():
    from interp_tests.adapters import _ADAPTERS

    model = build("gpt2").hf
    model.config.model_type = "my_gpt2_fork"
    with pytest.raises(UnsupportedArchitectureError):
        it.load_model(model, tokenizer=build("gpt2").tokenizer)
    it.register_adapter(it.Adapter("fork", ("my_gpt2_fork",), "transformer.h", "transformer.wte", "attn.c_proj", "attn", "mlp"))
    try:
        assert it.load_model(model, tokenizer=build("gpt2").tokenizer).adapter.name == "fork"
    finally:
        del _ADAPTERS["my_gpt2_fork"]


@pytest.mark.skipif(not STORIES.is_dir(), reason=f"real llama2.c weights not present at {STORIES}")
def test_llama2c_checkpoint_loads_and_sweeps():
    model = it.load_model(STORIES)
    assert model.adapter.name == "llama" and (model.n_layers, model.n_heads) == (5, 8)
    pairs = it.PromptPairs(
        ["Once upon a time, there was a little girl named Lily. One day,"],
        ["Once upon a time, there was a little boy named Lily. One day,"],
        ["she"], ["he"],
    )
    evaluation = it.evaluate(model, pairs)
    assert evaluation.clean_logit_diff > 5 > 2 > evaluation.corrupted_logit_diff
    result = it.patch(model, pairs, "attn_head")
    assert result.shape == (5, 8) and np.isfinite(result.mean).all()


@pytest.mark.parametrize(("fields", "message"), [
    ({"qkv_layout": "fused"}, "qkv_layout='fused' is not one of"),
    ({"q_proj": "attn.q"}, "only some of q_proj, k_proj, v_proj"),
    ({"model_types": ()}, "non-empty tuple"),
])
def test_a_malformed_adapter_row_is_refused_when_declared(fields, message):
    row = {"name": "bad", "model_types": ("bad",), "layers": "h", "embed": "wte", "head_out": "attn.c_proj",
           "attn": "attn", "mlp": "mlp", **fields}
    with pytest.raises(UnsupportedArchitectureError, match=message):
        it.Adapter(**row)


def test_a_multimodal_adapter_needs_the_text_config_it_names():
    adapter = it.Adapter("mm", ("mm",), "model.language_model.layers", "model.language_model.embed_tokens",
                         "self_attn.o_proj", "self_attn", "mlp", text_config="text_config")
    with pytest.raises(UnsupportedArchitectureError, match=r"config\.text_config"):
        adapter.language_config(build("gpt2").hf.config)
