"""The patching engine against a plain-PyTorch reference: every adapter, component kind, position mode,
direction and window, one prompt at a time with forward hooks and no padding or batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
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
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SiglipVisionConfig,
)

import interp_tests as it
from interp_tests.components import SITE_OF_KIND
from interp_tests.corruptions import RunInput, corrupted_input
from interp_tests.engine import shared_prefix

WORDS = ["<pad>", "When", "John", "Mary", "Tom", "Anna", "Bob", "went", "to", "the", "store", "shop", ",", "gave", "a",
         "drink", "book", "and", "then"]


def word_tokenizer(**special: str) -> PreTrainedTokenizerFast:
    """One token per word of ``WORDS``; ``<pad>`` (id 0) is the pad token unless ``special`` says otherwise."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<pad>", **{"pad_token": "<pad>", **special})


V = len(WORDS)
# The newer families' tiny configs: 3 layers, 4 query heads, special tokens inside the 19-word vocabulary. head_dim 16
# (not hidden_size / heads = 8) as in Qwen 3 and Gemma, so a head's slice is not a slice of a d_model-wide tensor.
SMALL = dict(num_hidden_layers=3, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=V,
             max_position_embeddings=32, initializer_range=0.3, pad_token_id=0, bos_token_id=0, eos_token_id=0)
# A sliding window of 4 tokens, shorter than the 6-token shared prefix of PADDED: the prefix cache of a sliding
# layer then holds only the window's last keys.
SLIDING = dict(sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
SOFTCAP = 5.0


def gemma2() -> Gemma2ForCausalLM:
    """A Gemma 2 whose caps matter: lm_head scaled 6x (untied) makes raw logits exceed final_logit_softcapping=5, and
    attention scores (query_pre_attn_scalar=1) exceed attn_logit_softcapping=1."""
    config = Gemma2Config(**SMALL, num_key_value_heads=2, head_dim=16, **SLIDING, final_logit_softcapping=SOFTCAP,
                          attn_logit_softcapping=1.0, query_pre_attn_scalar=1, tie_word_embeddings=False)
    model = Gemma2ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
    return model


def gemma3_text_config() -> Gemma3TextConfig:
    return Gemma3TextConfig(**SMALL, num_key_value_heads=1, head_dim=16, **SLIDING)


def gemma3_multimodal() -> Gemma3ForConditionalGeneration:
    """The multimodal checkpoint's class (its language model under model.language_model), with a one-layer vision
    tower that text-only prompts never run; the image tokens' ids lie outside the prompts' vocabulary."""
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=8)
    config = Gemma3Config(text_config=gemma3_text_config(), vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=V + 2, boi_token_index=V + 1, eoi_token_index=V + 3)
    return Gemma3ForConditionalGeneration(config)


ARCHITECTURES = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=32, initializer_range=0.3)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=3, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64, vocab_size=V, max_position_embeddings=32, initializer_range=0.3)),
    "gptj": lambda: GPTJForCausalLM(GPTJConfig(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=32, rotary_dim=4, initializer_range=0.3)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**SMALL, num_key_value_heads=2, head_dim=16)),
    "gemma2": gemma2,
    "gemma3_text": lambda: Gemma3ForCausalLM(gemma3_text_config()),
    "gemma3": gemma3_multimodal,
    "olmo2": lambda: Olmo2ForCausalLM(Olmo2Config(**SMALL, num_key_value_heads=4)),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**SMALL, num_key_value_heads=4)),
}
# Architectures whose query heads share key/value heads (grouped-query attention).
GQA = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3"}


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


# Three lengths (11, 14 and 19 tokens), so a batch is right-padded. Clean and corrupted first differ at tokens 6, 9
# and 14: a sweep shares a 6-token prefix, and GN (which noises the differing tokens) shares the same one.
PADDED = it.PromptPairs(
    clean=[
        "When Tom and Anna went , Tom gave a book to",
        "When John and Mary went to the store , John gave a drink to",
        "When Bob and Mary went to the shop and then to the store , Bob gave a drink to",
    ],
    corrupted=[
        "When Tom and Anna went , Anna gave a book to",
        "When John and Mary went to the store , Mary gave a drink to",
        "When Bob and Mary went to the shop and then to the store , Mary gave a drink to",
    ],
    answer=["Anna", "Mary", "Mary"],
    wrong=["Tom", "John", "Bob"],
)
# Three prompts of one length (15 tokens) that still share a 6-token prefix and end on different words: what a
# position-by-position sweep accepts (patch refuses "each" on prompts of different lengths).
SAME_LENGTH = it.PromptPairs(
    clean=[
        "When Tom and Anna went , Tom gave a book and then a drink to",
        "When John and Mary went to the store , John gave a drink then to",
        "When Bob and Mary went to the shop and then , Bob gave a drink",
    ],
    corrupted=[
        "When Tom and Anna went , Anna gave a book and then a drink to",
        "When John and Mary went to the store , Mary gave a drink then to",
        "When Bob and Mary went to the shop and then , Mary gave a drink",
    ],
    answer=["Anna", "Mary", "Mary"],
    wrong=["Tom", "John", "Bob"],
)
KINDS = ["attn_head", "attn", "mlp", "resid"]
SEED = 7  # not patch's default, so a sweep that ignored its seed would fail


def shared_prefix_length(model: it.PatchableModel, pairs: it.PromptPairs, corruption: str) -> int:
    """How many leading tokens the engine computes once for a sweep: the tests below need it > 0 to cover that path."""
    tokens = pairs.tokenize(model.tokenizer)
    runs = RunInput(tokens.clean_ids, None), corrupted_input(model, tokens, corruption, seed=SEED)
    with torch.no_grad():
        return shared_prefix(model, tokens, *runs).length


# ---- an independent reference: forward hooks on the HF module, one prompt and one patch at a time ----
def _module(model: it.PatchableModel, site: str, layer: int) -> torch.nn.Module:
    a = model.adapter
    path = {"resid": "", "head": "." + a.head_out, "attn": "." + a.attn, "mlp": "." + a.mlp}[site]
    return model.hf.get_submodule(f"{a.layers}.{layer}{path}")


def _last_logits(model, run, handles):
    """Last-token logits of one unpadded prompt; ``run`` is (ids [1, seq], embedding delta [1, seq, d] or None).
    The delta is added at the embedding module's output, as GN does; ``handles`` are removed afterwards."""
    ids, delta = run
    if delta is not None:
        embed = model.hf.get_submodule(model.adapter.embed)
        handles = [*handles, embed.register_forward_hook(lambda m, args, out: out + delta.to(out.dtype))]
    try:
        with torch.no_grad():
            return model.hf(ids).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


def _capture(model, run, site, layers):
    stored = {}
    hooks = []
    for layer in layers:
        module = _module(model, site, layer)
        if site in ("resid", "head"):
            hooks.append(module.register_forward_pre_hook(lambda m, args, layer=layer: stored.__setitem__(layer, args[0].clone())))
        else:
            hooks.append(module.register_forward_hook(
                lambda m, args, out, layer=layer: stored.__setitem__(layer, (out[0] if isinstance(out, tuple) else out).clone())))
    return _last_logits(model, run, hooks), stored


def _patched_logits(model, run, site, layers, source, head, position):
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
    return _last_logits(model, run, hooks)


def reference_sweep(model, pairs, kind, positions="all", window=1, direction="denoise", corruption="str", seed=0,
                    noise_scale=3.0):
    """Per-prompt raw effects {metric: [n, *grid]} and per-prompt LDs, computed independently.

    With ``positions="each"`` the position axis is as long as the longest prompt, as the engine's is; positions
    past a prompt's last token hold the unpatched target run's effect (0 when denoising, clean - corrupted when
    noising), since a causal model's last-token logits cannot see them. For ``corruption="gn"`` only the noise
    tensor comes from the library (it is not a fast path under test); it is added, cut to the prompt's own
    length, to the corrupted run's embeddings.
    """
    site = SITE_OF_KIND[kind]
    tok = model.tokenizer
    n_layers, n_heads = model.n_layers, model.n_heads
    out = {"prob": [], "logit_diff": [], "kl": []}
    ld_clean, ld_corr = [], []
    if corruption == "gn":
        noise = corrupted_input(model, pairs.tokenize(tok), "gn", seed=seed, noise_scale=noise_scale).embed_delta
    max_len = max(len(tok(prompt)["input_ids"]) for prompt in pairs.clean)
    for i in range(len(pairs)):
        clean_ids = torch.tensor([tok(pairs.clean[i])["input_ids"]])
        seq = clean_ids.shape[1]
        clean = (clean_ids, None)
        if corruption == "gn":
            corrupted = (clean_ids, noise[i : i + 1, :seq])
        else:
            corrupted = (torch.tensor([tok(pairs.corrupted[i])["input_ids"]]), None)
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        source, target = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
        source_logits, cache = _capture(model, source, site, range(n_layers))
        target_logits, _ = _capture(model, target, site, [])
        clean_logits, corr_logits = (source_logits, target_logits) if direction == "denoise" else (target_logits, source_logits)
        clean_lp = torch.log_softmax(clean_logits, -1)

        def stats(logits, a=a, w=w, clean_lp=clean_lp):
            lp = torch.log_softmax(logits, -1)
            return lp[a].exp().item(), (logits[a] - logits[w]).item(), (clean_lp.exp() * (clean_lp - lp)).sum().item()

        p_corr, ld_c, kl_corr = stats(corr_logits)
        p_t, ld_t, kl_t = stats(target_logits)
        ld_clean.append(stats(clean_logits)[1])
        ld_corr.append(ld_c)
        pos_range = range(seq) if positions == "each" else [None]
        grid = (n_layers, max_len if positions == "each" else 1, n_heads if kind == "attn_head" else 1)
        unpatched = {"prob": p_t - p_corr, "logit_diff": ld_t - ld_c, "kl": kl_corr - kl_t}
        effects = {k: np.full(grid, v) for k, v in unpatched.items()}
        for layer in range(n_layers):
            layers = range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))
            for p_i, pos in enumerate(pos_range):
                for h in range(n_heads if kind == "attn_head" else 1):
                    logits = _patched_logits(model, target, site, layers, cache, h if kind == "attn_head" else None, pos)
                    p, ld, kl = stats(logits)
                    effects["prob"][layer, p_i, h] = p - p_corr
                    effects["logit_diff"][layer, p_i, h] = ld - ld_c
                    effects["kl"][layer, p_i, h] = kl_corr - kl
        for k, e in effects.items():
            if positions != "each":
                e = e[:, 0]
            if kind != "attn_head":
                e = e[..., 0]
            out[k].append(e)
    return {k: np.stack(v) for k, v in out.items()}, np.array(ld_clean), np.array(ld_corr)


def assert_matches_reference(result, reference, atol=1e-5, all_zero=False):
    """Equal to ``atol`` everywhere. The reference must be nontrivial (agreeing with all zeros proves little) unless
    the caller says every effect is 0; the normalised mean divides by the clean-corrupted gap, and so does its tolerance."""
    effects, ld_clean, ld_corr = reference
    assert np.abs(ld_clean - ld_corr).max() > 0.05, "the corruption does not move the logit difference"
    assert (np.abs(effects["logit_diff"]).max() > 0.05) != all_zero, "the reference effects are not what the test expects"
    np.testing.assert_allclose(result.ld_clean, ld_clean, atol=atol)
    np.testing.assert_allclose(result.ld_corrupted, ld_corr, atol=atol)
    for metric, expected in effects.items():
        np.testing.assert_allclose(result.effects[metric], expected, atol=atol, err_msg=metric)
    gap = ld_clean.mean() - ld_corr.mean()
    normalised = effects["logit_diff"].mean(0) / gap
    np.testing.assert_allclose(result.with_metric("logit_diff").mean, normalised, rtol=1e-4, atol=2 * atol / abs(gap))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("kind", KINDS)
def test_every_adapter_and_kind_matches_reference(arch, kind):
    model = build(arch)
    assert model.hf.config.model_type == arch
    result = it.patch(model, PAIRS, kind)
    assert result.shape == ((3, 4) if kind == "attn_head" else (3,))
    assert_matches_reference(result, reference_sweep(model, PAIRS, kind))


def _clean_logit_differences(model: it.PatchableModel, pairs: it.PromptPairs) -> tuple[np.ndarray, np.ndarray]:
    """Each clean prompt's logit difference from the model's own output logits, and from lm_head's output."""
    tok, raw = model.tokenizer, []
    handle = model.hf.lm_head.register_forward_hook(lambda m, args, out: raw.append(out[0, -1]))
    capped = []
    try:
        with torch.no_grad():
            for prompt, a, w in zip(pairs.clean, pairs.answer, pairs.wrong):
                logits = model.hf(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
                a, w = tok.convert_tokens_to_ids(a), tok.convert_tokens_to_ids(w)
                capped.append((logits[a] - logits[w]).item())
                raw[-1] = (raw[-1][a] - raw[-1][w]).item()
    finally:
        handle.remove()
    return np.array(capped), np.array(raw)


def test_softcapped_logits_are_the_ones_the_model_outputs():
    """Gemma 2 soft-caps its logits after lm_head: every method's metrics must use the capped logits, which here
    differ from lm_head's by more than the cap itself."""
    model = build("gemma2")
    capped, raw = _clean_logit_differences(model, PAIRS)
    assert np.abs(capped).max() < 2 * SOFTCAP < np.abs(raw).max()
    assert np.abs(capped - raw).max() > SOFTCAP
    np.testing.assert_allclose(it.patch(model, PAIRS, "attn_head").ld_clean, capped, atol=1e-5)
    np.testing.assert_allclose(it.patch(model, PAIRS, "mlp", method="attribution").ld_clean, capped, atol=1e-5)
    np.testing.assert_allclose(it.path_patch(model, PAIRS, ["2.1.q"]).ld_clean, capped, atol=1e-5)
    assert it.evaluate(model, PAIRS, corruption=None).clean_logit_diff == pytest.approx(capped.mean(), abs=1e-5)


def test_attention_softcapping_is_active_in_the_tiny_gemma2():
    """The reference comparison of every kind above runs through attn_logit_softcapping only if the cap changes the
    model's output: removing it must move the logits."""
    model = build("gemma2")
    ids = torch.tensor([model.tokenizer(PAIRS.clean[0])["input_ids"]])
    attention = [m for m in model.hf.modules() if hasattr(m, "attn_logit_softcapping")]
    assert len(attention) == 3 and all(m.attn_logit_softcapping == 1.0 for m in attention)
    with torch.no_grad():
        with_cap = model.hf(ids).logits
        for m in attention:
            m.attn_logit_softcapping = None
        without = model.hf(ids).logits
    assert (with_cap - without).abs().max() > 0.1


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_shared_prefix_cache_of_sliding_window_layers_holds_only_the_window(arch):
    """PADDED's 6-token shared prefix is longer than the 4-token sliding window: the prefix cache keeps fewer keys in
    sliding layers than in full-attention ones, so the padded-batch tests below exercise a truncated cache."""
    model = build(arch)
    tokens = PADDED.tokenize(model.tokenizer)
    with torch.no_grad():
        prefix = shared_prefix(model, tokens, RunInput(tokens.clean_ids, None), corrupted_input(model, tokens, "str", seed=0))
    kept = [layer.keys.shape[-2] for layer in prefix.past.layers]
    assert prefix.length == 6 and kept[1] == 6 and kept[0] == kept[2] < 6


@pytest.mark.parametrize("corruption", ["str", "gn"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2", "gemma3"])
def test_fast_paths_match_reference_on_a_padded_batch(arch, kind, direction, corruption):
    """Shared-prefix keys and values, resuming at the first patched layer, last-token logits, right padding and
    passes of 5 rows (mixing prompts, and heads) give the naive sweep's numbers, for either corruption; on Gemma 2
    and the multimodal Gemma 3 also with sliding-window layers whose prefix cache holds only the window."""
    model = build(arch)
    assert PADDED.tokenize(model.tokenizer).lengths.tolist() == [11, 14, 19]
    assert shared_prefix_length(model, PADDED, corruption) == 6
    result = it.patch(model, PADDED, kind, corruption, direction=direction, seed=SEED, batch_size=5)
    reference = reference_sweep(model, PADDED, kind, direction=direction, corruption=corruption, seed=SEED)
    # Writing the corrupted residual stream at every position into the clean run *is* the corrupted run: all 0.
    assert_matches_reference(result, reference, all_zero=kind == "resid" and direction == "noise")


@pytest.mark.parametrize("corruption", ["str", "gn"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("kind", ["attn_head", "mlp", "resid"])
def test_each_position_matches_reference_with_a_shared_prefix(kind, direction, corruption):
    """One position at a time, all rows of a layer in one pass: cells inside the shared prefix (which the engine
    never runs) must equal the unpatched run, every other cell the naive sweep. One architecture: position
    bookkeeping is the engine's, not the adapter's (each adapter is above)."""
    model = build("llama")
    assert shared_prefix_length(model, SAME_LENGTH, corruption) == 6
    assert SAME_LENGTH.tokenize(model.tokenizer).lengths.tolist() == [15, 15, 15]
    result = it.patch(model, SAME_LENGTH, kind, corruption, positions="each", direction=direction, seed=SEED)
    assert result.shape == ((3, 15, 4) if kind == "attn_head" else (3, 15))
    reference = reference_sweep(model, SAME_LENGTH, kind, positions="each", direction=direction, corruption=corruption, seed=SEED)
    assert_matches_reference(result, reference)


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
