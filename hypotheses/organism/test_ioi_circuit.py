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

pytestmark = [pytest.mark.interp_model("organism"), pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="ABC")]


def test_head_0_5_attends_from_the_end_to_s2_and_writes_to_the_logits(interp_attention, interp_path):
    """A class identified by its attention pattern and by path patching (section 3: path patching is needed)."""
    assert interp_attention("last", "S2")["0.5"] >= 0.8  # measured 0.909
    assert interp_attention("last", "IO")["0.5"] <= 0.05  # measured 0.014
    interp_path(["logits"]).assert_detected("0.5")  # direct effect 0.683, z 6.82


def test_head_0_3_attends_to_both_names_alike(interp_attention, interp_path):
    """A second class, whose direct path only the probability sees (section 4: metrics see different heads)."""
    to_io, to_s1, to_s2 = (interp_attention("last", key)["0.3"] for key in ("IO", "S1", "S2"))
    assert to_io >= 0.35 and to_s1 >= 0.35, (to_io, to_s1)  # measured 0.436 and 0.438
    assert abs(to_io - to_s1) <= 0.05 and to_s2 <= 0.15, (to_io, to_s1, to_s2)  # 0.076 to S2
    interp_path(["logits"], metric="prob").assert_detected("0.3")  # direct effect on P(IO) 0.028, z 3.37
    interp_path(["logits"]).assert_not_detected("0.3")  # on the logit difference: z -0.55


def test_two_of_the_48_heads_are_a_faithful_circuit(interp_circuit):
    """Faithfulness >= 0.8 for at most a quarter of the heads (Wang et al. 2023, section 4)."""
    interp_circuit(["0.5", "0.3"], test="faithfulness").assert_score(at_least=0.9)  # measured 0.952
    interp_circuit(["0.5"], test="faithfulness").assert_score(at_most=0.75)  # measured 0.683: 0.3 is needed


@pytest.mark.xfail(strict=True, reason=(
    "measured: of Wang et al.'s classes path patching finds only the direct-path head 0.5, a layer-0 head, so "
    "nothing acts through its query (no S-inhibition class, hence no duplicate-token heads behind it). Under the "
    "probability it adds 2.0 and 0.3 on the direct path and 0.3, 0.7, 0.0 through 2.0's values "
    "(`python -m interp_tests.organism.findings --only ioi`: 5 heads, faithfulness 1.095), but 2.0 attends to no "
    "name (0.00), so no attention pattern identifies it. Tried: 6 layers x 8 heads, 20k IOI variants naming IO "
    "twice (see the model card)"))
def test_path_patching_finds_s_inhibition_heads_behind_the_name_movers(interp_path):
    """The first composition step of the IOI circuit (Wang et al. 2023, section 3): heads acting through the
    direct-path heads' queries. Three classes need it (name movers, S-inhibition, duplicate-token heads)."""
    name_movers = interp_path(["logits"]).detected(2)
    through_queries = interp_path([f"{head}.q" for head in name_movers])
    s_inhibition = [head for head in through_queries.detected(2) if head not in name_movers]
    assert s_inhibition, through_queries.table(5)
