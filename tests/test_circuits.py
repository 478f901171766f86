"""interp_tests.circuit_patch against an independent plain-PyTorch reference (tests/circuit_reference.py: forward
hooks on the HF modules, one unpadded prompt at a time), its invariants against the library's own single-component
sweeps, and its errors.

Tolerances: raw per-prompt metrics m(run) to 1e-5 (1e-4 for the patched run's, as specified; the library and the
reference agree to ~3e-6). A score s = num / den (den = m(full) - m(empty), per prompt or of the means) to 1e-5,
or, when den is small, to what 5e-6 of float32 rounding in each raw metric can move it: 5e-6 (1 + |s|) / |den|.
On the random GPT-2 and PADDED den is as small as 0.03 logits and |s| as large as 35 (zero ablation), where a
3e-6 logit disagreement moves a per-prompt score by 7e-4. Separately, the library's scores must follow exactly
(1e-9) from its own raw metrics, which needs no tolerance for conditioning.
"""

from __future__ import annotations

import numpy as np
import pytest

import interp_tests as it
from circuit_reference import reference_circuit, universe_labels
from interp_tests.errors import ComponentError, SettingsError
from test_engine import ARCHITECTURES, PADDED, build

TESTS = ("sufficiency", "necessity", "faithfulness")
ABLATIONS = ("resample", "mean", "zero")


def _s2(prompt: str) -> tuple[int, int]:
    """Character span of the second subject: the name after ', '."""
    start = prompt.index(", ") + 2
    return start, start + len(prompt[start:].split()[0])


# PADDED (11, 14 and 19 tokens, right-padded in a batch) with a named span whose token differs per prompt.
PAIRS = it.PromptPairs(PADDED.clean, PADDED.corrupted, PADDED.answer, PADDED.wrong,
                       spans={"S2": [_s2(c) for c in PADDED.clean]})
S2 = [6, 9, 14]  # checked in test_pairs_are_what_the_tests_assume

# Heads across all layers, an MLP layer, a head at an int position (the short prompt's last token) and at a span.
HEADS_MLP = ["0.1", "1.2", "2.3", "mlp.0", "2.0@10", "1.3@S2"]
# Every kind at once: a positioned residual stream node, heads (one inside an attn node of the same layer),
# attention layers (one positioned), a positioned MLP and a head at "last". Patches of one layer compose.
MIXED = ["resid.1@S2", "0.0", "2.1", "attn.2", "attn.0@S2", "mlp.1@10", "0.2@last"]
# The default universe of MIXED ablates the whole residual stream (resid.0 at every position wipes every clean
# activation out: faithfulness then scores 0 trivially), so MIXED runs in an explicit universe with resid.1 only.
MIXED_UNIVERSE = universe_labels(["0.0", "attn.0", "mlp.0"], 3, 4) + ["resid.1"]
CIRCUITS = {"heads_mlp": (HEADS_MLP, None), "mixed": (MIXED, MIXED_UNIVERSE)}


def _tol(denominator, score) -> np.ndarray:
    """How far float32 rounding may move the score ``score`` = num / ``denominator`` (module docstring)."""
    den, score = np.abs(np.asarray(denominator, dtype=float)), np.abs(np.asarray(score, dtype=float))
    return np.maximum(1e-5, 5e-6 * (1 + score) / den)


def scores_from_metrics(metrics, test):
    """(score, per_prompt) by the formulas, from raw per-prompt metrics."""
    full, patched, empty = (np.asarray(metrics[k], dtype=float) for k in ("clean", "patched", "empty"))
    if test == "necessity":
        return (full.mean() - patched.mean()) / (full.mean() - empty.mean()), (full - patched) / (full - empty)
    return (patched.mean() - empty.mean()) / (full.mean() - empty.mean()), (patched - empty) / (full - empty)


def _run(model, circuit, universe, **settings):
    return it.circuit_patch(model, PAIRS, it.Circuit(circuit), universe=None if universe is None else it.Circuit(universe),
                         **settings)


def assert_matches(result, ref, test, metric, *, vs_empty=True):
    m = ref["metrics"]
    # The reference must distinguish the patched run from both ends, or agreeing with it proves little.
    if vs_empty:
        assert np.abs(m["patched"] - m["empty"]).max() > 1e-3, "reference: patched == empty"
    assert np.abs(m["patched"] - m["clean"]).max() > 1e-3, "reference: patched == full"
    for name in ("clean", "corrupted", "empty"):
        np.testing.assert_allclose(result.metrics[name], m[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(result.metrics["patched"], m["patched"], rtol=0, atol=1e-4, err_msg="patched")
    den_mean = m["clean"].mean() - m["empty"].mean()
    den = m["clean"] - m["empty"]
    assert abs(result.score - ref["score"]) <= _tol(den_mean, ref["score"]), (result.score, ref["score"])
    np.testing.assert_array_less(np.abs(np.asarray(result.per_prompt) - ref["per_prompt"]), _tol(den, ref["per_prompt"]))
    own_score, own_per_prompt = scores_from_metrics(result.metrics, test)
    assert result.score == pytest.approx(own_score, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(result.per_prompt, own_per_prompt, rtol=1e-9, atol=1e-12)
    if test == "faithfulness" and metric != "kl":  # m(full) = 0 under kl: the ratio divides by 0
        ratio = ref["faithfulness_ratio"]
        assert abs(result.faithfulness_ratio - ratio) <= _tol(m["clean"].mean(), ratio)
        own = np.mean(result.metrics["patched"]) / np.mean(result.metrics["clean"])
        assert result.faithfulness_ratio == pytest.approx(own, rel=1e-9)


def test_pairs_are_what_the_tests_assume():
    model = build("gpt2")
    tokens = PAIRS.tokenize(model.tokenizer)
    assert tokens.lengths.tolist() == [11, 14, 19]
    assert tokens.position("S2").tolist() == S2
    assert {case.values[0] for case in CASES} == set(ARCHITECTURES)  # every adapter is compared


_MODELS = {}


def _model(arch):
    if arch not in _MODELS:
        _MODELS[arch] = build(arch)
    return _MODELS[arch]


# Every (test x ablation) on gpt2 and llama, for both circuits (the mixed one with kl, prob or logit_diff: the
# random GPT-2's answer probabilities barely move (prob scores ~0/0), nor llama's under resampling).
MIXED_METRIC = {"gpt2": {"resample": "kl", "mean": "kl", "zero": "logit_diff"},
                "llama": {"resample": "kl", "mean": "prob", "zero": "logit_diff"}}
CASES = [
    pytest.param(arch, circuit, test, ablation, metric, id=f"{arch}-{circuit}-{test}-{ablation}-{metric}")
    for arch in ("gpt2", "llama")
    for test in TESTS for ablation in ABLATIONS
    for circuit, metric in (("heads_mlp", "logit_diff"), ("mixed", MIXED_METRIC[arch][ablation]))
] + [
    # The other adapters: every (test x ablation) on the mixed circuit (every site kind), logit_diff, and a few
    # combinations of the heads-and-MLP circuit under the other metrics. On the tiny Gemmas, zero-ablating the mixed
    # universe leaves every prompt's logit difference exactly 0 with the circuit restored or not (engine and
    # reference agree), so their zero-ablation sufficiency and faithfulness cases would prove nothing.
    pytest.param(arch, "mixed", test, ablation, "logit_diff", id=f"{arch}-mixed-{test}-{ablation}-logit_diff")
    for arch in ("gpt_neox", "mistral", "qwen2", "gptj", "qwen3", "gemma2", "gemma3_text", "gemma3", "olmo2", "phi3")
    for test in TESTS for ablation in ABLATIONS
    if not (arch.startswith("gemma") and ablation == "zero" and test != "necessity")
] + [
    pytest.param(arch, circuit, test, ablation, metric, id=f"{arch}-{circuit}-{test}-{ablation}-{metric}")
    for arch, circuit, test, ablation, metric in (
        ("gpt_neox", "heads_mlp", "necessity", "mean", "kl"),
        ("mistral", "heads_mlp", "faithfulness", "zero", "kl"),
        ("qwen2", "heads_mlp", "sufficiency", "resample", "kl"),
        ("gptj", "heads_mlp", "necessity", "zero", "prob"),
    )
]


@pytest.mark.parametrize(("arch", "circuit", "test", "ablation", "metric"), CASES)
def test_circuit_scores_match_the_hook_reference_on_a_padded_batch(arch, circuit, test, ablation, metric):
    model = _model(arch)
    labels, universe = CIRCUITS[circuit]
    result = _run(model, labels, universe, test=test, ablation=ablation, metric=metric)
    ref = reference_circuit(model, PAIRS, labels, test=test, ablation=ablation, metric=metric, universe=universe)
    # In MIXED's universe, resampling all of resid.1 but its S2 token leaves little of the clean run (gpt2:
    # |patched - empty| < 5e-5): HEADS_MLP checks that faithfulness / resample is not the empty run.
    assert_matches(result, ref, test, metric, vs_empty=not (circuit == "mixed" and test == "faithfulness" and ablation == "resample"))


def test_batch_size_does_not_change_a_circuit_score():
    model = _model("llama")
    labels, universe = CIRCUITS["mixed"]
    one = _run(model, labels, universe, test="faithfulness", ablation="mean", batch_size=1)
    many = _run(model, labels, universe, test="faithfulness", ablation="mean", batch_size=64)
    np.testing.assert_allclose(one.per_prompt, many.per_prompt, atol=1e-5)
    np.testing.assert_allclose(one.metrics["patched"], many.metrics["patched"], atol=1e-5)


@pytest.mark.parametrize("test", ["necessity", "faithfulness"])
def test_mean_ablation_over_explicit_reference_pairs_matches_the_reference(test):
    """reference=PAIRS[[2, 0, 2]]: lengths 19, 11, 19, so each position's mean weights prompt 2 twice below token 11
    and is prompt 2 alone from there; circuit and universe given as plain label lists."""
    model = _model("llama")
    labels, universe = CIRCUITS["mixed"]
    reference = PAIRS[[2, 0, 2]]
    result = it.circuit_patch(model, PAIRS, labels, test=test, ablation="mean", universe=universe, reference=reference)
    ref = reference_circuit(model, PAIRS, labels, test=test, ablation="mean", universe=universe,
                            reference=reference.corrupted)
    assert_matches(result, ref, test, "logit_diff")
    default = reference_circuit(model, PAIRS, labels, test=test, ablation="mean", universe=universe)
    assert np.abs(default["metrics"]["patched"] - ref["metrics"]["patched"]).max() > 1e-2  # the reference matters


def test_mean_ablation_with_reference_prompts_too_short_is_an_error():
    with pytest.raises(it.InterpError, match="reference"):
        it.circuit_patch(_model("gpt2"), PAIRS, HEADS_MLP, test="faithfulness", ablation="mean", reference=PAIRS[[0, 1]])


# ---- invariants against the library's own sweeps and what the semantics imply ----
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_one_node_sufficiency_is_the_sweeps_effect(arch):
    """Resample sufficiency of one head / MLP layer is activation patching of that component (denoising)."""
    model = _model(arch)
    largest = 0.0
    for kind, labels in (("attn_head", ["0.1", "1.2", "2.3"]), ("mlp", ["mlp.0", "mlp.2"])):
        sweep = it.patch(model, PAIRS, kind)
        for label in labels:
            r = _run(model, [label], None, test="sufficiency", ablation="resample")
            cell = sweep.grid.index(label)
            raw = sweep.effects["logit_diff"][(slice(None), *cell)]
            np.testing.assert_allclose(r.metrics["patched"] - r.metrics["corrupted"], raw, atol=1e-5, err_msg=label)
            np.testing.assert_allclose(r.metrics["clean"], sweep.ld_clean, atol=1e-5)
            np.testing.assert_allclose(r.metrics["corrupted"], sweep.ld_corrupted, atol=1e-5)
            gap = sweep.ld_clean.mean() - sweep.ld_corrupted.mean()
            assert abs(r.score - sweep[label]) <= _tol(gap, sweep[label]), (label, r.score, sweep[label])
            den = sweep.ld_clean - sweep.ld_corrupted
            swept = sweep.per_prompt[(slice(None), *cell)]
            np.testing.assert_array_less(np.abs(r.per_prompt - swept), _tol(den, swept))
            largest = max(largest, abs(sweep[label]))
    assert largest > 0.3  # components that do something


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_faithfulness_of_the_whole_universe_is_one_and_of_nothing_is_zero(ablation):
    model = _model("llama")
    universe = universe_labels(["0.0", "mlp.0"], 3, 4)
    full = _run(model, universe, universe, test="faithfulness", ablation=ablation)
    empty = _run(model, [], universe, test="faithfulness", ablation=ablation)
    assert full.score == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(full.per_prompt, 1.0, atol=1e-6)
    assert full.faithfulness_ratio == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(full.metrics["patched"], full.metrics["clean"], atol=1e-6)
    assert empty.score == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(empty.per_prompt, 0.0, atol=1e-6)
    np.testing.assert_allclose(empty.metrics["patched"], empty.metrics["empty"], atol=1e-6)
    # Not vacuous: ablating the universe moves the model.
    assert np.abs(empty.metrics["empty"] - empty.metrics["clean"]).max() > 0.05
    # Under mean / zero ablation, necessity of the whole universe ablates all of it: the empty run.
    if ablation != "resample":
        necessity = _run(model, universe, universe, test="necessity", ablation=ablation)
        assert necessity.score == pytest.approx(1.0, abs=1e-6)


def test_resample_of_the_first_residual_stream_is_the_clean_or_corrupted_run():
    """resid.0 at every position is the whole input: restoring it into the corrupted run is the clean run
    (sufficiency 1), writing the corrupted one into the clean run is the corrupted run (necessity 1)."""
    model = _model("gpt2")
    suff = _run(model, ["resid.0"], None, test="sufficiency", ablation="resample")
    np.testing.assert_allclose(suff.metrics["patched"], suff.metrics["clean"], atol=1e-5)
    np.testing.assert_allclose(suff.metrics["empty"], suff.metrics["corrupted"], atol=1e-6)
    assert suff.score == pytest.approx(1.0, abs=1e-3)
    nec = _run(model, ["resid.0"], None, test="necessity", ablation="resample")
    np.testing.assert_allclose(nec.metrics["patched"], nec.metrics["corrupted"], atol=1e-5)
    assert nec.score == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_sufficiency_under_mean_or_zero_ablation_is_faithfulness(ablation):
    model = _model("gpt2")
    suff = _run(model, HEADS_MLP, None, test="sufficiency", ablation=ablation, metric="kl")
    faith = _run(model, HEADS_MLP, None, test="faithfulness", ablation=ablation, metric="kl")
    assert suff.score == pytest.approx(faith.score, abs=1e-6)
    np.testing.assert_allclose(suff.metrics["patched"], faith.metrics["patched"], atol=1e-6)
    np.testing.assert_allclose(suff.metrics["clean"], 0.0, atol=1e-6)  # -KL(clean || clean)


@pytest.mark.parametrize("test", TESTS)
def test_a_node_at_every_position_is_the_node(test):
    """'1.2@0' ... '1.2@18' (past the short prompts' ends too) covers what '1.2' covers."""
    model = _model("llama")
    whole = _run(model, ["1.2", "mlp.1"], None, test=test, ablation="mean")
    each = _run(model, [f"1.2@{p}" for p in range(19)] + ["mlp.1"], None, test=test, ablation="mean")
    assert each.score == pytest.approx(whole.score, abs=1e-5)
    np.testing.assert_allclose(each.metrics["patched"], whole.metrics["patched"], atol=1e-5)


def test_a_span_node_is_the_node_at_that_prompts_span_token():
    """'1.3@S2' patches token 6, 9 and 14 of the three prompts: prompt i equals '1.3@S2[i]' (resample: no prompt
    sees another's activations)."""
    model = _model("gpt2")
    by_name = _run(model, ["1.3@S2", "mlp.0"], None, test="sufficiency", ablation="resample")
    at_nine = _run(model, ["1.3@9", "mlp.0"], None, test="sufficiency", ablation="resample")
    for i, position in enumerate(S2):
        at = _run(model, [f"1.3@{position}", "mlp.0"], None, test="sufficiency", ablation="resample")
        assert by_name.metrics["patched"][i] == pytest.approx(at.metrics["patched"][i], abs=1e-5)
    # The span's positions really differ from one fixed position (prompts 0 and 2).
    assert np.abs(by_name.metrics["patched"] - at_nine.metrics["patched"])[[0, 2]].min() > 1e-4


# ---- errors ----
@pytest.mark.parametrize(("label", "hint"), [
    ("9.99", r"3 layers x 4 heads: layers 0\.\.2, heads 0\.\.3"),  # nothing is close: the valid ranges
    ("2.9", "Did you mean '2.3'"),
    ("mlp.7", "Did you mean 'mlp.2'"),
])
def test_a_node_the_model_lacks_is_a_component_error_with_a_suggestion(label, hint):
    model = _model("gpt2")
    with pytest.raises(ComponentError, match=hint):
        _run(model, ["0.1", label], None, test="sufficiency", ablation="resample")


@pytest.mark.parametrize(("setting", "value", "choices"), [
    ("test", "sufficency", TESTS),
    ("ablation", "meen", ABLATIONS),
])
def test_unknown_test_or_ablation_is_a_settings_error_naming_the_choices(setting, value, choices):
    model = _model("gpt2")
    settings = {"test": "sufficiency", "ablation": "resample", setting: value}
    with pytest.raises(SettingsError) as error:
        _run(model, ["0.1"], None, **settings)
    for choice in choices:
        assert choice in str(error.value)
