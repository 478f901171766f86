"""interp_tests.stats against direct numpy/scipy computations on small synthetic results (no model runs)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from interp_tests import stats
from interp_tests.components import make_grid
from interp_tests.errors import ComponentError, MetricError, SettingsError
from interp_tests.results import PatchResult


def make_result(
    effects: np.ndarray, metric: str = "prob", ld_clean: np.ndarray | None = None, ld_corrupted: np.ndarray | None = None
) -> PatchResult:
    """A PatchResult over a [3 layers, 4 heads] grid whose raw effects are ``effects`` for every metric."""
    effects = np.asarray(effects, dtype=np.float64)
    n = effects.shape[0]
    ld_clean = np.full(n, 2.0) if ld_clean is None else np.asarray(ld_clean, dtype=np.float64)
    ld_corrupted = np.zeros(n) if ld_corrupted is None else np.asarray(ld_corrupted, dtype=np.float64)
    grid = make_grid("attn_head", "all", n_layers=3, n_heads=4, seq_len=5)
    return PatchResult(
        metric=metric, effects={m: effects for m in ("prob", "logit_diff", "kl")},
        ld_clean=ld_clean, ld_corrupted=ld_corrupted, grid=grid, settings={},
    )


def random_result(n: int = 8, seed: int = 0, metric: str = "prob") -> PatchResult:
    rng = np.random.default_rng(seed)
    effects = rng.normal(size=(n, 3, 4))
    effects[:, 2, 1] += 3.0  # one clearly positive component
    effects[:, 0, 3] -= 2.0  # one clearly negative component
    return make_result(effects, metric, ld_clean=rng.uniform(1.0, 3.0, n), ld_corrupted=rng.uniform(-1.0, 0.5, n))


def subset(result: PatchResult, rows: np.ndarray) -> PatchResult:
    return PatchResult(
        metric=result.metric, effects={k: v[rows] for k, v in result.effects.items()},
        ld_clean=result.ld_clean[rows], ld_corrupted=result.ld_corrupted[rows], grid=result.grid, settings={},
    )


def hand_bootstrap(result: PatchResult, n_resamples: int, seed: int, sd: float):
    """One resample at a time through PatchResult itself; resamples it refuses (denominator ~0) are skipped."""
    idx = np.random.default_rng(seed).integers(0, result.n_prompts, size=(n_resamples, result.n_prompts))
    means, zs, positive, negative = [], [], [], []
    for rows in idx:
        try:
            resampled = subset(result, rows)
        except MetricError:
            continue
        means.append(resampled.mean.reshape(-1))
        zs.append(resampled.zscores.reshape(-1))
        positive.append([label in resampled.detected(sd, "positive") for label in result.labels])
        negative.append([label in resampled.detected(sd, "negative") for label in result.labels])
    return np.array(means), np.array(zs), np.mean(positive, axis=0), np.mean(negative, axis=0)


# ------------------------------------------------------------------------------------------ bootstrap
@pytest.mark.parametrize("metric", ["prob", "logit_diff", "kl"])
def test_bootstrap_matches_a_hand_loop_with_the_same_seed(metric):
    result = random_result(metric=metric)
    boot = stats.bootstrap(result, n_resamples=300, seed=7, confidence=0.9, sd=1.5)
    means, zs, positive, negative = hand_bootstrap(result, 300, 7, 1.5)
    np.testing.assert_allclose(boot.mean_ci, np.percentile(means, [5, 95], axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(boot.z_ci, np.percentile(zs, [5, 95], axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(boot.detection_positive, positive)
    np.testing.assert_allclose(boot.detection_negative, negative)
    np.testing.assert_allclose(boot.mean, result.mean.reshape(-1))
    assert boot.n_degenerate == 0


def test_bootstrap_drops_resamples_whose_logit_difference_denominator_is_zero():
    rng = np.random.default_rng(1)
    # Per-prompt gaps 2, 2, -1: the batch gap is 1, but a resample of one of the first two and twice the
    # third has gap 0, which PatchResult refuses; those resamples are left out.
    result = make_result(rng.normal(size=(3, 3, 4)), "logit_diff", ld_clean=[2.0, 2.0, -1.0], ld_corrupted=[0.0, 0.0, 0.0])
    boot = stats.bootstrap(result, n_resamples=200, seed=3)
    means, zs, positive, _ = hand_bootstrap(result, 200, 3, 2.0)
    assert boot.n_degenerate == 200 - len(means) > 0
    np.testing.assert_allclose(boot.mean_ci, np.percentile(means, [2.5, 97.5], axis=0), rtol=1e-10)
    np.testing.assert_allclose(boot.detection_positive, positive)
    assert "dropped" in str(boot)


def test_bootstrap_accessors_and_text():
    result = random_result(n=12)
    boot = stats.bootstrap(result, n_resamples=200)
    i = result.labels.index("2.1")
    assert boot.ci("2.1") == (boot.mean_ci[0, i], boot.mean_ci[1, i])
    assert boot.z_interval("2.1") == (boot.z_ci[0, i], boot.z_ci[1, i])
    assert boot.detection_rate("2.1") > 0.9
    assert boot.detection_rate("0.3", "negative") == boot.detection_negative[result.labels.index("0.3")]
    assert boot.detection_rate("2.1", "both") == pytest.approx(boot.detection_positive[i] + boot.detection_negative[i])
    assert boot.mean_ci[0, i] <= result["2.1"] <= boot.mean_ci[1, i]
    text = str(boot)
    assert "2.1" in text and "95% CI" in text and "200 resamples" in text
    with pytest.raises(ComponentError, match="Did you mean"):
        boot.ci("2.11")
    with pytest.raises(SettingsError):
        boot.detection_rate("2.1", "up")


@pytest.mark.parametrize("kwargs", [{"n_resamples": 1}, {"confidence": 1.0}, {"confidence": 0}, {"sd": 0.0}])
def test_bootstrap_rejects_bad_settings(kwargs):
    with pytest.raises(SettingsError):
        stats.bootstrap(random_result(), **kwargs)


# --------------------------------------------------------------------------------------- significance
def test_significance_p_values_match_scipy_per_component():
    result = random_result(n=10)
    sig = stats.significance(result, method="holm")
    x = result.per_prompt.reshape(10, -1)
    for c in range(x.shape[1]):
        t = scipy.stats.ttest_1samp(x[:, c], 0.0)
        w = scipy.stats.wilcoxon(x[:, c])
        assert sig.t_statistic[c] == pytest.approx(t.statistic)
        assert sig.t_pvalue[c] == pytest.approx(t.pvalue)
        assert sig.wilcoxon_statistic[c] == pytest.approx(w.statistic)
        assert sig.wilcoxon_pvalue[c] == pytest.approx(w.pvalue)
    np.testing.assert_allclose(sig.t_adjusted, stats.holm(sig.t_pvalue))
    np.testing.assert_allclose(sig.wilcoxon_adjusted, stats.holm(sig.wilcoxon_pvalue))
    assert sig.significant()[0] == "2.1" and sig.is_significant("2.1")
    assert sig.pvalue("2.1", adjusted=False) == sig.t_pvalue[result.labels.index("2.1")]
    assert "holm" in str(sig) and "2.1" in sig.table()


def test_significance_with_bh_matches_scipy_false_discovery_control():
    sig = stats.significance(random_result(n=10, seed=4), method="fdr_bh", alpha=0.1)
    np.testing.assert_allclose(sig.t_adjusted, scipy.stats.false_discovery_control(sig.t_pvalue, method="bh"))
    np.testing.assert_allclose(sig.wilcoxon_adjusted, scipy.stats.false_discovery_control(sig.wilcoxon_pvalue, method="bh"))
    assert sig.significant("wilcoxon") == [
        sig.labels[i] for i in np.argsort(sig.wilcoxon_adjusted, kind="stable") if sig.wilcoxon_adjusted[i] < 0.1
    ]


def test_significance_gives_all_zero_components_p_one():
    effects = np.random.default_rng(2).normal(size=(6, 3, 4))
    effects[:, 1, 2] = 0.0
    sig = stats.significance(make_result(effects))
    i = sig.labels.index("1.2")
    assert sig.t_pvalue[i] == 1.0 and sig.wilcoxon_pvalue[i] == 1.0 and not sig.is_significant("1.2")
    assert np.isfinite(sig.t_pvalue).all() and np.isfinite(sig.wilcoxon_pvalue).all()


def test_significance_of_logit_difference_tests_per_prompt_normalised_effects_without_degenerate_prompts():
    rng = np.random.default_rng(5)
    effects = rng.normal(size=(7, 3, 4))
    ld_clean = np.array([2.0, 1.5, 3.0, 1.0, 2.5, 0.0, 2.0])
    result = make_result(effects, "logit_diff", ld_clean=ld_clean, ld_corrupted=np.zeros(7))
    sig = stats.significance(result)
    assert sig.dropped_prompts == (5,) and sig.n_prompts == 6
    kept = np.delete(np.arange(7), 5)
    x = effects[kept].reshape(6, -1) / ld_clean[kept, None]
    np.testing.assert_allclose(sig.t_pvalue, scipy.stats.ttest_1samp(x, 0.0, axis=0).pvalue)
    np.testing.assert_allclose(sig.wilcoxon_pvalue, scipy.stats.wilcoxon(x, axis=0).pvalue)
    np.testing.assert_allclose(sig.mean, x.mean(axis=0))
    assert "dropped degenerate prompts [5]" in str(sig)


def test_significance_rejects_bad_settings():
    with pytest.raises(SettingsError, match="fdr_bh"):
        stats.significance(random_result(), method="bonferroni")
    with pytest.raises(SettingsError):
        stats.significance(random_result(), alpha=1.5)
    with pytest.raises(MetricError, match="at least 2"):
        stats.significance(random_result(n=1))
    with pytest.raises(SettingsError, match="wilcoxon"):
        stats.significance(random_result()).significant("z")


def test_holm_matches_a_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.2, 0.9]), [1.0, 0.6, 1.0])
    np.testing.assert_allclose(stats.holm([0.02, 0.02]), [0.04, 0.04])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_holm_is_bounded_monotone_and_at_least_the_raw_p(pvalues):
    p = np.array(pvalues)
    adjusted = stats.holm(p)
    assert np.all(adjusted >= p - 1e-15) and np.all(adjusted <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adjusted[order]) >= 0)


# ------------------------------------------------------------------------------------------ agreement
def kendall_tau_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a by counting concordant pairs (equal to tau-b without ties)."""
    score = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in itertools.combinations(range(len(x)), 2))
    return score / (len(x) * (len(x) - 1) / 2)


def test_agreement_matches_direct_rank_correlations_and_jaccard():
    a, b = random_result(seed=0), random_result(seed=1)
    agree = stats.agreement(a, b, sd=1.5)
    x, y = a.mean.reshape(-1), b.mean.reshape(-1)
    ranks_x, ranks_y = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
    assert agree.spearman == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])
    assert agree.kendall == pytest.approx(kendall_tau_by_pairs(x, y))
    assert agree.spearman_p == pytest.approx(scipy.stats.spearmanr(x, y).pvalue)
    set_a, set_b = set(a.detected(1.5)), set(b.detected(1.5))
    assert agree.jaccard == pytest.approx(len(set_a & set_b) / len(set_a | set_b))
    assert set(agree.both) == set_a & set_b and set(agree.only_a) == set_a - set_b and set(agree.only_b) == set_b - set_a
    assert "Spearman" in str(agree) and "Jaccard" in agree.table()


def test_agreement_of_maps_that_detect_nothing_has_jaccard_one():
    flat = make_result(np.zeros((4, 3, 4)))
    agree = stats.agreement(flat, flat)
    assert agree.jaccard == 1.0 and agree.both == () and np.isnan(agree.spearman)


def test_agreement_needs_the_same_grid():
    other = PatchResult(
        metric="prob", effects={m: np.zeros((2, 3)) for m in ("prob", "logit_diff", "kl")},
        ld_clean=np.ones(2), ld_corrupted=np.zeros(2),
        grid=make_grid("mlp", "all", n_layers=3, n_heads=4, seq_len=5), settings={},
    )
    with pytest.raises(SettingsError, match="same components"):
        stats.agreement(random_result(), other)


def test_detected_in_at_least_counts_detections_over_results():
    results = [random_result(seed=s) for s in range(4)]
    counts = {}
    for r in results:
        for label in r.detected(1.5):
            counts[label] = counts.get(label, 0) + 1
    for m in (1, 2, 4):
        expected = {label for label, count in counts.items() if count >= m}
        got = stats.detected_in_at_least(results, m, sd=1.5)
        assert set(got) == expected and len(got) == len(expected)
        assert [counts[label] for label in got] == sorted((counts[label] for label in got), reverse=True)
    assert "2.1" in stats.detected_in_at_least(results, 4)
    assert "0.3" in stats.detected_in_at_least(results, 4, sd=1.5, sign="negative")
    with pytest.raises(SettingsError, match="1..4"):
        stats.detected_in_at_least(results, 5)
    with pytest.raises(SettingsError):
        stats.detected_in_at_least([], 1)
