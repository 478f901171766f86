"""Circuits as data, circuit claims, and the completeness and minimality searches (against the hook reference)."""

from __future__ import annotations

import numpy as np
import pytest
from circuit_reference import reference_circuit
from test_engine import PADDED, build

import interp_tests as it
from interp_tests.circuit_patching import completeness, minimality
from interp_tests.claims import ClaimError
from interp_tests.errors import ComponentError, ResultFileError, SettingsError

PAIRS = it.PromptPairs(
    clean=PADDED.clean, corrupted=PADDED.corrupted, answer=PADDED.answer, wrong=PADDED.wrong,
)


@pytest.fixture(scope="module")
def gpt2() -> it.PatchableModel:
    return build("gpt2")


# ---- circuits as data ----------------------------------------------------------------------------------------
def test_circuit_labels_have_one_stable_text_form():
    circuit = it.Circuit(["mlp.3@12", "9.9@S2", "10.0", "9.9", "attn.2", "resid.4", "9.10"])
    assert str(circuit) == "{attn.2, mlp.3@12, resid.4, 9.9, 9.9@S2, 9.10, 10.0}"
    assert circuit == it.Circuit(reversed(circuit.labels))
    assert len(circuit) == 7 and "9.9@S2" in circuit and "9.6" not in circuit
    assert repr(it.Circuit(["1.2"], groups={"movers": ["1.2"]})) == "Circuit(['1.2'], groups={'movers': ['1.2']})"


def test_circuit_set_operations_keep_the_groups_whose_nodes_survive():
    circuit = it.Circuit(["9.9", "9.6", "10.0", "7.3"], groups={"movers": ["9.9", "9.6", "10.0"], "inhibition": ["7.3"]})
    assert (circuit - ["7.3"]).labels == ["9.6", "9.9", "10.0"]
    assert set((circuit - ["7.3"]).groups) == {"movers"}
    assert (circuit & ["9.9", "8.1"]).labels == ["9.9"]
    union = it.Circuit(["1.1"]) | circuit
    assert len(union) == 5 and set(union.groups) == {"movers", "inhibition"}
    assert circuit.groups["movers"] == it.Circuit(["9.9", "9.6", "10.0"])


@pytest.mark.parametrize(("nodes", "message"), [
    (["9.9.9"], "is not a circuit node"),
    (["mlp3"], "is not a circuit node"),
    ("9.9", r"takes a list of node labels, not one string: Circuit\(\['9.9'\]\)"),
])
def test_a_malformed_node_is_a_component_error_that_shows_the_forms(nodes, message):
    with pytest.raises(ComponentError, match=message):
        it.Circuit(nodes)


def test_a_group_outside_the_circuit_is_an_error():
    with pytest.raises(ComponentError, match=r"Group 'movers' names \['9.6'\], which are not nodes"):
        it.Circuit(["9.9"], groups={"movers": ["9.9", "9.6"]})


def test_an_unknown_named_position_suggests_the_pairs_positions(gpt2):
    with pytest.raises(ComponentError, match=r"the pairs name no position 'lats'. Did you mean 'last'\?"):
        it.circuit_patch(gpt2, PAIRS, ["0.1@lats"])


def test_the_faithfulness_universe_must_contain_the_circuit(gpt2):
    with pytest.raises(ComponentError, match=r"not in the universe of ablated nodes"):
        it.circuit_patch(gpt2, PAIRS, ["0.1", "mlp.0"], test="faithfulness", universe=["0.1", "0.2"])


# ---- claims on a circuit result ------------------------------------------------------------------------------
def test_assert_score_passes_and_fails_with_a_report(gpt2):
    result = it.circuit_patch(gpt2, PAIRS, ["0.1", "1.2", "mlp.0"], test="sufficiency", n_bootstrap=200)
    result.assert_score(at_least=result.score - 1e-9, at_most=result.score + 1e-9)
    with pytest.raises(ClaimError) as failure:
        result.assert_score(at_least=result.score + 0.5)
    text = str(failure.value)
    assert f"The sufficiency score of circuit {{0.1, mlp.0, 1.2}} is {result.score:.3f}, not >= " in text
    assert f"[{result.interval[0]:.3f}, {result.interval[1]:.3f}]" in text and "(95% bootstrap over 3 prompts)" in text
    assert "per node, score lost when it alone is left out:" in text
    assert "settings: test=sufficiency, ablation=resample, metric=logit_diff, corruption=str" in text
    assert failure.value.claim == "score" and failure.value.details["score"] == result.score
    with pytest.raises(SettingsError, match="needs at_least= and/or at_most="):
        result.assert_score()


def test_contributions_are_the_score_lost_without_each_node(gpt2):
    circuit = ["0.1", "1.2", "mlp.0"]
    universe = [*(f"{layer}.{head}" for layer in range(3) for head in range(4)), "mlp.0", "mlp.1", "mlp.2"]
    result = it.circuit_patch(gpt2, PAIRS, circuit, test="necessity", ablation="zero")
    for node in circuit:
        rest = [n for n in circuit if n != node]
        alone_out = it.circuit_patch(gpt2, PAIRS, rest, test="necessity", ablation="zero", universe=universe)
        assert result.contributions[node] == pytest.approx(result.score - alone_out.score, abs=1e-9)


def test_the_bootstrap_interval_resamples_prompts(gpt2):
    result = it.circuit_patch(gpt2, PAIRS, ["0.1", "1.2"], test="sufficiency", n_bootstrap=2000, confidence=0.9)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 3, size=(2000, 3))
    m = {k: v[picks].mean(axis=1) for k, v in result.metrics.items()}
    scores = (m["patched"] - m["empty"]) / (m["clean"] - m["empty"])
    assert result.interval == pytest.approx(tuple(np.percentile(scores, [5, 95])))


def test_a_circuit_result_saves_and_loads_losslessly(gpt2, tmp_path):
    circuit = it.Circuit(["0.1", "1.2"], groups={"pair": ["0.1", "1.2"]})
    result = it.circuit_patch(gpt2, PAIRS, circuit, test="faithfulness", ablation="mean")
    result.save(tmp_path / "circuit.npz")
    loaded = it.CircuitResult.load(tmp_path / "circuit.npz")
    assert loaded.circuit == circuit and loaded.circuit.groups == circuit.groups
    assert (loaded.score, loaded.interval, loaded.settings) == (result.score, result.interval, result.settings)
    assert loaded.contributions == result.contributions
    np.testing.assert_array_equal(loaded.per_prompt, result.per_prompt)
    (tmp_path / "broken.npz").write_bytes(b"not a result")
    with pytest.raises(ResultFileError, match="not a readable CircuitResult file"):
        it.CircuitResult.load(tmp_path / "broken.npz")


# ---- completeness and minimality -----------------------------------------------------------------------------
def _kept_mean(model, labels, universe, ablation):
    """Reference F(X): the clean run with the universe outside X ablated, mean metric."""
    if not labels:
        return float(np.mean(reference_circuit(model, PAIRS, [], test="faithfulness", ablation=ablation,
                                               universe=universe)["metrics"]["empty"]))
    ref = reference_circuit(model, PAIRS, labels, test="faithfulness", ablation=ablation, universe=universe)
    return float(np.mean(ref["metrics"]["patched"]))


@pytest.mark.parametrize("ablation", ["resample", "mean"])
def test_completeness_compares_circuit_and_model_without_each_subset_as_the_reference_does(gpt2, ablation):
    circuit = it.Circuit(["0.1", "1.2", "2.3"], groups={"late": ["1.2", "2.3"]})
    universe = [f"{layer}.{head}" for layer in range(3) for head in range(4)]
    found = completeness(gpt2, PAIRS, circuit, ablation=ablation, samples=4, greedy_steps=2)
    assert {row[0] for row in found.rows} >= {"group late", "greedy 1"}
    for _, k, circuit_without_k, model_without_k in found.rows:
        assert circuit_without_k == pytest.approx(_kept_mean(gpt2, (circuit - k).labels, universe, ablation), abs=1e-4)
        assert model_without_k == pytest.approx(_kept_mean(gpt2, (it.Circuit(universe) - k).labels, universe, ablation), abs=1e-4)
    gap = _kept_mean(gpt2, universe, universe, ablation) - _kept_mean(gpt2, [], universe, ablation)
    assert found.gap == pytest.approx(gap, abs=1e-4)
    worst = max(abs(a - b) for _, _, a, b in found.rows) / abs(found.gap)
    assert found.incompleteness == pytest.approx(worst, rel=1e-6)
    # Per prompt: clean, corrupted, (the reference prompts for mean ablation), full, empty, then two per K.
    assert found.n_runs == 3 * (2 + (ablation == "mean") + 2 + 2 * len(found.rows))


def test_greedy_completeness_grows_the_worst_subset(gpt2):
    circuit = it.Circuit(["0.1", "1.2", "2.3"])
    found = completeness(gpt2, PAIRS, circuit, samples=0, greedy_steps=2)
    first = [row for row in found.rows if row[0] == "greedy 1"]
    second = [row for row in found.rows if row[0] == "greedy 2"]
    assert sorted(len(k) for _, k, _, _ in first) == [1, 1, 1]
    best = max(first, key=lambda row: abs(row[2] - row[3]))[1]
    assert all(len(k) == 2 and set(best) <= set(k) for _, k, _, _ in second)


def test_assert_complete_reports_the_worst_subset(gpt2):
    found = completeness(gpt2, PAIRS, ["0.1", "1.2"], samples=3)
    found.assert_complete(max_incompleteness=found.incompleteness + 1e-9)
    with pytest.raises(ClaimError, match=r"is incomplete: knocking out K = \{.*\} changes the circuit") as failure:
        found.assert_complete(max_incompleteness=found.incompleteness / 2)
    assert failure.value.claim == "complete" and failure.value.details["worst"] == found.worst[1].labels


def test_minimality_measures_each_node_against_the_reference(gpt2):
    circuit = it.Circuit(["0.1", "1.2", "mlp.0"])
    universe = [*(f"{layer}.{head}" for layer in range(3) for head in range(4)), "mlp.0", "mlp.1", "mlp.2"]
    found = minimality(gpt2, PAIRS, circuit, samples=2)
    assert {row[0] for row in found.rows} == set(circuit.labels)
    for node, k, without_k, without_k_and_node in found.rows:
        assert without_k == pytest.approx(_kept_mean(gpt2, (circuit - k).labels, universe, "resample"), abs=1e-4)
        assert without_k_and_node == pytest.approx(
            _kept_mean(gpt2, (circuit - k - [node]).labels, universe, "resample"), abs=1e-4
        )
        assert node not in k
    best = found.by_node()
    weakest = min(value for _, value in best.values())
    found.assert_minimal(min_effect=weakest)
    with pytest.raises(ClaimError, match="is not minimal") as failure:
        found.assert_minimal(min_effect=weakest + 1e-6)
    assert failure.value.claim == "minimal"
