"""The organism's IOI circuit as path patching and attention patterns show it (Wang et al. 2023, section 3; Zhang
& Nanda 2024, section 3: "path patching ... necessary to fully discover the IOI circuit"). All three names
corrupted (ABC), held-out prompts, n = 64, seed 0; `python -m interp_tests.organism.findings --only ioi` prints
the same numbers and draws docs/organism_ioi_circuit.png.

What the organism learned is shallower than GPT-2's circuit: two layer-0 heads, one that attends from the end to the
repeated name (S2) and raises the logit difference straight through the logits, one that attends to both names alike
(so only the probability sees it), together 95% faithful. The multi-step circuit (duplicate-token, S-inhibition and
name-mover classes composing) did not emerge; that claim is a strict xfail with the measurement.
"""

import pytest

import interp_tests as it
from interp_tests.organism.findings import ioi_circuit

pytestmark = [pytest.mark.interp_model("organism"), pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="ABC")]


def test_head_0_5_attends_from_the_end_to_s2_and_writes_to_the_logits(interp_model, interp_pairs, interp_path):
    """A class identified by its attention pattern and by path patching (section 3: path patching is needed)."""
    pairs = interp_pairs()
    assert it.attention_to(interp_model(), pairs, "last", "S2")["0.5"] >= 0.8  # measured 0.909
    assert it.attention_to(interp_model(), pairs, "last", "IO")["0.5"] <= 0.05  # measured 0.014
    interp_path(["logits"]).assert_detected("0.5")  # direct effect 0.683, z 6.82


def test_head_0_3_attends_to_both_names_alike(interp_model, interp_pairs):
    """A second class, whose direct path only the probability sees (section 4: metrics see different heads)."""
    pairs = interp_pairs()
    to_io, to_s1, to_s2 = (it.attention_to(interp_model(), pairs, "last", key)["0.3"] for key in ("IO", "S1", "S2"))
    assert to_io >= 0.35 and to_s1 >= 0.35, (to_io, to_s1)  # measured 0.436 and 0.438
    assert abs(to_io - to_s1) <= 0.05 and to_s2 <= 0.15, (to_io, to_s1, to_s2)  # 0.076 to S2


def test_two_of_the_48_heads_are_a_faithful_circuit(interp_circuit):
    """Faithfulness >= 0.8 for at most a quarter of the heads (Wang et al. 2023, section 4)."""
    interp_circuit(["0.5", "0.3"], test="faithfulness").assert_score(at_least=0.9)  # measured 0.952
    interp_circuit(["0.5"], test="faithfulness").assert_score(at_most=0.75)  # measured 0.683: 0.3 is needed


@pytest.mark.xfail(strict=True, reason=(
    "measured: of Wang et al.'s classes path patching finds only the direct-path head 0.5 (a layer-0 head, so nothing "
    "acts through its query or values): no S-inhibition, no duplicate-token heads. Under the probability it adds 2.0 "
    "and 0.3 on the direct path and 0.3, 0.7, 0.0 through 2.0's values (5 heads, faithfulness 1.095), but 2.0 attends "
    "to no name (0.00), so no attention pattern identifies it. Tried: 6 layers x 8 heads, 20k IOI variants naming IO "
    "twice (see the model card)"))
def test_path_patching_finds_three_classes_of_heads_in_a_faithful_quarter_of_the_heads(interp_model):
    """The IOI circuit's composition, as Wang et al. (2023, section 3) find it in GPT-2 and section 3 patches it."""
    circuit = ioi_circuit(interp_model(), n=32)
    assert len(circuit.classes) >= 3, circuit.report()
    assert len(circuit.heads) <= circuit.n_heads // 4 and circuit.faithfulness >= 0.8, circuit.report()
