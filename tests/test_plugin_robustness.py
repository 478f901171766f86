"""Robustness as claims: a component detected across a grid of settings, a detection that survives
resampling the prompts, two sweeps that agree, and the paper's cautions as pytest warnings; in Python and
in YAML, with every sweep served from the cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pytester_support import interp_warnings
from test_plugin_yaml import write_claims

from interp_tests import PromptPairs, load_model, patch, robustness, stats
from interp_tests.claims import ClaimError, recording_claims
from interp_tests.components import make_grid
from interp_tests.errors import InterpWarning, SettingsError
from interp_tests.results import PatchResult


@pytest.fixture(scope="module")
def tiny_grid(tiny_files: Path) -> robustness.Grid:
    """The default grid (STR and GN, three metrics) of the tiny model's attention heads, without the plugin."""
    return robustness.grid(load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl"))


def most_robust(grid: robustness.Grid) -> tuple[str, int]:
    """The component detected in the most settings, and in how many."""
    counts = {label: len(grid.detected_in(label)) for label in grid.results[grid.settings[0]].labels}
    label = max(counts, key=counts.__getitem__)
    return label, counts[label]


def one_dominant_component(n_prompts: int = 16) -> PatchResult:
    """Head 2.1 restores ~3 units in every prompt; the other heads are noise around 0."""
    effects = np.random.default_rng(0).normal(size=(n_prompts, 3, 4))
    effects[:, 2, 1] += 3.0
    return PatchResult(
        metric="prob", effects={m: effects for m in ("prob", "logit_diff", "kl")}, ld_clean=np.full(n_prompts, 2.0),
        ld_corrupted=np.zeros(n_prompts), grid=make_grid("attn_head", "all", n_layers=3, n_heads=4, seq_len=5),
        settings={},
    )


# -- Python claims -------------------------------------------------------------------------------


def test_assert_robust_counts_settings_and_fails_with_the_per_setting_table(tiny_grid):
    label, n = most_robust(tiny_grid)
    assert 0 < n < 6
    with recording_claims() as outcomes:
        tiny_grid.assert_robust(label, at_least=n)
    assert [(o.claim, o.figure, o.passed) for o in outcomes] == [(f"robust {label}", f"{label} in {n}/6 settings", True)]
    with pytest.raises(ClaimError) as caught:
        tiny_grid.assert_robust([label], at_least=n + 1)
    error, message = caught.value, str(caught.value)
    assert (error.claim, error.labels, error.threshold, error.sign) == ("robust", [label], n + 1, "positive")
    assert error.details == {"detected_in": {label: [str(s) for s in tiny_grid.detected_in(label)]}, "n_settings": 6}
    assert message.startswith(
        f"Claim failed: {label} is not detected (z >= 2.00, sign=positive) in at least {n + 1} of the 6 settings.\n"
        f"  {label}: detected in {n} of 6\n"
    )
    assert tiny_grid.component_table(label) in message
    with pytest.raises(ClaimError, match="in all 6 settings"):
        tiny_grid.assert_robust(label)
    with pytest.raises(SettingsError, match="1..6"):
        tiny_grid.assert_robust(label, at_least=7)


def test_assert_stable_holds_for_a_dominant_component_and_not_for_noise():
    result = one_dominant_component()
    result.assert_stable("2.1")
    boot = stats.bootstrap(result)
    with pytest.raises(ClaimError) as caught:
        result.assert_stable("2.1", "0.0", min_detection_rate=0.5)
    error, message = caught.value, str(caught.value)
    assert (error.claim, error.labels, error.threshold) == ("stable", ["0.0"], 0.5)
    assert error.details["detection_rate"] == {"2.1": 1.0, "0.0": boot.detection_rate("0.0")}
    low, high = boot.ci("0.0")
    z_low, z_high = boot.z_interval("0.0")
    assert (
        "Claim failed: 0.0 is detected (z >= 2.00, sign=positive) in fewer than 50% of bootstrap resamples of the "
        f"16 prompts.\n  0.0: detected in {boot.detection_rate('0.0'):.1%} of resamples; effect {result['0.0']:.4g} "
        f"(95% CI [{low:.4g}, {high:.4g}]), z {result.zscore('0.0'):+.2f} (95% CI [{z_low:+.2f}, {z_high:+.2f}])"
    ) in message
    assert str(boot) in message
    with pytest.raises(SettingsError, match="min_detection_rate=90 must be a share in 0..1"):
        result.assert_stable("2.1", min_detection_rate=90)


def test_assert_agree_compares_rankings_and_detected_sets(tiny_sweep):
    tiny_sweep.assert_agree(tiny_sweep, min_spearman=1, min_kendall=1, min_jaccard=1)
    kl = tiny_sweep.with_metric("kl")
    found = stats.agreement(tiny_sweep, kl)
    assert found.spearman < 0.9
    with recording_claims() as outcomes:
        tiny_sweep.assert_agree(kl, min_jaccard=found.jaccard)
    assert outcomes[0].claim == "agrees with metric=kl" and outcomes[0].figure == f"jaccard {found.jaccard:.2f}"
    minimum = round(found.spearman + 0.1, 2)
    with pytest.raises(ClaimError) as caught:
        tiny_sweep.assert_agree(kl, min_spearman=minimum, min_jaccard=found.jaccard)
    error, message = caught.value, str(caught.value)
    assert error.claim == "agree" and error.details["spearman"] == found.spearman
    assert error.details["minimums"] == {"spearman": minimum, "jaccard": found.jaccard}
    assert f"Claim failed: the two sweeps agree less than claimed: Spearman rho {found.spearman:.3f} < {minimum:g}." in message
    for which, result in (("a (this sweep): ", tiny_sweep), ("b (the other):  ", kl)):
        assert f"  {which}{result.describe_settings()}\n     detected at sd=2, sign=positive: " in message
        assert f"positive: {', '.join(result.detected()) or 'none'}" in message
    assert found.table() in message
    with pytest.raises(SettingsError, match="checks nothing"):
        tiny_sweep.assert_agree(kl)
    with pytest.raises(SettingsError, match="min_jaccard=-0.5 must be a number in 0..1"):
        tiny_sweep.assert_agree(kl, min_jaccard=-0.5)


def test_absence_under_probability_warns_about_the_blind_spot(tiny_sweep):
    prob = tiny_sweep.with_metric("prob")
    label = prob.labels[0]
    with pytest.warns(InterpWarning, match=rf"not detected {label}: .* is not involved using metric='prob'"):
        prob.assert_not_detected(label, sd=50)
    with pytest.warns(InterpWarning, match="is not negative"):
        prob.assert_not_detected(label, sd=50, sign="negative")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny_sweep.assert_not_detected(label, sd=50)  # logit difference sees both sides


# -- through pytest ------------------------------------------------------------------------------

GRID_TEST = """
import pytest

pytestmark = [pytest.mark.interp_model("model"), pytest.mark.interp_task(file="pairs.jsonl")]


def test_grid(interp_grid):
    grid = interp_grid(metrics=("logit_diff", "kl"))
    assert [str(s) for s in grid.detected_in({label!r})] == {expected!r}
    grid.assert_robust({label!r}, at_least={n})


def test_absence_by_probability(interp_sweep):
    interp_sweep(metric="prob").assert_not_detected("0.0", sd=50)
"""


def test_a_grid_rerun_comes_from_the_cache_with_its_report_and_warnings(pytester, tiny_files, tiny_grid, monkeypatch):
    (pytester.path / "model").symlink_to(tiny_files / "model")
    (pytester.path / "pairs.jsonl").symlink_to(tiny_files / "pairs.jsonl")
    label, _ = most_robust(tiny_grid)
    expected = [str(s) for s in tiny_grid.detected_in(label) if s.metric != "prob"]
    pytester.makepyfile(test_grid=GRID_TEST.format(label=label, expected=expected, n=len(expected)))
    warned = [
        "*test_grid.py::test_absence_by_probability",
        "*InterpWarning: not detected 0.0: This claim says a component is not involved using metric='prob'*",
    ]
    first = pytester.runpytest("--interp-report-dir", "reports")
    first.assert_outcomes(passed=2)
    assert len(interp_warnings(first)) == 1
    first.stdout.fnmatch_lines(["*= warnings summary =*", *warned, "sweeps: 2 computed, 0 from the cache, 1 reused*"])
    report = pytester.path / "reports" / "test_grid.test_grid.grid"
    assert sorted(p.name for p in report.iterdir()) == ["grid.csv", "grid.json", "grid.png"]
    assert [s["metric"] for s in json.loads((report / "grid.json").read_text())["settings"]] == ["logit_diff", "kl"] * 2

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("a cached grid ran the model")

    monkeypatch.setattr("interp_tests.engine.run", no_forward_pass)
    second = pytester.runpytest()
    second.assert_outcomes(passed=2)
    assert len(interp_warnings(second)) == 1
    second.stdout.fnmatch_lines([*warned, "passed   cached *test_grid.py::test_grid", "sweeps: 0 computed, 2 from the cache*"])


def test_yaml_robust_claims(pytester, tiny_files, tiny_grid):
    label, n = most_robust(tiny_grid)
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: robust in enough settings
          robust: {{corruptions: [str, gn], metrics: [logit_diff, prob, kl]}}
          expect: {{robust: ["{label}"], at_least: {n}, sd: 2, sign: positive}}
        - name: robust everywhere
          expect: {{robust: ["{label}"]}}
        - name: robust across corrupted tokens
          task: {{name: ioi, n: 8}}
          robust: {{corruptions: [str], metrics: [prob, kl], corrupt_tokens: [S2, ABC]}}
          expect: {{robust: ["0.0"], sd: 50}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            f"hypotheses/claims.yaml:8: Claim failed: {label} is not detected (z >= 2.00, sign=positive) in all 6 settings.",
            f"  {label}: detected in {n} of 6",
            f"{label}: effect, z-score and detection at 2 SD per setting",
            "  STR / logit_diff  effect *",
            "  GN / kl           effect *",
            "components detected in all 6 settings: none",
            "hypotheses/claims.yaml:12: Claim failed: 0.0 is not detected (z >= 50.00, sign=positive) in all 4 settings.",
            "  STR / S2 / prob   effect *",
            "  STR / ABC / kl    effect *",
            f"passed   computed*{label} in {n}/6 settings*robust in enough settings",
            # the grids' sweeps only: a claim that checks robust alone runs no sweep of its own
            "sweeps: 4 computed, 0 from the cache, 2 reused within the session*",
        ]
    )


def test_yaml_stable_and_agreement_claims(pytester, tiny_files, tiny_sweep):
    top, bottom = tiny_sweep.top(1)[0][0], tiny_sweep.top(1, sign="negative")[0][0]
    rate = stats.bootstrap(tiny_sweep, sd=1).detection_rate(top)
    found = stats.agreement(tiny_sweep, tiny_sweep.with_metric("kl"))
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: stable top head
          expect: {{stable: ["{top}"], sd: 1, min_detection_rate: {rate - 0.01:.3f}}}
        - name: stable weakest head
          expect: {{stable: ["{bottom}"]}}
        - name: kl detects the same heads
          expect: {{agree_with: {{metric: kl}}, min_jaccard: {found.jaccard}}}
        - name: kl ranks heads alike
          expect: {{agree_with: {{metric: kl}}, min_spearman: {found.spearman + 0.1:.2f}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            f"hypotheses/claims.yaml:7: Claim failed: {bottom} is detected (z >= 2.00, sign=positive) in fewer than "
            "90% of bootstrap resamples of the 16 prompts.",
            f"  {bottom}: detected in 0.0% of resamples; effect *, z * (95% CI [[]*[]])",
            "hypotheses/claims.yaml:11: Claim failed: the two sweeps agree less than claimed: Spearman rho "
            f"{found.spearman:.3f} < {found.spearman + 0.1:.2f}.",
            f"passed   *detection rate({top})={rate:.0%}*stable top head",
            "sweeps: 1 computed, 0 from the cache, 5 reused within the session*",
        ]
    )


def test_yaml_gaussian_noise_warns_when_off_distribution(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: huge noise
          sweep: {corruption: gn, noise_scale: 30}
          expect: {not_detected: ["0.0"], sd: 50}
        - name: faint noise
          sweep: {corruption: gn, noise_scale: 0.1}
          expect: {not_detected: ["0.0"], sd: 50}
        """,
    )
    # Layer 0 is the noised embedding itself (shown, never flagged); the layers it feeds are flagged.
    # A re-run from the cache warns again: the check is cached with the sweep.
    for run in ("computed", "cached"):
        result = pytester.runpytest()
        result.assert_outcomes(passed=2)
        assert len(interp_warnings(result)) == 1
        result.stdout.fnmatch_lines(
            [
                "*= warnings summary =*",
                "hypotheses/claims.yaml::huge noise",
                "*InterpWarning: Gaussian noise (noise_scale=30) puts the model off distribution at layers [[]1, 2[]]: *",
                "  layer  clean norm  clean SD  corrupted   ratio       z",
                "      0 * (the corrupted input)",
                "      1 * off",
                f"passed   {run} *huge noise",
            ]
        )
        result.stdout.no_fnmatch_line("*noise_scale=0.1*")


def test_yaml_sliding_window_reports_the_summed_single_layer_effects(pytester, tiny_files):
    model, pairs = load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl")
    comparison = robustness.window_comparison(patch(model, pairs, "mlp"), patch(model, pairs, "mlp", window=2))
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: window passes
          sweep: {component: mlp, window: 2}
          expect: {not_detected: ["mlp.0"], sd: 50}
        - name: window fails
          sweep: {component: mlp, window: 2}
          expect: {detected: ["mlp.0"], sd: 50}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    ratio = f"window peak ratio {comparison.peak_ratio:.2f}"
    result.stdout.fnmatch_lines(
        [
            "hypotheses/claims.yaml:9: Claim failed: mlp.0 is not detected *",
            "hypotheses/claims.yaml:8: window 2 restores adjacent layers together, which can amplify weak single-layer "
            "effects; the single-layer effects summed over the same windows for comparison:",
            f"Window 2, metric=logit_diff: *, ratio {comparison.peak_ratio:.2f}",
            comparison.table().splitlines()[0],
            f"passed   computed*z(mlp.0)=*; {ratio}*window passes",
            f"failed   reused*z(mlp.0)=*; {ratio}*window fails",
            "sweeps: 2 computed, 0 from the cache, 2 reused within the session*",
        ]
    )


def test_yaml_schema_errors_for_the_new_keys_name_their_lines(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: grid typos
          robust: {corruptions: gn, metric: [prob]}
          expect: {robust: ["0.1"], at_least: 0}
        - name: grid without a check
          robust: {}
          expect: {detected: ["0.1"], at_least: 2}
        - name: stability
          expect: {stable: [0.10], min_detection_rate: 1.5}
        - name: agreement
          expect:
            agree_with: {metrc: prob}
            min_spearman: 2
        - name: agreement without a minimum
          expect: {agree_with: {metric: kl}, robsut: ["0.1"]}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=5)  # one item per claim, listing its mistakes
    where = "hypotheses/claims.yaml"
    result.stdout.fnmatch_lines_random(
        [
            f"{where}:5: `corruptions` in `robust` of claim 'grid typos' must be a non-empty list of corruption names "
            "(e.g. [[]str, gn[]]), not the string 'gn'.",
            f"{where}:5: unknown key `metric` in `robust` of claim 'grid typos'. Did you mean 'metrics'? Allowed keys: "
            "corruptions, metrics, corrupt_tokens.",
            f"{where}:6: `at_least` in `expect` of claim 'grid typos' must be a positive integer: in how many of the "
            "grid's settings (e.g. at_least: 4), not the number 0.",
            f"{where}:8: `robust` of claim 'grid without a check' sets up a robustness grid, but `expect` has no "
            '`robust:` check of it. Add one (e.g. robust: [[]"9.9"[]], at_least: 4) or remove this key.',
            f"{where}:9: `at_least` in `expect` of claim 'grid without a check' applies to robust, and there is none; "
            "add `robust:`, or remove `at_least`.",
            f"{where}:11: `stable` in `expect` of claim 'stability' lists 0.10 unquoted, which YAML reads as the number "
            '0.1; component labels are strings. Quote it: "0.10".',
            f"{where}:11: `min_detection_rate` in `expect` of claim 'stability' must be a share in 0..1 "
            "(e.g. min_detection_rate: 0.9), not the number 1.5.",
            f"{where}:14: unknown key `metrc` in `agree_with` in `expect` of claim 'agreement'. Did you mean 'metric'?*",
            f"{where}:15: `min_spearman` in `expect` of claim 'agreement' must be a number in -1..1 "
            "(e.g. min_spearman: 0.5), not the number 2.",
            f"{where}:17: `agree_with` in `expect` of claim 'agreement without a minimum' needs a minimum to check: "
            "give min_spearman, min_kendall, min_jaccard (e.g. min_spearman: 0.5).",
            f"{where}:17: unknown key `robsut` in `expect` of claim 'agreement without a minimum'. Did you mean "
            "'robust'?*",
        ]
    )


def test_yaml_attribution_claims_agree_with_the_exact_sweep(pytester, tiny_files, tiny_sweep):
    from interp_tests.attribution import verify_top

    model, pairs = load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl")
    estimate = patch(model, pairs, method="attribution")
    verified = verify_top(model, pairs, estimate, 3).verified
    magnitudes = patch(model, pairs, method="attribution", grad_drop=True)
    found, dropped = stats.agreement(verified, tiny_sweep), stats.agreement(magnitudes, tiny_sweep)
    assert found.spearman < 0.95 and dropped.spearman < 0.95  # below 1: the estimates are not compared with themselves
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: verified AtP ranks heads like exact patching
          sweep: {{method: attribution, verify_top: 3, verify_tolerance: 0.5}}
          expect: {{agree_with: {{method: exact}}, min_spearman: {found.spearman - 0.01:.3f}, min_jaccard: 1.0}}
        - name: GradDrop ranks heads exactly like exact patching
          sweep: {{method: attribution, grad_drop: true}}
          expect: {{agree_with: {{method: exact}}, min_spearman: 0.95}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            ("hypotheses/claims.yaml:9: Claim failed: the two sweeps agree less than claimed: Spearman rho "
            f"{dropped.spearman:.3f} < 0.95."),
            "  a (this sweep): model=*, method=attribution, grad_drop=True",
            "  b (the other):  model=*, seed=0",  # the exact sweep: no method=attribution
            f"Spearman rho   {dropped.spearman:.3f} *",
            "*= interp claims =*",
            f"passed   computed         spearman {found.spearman:.2f}, jaccard 1.00  *::verified AtP ranks heads like exact patching",
            f"failed   computed+reused  spearman {dropped.spearman:.2f}  *::GradDrop ranks heads exactly like exact patching",
            # the estimate, the exact sweep (once, reused by the second claim) and the GradDrop estimate
            "sweeps: 3 computed, 0 from the cache, 1 reused within the session*",
        ]
    )
