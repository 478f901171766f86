"""``interp_attention``, ``interp_evaluate`` and ``interp_off_distribution``: the library's ``attention_to``,
``evaluate`` and ``off_distribution`` through the plugin's cache, equal to the direct calls when computed and when
read back from the cache, and keyed by what they measure."""

from __future__ import annotations

import os

CLAIMS = '''
import numpy as np
import pytest

import interp_tests as it
from interp_tests.corruptions import DEFAULT_NOISE_SCALE
from interp_tests.robustness import off_distribution

pytestmark = [pytest.mark.interp_model("organism"), pytest.mark.interp_task("ioi", n=8, seed=0, corrupt="S2")]


def test_attention_equals_attention_to(interp_attention, interp_model, interp_pairs):
    for query, key in (("last", "S2"), ("last", "IO"), ("S2", "S1+1")):
        cached = interp_attention(query, key)
        direct = it.attention_to(interp_model(), interp_pairs(), query, key)
        np.testing.assert_array_equal(cached.per_prompt, direct.per_prompt)
        np.testing.assert_array_equal(cached.mean, direct.mean)
        assert (cached.query, cached.key) == (query, key)
    assert interp_attention("last", "S2")["0.5"] != interp_attention("last", "IO")["0.5"]  # keyed by positions


def test_evaluation_equals_evaluate(interp_evaluate, interp_model, interp_pairs):
    for corruption in ("str", "gn", None):
        assert interp_evaluate(corruption=corruption) == it.evaluate(interp_model(), interp_pairs(), corruption=corruption)
    other = it.tasks.ioi(8, seed=1, corrupt="S2")
    assert interp_evaluate(pairs=other, corruption=None) == it.evaluate(interp_model(), other, corruption=None)


def test_the_gn_check_equals_off_distribution(interp_off_distribution, interp_model, interp_pairs):
    for noise_scale in (None, 30.0):
        cached = interp_off_distribution(noise_scale=noise_scale)
        direct = off_distribution(interp_model(), interp_pairs(), noise_scale=noise_scale or DEFAULT_NOISE_SCALE)
        np.testing.assert_array_equal(cached.z, direct.z)
        assert cached.flagged_layers == direct.flagged_layers
'''


def test_the_fixtures_equal_the_direct_calls_computed_and_cached(pytester):
    (pytester.path / "test_readings.py").write_text(CLAIMS)
    os.environ.pop("PYTEST_ADDOPTS", None)
    summaries = []
    for _ in ("cold", "warm"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
        result.assert_outcomes(passed=3)
        summaries.append(next(line for line in result.outlines if line.startswith("sweeps: ")))
    assert summaries[0].startswith("sweeps: 7 computed, 0 from the cache"), summaries
    assert summaries[1].startswith("sweeps: 0 computed, 7 from the cache"), summaries
