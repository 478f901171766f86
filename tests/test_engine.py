"""The patching engine against a plain-PyTorch reference: every adapter, component kind, position mode,
direction and window, one prompt at a time with forward hooks and no padding or batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTJConfig,
    GPTJForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import interp_tests as it
from interp_tests.components import SITE_OF_KIND

WORDS = "<pad> When John Mary Tom Anna Bob went to the store shop , gave a drink book and then".split()


def word_tokenizer(**special: str) -> PreTrainedTokenizerFast:
    """One token per word of ``WORDS``; ``<pad>`` (id 0) is the pad token unless ``special`` says otherwise."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<pad>", **{"pad_token": "<pad>", **special})


V = len(WORDS)
ARCHITECTURES = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=32, initializer_range=0.3)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=3, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "gptj": lambda: GPTJForCausalLM(GPTJConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=32, rotary_dim=4, initializer_range=0.3)),
}


def build(arch: str) -> it.PatchableModel:
    torch.manual_seed(0)
    return it.load_model(ARCHITECTURES[arch]().eval(), tokenizer=word_tokenizer())


PAIRS = it.PromptPairs(
    clean=[
        "When John and Mary went to the store , John gave a drink to",
        "When Tom and Anna went to the shop , Tom gave a book to",
        "When Bob and Mary went to the store , Bob gave a drink and then",
    ],
    corrupted=[
        "When John and Mary went to the store , Mary gave a drink to",
        "When Tom and Anna went to the shop , Anna gave a book to",
        "When Bob and Mary went to the store , Mary gave a drink and then",
    ],
    answer=["Mary", "Anna", "Mary"],
    wrong=["John", "Tom", "Bob"],
)


# ---- an independent reference: forward hooks on the HF module, one prompt and one patch at a time ----
def _module(model: it.PatchableModel, site: str, layer: int) -> torch.nn.Module:
    a = model.adapter
    path = {"resid": "", "head": "." + a.head_out, "attn": "." + a.attn, "mlp": "." + a.mlp}[site]
    return model.hf.get_submodule(f"{a.layers}.{layer}{path}")


def _capture(model, ids, site, layers):
    stored = {}
    hooks = []
    for layer in layers:
        module = _module(model, site, layer)
        if site in ("resid", "head"):
            hooks.append(module.register_forward_pre_hook(lambda m, args, layer=layer: stored.__setitem__(layer, args[0].clone())))
        else:
            hooks.append(module.register_forward_hook(
                lambda m, args, out, layer=layer: stored.__setitem__(layer, (out[0] if isinstance(out, tuple) else out).clone())))
    with torch.no_grad():
        logits = model.hf(ids).logits[0, -1]
    for h in hooks:
        h.remove()
    return logits, stored


def _patched_logits(model, ids, site, layers, source, head, position):
    d_head = model.shape.d_head
    features = slice(None) if head is None else slice(head * d_head, (head + 1) * d_head)
    pos = slice(None) if position is None else position

    def overwrite(tensor, layer):
        tensor = tensor.clone()
        tensor[0, pos, features] = source[layer][0, pos, features]
        return tensor

    hooks = []
    for layer in layers:
        module = _module(model, site, layer)
        if site in ("resid", "head"):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, layer=layer: (overwrite(args[0], layer), *args[1:])))
        else:
            def post(m, args, out, layer=layer):
                if isinstance(out, tuple):
                    return (overwrite(out[0], layer), *out[1:])
                return overwrite(out, layer)
            hooks.append(module.register_forward_hook(post))
    with torch.no_grad():
        logits = model.hf(ids).logits[0, -1]
    for h in hooks:
        h.remove()
    return logits


def reference_sweep(model, pairs, kind, positions="all", window=1, direction="denoise"):
    """Per-prompt raw effects {metric: [n, *grid]} and per-prompt LDs, computed independently."""
    site = SITE_OF_KIND[kind]
    tok = model.tokenizer
    n_layers, n_heads = model.n_layers, model.n_heads
    out = {"prob": [], "logit_diff": [], "kl": []}
    ld_clean, ld_corr = [], []
    for i in range(len(pairs)):
        clean = torch.tensor([tok(pairs.clean[i])["input_ids"]])
        corrupted = torch.tensor([tok(pairs.corrupted[i])["input_ids"]])
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        source_ids, target_ids = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
        source_logits, cache = _capture(model, source_ids, site, range(n_layers))
        target_logits, _ = _capture(model, target_ids, site, [])
        clean_logits, corr_logits = (source_logits, target_logits) if direction == "denoise" else (target_logits, source_logits)
        clean_lp = torch.log_softmax(clean_logits, -1)

        def stats(logits):
            lp = torch.log_softmax(logits, -1)
            return lp[a].exp().item(), (logits[a] - logits[w]).item(), (clean_lp.exp() * (clean_lp - lp)).sum().item()

        p_corr, ld_c, kl_corr = stats(corr_logits)
        ld_clean.append(stats(clean_logits)[1])
        ld_corr.append(ld_c)
        seq = clean.shape[1]
        pos_range = range(seq) if positions == "each" else [None]
        effects = {k: np.zeros((n_layers, len(pos_range), n_heads if kind == "attn_head" else 1)) for k in out}
        for layer in range(n_layers):
            layers = range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))
            for p_i, pos in enumerate(pos_range):
                for h in range(n_heads if kind == "attn_head" else 1):
                    logits = _patched_logits(model, target_ids, site, layers, cache, h if kind == "attn_head" else None, pos)
                    p, ld, kl = stats(logits)
                    effects["prob"][layer, p_i, h] = p - p_corr
                    effects["logit_diff"][layer, p_i, h] = ld - ld_c
                    effects["kl"][layer, p_i, h] = kl_corr - kl
        for k in out:
            e = effects[k]
            if positions != "each":
                e = e[:, 0]
            if kind != "attn_head":
                e = e[..., 0]
            out[k].append(e)
    return {k: np.stack(v) for k, v in out.items()}, np.array(ld_clean), np.array(ld_corr)


def assert_matches_reference(result, reference, atol=1e-5):
    effects, ld_clean, ld_corr = reference
    np.testing.assert_allclose(result.ld_clean, ld_clean, atol=atol)
    np.testing.assert_allclose(result.ld_corrupted, ld_corr, atol=atol)
    for metric, expected in effects.items():
        np.testing.assert_allclose(result.effects[metric], expected, atol=atol, err_msg=metric)
    normalised = effects["logit_diff"].mean(0) / (ld_clean.mean() - ld_corr.mean())
    np.testing.assert_allclose(result.with_metric("logit_diff").mean, normalised, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("kind", ["attn_head", "attn", "mlp", "resid"])
def test_every_adapter_and_kind_matches_reference(arch, kind):
    model = build(arch)
    result = it.patch(model, PAIRS, kind)
    assert result.shape == ((3, 4) if kind == "attn_head" else (3,))
    assert_matches_reference(result, reference_sweep(model, PAIRS, kind))


@pytest.mark.parametrize("kind", ["attn_head", "mlp", "resid"])
def test_each_position_matches_reference(kind):
    model = build("gpt2")
    pairs = PAIRS[:2]  # equal lengths: positions line up
    result = it.patch(model, pairs, kind, positions="each")
    seq = result.grid.seq_len
    assert result.shape == ((3, seq, 4) if kind == "attn_head" else (3, seq))
    assert_matches_reference(result, reference_sweep(model, pairs, kind, positions="each"))


@pytest.mark.parametrize("kind, positions", [("attn_head", "all"), ("mlp", "each")])
def test_noise_direction_matches_reference(kind, positions):
    model = build("llama")
    pairs = PAIRS[:2]
    result = it.patch(model, pairs, kind, positions=positions, direction="noise")
    assert_matches_reference(result, reference_sweep(model, pairs, kind, positions=positions, direction="noise"))


def test_sliding_window_matches_reference_and_window_sum_adds_single_layers():
    model = build("gpt2")
    windowed = it.patch(model, PAIRS, "mlp", window=3)
    assert_matches_reference(windowed, reference_sweep(model, PAIRS, "mlp", window=3))
    single = it.patch(model, PAIRS, "mlp")
    summed = single.window_sum(3)
    for metric in ("prob", "logit_diff", "kl"):
        raw = single.effects[metric]
        expected = np.stack([raw[:, 0:2].sum(1), raw[:, 0:3].sum(1), raw[:, 1:3].sum(1)], axis=1)
        np.testing.assert_allclose(summed.effects[metric], expected, atol=1e-12)
    assert summed.grid.window == 3 and summed.settings["window_sum"] is True


def test_named_position_patches_last_token_of_span():
    model = build("gpt2")
    pairs = it.PromptPairs(PAIRS.clean, PAIRS.corrupted, PAIRS.answer, PAIRS.wrong,
                           spans={"S2": [(c.index(", ") + 2, c.index(", ") + 2 + len(c.split()[8])) for c in PAIRS.clean]})
    by_name = it.patch(model, pairs, "mlp", positions="S2")
    s2 = pairs.tokenize(model.tokenizer).position("S2")
    assert s2.tolist() == [9, 9, 9]
    at_nine = it.patch(model, pairs, "mlp", positions=9)
    np.testing.assert_allclose(by_name.effects["logit_diff"], at_nine.effects["logit_diff"], atol=1e-6)


def test_padding_never_changes_a_prompts_effect():
    model = build("gpt2")
    short = it.PromptPairs(["When John and Mary went to the store , John gave a drink to"],
                           ["When John and Mary went to the store , Mary gave a drink to"], ["Mary"], ["John"])
    longer = it.PromptPairs(
        [short.clean[0], "When Tom and Anna went to the shop and then Tom gave a book and then Anna gave a drink to"],
        [short.corrupted[0], "When Tom and Anna went to the shop and then Anna gave a book and then Anna gave a drink to"],
        ["Mary", "Anna"], ["John", "Tom"])
    tokens = longer.tokenize(model.tokenizer)
    assert tokens.lengths.tolist()[0] < tokens.seq_len  # the first prompt really is padded
    for kind in ("attn_head", "mlp", "resid"):
        alone = it.patch(model, short, kind)
        batched = it.patch(model, longer, kind, batch_size=3)
        for metric in ("prob", "logit_diff", "kl"):
            np.testing.assert_allclose(batched.effects[metric][0], alone.effects[metric][0], atol=1e-5)


def test_batch_size_does_not_change_results():
    model = build("gpt2")
    one = it.patch(model, PAIRS, "attn_head", batch_size=1)
    many = it.patch(model, PAIRS, "attn_head", batch_size=1000)
    for metric in ("prob", "logit_diff", "kl"):
        np.testing.assert_allclose(one.effects[metric], many.effects[metric], atol=1e-5)


def test_patching_the_whole_residual_stream_restores_the_clean_run():
    model = build("gpt2")
    result = it.patch(model, PAIRS, "resid")
    # Restoring the clean residual stream before layer 0 at all positions reproduces the clean run.
    assert result["resid.0"] == pytest.approx(1.0, abs=1e-5)
    assert result.with_metric("kl")["resid.0"] == pytest.approx(result.settings["corrupted"]["kl"], abs=1e-5)


def test_clean_equal_to_corrupted_gives_zero_effect_for_prob_and_kl():
    model = build("gpt2")
    same = it.PromptPairs(PAIRS.clean, PAIRS.clean, PAIRS.answer, PAIRS.wrong)
    result = it.patch(model, same, "attn_head", metric="prob")
    np.testing.assert_allclose(result.per_prompt, 0.0, atol=1e-6)
    np.testing.assert_allclose(result.with_metric("kl").per_prompt, 0.0, atol=1e-6)
    with pytest.raises(it.errors.MetricError, match="does not separate"):
        result.with_metric("logit_diff")


def test_train_mode_model_is_patched_in_eval_mode_and_left_as_it_was():
    model = build("gpt2")
    model.hf.config.resid_pdrop = 0.5
    reference = it.patch(model, PAIRS, "mlp")
    model.hf.train()
    again = it.patch(model, PAIRS, "mlp")
    assert model.hf.training
    np.testing.assert_allclose(again.effects["logit_diff"], reference.effects["logit_diff"], atol=1e-6)
