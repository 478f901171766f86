"""Path patching against a naive two-stage reference (plain forward hooks, one sender and one unpadded prompt at a
time: ``interp_tests.testing.naive_path_patch``), its invariants, and its errors."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from test_engine import GQA, PADDED, PAIRS, SEED, build, shared_prefix_length

import interp_tests as it
from interp_tests.testing import naive_path_patch, orient_answers

# Receiver sets: a query, a value, all three inputs of one head, the direct path, and two receivers together.
RECEIVER_SETS = [["2.1.q"], ["1.2.v"], ["2.0"], ["logits"], ["1.3.k", "2.2.q"]]
# Grouped-query attention (4 query heads, 2 or 1 KV heads): query receivers only.
GQA_RECEIVER_SETS = [["2.1.q"], ["1.2.q"], ["logits"], ["1.3.q", "2.2.q"]]
ATOL = 1e-5


def build64(arch: str) -> tuple[it.PatchableModel, it.PromptPairs]:
    """The test model in float64 (so 1e-5 on normalised effects tests the method, not float32 rounding divided by a
    small clean-corrupted gap), and PADDED with each prompt's answers oriented so that its own gap is positive.

    Gemma 2 stays in float32: its eager attention takes the softmax in float32, where a float64 mask's minimum
    (-1.8e308) becomes -inf, so the padding queries of a sliding layer (all keys masked) turn to NaN and spread
    into their prompt's row. In float32 the method's error on it is below 7e-6 here."""
    model = build(arch)
    if arch != "gemma2":
        model.hf.double()
    return model, orient_answers(model.hf, model.tokenizer, PADDED)


def normalised(reference) -> np.ndarray:
    effects, ld_clean, ld_corrupted = reference
    return effects["logit_diff"].mean(0) / (ld_clean.mean() - ld_corrupted.mean())


def assert_matches_naive(result, reference) -> None:
    effects, ld_clean, ld_corrupted = reference
    np.testing.assert_allclose(result.ld_clean, ld_clean, atol=ATOL)
    np.testing.assert_allclose(result.ld_corrupted, ld_corrupted, atol=ATOL)
    np.testing.assert_allclose(result.mean, normalised(reference), atol=ATOL)
    for metric in ("prob", "logit_diff", "kl"):
        np.testing.assert_allclose(result.effects[metric], effects[metric], atol=ATOL, err_msg=metric)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "gptj", "llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3",
                                  "olmo2", "phi3"])
def test_path_patching_matches_naive_two_stage_reference_on_a_padded_batch(arch):
    """All senders into each receiver set, on right-padded prompts of three lengths with a 6-token shared prefix,
    in passes of 5 rows (mixing heads and prompts) and in one pass per sender layer: the naive reference's numbers."""
    model, pairs = build64(arch)
    assert pairs.tokenize(model.tokenizer).lengths.tolist() == [11, 14, 19]
    assert shared_prefix_length(model, pairs, "str") == 6
    largest = 0.0
    for receivers in GQA_RECEIVER_SETS if arch in GQA else RECEIVER_SETS:
        reference = naive_path_patch(model, pairs, receivers)
        for batch_size in (5, None):
            result = it.path_patch(model, pairs, receivers, batch_size=batch_size)
            assert result.shape == (3, 4) and result.labels[:2] == ["0.0", "0.1"]
            assert_matches_naive(result, reference)
        largest = max(largest, float(np.abs(normalised(reference)).max()))
    assert largest > 0.1, "the reference effects are all ~0: agreeing with them proves little"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_path_patching_with_gaussian_noise_matches_naive_reference(arch):
    """GN adds noise to the corrupted run's embeddings: a layer-0 sender resumes at layer 0 and must add it."""
    model, pairs = build64(arch)
    receivers = ["2.1.q", "logits"] if arch == "llama" else ["1.2.v", "2.1.q"]
    with pytest.warns(it.InterpWarning) if "logits" in receivers else contextlib.nullcontext():
        result = it.path_patch(model, pairs, receivers, corruption="gn", seed=SEED, batch_size=7)
    reference = naive_path_patch(model, pairs, receivers, "gn", seed=SEED)
    assert_matches_naive(result, reference)
    assert np.abs(normalised(reference)).max() > 0.01  # 1000x the tolerance


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "gemma2"])
def test_logits_receiver_for_last_layer_senders_equals_head_patching(arch):
    """A last-layer head has nothing downstream to freeze: its path to the logits is its whole effect."""
    model = build(arch)
    path = it.path_patch(model, PADDED, ["logits"], batch_size=5)
    exact = it.patch(model, PADDED, "attn_head")
    last = model.n_layers - 1
    assert np.abs(exact.mean[last]).max() > 0.05
    np.testing.assert_allclose(path.mean[last], exact.mean[last], atol=ATOL)
    for metric in ("prob", "logit_diff", "kl"):
        np.testing.assert_allclose(path.effects[metric][:, last], exact.effects[metric][:, last], atol=ATOL)
    # Earlier heads' effects do differ: freezing the heads downstream of them removes their indirect paths.
    assert np.abs(path.mean[:last] - exact.mean[:last]).max() > 1e-3


@pytest.mark.parametrize(("receivers", "first_without_path"), [(["1.2.q"], 1), (["1.3.k", "2.2.q"], 2), (["2.0"], 2)])
def test_senders_without_a_path_to_any_receiver_have_exactly_zero_effect(receivers, first_without_path):
    model = build("gpt2")
    result = it.path_patch(model, PADDED, receivers)
    for metric in ("prob", "logit_diff", "kl"):
        assert (result.effects[metric][:, first_without_path:] == 0.0).all(), metric
        assert np.abs(result.effects[metric][:, :first_without_path]).max() > 0, metric
    assert (result.mean[first_without_path:] == 0.0).all()


def test_result_is_a_head_sweep_with_path_settings():
    model = build("gpt2")
    calls = []
    result = it.path_patch(model, PAIRS, ["2.1"], metric="prob", batch_size=4,
                           progress=lambda done, total: calls.append((done, total)))
    assert result.settings["method"] == "path" and result.settings["receivers"] == ["2.1.q", "2.1.k", "2.1.v"]
    assert result.settings["component"] == "attn_head" and result.metric == "prob"
    assert result.labels == [f"{l}.{h}" for l in range(3) for h in range(4)]
    assert calls[-1] == (24, 24)  # senders at layers 0 and 1, 3 prompts each; layer 2 has no path
    ld = result.with_metric("logit_diff")
    assert ld.mean.shape == (3, 4)
    assert ld["2.0"] == 0.0
    one = it.path_patch(model, PAIRS, ["2.1"], batch_size=1)
    np.testing.assert_allclose(one.effects["logit_diff"], ld.effects["logit_diff"], atol=1e-5)


@pytest.mark.parametrize("label", ["2.1.k", "2.1.v", "2.1"])
def test_grouped_query_key_or_value_receiver_is_refused(label):
    model = build("llama")  # 4 query heads share 2 KV heads: heads 2.0 and 2.1 share KV head 0
    with pytest.raises(it.errors.SettingsError, match="grouped-query") as error:
        it.path_patch(model, PAIRS, [label])
    message = str(error.value)
    assert "2.0, 2.1" in message and "KV head 0" in message and "'2.1.q'" in message


@pytest.mark.parametrize(("label", "hint"), [("2.1.qq", "'2.1.q'"), ("logit", "'logits'"), ("2.1.x", None), ("7.0.q", None)])
def test_unknown_receiver_label_is_a_component_error(label, hint):
    model = build("gpt2")
    with pytest.raises(it.errors.ComponentError, match="not a receiver") as error:
        it.path_patch(model, PAIRS, [label])
    if hint is not None:
        assert f"Did you mean {hint}" in str(error.value)


def test_bad_senders_and_empty_receivers_are_settings_errors():
    model = build("gpt2")
    with pytest.raises(it.errors.SettingsError, match="senders"):
        it.path_patch(model, PAIRS, ["2.1.q"], senders="mlp")
    with pytest.raises(it.errors.SettingsError, match="empty"):
        it.path_patch(model, PAIRS, [])


def test_train_mode_model_is_path_patched_in_eval_mode():
    model = build("gpt2")
    for module in model.hf.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    reference = it.path_patch(model, PAIRS, ["2.1.q"])
    model.hf.train()
    with torch.enable_grad():
        again = it.path_patch(model, PAIRS, ["2.1.q"])
    assert model.hf.training
    np.testing.assert_allclose(again.effects["logit_diff"], reference.effects["logit_diff"], atol=1e-6)
