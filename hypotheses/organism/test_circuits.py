"""Circuit claims about the organism: which sets of heads carry each task, judged by sufficiency, necessity,
faithfulness, completeness and minimality (Wang et al. 2023, section 4), and how the verdict moves with the
ablation (Heimersheim & Nanda 2024). Held-out prompts, n = 64, seed 0; every number was measured with the
call in the test (re-run: `pytest hypotheses/organism/test_circuits.py -v`). Claims that the organism does
not bear out are written as strict xfails with the measured number, so a change in either direction shows."""

import pytest

pytestmark = pytest.mark.interp_model("organism")


@pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="S2")
@pytest.mark.parametrize("test", ["sufficiency", "necessity", "faithfulness"])
def test_head_0_3_alone_is_the_ioi_s2_circuit(interp_circuit, test):
    """S2 -> IO corruption: one head restores, destroys and (all other heads resampled) keeps the whole effect."""
    result = interp_circuit(["0.3"], test=test)
    result.assert_score(at_least=0.95)  # measured 0.999, 1.000, 1.057


@pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="S1_IO")
def test_heads_0_2_and_1_2_together_restore_most_of_ioi_s1_io(interp_circuit):
    result = interp_circuit(["0.2", "1.2"], test="sufficiency")
    result.assert_score(at_least=0.8)  # measured 0.870 [0.846, 0.894]
    assert min(result.contributions.values()) > 0.1, result  # both heads carry part of it


@pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="S1_IO")
@pytest.mark.xfail(strict=True, reason="measured 0.447: the other 14 heads, resampled, take half the effect with them")
def test_heads_0_2_and_1_2_are_a_faithful_ioi_s1_io_circuit(interp_circuit):
    interp_circuit(["0.2", "1.2"], test="faithfulness").assert_score(at_least=0.8)


@pytest.mark.interp_task("ioi", n=64, seed=0, corrupt="S1_IO")
def test_the_ioi_s1_io_circuit_is_minimal_but_not_complete(interp_circuit):
    circuit = ["0.2", "1.2"]
    interp_circuit.minimality(circuit).assert_minimal(min_effect=0.3)  # measured 0.443 and 0.447
    found = interp_circuit.completeness(circuit)
    assert found.incompleteness > 0.3, found  # measured 0.371 at K = {1.2}: the rest of the model compensates
    with pytest.raises(AssertionError, match="is incomplete"):
        found.assert_complete(max_incompleteness=0.1)


@pytest.mark.interp_task("docstring", n=64, seed=0)
def test_the_docstring_circuit_is_faithful_and_minimal(interp_circuit):
    circuit = ["0.2", "1.2", "1.0"]
    interp_circuit(circuit, test="faithfulness").assert_score(at_least=0.9)  # 0.942
    interp_circuit.minimality(circuit).assert_minimal(min_effect=0.2)  # measured 0.220 (1.0) and up
    interp_circuit.completeness(circuit).assert_complete(max_incompleteness=0.15)  # measured 0.120


@pytest.mark.interp_task("induction", n=64, seed=0)
def test_the_induction_circuit_survives_resampling_but_not_mean_ablation(interp_circuit):
    """The same three heads: faithfulness 0.648 when the other heads are resampled, 0.066 when they are set to
    their means. Which ablation a claim uses decides it (Heimersheim & Nanda 2024; Miller et al. 2024)."""
    circuit = ["1.2", "0.0", "0.2"]
    interp_circuit(circuit, test="faithfulness").assert_score(at_least=0.6)
    mean = interp_circuit(circuit, test="faithfulness", ablation="mean")
    mean.assert_score(at_most=0.15)  # measured 0.066 [-0.009, 0.136]
