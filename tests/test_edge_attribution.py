"""Edge attribution: EAP equals exact edge patching on a model whose blocks are linear, EAP-IG converges as steps
grow, edge scores summed over a receiver's senders equal that receiver's input attribution (an independent hook
and autograd reference), a planted edge circuit is recovered, and curves, claims and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import interp_tests as it
from interp_tests.claims import ClaimError
from interp_tests.edge_scoring import verify_top_edges
from interp_tests.errors import ComponentError, SettingsError

from test_engine import PADDED, V, build, word_tokenizer


class FixedScale(torch.nn.Module):
    """A norm frozen to a fixed per-feature scale: linear, so the block stays linear."""

    def __init__(self, d: int, seed: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(0.5 + torch.rand(d, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return x * self.weight


def linear_gpt2(seed: int = 0, init: float = 0.3) -> it.PatchableModel:
    """GPT-2 with identity MLP activation, zero q/k weights (uniform causal attention) and fixed-scale norms."""
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=V, n_positions=32, initializer_range=init,
                        activation_function="linear", tie_word_embeddings=False)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for i, block in enumerate(hf.transformer.h):
            block.attn.c_attn.weight[:, : 2 * 32] = 0
            block.attn.c_attn.bias[: 2 * 32] = 0
            block.ln_1, block.ln_2 = FixedScale(32, 2 * i), FixedScale(32, 2 * i + 1)
        hf.transformer.ln_f = FixedScale(32, 99)
    return it.load_model(hf, tokenizer=word_tokenizer())


@pytest.fixture(scope="module")
def linear():
    return linear_gpt2()


@pytest.fixture(scope="module")
def linear_exact(linear):
    return it.exact_edge_scores(linear, PADDED)


def test_eap_is_exact_on_a_linear_model(linear, linear_exact):
    eap = it.edge_attribution(linear, PADDED, "eap")
    assert eap.labels == linear_exact.labels
    assert np.abs(linear_exact.raw).max() > 0.1  # edges matter
    np.testing.assert_allclose(eap.raw, linear_exact.raw, atol=2e-4)
    ig = it.edge_attribution(linear, PADDED, "eap_ig", steps=3)
    np.testing.assert_allclose(ig.raw, linear_exact.raw, atol=2e-4)


def test_eap_ig_converges_as_steps_grow():
    """Under the (nonlinear) probability metric, the EAP-IG scores of the edges into the logits sum to the exact
    change m(corrupted) - m(clean) as steps grow (the logits' input is linear in the input embeddings here, so this
    is IG's completeness); EAP, one gradient at the clean run, misses it."""
    model = linear_gpt2(0, init=0.2)  # probabilities away from 0 and 1
    logits_edges = None
    errors = []
    for steps in (1, 4, 16, 64):
        ig = it.edge_attribution(model, PADDED, "eap_ig", steps=steps, metric="prob")
        if logits_edges is None:
            logits_edges = [i for i, label in enumerate(ig.labels) if label.endswith("->logits")]
        total = ig.raw[:, logits_edges].sum(1)
        errors.append(np.abs(total - (ig.m_corrupted - ig.m_clean)).max())
    assert errors[0] > 1e-5
    assert errors[1] < errors[0] and errors[2] < errors[1] and errors[3] < errors[2]
    assert errors[3] < errors[0] / 20


# ---- a reference for one receiver's input attribution: hooks and autograd, one prompt at a time ----
def _receiver_attribution(model, receiver, i):
    """(input_r(corrupted) - input_r(clean)) . dLD/d(input_r) at the clean run, through receiver r only."""
    hf, tok = model.hf, model.tokenizer
    dh = model.shape.d_head
    clean = torch.tensor([tok(PADDED.clean[i])["input_ids"]])
    corrupt = torch.tensor([tok(PADDED.corrupted[i])["input_ids"]])
    a, w = tok.convert_tokens_to_ids(PADDED.answer[i]), tok.convert_tokens_to_ids(PADDED.wrong[i])
    llama = model.hf.config.model_type != "gpt2"
    blocks = hf.model.layers if llama else hf.transformer.h
    if receiver == "logits":
        module = hf.model.norm if llama else hf.transformer.ln_f
    elif receiver.startswith("mlp."):
        module = blocks[int(receiver[4:])].post_attention_layernorm if llama else blocks[int(receiver[4:])].ln_2
    else:
        layer, head, which = receiver.split(".")
        layer, head = int(layer), int(head)
        module = blocks[layer]
    store = {}

    def run(ids, leaf=None):
        handles = []
        if module is blocks[int(receiver.split(".")[0])] if receiver[0].isdigit() else False:
            block = module
            norm = block.input_layernorm if llama else block.ln_1
            proj = getattr(block.self_attn, f"{which}_proj") if llama else block.attn.c_attn
            sl = (slice(head * dh, (head + 1) * dh) if llama else
                  slice("qkv".index(which) * 4 * dh + head * dh, "qkv".index(which) * 4 * dh + (head + 1) * dh))

            def pre(m, args, kwargs):
                store["x"] = (args[0] if args else kwargs["hidden_states"])

            def post(m, args, out):
                if leaf is None:
                    return out
                weight = proj.weight.T if llama else proj.weight
                bias = 0 if proj.bias is None else proj.bias[sl]
                out = out.clone()
                out[..., sl] = norm(store["x"] + leaf) @ weight[:, sl] + bias
                return out

            handles += [block.register_forward_pre_hook(pre, with_kwargs=True), proj.register_forward_hook(post)]
        else:
            def pre2(m, args):
                store["x"] = args[0]
                return (args[0] + leaf,) if leaf is not None else None
            handles.append(module.register_forward_pre_hook(pre2))
        try:
            logits = hf(ids).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return logits, store["x"].detach().clone()

    with torch.no_grad():
        _, x_corrupt = run(corrupt)
        _, x_clean = run(clean)
    leaf = torch.zeros_like(x_clean, requires_grad=True)
    logits, _ = run(clean, leaf)
    (grad,) = torch.autograd.grad(logits[a] - logits[w], leaf)
    return float(((x_corrupt - x_clean) * grad).sum())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_edge_scores_sum_to_the_receivers_input_attribution(arch):
    model = build(arch)
    eap = it.edge_attribution(model, PADDED, "eap")
    for receiver in ["1.2.q", "2.1.k", "2.0.v", "mlp.0", "mlp.2", "logits"]:
        into = [j for j, label in enumerate(eap.labels) if label.split("->")[1] == receiver]
        for i in range(len(PADDED)):
            expected = _receiver_attribution(model, receiver, i)
            assert eap.raw[i, into].sum() == pytest.approx(expected, abs=1e-4, rel=1e-4), (receiver, i)


# ---- a planted circuit: only embed -> 0.0.v -> (0.0 ->) 1.1.v -> (1.1 ->) logits carries the token ----
PLANTED = ["embed->0.0.v", "0.0->1.1.v", "1.1->logits"]


def planted_model() -> it.PatchableModel:
    """Subspaces A (features 0-7: token embeddings), B (8-15: head 0.0 writes), C (16-23: head 1.1 writes); the
    unembedding reads C only; every other weight is zero, norms are fixed scales and attention is uniform."""
    torch.manual_seed(1)
    d, dh = 32, 8
    config = GPT2Config(n_layer=2, n_head=4, n_embd=d, vocab_size=V, n_positions=32, activation_function="gelu",
                        tie_word_embeddings=False)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        hf.transformer.wte.weight[:, 0:8] = torch.randn(V, 8)
        for i, (layer, head, read, write) in enumerate([(0, 0, slice(0, 8), slice(8, 16)), (1, 1, slice(8, 16), slice(16, 24))]):
            block = hf.transformer.h[layer]
            v = slice(2 * d + head * dh, 2 * d + (head + 1) * dh)
            block.attn.c_attn.weight[read, v] = torch.randn(8, dh)
            block.attn.c_proj.weight[head * dh : (head + 1) * dh, write] = torch.randn(dh, 8)
            block.ln_1, block.ln_2 = FixedScale(d, 10 + i), FixedScale(d, 20 + i)
        hf.transformer.ln_f = FixedScale(d, 30)
        hf.lm_head.weight[:, 16:24] = torch.randn(V, 8)
    return it.load_model(hf, tokenizer=word_tokenizer())


def test_a_planted_edge_circuit_is_recovered(tmp_path):
    model = planted_model()
    exact = it.exact_edge_scores(model, PADDED)
    ig = it.edge_attribution(model, PADDED, "eap_ig", steps=5)
    assert it.stats.roc_auc(exact, PLANTED) == 1.0
    assert it.stats.roc_auc(ig, PLANTED) >= 0.95
    assert set(exact.top(3)) == set(PLANTED)
    exact.circuit(top=3).contains(PLANTED)
    ig.assert_in_top("0.0->1.1.v", k=3)
    with pytest.raises(ClaimError, match="not in the top 2"):
        ig.assert_in_top("embed->0.1.q", "embed->0.0.v", k=2)
    with pytest.raises(ClaimError, match="leaves out"):
        exact.circuit(top=2, by="abs").contains(PLANTED)
    # The planted circuit alone is fully faithful; the curve finds it at 3 of the edges.
    edges = len(exact.labels)
    curve = it.faithfulness_curve(model, PADDED, exact, fractions=(1 / edges, 3 / edges, 0.5, 1.0))
    assert curve.at(3 / edges, "abs") == pytest.approx(1.0, abs=1e-4)
    assert curve.at(1.0) == pytest.approx(1.0, abs=1e-6)
    curve.assert_faithful(at_fraction=3 / edges, at_least=0.99)
    curve.assert_cmd(at_most=0.2)
    with pytest.raises(ClaimError, match="CMD"):
        curve.assert_cmd(at_most=curve.cmd / 2 - 1e-6)
    with pytest.raises(ClaimError, match="faithfulness"):
        curve.assert_faithful(at_fraction=1 / edges, at_least=0.99)
    figure = curve.plot()
    assert [line.get_label() for line in figure.axes[0].get_lines()[:2]] == [
        f"signed ranking (CPR {curve.cpr:.3f})", f"|score| ranking (CMD {curve.cmd:.3f})"
    ]
    assert curve.figure(tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_roc_auc_and_curve_areas_by_hand(linear_exact):
    labels = linear_exact.labels
    true = labels[:2]
    scores = it.EdgeScores(labels[:4], -np.array([[0.9, 0.1, 0.5, 0.0]]), np.array([1.0]), np.array([0.0]),
                           method="exact", metric="logit_diff", settings={})
    # ranking: e0 (T), e2 (F), e1 (T), e3 (F): TPR 0 .5 .5 1 1 over FPR 0 0 .5 .5 1 -> 0.75
    assert it.stats.roc_auc(scores, true) == pytest.approx(0.75)
    assert scores.circuit(fraction=0.5).labels == sorted([labels[0], labels[2]], key=lambda l: it.Circuit([l]).nodes[0].sort_key())
    from interp_tests.edge_results import FaithfulnessCurve
    curve = FaithfulnessCurve([0.1, 0.5, 1.0], [1, 2, 4], np.array([0.2, 0.6, 1.0]), np.array([0.5, 1.5, 1.0]), {})
    assert curve.cpr == pytest.approx(0.4 * 0.4 + 0.5 * 0.8)
    assert curve.cmd == pytest.approx(0.4 * 0.5 + 0.5 * 0.25)


def test_verify_top_edges_checks_estimates(linear):
    eap = it.edge_attribution(linear, PADDED, "eap")
    check = verify_top_edges(linear, PADDED, eap, k=5)
    check.assert_within(1e-3)
    model = build("gpt2")
    rough = it.edge_attribution(model, PADDED, "eap")
    verified = verify_top_edges(model, PADDED, rough, k=5)
    assert verified.labels == rough.top(5)
    with pytest.raises(ClaimError, match="miss exact patching"):
        verified.assert_within(verified.max_abs_error / 2)


def test_bad_input_is_refused(linear, linear_exact):
    with pytest.raises(SettingsError, match="method="):
        it.edge_attribution(linear, PADDED, "eapig")
    with pytest.raises(SettingsError, match="steps"):
        it.edge_attribution(linear, PADDED, "eap_ig", steps=0)
    with pytest.raises(ComponentError, match="Did you mean '0.0->1.1.v'"):
        linear_exact.assert_in_top("0.0->1.1.w", k=3)
    with pytest.raises(SettingsError, match="not both"):
        linear_exact.circuit(top=3, fraction=0.1)
    with pytest.raises(SettingsError, match="no point at fraction"):
        it.faithfulness_curve(linear, PADDED, linear_exact, fractions=(0.5, 1.0)).at(0.3)
    with pytest.raises(ComponentError, match="true circuit names edges"):
        it.stats.roc_auc(linear_exact, ["0.0->9.9.q"])
