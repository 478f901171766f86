"""Property tests of the framework itself, with prompt pairs drawn by interp_tests.strategies."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import interp_tests as it
from interp_tests import strategies
from interp_tests.components import KINDS
from interp_tests.errors import SettingsError
from interp_tests.metrics import MIN_LOGIT_DIFF_GAP
from interp_tests.tasks.greater_than import CENTURIES, START_YEARS
from interp_tests.tasks.words import NAMES
from interp_tests.testing import tiny_gpt2
from test_stats import make_result

MODEL_RUNS = settings(max_examples=10, deadline=None)
# tiny_gpt2's vocabulary holds every IOI name, so the generators need no tokenizer to stay single-token.
IOI_PAIRS = st.sampled_from(["S2", "S1_IO", "ABC"]).flatmap(
    lambda corrupt: strategies.prompt_pairs("ioi", n=st.integers(2, 5), corrupt=corrupt)
)


@functools.cache
def model() -> it.PatchableModel:
    hf, tokenizer = tiny_gpt2()
    return it.load_model(hf, tokenizer=tokenizer)


@MODEL_RUNS
@given(pairs=IOI_PAIRS, corruption=st.sampled_from(["str", "gn"]))
def test_restoring_the_residual_stream_before_layer_0_restores_the_clean_run(pairs, corruption):
    result = it.patch(model(), pairs, "resid", corruption, "prob")
    # Patched run == clean run for every prompt: each metric's effect is clean minus corrupted.
    np.testing.assert_allclose(result.effects["logit_diff"][:, 0], result.denominators, atol=1e-4)
    assert result["resid.0"] == pytest.approx(result.settings["clean"]["prob"] - result.settings["corrupted"]["prob"], abs=1e-6)
    kl = result.with_metric("kl")
    assert kl["resid.0"] == pytest.approx(result.settings["corrupted"]["kl"], abs=1e-5)
    assert np.all(kl.per_prompt[:, 0] >= -1e-6)
    gap = result.denominators.mean()
    assume(abs(gap) > MIN_LOGIT_DIFF_GAP)  # otherwise the normalised logit difference refuses (tested elsewhere)
    ld = result.with_metric("logit_diff")
    assert ld["resid.0"] == pytest.approx(1.0, abs=1e-4 / abs(gap))  # float32 logits, divided by the gap
    usable = [i for i in range(result.n_prompts) if i not in ld.degenerate_prompts]
    per_prompt = ld.per_prompt[usable]
    assert np.isfinite(per_prompt).all()
    np.testing.assert_array_less(np.abs(per_prompt[:, 0] - 1.0) * np.abs(result.denominators[usable]), 1e-4)

@MODEL_RUNS
@given(pairs=strategies.prompt_pairs("ioi", n=st.integers(1, 4)), component=st.sampled_from(KINDS))
def test_patching_when_clean_equals_corrupted_has_no_effect(pairs, component):
    same = it.PromptPairs(pairs.clean, pairs.clean, pairs.answer, pairs.wrong)
    result = it.patch(model(), same, component, "str", "prob")
    np.testing.assert_allclose(result.per_prompt, 0.0, atol=1e-6)
    np.testing.assert_allclose(result.with_metric("kl").per_prompt, 0.0, atol=1e-6)


EFFECTS = arrays(np.float64, st.tuples(st.integers(1, 6), st.just(3), st.just(4)), elements=st.floats(-10, 10))


@settings(max_examples=50, deadline=None)
@given(effects=EFFECTS, metric=st.sampled_from(["prob", "kl", "logit_diff"]))
def test_zscores_over_components_have_mean_0_and_sd_1(effects, metric):
    result = make_result(effects, metric)
    assume(result.mean.std() > 1e-6 * max(1.0, np.abs(result.mean).max()))
    z = result.zscores
    assert z.mean() == pytest.approx(0.0, abs=1e-9)
    assert z.std() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(effects=EFFECTS, sds=st.tuples(st.floats(0, 4), st.floats(0, 4)), sign=st.sampled_from(["positive", "negative", "both"]))
def test_detected_sets_shrink_as_sd_grows(effects, sds, sign):
    result = make_result(effects)
    low, high = sorted(sds)
    assert set(result.detected(high, sign)) <= set(result.detected(low, sign))


# ------------------------------------------------------------------------------- the strategies themselves
@settings(max_examples=20, deadline=None)
@given(pairs=strategies.prompt_pairs("ioi", n=6, corrupt="ABC"))
def test_prompt_pairs_draw_the_requested_task_variant(pairs):
    assert len(pairs) == 6
    for clean, corrupted in zip(pairs.clean, pairs.corrupted):
        changed = [(a, b) for a, b in zip(clean.split(), corrupted.split()) if a != b]
        assert len(changed) == 3  # ABC replaces IO, S1 and S2


@settings(max_examples=20, deadline=None)
@given(name=strategies.names(), test_name=strategies.names("test"), year=strategies.years())
def test_names_and_years_come_from_the_task_lists(name, test_name, year):
    assert name in NAMES and test_name in NAMES
    assert year // 100 in CENTURIES and year % 100 in START_YEARS


def test_prompt_pairs_reject_tasks_without_a_seed_and_unknown_arguments():
    with pytest.raises(SettingsError, match="Did you mean 'ioi'"):
        strategies.prompt_pairs("ioii")
    with pytest.raises(SettingsError, match="no seed"):
        strategies.prompt_pairs("file")
    with pytest.raises(SettingsError, match="does not take"):
        strategies.prompt_pairs("greater_than", corrupt="S2")
