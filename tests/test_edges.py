"""Edge circuits: the graph, exact edge patching against the hook reference (tests/edge_reference.py) on a padded
batch, node circuits against the circuits of their edges, and the errors for bad edges and architectures."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests.circuits import Edge
from interp_tests.edges import EdgeGraph
from interp_tests.errors import ComponentError, UnsupportedArchitectureError

from edge_reference import Reference, _ids, reference_edges
from test_engine import PADDED, build

ARCHS = ["gpt2", "llama"]


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return build(request.param)


def sample_edges(model, n, seed):
    edges = EdgeGraph.of(model).edges
    return random.Random(seed).sample(edges, n)


def test_graph_matches_the_reference_and_counts(model):
    graph = EdgeGraph.of(model)
    assert sorted(graph.edges) == sorted(Reference(model).edges())
    # 3 layers x 4 heads; gpt2 has 4 KV heads, llama 2.
    kv = 4 if model.hf.config.model_type == "gpt2" else 2
    senders_before = [1 + 5 * layer for layer in range(3)]
    expected = sum((4 + 2 * kv) * s for s in senders_before) + sum(s + 4 for s in senders_before) + 16
    assert len(graph.edges) == expected


def test_reference_without_patches_is_the_model(model):
    ids = _ids(model, PADDED.clean[1])
    logits, _ = Reference(model).run(ids)
    with torch.no_grad():
        plain = model.hf(ids[None]).logits[0, -1]
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "test, ablation",
    [("sufficiency", "resample"), ("necessity", "resample"), ("faithfulness", "mean"), ("necessity", "zero"),
     ("faithfulness", "zero")],
)
def test_edge_patching_matches_the_hook_reference(model, test, ablation):
    circuit = sample_edges(model, 12, seed=zlib.crc32(f"{test}/{ablation}".encode()))  # hash() varies by process
    universe = circuit + sample_edges(model, 20, seed=5) if ablation != "resample" else None
    universe = None if universe is None else list(dict.fromkeys(universe))
    result = it.circuit_patch(model, PADDED, circuit, test=test, ablation=ablation, universe=universe, n_bootstrap=10)
    expected = reference_edges(model, PADDED, circuit, test=test, ablation=ablation, universe=universe)
    for run in ("clean", "corrupted", "patched", "empty"):
        np.testing.assert_allclose(result.metrics[run], expected[run], atol=2e-4, err_msg=run)
    assert abs(float(np.mean(result.metrics["patched"]) - np.mean(result.metrics["corrupted"]))) > 1e-3  # it patched


def _out_edges(model, nodes):
    graph = EdgeGraph.of(model)
    return [e for e in graph.edges if e.split("->")[0] in nodes]


@pytest.mark.parametrize("test, ablation", [("sufficiency", "resample"), ("necessity", "resample"), ("faithfulness", "mean"),
                                            ("faithfulness", "zero")])
def test_a_node_circuit_scores_as_the_circuit_of_its_edges(model, test, ablation):
    nodes = ["0.1", "1.2", "1.3", "2.0"]
    heads = [f"{layer}.{head}" for layer in range(3) for head in range(4)]
    node_result = it.circuit_patch(model, PADDED, nodes, test=test, ablation=ablation, n_bootstrap=10)
    universe = _out_edges(model, heads) if test == "faithfulness" else None
    edge_result = it.circuit_patch(model, PADDED, _out_edges(model, nodes), test=test, ablation=ablation,
                                   universe=universe, n_bootstrap=10)
    np.testing.assert_allclose(edge_result.metrics["patched"], node_result.metrics["patched"], atol=2e-4)
    assert edge_result.score == pytest.approx(node_result.score, abs=1e-3)


def test_edges_parse_sort_and_compare():
    circuit = it.Circuit(["9.9->logits", Edge("5.5", "9.9.q"), "embed->mlp.0", "mlp.3->9.9.v"])
    assert circuit.labels == ["embed->mlp.0", "5.5->9.9.q", "mlp.3->9.9.v", "9.9->logits"]
    assert circuit.is_edges and "5.5->9.9.q" in circuit and "5.5->9.9.k" not in circuit
    assert (circuit - ["9.9->logits"]).labels == circuit.labels[:3]
    assert not it.Circuit(["9.9"]).is_edges


@pytest.mark.parametrize("label, message", [
    ("5.5-9.9.q", "Edges are .sender->receiver"),
    ("5.5->9.9.x", "is not an edge"),
    ("5.5->logit", "is not an edge"),
])
def test_malformed_edges_are_refused(label, message):
    with pytest.raises(ComponentError, match=message):
        it.Circuit([label])


def test_nodes_and_edges_do_not_mix():
    with pytest.raises(ComponentError, match="nodes or edges, not both"):
        it.Circuit(["9.9", "9.9->logits"])


def test_unknown_edges_say_what_exists(model):
    with pytest.raises(ComponentError, match=r"not an edge of this model .*Did you mean '1.2->2.\d.q'"):
        it.circuit_patch(model, PADDED, ["1.2->2.9.q"])
    with pytest.raises(ComponentError, match="2.1 is not before 1.0.q"):
        it.circuit_patch(model, PADDED, ["2.1->1.0.q"])
    with pytest.raises(ComponentError, match="not before"):
        it.circuit_patch(model, PADDED, ["mlp.1->mlp.1"])


def test_grouped_query_key_receivers_are_kv_heads():
    model = build("llama")
    with pytest.raises(ComponentError, match="no receiver '1.3.k'"):
        it.circuit_patch(model, PADDED, ["0.0->1.3.k"])
    it.circuit_patch(model, PADDED, ["0.0->1.3.q", "0.0->1.1.k"], n_bootstrap=10)


@pytest.mark.parametrize("arch, missing", [("gpt_neox", "parallel"), ("gptj", "parallel")])
def test_parallel_blocks_are_refused(arch, missing):
    model = build(arch)
    with pytest.raises(UnsupportedArchitectureError, match=missing):
        it.circuit_patch(model, PADDED, ["0.0->logits"])
