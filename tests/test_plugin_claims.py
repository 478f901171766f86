"""Python claims on PatchResult: they pass when the sweep agrees, and fail with a report that says why."""

from __future__ import annotations

import numpy as np
import pytest

from interp_tests import PromptPairs, load_model, patch
from interp_tests.claims import ClaimError, recording_claims
from interp_tests.errors import ComponentError, SettingsError


@pytest.fixture(scope="module")
def ranked(tiny_sweep):
    """Labels of the tiny sweep, largest mean effect first."""
    return [label for label, _ in tiny_sweep.top(len(tiny_sweep.labels))]


@pytest.fixture(scope="module")
def mlp_by_position(tiny_files):
    return patch(load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl"), "mlp", positions="each")


def test_the_top_component_is_detected_at_its_own_zscore(tiny_sweep, ranked):
    top = ranked[0]
    tiny_sweep.assert_detected(top, sd=tiny_sweep.zscore(top) - 0.01)
    tiny_sweep.assert_detected([top], sd=tiny_sweep.zscore(top) - 0.01)


def test_a_false_detection_claim_fails_with_a_report(tiny_sweep, ranked):
    weak = ranked[-1]
    with pytest.raises(ClaimError) as caught:
        tiny_sweep.assert_detected(weak, sd=2)
    error, message = caught.value, str(caught.value)
    assert isinstance(error, AssertionError)
    assert (error.claim, error.labels, error.threshold, error.sign) == ("detected", [weak], 2, "positive")
    figures = error.figures[weak]
    assert figures.effect == pytest.approx(tiny_sweep[weak])
    assert figures.zscore == pytest.approx(tiny_sweep.zscore(weak))
    assert figures.rank == tiny_sweep.rank(weak) == len(ranked)
    n = len(ranked)
    assert f"Claim failed: {weak} is not detected (needs z >= 2.00, sign=positive)." in message
    assert f"{weak}: effect {tiny_sweep[weak]:.4g}, z {tiny_sweep.zscore(weak):+.2f}, rank {n} of {n}" in message
    mean = tiny_sweep.mean
    assert f"over {n} components: mean {mean.mean():.4g}, SD {mean.std():.4g}" in message
    assert tiny_sweep.table() in message
    assert f"settings: {tiny_sweep.describe_settings()}" in message


def test_not_detected_fails_naming_the_detected_component(tiny_sweep, ranked):
    tiny_sweep.assert_not_detected(*ranked[1:], sd=tiny_sweep.zscore(ranked[0]) - 0.01)
    with pytest.raises(ClaimError, match=rf"{ranked[0]} is detected .* but the claim says not"):
        tiny_sweep.assert_not_detected(ranked[0], sd=tiny_sweep.zscore(ranked[0]) - 0.01)


def test_negative_claims_rank_from_the_most_negative(tiny_sweep, ranked):
    bottom = ranked[-1]
    tiny_sweep.assert_negative(bottom, sd=-tiny_sweep.zscore(bottom) - 0.01)
    with pytest.raises(ClaimError) as caught:
        tiny_sweep.assert_negative(ranked[0], sd=1)
    assert caught.value.sign == "negative"
    assert caught.value.figures[ranked[0]].rank == len(ranked)
    assert "needs z <= -1.00" in str(caught.value) and "most negative first" in str(caught.value)


def test_top_k(tiny_sweep, ranked):
    tiny_sweep.assert_top_k(ranked[:3], k=3)
    with pytest.raises(ClaimError, match=rf"{ranked[3]} is not among the top 3 components") as caught:
        tiny_sweep.assert_top_k(ranked[3], k=3)
    assert caught.value.figures[ranked[3]].rank == 4


def test_peak_takes_the_largest_effect_over_positions(mlp_by_position):
    peak = int(np.argmax(mlp_by_position.mean.max(axis=1)))
    mlp_by_position.assert_peak(range(peak, peak + 1))
    elsewhere = (peak + 1) % mlp_by_position.grid.n_layers
    with pytest.raises(ClaimError) as caught:
        mlp_by_position.assert_peak((elsewhere, elsewhere + 1))
    message = str(caught.value)
    assert f"peaks at layer {peak}, outside the claimed layers {elsewhere}..{elsewhere}" in message
    assert "effect per layer (max over positions):" in message and "<- peak" in message


@pytest.mark.parametrize("layers", [range(0), (1, 2, 3), range(7, 9)])
def test_peak_rejects_impossible_layer_ranges(mlp_by_position, layers):
    with pytest.raises(SettingsError, match="layers="):
        mlp_by_position.assert_peak(layers)


def test_an_unknown_label_is_a_component_error_not_a_failed_claim(tiny_sweep):
    with pytest.raises(ComponentError, match="Valid labels"):
        tiny_sweep.assert_detected("9.9")
    with pytest.raises(SettingsError, match="at least one component"):
        tiny_sweep.assert_detected()


def test_claims_are_recorded_for_the_summary(tiny_sweep, ranked):
    with recording_claims() as outcomes:
        tiny_sweep.assert_top_k(ranked[0], k=1)
        with pytest.raises(ClaimError):
            tiny_sweep.assert_detected(ranked[-1])
    assert [(o.claim, o.passed) for o in outcomes] == [(f"top 1: {ranked[0]}", True), (f"detected {ranked[-1]} (z >= 2.00)", False)]
    assert outcomes[1].figure == f"z({ranked[-1]})={tiny_sweep.zscore(ranked[-1]):+.2f}"
