"""Attribution patching: every estimate is the metric's directional derivative along the patch, checked by
central finite differences with plain forward hooks (float64, one prompt at a time, no nnsight)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_engine import ARCHITECTURES, PAIRS, _module, build, gemma2, word_tokenizer

import interp_tests as it
from interp_tests.attribution import (
    AttributionComparison,
    compare_with_exact,
    verify_top,
)
from interp_tests.choices import METRICS
from interp_tests.components import SITE_OF_KIND
from interp_tests.errors import SettingsError

EPS = 1e-4


@pytest.fixture(scope="module")
def model64() -> it.PatchableModel:
    torch.manual_seed(0)
    return it.load_model(ARCHITECTURES["gpt2"]().double().eval(), tokenizer=word_tokenizer())


def _capture(model, ids, site):
    stored, hooks = {}, []
    for layer in range(model.n_layers):
        module = _module(model, site, layer)
        if site in ("resid", "head"):
            hooks.append(module.register_forward_pre_hook(lambda m, a, layer=layer: stored.__setitem__(layer, a[0].clone())))
        else:
            hooks.append(module.register_forward_hook(
                lambda m, a, out, layer=layer: stored.__setitem__(layer, (out[0] if isinstance(out, tuple) else out).clone())))
    with torch.no_grad():
        logits = model.hf(ids).logits[0, -1]
    for h in hooks:
        h.remove()
    return logits, stored


def _nudged_logits(model, ids, site, layer, step):
    """Logits with ``step`` [1, seq, features] added to ``site``'s activation at ``layer``."""
    module = _module(model, site, layer)
    if site in ("resid", "head"):
        hook = module.register_forward_pre_hook(lambda m, a: (a[0] + step, *a[1:]))
    else:
        def post(m, a, out):
            return (out[0] + step, *out[1:]) if isinstance(out, tuple) else out + step
        hook = module.register_forward_hook(post)
    with torch.no_grad():
        logits = model.hf(ids).logits[0, -1]
    hook.remove()
    return logits


def finite_differences(model, pairs, kind, positions="all", direction="denoise"):
    """Per-prompt d/de of each metric's effect when component c moves e x (a_source - a_target)."""
    site, tok = SITE_OF_KIND[kind], model.tokenizer
    d_head, n_heads = model.shape.d_head, model.n_heads
    out = {"prob": [], "logit_diff": [], "kl": []}
    for i in range(len(pairs)):
        clean = torch.tensor([tok(pairs.clean[i])["input_ids"]])
        corrupted = torch.tensor([tok(pairs.corrupted[i])["input_ids"]])
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        source, target = (clean, corrupted) if direction == "denoise" else (corrupted, clean)
        source_logits, source_acts = _capture(model, source, site)
        target_logits, target_acts = _capture(model, target, site)
        clean_lp = torch.log_softmax(source_logits if direction == "denoise" else target_logits, -1)

        def metrics(logits, a=a, w=w, clean_lp=clean_lp):
            lp = torch.log_softmax(logits, -1)
            return np.array([lp[a].exp().item(), (logits[a] - logits[w]).item(), -(clean_lp.exp() * (clean_lp - lp)).sum().item()])

        seq = clean.shape[1]
        pos_range = list(range(seq)) if positions == "each" else [None]
        heads = list(range(n_heads)) if kind == "attn_head" else [None]
        grid = np.zeros((3, model.n_layers, len(pos_range), len(heads)))
        for layer in range(model.n_layers):
            delta = source_acts[layer] - target_acts[layer]
            for p_i, pos in enumerate(pos_range):
                for h_i, head in enumerate(heads):
                    mask = torch.zeros_like(delta)
                    features = slice(None) if head is None else slice(head * d_head, (head + 1) * d_head)
                    mask[0, slice(None) if pos is None else pos, features] = 1
                    up = metrics(_nudged_logits(model, target, site, layer, EPS * mask * delta))
                    down = metrics(_nudged_logits(model, target, site, layer, -EPS * mask * delta))
                    grid[:, layer, p_i, h_i] = (up - down) / (2 * EPS)
        if positions != "each":
            grid = grid[:, :, 0]
        if kind != "attn_head":
            grid = grid[..., 0]
        for k, name in enumerate(out):
            out[name].append(grid[k])
    return {k: np.stack(v) for k, v in out.items()}


def estimates(model, pairs, kind, **settings):
    """Attribution estimates of every metric's effects (one ``patch`` per metric: one backward pass each)."""
    results = {m: it.patch(model, pairs, kind, metric=m, method="attribution", **settings) for m in METRICS}
    for metric, result in results.items():
        assert result.is_estimate and set(result.effects) == {metric}
    return results


def assert_matches(results, expected, direction="denoise"):
    # Denoise: the target run is the corrupted run, so the effect estimate is the derivative itself.
    # Noise: effect = M(patched clean run) - M(corrupted) ~= M_clean - M_corr + derivative.
    # Per-prompt offsets of prob and KL are not stored, so those are compared after removing each prompt's mean.
    ld = results["logit_diff"]
    offset = {"prob": None, "logit_diff": ld.ld_clean - ld.ld_corrupted, "kl": None}
    for metric, fd in expected.items():
        got = results[metric].effects[metric]
        if direction == "noise":
            if offset[metric] is None:
                got = got - got.mean(axis=tuple(range(1, got.ndim)), keepdims=True)
                fd = fd - fd.mean(axis=tuple(range(1, fd.ndim)), keepdims=True)
            else:
                got = got - offset[metric].reshape((-1,) + (1,) * (got.ndim - 1))
        scale = max(np.abs(fd).max(), 1e-12)
        np.testing.assert_allclose(got, fd, atol=1e-6 * scale + 1e-7, rtol=1e-3, err_msg=metric)


@pytest.mark.parametrize("kind", ["attn_head", "attn", "mlp", "resid"])
def test_estimate_is_the_finite_difference_derivative(model64, kind):
    results = estimates(model64, PAIRS, kind)
    assert results["kl"].settings["method"] == "attribution"
    assert results["kl"].shape == ((3, 4) if kind == "attn_head" else (3,))
    assert_matches(results, finite_differences(model64, PAIRS, kind))


@pytest.mark.parametrize("kind", ["attn_head", "resid"])
def test_each_position_is_the_finite_difference_derivative(model64, kind):
    pairs = PAIRS[:2]
    assert_matches(estimates(model64, pairs, kind, positions="each"), finite_differences(model64, pairs, kind, positions="each"))


def test_noise_direction_is_the_derivative_at_the_clean_run(model64):
    results = estimates(model64, PAIRS, "mlp", direction="noise")
    assert_matches(results, finite_differences(model64, PAIRS, "mlp", direction="noise"), direction="noise")


def test_named_position_and_batching_agree_with_each(model64):
    pairs = PAIRS[:2]
    each = estimates(model64, pairs, "mlp", positions="each")
    last = estimates(model64, pairs, "mlp", positions="last", batch_size=1)
    tokens = pairs.tokenize(model64.tokenizer)
    for m in METRICS:
        expected = each[m].effects[m][np.arange(2), :, tokens.last_positions.numpy()]
        np.testing.assert_allclose(last[m].effects[m], expected, atol=1e-10)
    whole = it.patch(model64, PAIRS, "attn_head", method="attribution")
    one_by_one = it.patch(model64, PAIRS, "attn_head", method="attribution", batch_size=1)
    np.testing.assert_allclose(one_by_one.effects["logit_diff"], whole.effects["logit_diff"], atol=1e-10)


def test_gaussian_noise_corruption_runs(model64):
    result = it.patch(model64, PAIRS, "mlp", "gn", metric="prob", method="attribution")
    assert result.settings["noise_scale"] == 3.0 and result.is_estimate


def test_settings_and_ld_match_the_exact_sweep():
    model = build("gpt2")
    exact = it.patch(model, PAIRS, "attn_head")
    estimate = it.patch(model, PAIRS, "attn_head", method="attribution")
    assert not exact.is_estimate and estimate.is_estimate
    assert set(estimate.settings) == set(exact.settings) | {"grad_drop"}
    assert estimate.shape == exact.shape
    assert estimate.effects["logit_diff"].shape == exact.effects["logit_diff"].shape
    with pytest.raises(SettingsError, match="metric='kl'"):
        estimate.with_metric("kl")
    np.testing.assert_allclose(estimate.ld_clean, exact.ld_clean, atol=1e-5)
    np.testing.assert_allclose(estimate.ld_corrupted, exact.ld_corrupted, atol=1e-5)
    comparison = compare_with_exact(estimate, exact, k=3)
    assert isinstance(comparison, AttributionComparison)
    assert comparison.pearson > 0 and comparison.spearman > 0
    assert len(comparison.worst) == 3 and "Pearson" in str(comparison)
    errors = [abs(e - x) for _, e, x in comparison.worst]
    assert errors == sorted(errors, reverse=True)
    top = verify_top(model, PAIRS, estimate, k=4)
    assert len(top.labels) == 4
    assert [label for label, _ in estimate.top(4, sign="both")] == top.labels
    np.testing.assert_allclose(top.exact, [exact[label] for label in top.labels], atol=1e-8)


def test_unsupported_settings_raise():
    model = build("gpt2")
    with pytest.raises(SettingsError, match="window"):
        it.patch(model, PAIRS, "mlp", window=3, method="attribution")
    with pytest.raises(SettingsError, match="method"):
        it.patch(model, PAIRS, "mlp", method="atp")
    with pytest.raises(SettingsError, match="direction"):
        it.patch(model, PAIRS, "mlp", direction="sideways", method="attribution")


def grad_drop_reference(model, pairs, kind):
    """Per-prompt GradDrop magnitudes of the logit difference, by plain autograd: for each layer l a forward pass
    whose layer-l attention and MLP outputs are detached, then mean |delta . grad| over the other layers."""
    site, tok, n_layers = SITE_OF_KIND[kind], model.tokenizer, model.n_layers
    params = [p for p in model.hf.parameters() if not p.requires_grad]
    for p in params:
        p.requires_grad_(True)
    out = []
    try:
        for i in range(len(pairs)):
            clean = torch.tensor([tok(pairs.clean[i])["input_ids"]])
            corrupted = torch.tensor([tok(pairs.corrupted[i])["input_ids"]])
            a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
            _, clean_acts = _capture(model, clean, site)
            total = 0
            for dropped in range(n_layers):
                live, hooks = {}, []
                for layer in range(n_layers):
                    module = _module(model, site, layer)
                    if site in ("resid", "head"):
                        hooks.append(module.register_forward_pre_hook(lambda m, args, layer=layer: live.__setitem__(layer, args[0])))
                    else:
                        hooks.append(module.register_forward_hook(
                            lambda m, args, o, layer=layer: live.__setitem__(layer, o[0] if isinstance(o, tuple) else o)))
                for part in ("attn", "mlp"):
                    hooks.append(_module(model, part, dropped).register_forward_hook(
                        lambda m, args, o: (o[0].detach(), *o[1:]) if isinstance(o, tuple) else o.detach()))
                logits = model.hf(corrupted).logits[0, -1]
                for h in hooks:
                    h.remove()
                layers = range(n_layers)
                grads = torch.autograd.grad(logits[a] - logits[w], [live[layer] for layer in layers], allow_unused=True)
                per_layer = []
                for layer, g in zip(layers, grads):
                    product = (clean_acts[layer] - live[layer].detach()) * (0 if g is None else g)
                    if kind == "attn_head":
                        product = product.reshape(*product.shape[:2], model.n_heads, -1)
                    per_layer.append(product.sum(dim=(0, 1, -1) if kind == "attn_head" else None).abs().detach())
                magnitude = torch.stack(per_layer)
                if kind != "resid":
                    magnitude[dropped] = 0
                total = total + magnitude
            out.append((total / (n_layers - (kind != "resid"))).numpy())
    finally:
        for p in params:
            p.requires_grad_(False)
    return np.stack(out)


@pytest.mark.parametrize("kind", ["attn_head", "mlp", "resid"])
def test_grad_drop_matches_an_autograd_reference(model64, kind):
    result = it.patch(model64, PAIRS, kind, method="attribution", grad_drop=True)
    assert result.settings["grad_drop"] is True
    expected = grad_drop_reference(model64, PAIRS, kind)
    assert (expected > 0).any()
    np.testing.assert_allclose(result.effects["logit_diff"], expected, rtol=1e-4, atol=1e-8)  # summed in float32
    plain = it.patch(model64, PAIRS, kind, method="attribution")
    assert not np.allclose(np.abs(plain.effects["logit_diff"]), expected)  # dropping gradients changed something


def test_sweeps_of_these_pairs_share_a_prefix(model64):
    """The pairs differ only after their first tokens, so the estimates above ran from a cached prefix."""
    from interp_tests.engine import prepare_sweep, shared_prefix, sweep_inputs

    tokens, _ = prepare_sweep(
        model64, PAIRS, "mlp", "str", "logit_diff", positions="all", window=1, direction="denoise", noise_scale=3.0
    )
    source, target = sweep_inputs(model64, tokens, "str", direction="denoise", seed=0, noise_scale=3.0)
    assert shared_prefix(model64, tokens, source, target).length > 0


def test_grad_drop_needs_attribution():
    with pytest.raises(SettingsError, match="grad_drop"):
        it.patch(build("gpt2"), PAIRS, "mlp", grad_drop=True)


def test_verify_top_patches_only_the_top_components_and_replaces_their_estimates():
    from interp_tests.claims import ClaimError

    model = build("gpt2")
    exact = it.patch(model, PAIRS, "attn_head")
    estimate = it.patch(model, PAIRS, "attn_head", method="attribution")
    calls = []
    comparison = verify_top(model, PAIRS, estimate, k=3, progress=lambda done, total: calls.append(total))
    assert calls and calls[-1] == 3 * len(PAIRS)  # 3 components x prompts, not the whole grid
    top = [label for label, _ in estimate.top(3, sign="both")]
    assert comparison.labels == top
    verified = comparison.verified
    assert verified.settings["verified"] == top and verified.is_estimate
    for label in estimate.labels:
        expected = exact[label] if label in top else estimate[label]
        assert verified[label] == pytest.approx(expected, abs=1e-6)
    comparison.assert_within(comparison.max_abs_error + 1e-9)
    with pytest.raises(ClaimError, match="method='exact'"):
        comparison.assert_within(comparison.max_abs_error / 2)
    with pytest.raises(SettingsError, match="already exact"):
        verify_top(model, PAIRS, exact)
    with pytest.raises(SettingsError, match="k=0"):
        verify_top(model, PAIRS, estimate, k=0)


def test_grad_drop_estimates_are_verified_against_exact_magnitudes():
    model = build("gpt2")
    exact = it.patch(model, PAIRS, "mlp", metric="prob")
    estimate = it.patch(model, PAIRS, "mlp", metric="prob", method="attribution", grad_drop=True)
    comparison = verify_top(model, PAIRS, estimate, k=2)
    for label, value in zip(comparison.labels, comparison.exact):
        per_prompt = exact.per_prompt[:, exact.grid.index(label)[0]]
        assert value == pytest.approx(np.abs(per_prompt).mean(), abs=1e-7)


def test_grad_drop_on_a_one_layer_model_says_why_it_cannot_run():
    from interp_tests.testing import ioi_pairs, tiny_gpt2

    hf, tokenizer = tiny_gpt2(1, 2, 16, seed=0)
    model = it.load_model(hf, tokenizer=tokenizer)
    with pytest.raises(SettingsError, match="one layer"):
        it.patch(model, ioi_pairs(2), "mlp", method="attribution", grad_drop=True)


def autograd_estimates(model, pairs, kind, *, capped=True):
    """Per-prompt attribution estimates by plain autograd (one backward pass per metric and prompt): at the corrupted
    run, the gradient of the metric with respect to each activation of ``kind``'s site, times the clean minus the
    corrupted activation, summed over the component's positions and features. The metric reads the logits the model
    returns (after Gemma 2's ``final_logit_softcapping``), or with ``capped=False`` lm_head's output before the cap."""
    site, tok, d_head = SITE_OF_KIND[kind], model.tokenizer, model.shape.d_head
    heads = list(range(model.n_heads)) if kind == "attn_head" else [None]
    out = {metric: [] for metric in METRICS}
    for i in range(len(pairs)):
        clean = torch.tensor([tok(pairs.clean[i])["input_ids"]])
        corrupted = torch.tensor([tok(pairs.corrupted[i])["input_ids"]])
        a, w = tok.convert_tokens_to_ids(pairs.answer[i]), tok.convert_tokens_to_ids(pairs.wrong[i])
        raw = []  # lm_head's outputs, before any cap
        hook = model.hf.lm_head.register_forward_hook(lambda m, args, output: raw.append(output[0, -1]))
        try:
            clean_logits, clean_acts = _capture(model, clean, site)
        finally:
            hook.remove()
        clean_lp = torch.log_softmax(clean_logits if capped else raw[-1], -1)
        for metric in METRICS:
            live, hooks = {}, []

            def keep(tensor, layer):
                tensor.retain_grad()
                live[layer] = tensor

            for layer in range(model.n_layers):
                module = _module(model, site, layer)
                if site in ("resid", "head"):
                    hooks.append(module.register_forward_pre_hook(lambda m, args, layer=layer: keep(args[0], layer)))
                else:
                    hooks.append(module.register_forward_hook(
                        lambda m, args, output, layer=layer: keep(output[0] if isinstance(output, tuple) else output, layer)))
            hooks.append(model.hf.lm_head.register_forward_hook(lambda m, args, output: raw.append(output[0, -1])))
            try:
                logits = model.hf(corrupted).logits[0, -1]
            finally:
                for hook in hooks:
                    hook.remove()
            logits = logits if capped else raw[-1]
            lp = torch.log_softmax(logits, -1)
            value = {"prob": lp[a].exp(), "logit_diff": logits[a] - logits[w],
                     "kl": -(clean_lp.exp() * (clean_lp - lp)).sum()}[metric]
            value.backward()
            grid = np.zeros((model.n_layers, len(heads)))
            for layer in range(model.n_layers):
                step = (clean_acts[layer] - live[layer].detach()) * live[layer].grad
                for h_i, head in enumerate(heads):
                    features = slice(None) if head is None else slice(head * d_head, (head + 1) * d_head)
                    grid[layer, h_i] = step[0, :, features].sum().item()
            out[metric].append(grid if kind == "attn_head" else grid[:, 0])
    return {metric: np.stack(values) for metric, values in out.items()}


@pytest.fixture(scope="module")
def gemma2_64() -> it.PatchableModel:
    """test_engine's tiny Gemma 2 in float64, whose raw logits exceed final_logit_softcapping."""
    torch.manual_seed(0)
    return it.load_model(gemma2().double().eval(), tokenizer=word_tokenizer())


@pytest.mark.parametrize("kind", ["attn_head", "attn", "mlp", "resid"])
def test_gemma2_estimates_are_gradients_of_the_soft_capped_logits(gemma2_64, kind):
    """Attribution reads the logits Gemma 2 outputs, after its final soft-cap: the estimates are the autograd
    reference's, and the cap matters here (a reference on lm_head's output, before the cap, is far from them).
    Not finite differences: Gemma 2's RMSNorm computes in float32 even in a float64 model, whose rounding a step of
    1e-4 magnifies to ~0.5% of the derivative."""
    expected = autograd_estimates(gemma2_64, PAIRS, kind)
    assert_matches(estimates(gemma2_64, PAIRS, kind), expected)
    uncapped = autograd_estimates(gemma2_64, PAIRS, kind, capped=False)
    for metric in METRICS:
        assert np.abs(uncapped[metric] - expected[metric]).max() > 0.05 * np.abs(expected[metric]).max(), metric
