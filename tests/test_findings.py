"""``python -m interp_tests.organism.findings``: the IOI circuit recipe puts each head in the class its own path
patching and attention measurements say, and the figure draws it. On the organism with 8 prompts (seconds)."""

from __future__ import annotations

import pytest

import interp_tests as it
from interp_tests.circuit_patching import circuit_patch
from interp_tests.organism.findings import SD, circuit_figure, ioi_circuit
from interp_tests.paths import path_patch


@pytest.fixture(scope="module")
def organism():
    return it.load_model("organism")


@pytest.fixture(scope="module")
def circuit(organism):
    return ioi_circuit(organism, n=8)


@pytest.fixture(scope="module")
def pairs(organism):
    """The prompts ``ioi_circuit(organism, n=8)`` measures."""
    return it.tasks.ioi(8, seed=0, corrupt="ABC", tokenizer=organism.tokenizer)


def test_each_class_is_what_its_path_patching_detects(organism, circuit, pairs):
    direct = path_patch(organism, pairs, "logits")
    assert circuit.name_movers == tuple(direct.detected(SD))
    assert circuit.negative == tuple(direct.detected(SD, sign="negative"))
    direct_prob = path_patch(organism, pairs, "logits", metric="prob")
    assert circuit.boosters == tuple(h for h in direct_prob.detected(SD) if h not in circuit.name_movers)
    assert circuit.boosters, "the organism's IOI has heads only the probability sees on the direct path"
    through = path_patch(organism, pairs, [f"{h}.v" for h in circuit.boosters], metric="prob")
    assert circuit.booster_inputs == tuple(through.detected(SD))
    assert set(circuit.heads) == {*circuit.name_movers, *circuit.negative, *circuit.s_inhibition, *circuit.upstream,
                                  *circuit.boosters, *circuit.booster_inputs}
    expected = circuit_patch(organism, pairs, it.Circuit(list(circuit.heads)), test="faithfulness").score
    assert circuit.faithfulness == pytest.approx(expected, abs=1e-9)


def test_the_report_names_every_head_with_its_attention(organism, circuit, pairs):
    report = circuit.report()
    for head in circuit.heads:
        assert f"{head} (effect" in report
    to_s2 = it.attention_to(organism, pairs, "last", "S2")
    assert circuit.patterns["end->S2"][circuit.name_movers[0]] == pytest.approx(to_s2[circuit.name_movers[0]])
    assert f"of {organism.n_layers * organism.n_heads} heads" in report


def test_the_figure_is_written(circuit, organism, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "circuit.png"
    circuit_figure(circuit, path, organism.n_layers, organism.n_heads)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
