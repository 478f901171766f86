"""Edge-level claims about the organism (Syed et al. 2023 EAP, Hanna et al. 2024 EAP-IG, MIB's faithfulness
curves): which sender -> receiver edges carry IOI under S1+IO corruption (held-out prompts, n = 64, seed 0).
Every number was measured by the call in its test (`pytest hypotheses/organism/test_edges.py -v`), through
the interp_edges fixture, so an unchanged run reads them from the result cache."""

import pytest

import interp_tests as it

pytestmark = pytest.mark.interp_model("organism")
# The two-step circuit path patching finds (0.2 acts through 1.2's values, 1.2 writes the answer), at edge level:
# 0.2 reads the names (its value input), writes them to mlp.0, whose output feeds 1.2's value input.
CLAIMED = ["embed->0.2.v", "0.2->mlp.0", "mlp.0->1.2.v", "1.2->logits"]


@pytest.fixture(scope="module")
def ioi():
    return it.tasks.ioi(n=64, seed=0, corrupt="S1_IO")


@pytest.fixture
def scores(interp_edges, ioi):
    return interp_edges(pairs=ioi, method="eap_ig", steps=5)


def test_eap_ig_ranks_the_two_step_circuit_first(scores):
    scores.assert_in_top("embed->0.2.v", "0.2->mlp.0", "mlp.0->1.2.v", k=3)  # ranks 1, 2, 3 of 479
    scores.circuit(top=6).contains(CLAIMED)  # 1.2->logits is sixth


def test_the_top_edges_are_what_exact_patching_measures(interp_edges, ioi, scores):
    check = interp_edges.verify(scores, pairs=ioi, k=5)
    check.assert_within(0.1)  # measured: the estimates undershoot by 0.03-0.07 (embed->0.2.v 0.795 vs 0.826)


def test_two_percent_of_the_edges_are_not_yet_faithful_five_percent_are(interp_edges, ioi, scores):
    curve = interp_edges.faithfulness(scores, pairs=ioi)
    curve.assert_faithful(at_fraction=0.05, at_least=0.9)  # 24 edges: 0.952
    curve.assert_cmd(at_most=0.05)  # measured CMD 0.031, CPR 1.076
    with pytest.raises(AssertionError, match="recover faithfulness 0.557"):
        curve.assert_faithful(at_fraction=0.02, at_least=0.8)  # 10 edges: 0.557
