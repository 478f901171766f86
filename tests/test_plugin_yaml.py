"""YAML claims collected by pytest: true claims pass, false ones fail with the report, and the mistakes of a claim
are found when pytest collects the file (before any model loads) and reported together as one failed item, each
naming its line and fix, while the rest of the session runs."""

from __future__ import annotations

import pytest
from pytester_support import write_claims


def test_a_true_claim_passes_and_a_false_one_fails_with_the_report(pytester, two_claims):
    top, bottom = two_claims
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*claims.yaml::the top head is detected PASSED*",
            "hypotheses/claims.yaml:9: Claim failed: * is not detected (needs z >= 2.00, sign=positive).",
            f"  {bottom}: effect *, rank 12 of 12",
            "  over 12 components: mean *",
            "rank  component       effect       z",
            "settings: model=*, component=attn_head, *",
            "*= interp claims =*",
            "outcome  sweep*figure*claim",
            f"passed   computed*z({top})=*hypotheses/claims.yaml::the top head is detected",
            f"failed   reused*z({bottom})=*hypotheses/claims.yaml::the weakest head is detected",
            "sweeps: 1 computed, 0 from the cache, 1 reused within the session*",
        ]
    )


def test_the_schema_problems_of_a_claim_are_one_failed_item_each_with_its_line(pytester, tiny_files, tiny_sweep):
    top = tiny_sweep.top(1)[0][0]
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: a valid claim still runs
          expect: {{top_k: {{labels: ["{top}"], k: 1}}}}
        - name: typo
          sweep: {{component: attn_head, metrc: prob}}
          expect: {{detected: ["{top}"]}}
        - name: wrong types
          expect: {{detected: [0.10], sd: two}}
        - name: nothing to check
          sweep: {{window: 0}}
        - name: typo
          expect: {{peak: {{layers: [3, 1]}}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines_random(
        [
            "hypotheses/claims.yaml:7: unknown key `metrc` in `sweep` of claim 'typo'. Did you mean 'metric'? Allowed keys: *",
            'hypotheses/claims.yaml:10: `detected` in `expect` of claim \'wrong types\' lists 0.10 unquoted, which YAML reads '
            'as the number 0.1; component labels are strings. Quote it: "0.10".',
            "hypotheses/claims.yaml:10: `sd` in `expect` of claim 'wrong types' must be a number >= 0 (e.g. sd: 2), not the string 'two'.",
            "hypotheses/claims.yaml:11: claim 'nothing to check' lacks the required key `expect`.",
            "hypotheses/claims.yaml:12: `window` in `sweep` of claim 'nothing to check' must be a positive integer*not the number 0.",
            "hypotheses/claims.yaml:13: two claims are named 'typo' (the first on line 6); names must be unique in a file.",
            "hypotheses/claims.yaml:14: `layers` in `peak` in `expect` of claim 'typo' must be [first, end] with "
            "0 <= first < end, half-open like range ([2, 5] means layers 2, 3 and 4), not the list [3, 1].",
            "FAILED hypotheses/claims.yaml::typo (line 6) - *",
            "FAILED hypotheses/claims.yaml::typo (line 13) - *",
        ]
    )


def test_invalid_yaml_is_one_failed_item_at_the_broken_line(pytester, tiny_files):
    write_claims(pytester, tiny_files, "- name: unclosed\n  expect: {detected: [\"0.1\"]\n")
    pytester.makefile(".py", test_other="def test_other():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["hypotheses/claims.yaml:6: invalid YAML: while parsing a flow mapping *Fix the syntax at this line."])


FILE_PROBLEMS = {
    "empty": ("", "*empty.yaml:1: a claims file is a mapping with model, task and claims, not nothing (null).*"),
    "no_claims": ("model: m\nclaims: []\n", "*no_claims.yaml:2: `claims` must be a non-empty list of claims, not the list [].*"),
    "no_model": (
        "task: {name: ioi, n: 4}\nclaims:\n  - name: a\n    expect: {detected: ['0.1']}\n",
        "*no_model.yaml:1: no `model` for the claims 'a': give `model:` at the top of the file (e.g. model: organism) or in each claim.",
    ),
    "typo": (
        "modle: m\ntask: {name: ioi}\nclaims:\n  - {name: a, expect: {detected: ['0.1']}}\n",
        "*typo.yaml:1: unknown key `modle` in the file. Did you mean 'model'?*\n"
        "*typo.yaml:1: no `model` for the claims 'a'*\n"
        "*typo.yaml:2: `task`: Task 'ioi' needs n, the number of prompt pairs (e.g. n: 64).",
    ),
    "two_sources": (
        "model: m\ntask: {name: ioi, file: x.jsonl}\nclaims:\n  - {name: a, expect: {detected: ['0.1']}}\n",
        "*two_sources.yaml:2: `task` needs exactly one of `name` (a registered task) or `file` (a pairs file).",
    ),
    "missing_file": (
        "model: m\ntask: {file: missing.jsonl}\nclaims:\n  - {name: a, expect: {detected: ['0.1']}}\n",
        "*missing_file.yaml:2: `task`: no pairs file at */hypotheses/missing.jsonl. Paths are relative to this YAML file.",
    ),
}


def test_file_level_problems(pytester):
    (pytester.path / "hypotheses").mkdir()
    for name, (text, _) in FILE_PROBLEMS.items():
        (pytester.path / "hypotheses" / f"{name}.yaml").write_text(text)
    result = pytester.runpytest()
    result.assert_outcomes(failed=len(FILE_PROBLEMS))  # one item per file: the misspelt `modle` also leaves no model
    result.stdout.fnmatch_lines_random([line for _, expected in FILE_PROBLEMS.values() for line in expected.split("\n")])
    result.stdout.fnmatch_lines(["*typo.yaml:1: unknown key `modle`*", "*typo.yaml:1: no `model`*", "*typo.yaml:2: `task`*"])


def test_claims_sharing_a_sweep_reuse_it_and_metrics_come_from_the_same_runs(pytester, tiny_files, tiny_sweep):
    prob = tiny_sweep.with_metric("prob")
    top_prob = prob.top(1)[0][0]
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: logit difference
          expect: {{top_k: {{labels: ["{tiny_sweep.top(1)[0][0]}"], k: 1}}}}
        - name: probability
          sweep: {{metric: prob}}
          expect: {{top_k: {{labels: ["{top_prob}"], k: 1}}}}
        - name: kl, by mlp
          sweep: {{component: mlp, metric: kl}}
          expect: {{peak: {{layers: [0, 3]}}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache, 1 reused within the session*"])


def test_a_claim_on_unavailable_weights_is_skipped_with_the_reason(pytester, tiny_files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    file = write_claims(pytester, tiny_files, "- name: gpt2 has name movers\n  expect: {detected: ['9.9']}\n")
    file.write_text(file.read_text().replace(f"model: {tiny_files / 'model'}", "model: openai-community/gpt2"))
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "skipped  -  *The weights of 'openai-community/gpt2' are*hypotheses/claims.yaml::gpt2 has name movers",
            "SKIPPED [[]1[]] hypotheses/claims.yaml:4: The weights of 'openai-community/gpt2' are not available on this "
            "machine (HF_HUB_OFFLINE is set).",
        ]
    )


def test_every_mistake_of_a_claim_is_reported_together_at_collection_with_its_line(pytester, tiny_files):
    """Unknown keys, wrong types and names that cannot be right (a task, an option, a component kind, a corruption,
    a metric, a direction, a label of another kind, a missing model path) are found when pytest collects the file:
    `--collect-only` lists the broken claim as one item, and running it shows every mistake, each at its line."""
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: many mistakes
          task: {name: ioi, n: 8, corupt: S2}
          model: ./no_such_model
          sweep:
            component: mlps
            corruption: STR
            metric: logit_dif
            direction: denoising
            windw: 3
          robust: {corruptions: [str, gauss], metrics: [prob, kll]}
          expect:
            detected: ["0.1", "mlp.1", "mlp.x"]
            sd: two
            robust: ["mlp.0"]
        - name: a circuit with a misspelt test and node
          circuit: {nodes: ["0.1", "mlp.one"], test: sufficient, ablation: zeros}
          expect: {score: {at_least: 0.5}}
        - name: edges of an unknown method
          edges: {method: eap-ig}
          expect: {in_top: {edges: ["0.1->1.1.x"], k: 3}}
        - name: head labels in a sweep of each position
          sweep: {positions: each}
          expect: {detected: ["0.1", "0.1@3"], top_k: {labels: ["resid.0@3"], k: 2}}
        - name: no such task
          task: {name: ioj, n: 4}
          expect: {detected: ["0.1"]}
        - name: no such head, found at run time
          expect: {detected: ["7.7"]}
        """,
    )
    collected = pytester.runpytest("--collect-only", "-q")
    collected.stdout.fnmatch_lines(
        [
            "hypotheses/claims.yaml::many mistakes (line 4)",
            "hypotheses/claims.yaml::a circuit with a misspelt test and node (line 18)",
            "hypotheses/claims.yaml::edges of an unknown method (line 21)",
            "hypotheses/claims.yaml::head labels in a sweep of each position (line 24)",
            "hypotheses/claims.yaml::no such task (line 27)",
            "hypotheses/claims.yaml::no such head, found at run time",
        ]
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=6)
    where, claim = "hypotheses/claims.yaml", "of claim 'many mistakes'"
    result.stdout.fnmatch_lines(
        [
            "*_ many mistakes (line 4) _*",
            f"{where}:5: `task` {claim}: Task 'ioi' has no option 'corupt'. Did you mean 'corrupt'?*",
            f"{where}:6: `model` in claim 'many mistakes': no model at */hypotheses/no_such_model: the path does not "
            "exist. Paths are relative to this YAML file.",
            f"{where}:8: `component` in `sweep` {claim}: 'mlps' is not a component kind. Did you mean 'mlp'? Choose from "
            "attn_head, attn, mlp, resid.",
            f"{where}:9: `corruption` in `sweep` {claim}: 'STR' is not a corruption. Did you mean 'str'? Choose from str, gn.",
            f"{where}:10: `metric` in `sweep` {claim}: 'logit_dif' is not a metric. Did you mean 'logit_diff'? Choose "
            "from logit_diff, prob, kl, logprob*. A user metric must be registered*",  # and any registered in-process
            f"{where}:11: `direction` in `sweep` {claim}: 'denoising' is not a direction. Did you mean 'denoise'?*",
            f"{where}:12: unknown key `windw` in `sweep` {claim}. Did you mean 'window'?*",
            f"{where}:13: `corruptions` in `robust` {claim}: 'gauss' is not a corruption.*",
            f"{where}:13: `metrics` in `robust` {claim}: 'kll' is not a metric. Did you mean 'kl'?*",
            f"{where}:15: `detected` in `expect` {claim}: 'mlp.x' is not a component label.*",
            f"{where}:16: `sd` in `expect` {claim} must be a number >= 0*",
            "*_ a circuit with a misspelt test and node (line 18) _*",
            f"{where}:19: `test` in `circuit` of claim 'a circuit with a misspelt test and node': 'sufficient' is not a "
            "circuit test. Did you mean 'sufficiency'? Choose from sufficiency, necessity, faithfulness.",
            f"{where}:19: `ablation` in `circuit` *: 'zeros' is not an ablation. Did you mean 'zero'?*",
            f"{where}:19: `nodes` in `circuit` of claim 'a circuit with a misspelt test and node': 'mlp.one' is not a "
            "circuit node.*",
        ]
    )
    result.stdout.fnmatch_lines_random(
        [
            f"{where}:22: `method` in `edges` of claim 'edges of an unknown method': 'eap-ig' is not an "
            "edge-attribution method. Did you mean 'eap_ig'? Choose from eap, eap_ig.",
            f"{where}:23: `edges` in `in_top` in `expect` of claim 'edges of an unknown method': '0.1->1.1.x' is not an "
            "edge.*",
            f"{where}:26: `detected` in `expect` of claim 'head labels in a sweep of each position' lists '0.1' without a "
            "position, but the sweep patches each position (positions: each): append '@P', the token index (e.g. '0.1@3').",
            f"{where}:26: `labels` in `expect` of claim 'head labels in a sweep of each position' lists 'resid.0@3', a "
            "label of resid components, but the claim measures attn_head components: name them as 'L.H@P' such as "
            "'0.1@3', or set the sweep's component.",
            f"{where}:28: `task` of claim 'no such task': Unknown task 'ioj'. Did you mean 'ioi'?*",
            f"{where}:31: '7.7' is not a component of this sweep.*Valid labels are 'L.H' *",
        ]
    )
    assert "lists '0.1@3'" not in result.stdout.str()


def test_a_task_without_n_is_fine_when_the_command_line_gives_it(pytester, tiny_files):
    write_claims(pytester, tiny_files, "- name: ioi\n  task: {name: ioi}\n  expect: {not_detected: ['0.0'], sd: 50}\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["hypotheses/claims.yaml:5: `task` of claim 'ioi': Task 'ioi' needs n, the number of prompt pairs*"])
    pytester.runpytest("--interp-n-prompts=4").assert_outcomes(passed=1)


def test_a_registered_task_with_its_options(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: ioi with a typo in an option
          task: {name: ioi, n: 8, corupt: S2}
          expect: {detected: ["0.1"]}
        - name: ioi runs and its claim is judged
          task: {name: ioi, n: 8, seed: 1, corrupt: S2}
          expect: {not_detected: ["0.0"], sd: 50}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["hypotheses/claims.yaml:5: `task` of claim 'ioi with a typo in an option': Task 'ioi' has no option 'corupt'. "
         "Did you mean 'corrupt'?*"]
    )


def test_collection_patterns(pytester, tiny_files):
    claim = "- name: collected\n  expect: {not_detected: ['0.0'], sd: 50}\n"
    write_claims(pytester, tiny_files, claim, path="hypotheses/deep/er/a.yaml")
    write_claims(pytester, tiny_files, claim, path="tests/test_b.yml")
    write_claims(pytester, tiny_files, claim, path="tests/not_claims.yaml")
    (pytester.path / "hypotheses" / "pairs.yaml").write_text("pairs:\n  - {clean: a, answer: b, wrong: c}\n")
    pytester.runpytest().assert_outcomes(passed=2)
    pytester.makeini("[pytest]\ninterp_yaml_patterns = tests/*claims.yaml\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["tests/not_claims.yaml::collected", "1 test collected*"])


# -- attribution patching --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_estimate(tiny_files):
    """The tiny model's default sweep estimated by attribution patching, and its top 3 re-measured exactly."""
    from interp_tests import PromptPairs, load_model, patch
    from interp_tests.attribution import verify_top

    model, pairs = load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl")
    estimate = patch(model, pairs, method="attribution")
    return estimate, verify_top(model, pairs, estimate, 3)


def test_an_attribution_claim_is_checked_on_its_exactly_remeasured_top_effects(pytester, tiny_files, tiny_estimate):
    estimate, comparison = tiny_estimate
    verified = comparison.verified
    top3 = [label for label, _ in estimate.top(3)]
    assert verified.settings["verified"] == top3
    # The head whose z-score moves most when re-measured: a threshold between its two z-scores passes only on
    # the exact value, so the claim shows which one the check read.
    label = max(top3, key=lambda lab: verified.zscore(lab) - estimate.zscore(lab))
    low, high = estimate.zscore(label), verified.zscore(label)
    assert high - low > 0.2, (low, high)
    tolerance = round(comparison.max_abs_error + 0.05, 2)
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: re-measured exactly, it is detected
          sweep: {{method: attribution, verify_top: 3, verify_tolerance: {tolerance}}}
          expect: {{detected: ["{label}"], sd: {(low + high) / 2:.3f}}}
        - name: estimated, it is not
          sweep: {{method: attribution}}
          expect: {{not_detected: ["{label}"], sd: {(low + high) / 2:.3f}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"passed   computed  z({label})={high:+.2f}  hypotheses/claims.yaml::re-measured exactly, it is detected",
            f"passed   reused    z({label})={low:+.2f}  hypotheses/claims.yaml::estimated, it is not",
            "sweeps: 1 computed, 0 from the cache, 1 reused within the session*",
            (f"note: attribution estimate: its 3 largest effects re-measured exactly (max |error| "
            f"{comparison.max_abs_error:.3g}, tolerance {tolerance:g})"),
        ]
    )


def test_attribution_settings_are_validated_with_their_lines(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: bad attribution settings
          sweep:
            method: attribution
            verify_top: 0
            grad_drop: maybe
            verify_tolerance: -1
          expect: {detected: ["0.1"]}
        - name: verifying an exact sweep
          sweep: {verify_top: 2}
          expect: {detected: ["0.1"]}
        - name: grad_drop of an exact sweep
          sweep: {method: exact, grad_drop: true}
          expect: {detected: ["0.1"]}
        - name: a misspelt method
          sweep: {method: atribution}
          expect: {detected: ["0.1"]}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=4)  # the first claim's three mistakes are one item
    where = "hypotheses/claims.yaml"
    result.stdout.fnmatch_lines_random(
        [
            (f"{where}:7: `verify_top` in `sweep` of claim 'bad attribution settings' must be a positive integer "
            "(e.g. verify_top: 5), or null, not the number 0."),
            (f"{where}:8: `grad_drop` in `sweep` of claim 'bad attribution settings' must be true or false, "
            "not the string 'maybe'."),
            (f"{where}:9: `verify_tolerance` in `sweep` of claim 'bad attribution settings' must be a number >= 0 "
            "(e.g. verify_tolerance: 0.1), not the number -1."),
            (f"{where}:12: verify_top=2 re-measures an attribution estimate's top components, but this sweep is "
            "method='exact', whose effects are all exact: drop verify_top, or use method='attribution'."),
            f"{where}:15: grad_drop=True is part of attribution patching: use it with method='attribution'.",
            f"{where}:18: `method` in `sweep` of claim 'a misspelt method': 'atribution' is not a patching method. "
            "Did you mean 'attribution'? Choose from exact, attribution.",
        ]
    )


def test_an_attribution_estimate_that_misses_its_exact_effect_fails_the_claim_with_a_report(pytester, tiny_files, tiny_estimate):
    _, comparison = tiny_estimate
    tolerance = 0.05
    missed = [label for label, estimate, exact in comparison.worst if abs(estimate - exact) > tolerance]
    assert 0 < len(missed) < 3, comparison  # the tolerance separates the heads that miss from one that does not
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: a tolerance the estimate misses
          sweep:
            method: attribution
            verify_top: 3
            verify_tolerance: {tolerance}
          expect: {{top_k: {{labels: ["{comparison.labels[0]}"], k: 1}}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ claim: a tolerance the estimate misses _*",
            (f"hypotheses/claims.yaml:5: Attribution estimates miss exact patching by up to {comparison.max_abs_error:.4g} "
             f"(> tolerance {tolerance:g}) for {', '.join(missed)}:"),
            str(comparison).splitlines()[0],
            ("The first-order estimate is unreliable for these components: use method='exact' for this claim, or allow "
             "a larger tolerance."),
            "*= interp claims =*",
            "failed   computed  *hypotheses/claims.yaml::a tolerance the estimate misses",
        ]
    )
    result.stdout.no_fnmatch_line("E   *")  # a report, not a traceback
    result.stdout.no_fnmatch_line("*_pytest/runner.py*")


# -- marks ---------------------------------------------------------------------------------------

HOLDS, FAILS = "expect: {not_detected: ['0.0'], sd: 50}", "expect: {detected: ['0.0'], sd: 50}"


def test_marks_select_skip_and_xfail_claims_as_they_do_python_tests(pytester, tiny_files):
    pytester.makeini("[pytest]\nmarkers =\n    slow: a long claim\n")
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: a slow claim
          marks: [slow]
          {HOLDS}
        - name: a fast claim
          {HOLDS}
        - name: a known failure
          marks: [slow, {{xfail: {{reason: "measured 0.45", strict: true}}}}]
          {FAILS}
        - name: an unexpected pass
          marks: [{{xfail: {{reason: "thought to fail", strict: true}}}}]
          {HOLDS}
        - name: skipped
          marks: [{{skip: {{reason: "not on this model"}}}}]
          {FAILS}
        - name: skipped by a condition
          marks: [{{skipif: {{condition: "sys.platform != 'no such platform'", reason: "every platform"}}}}]
          {FAILS}
        """,
    )
    result = pytester.runpytest("-rfsx")
    result.assert_outcomes(passed=2, failed=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines_random(
        [
            "XFAIL hypotheses/claims.yaml::a known failure - measured 0.45",
            "FAILED hypotheses/claims.yaml::an unexpected pass - [[]XPASS(strict)[]] thought*",
            "SKIPPED [[]1[]] hypotheses/claims.yaml: not on this model",  # pytest gives no line for a skip mark
            "SKIPPED [[]1[]] hypotheses/claims.yaml:18: every platform",
            "xfailed  *hypotheses/claims.yaml::a known failure",
        ]
    )
    slow = pytester.runpytest("-m", "slow", "--collect-only", "-q")
    slow.stdout.fnmatch_lines(["hypotheses/claims.yaml::a slow claim", "hypotheses/claims.yaml::a known failure", "2/6 tests collected*"])
    pytester.runpytest("-m", "not slow").assert_outcomes(passed=1, failed=1, skipped=2)


def test_an_unregistered_mark_warns_at_its_line_and_is_a_mistake_under_strict_markers(pytester, tiny_files):
    pytester.makeini("[pytest]\nmarkers =\n    slow: a long claim\n")
    write_claims(pytester, tiny_files, f"- name: a typo in a mark\n  marks: [slwo]\n  {HOLDS}\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["hypotheses/claims.yaml:5", "*/hypotheses/claims.yaml:5: PytestUnknownMarkWarning: Unknown pytest.mark.slwo - is "
         "this a typo?*Did you mean 'slow'?"]
    )
    strict = pytester.runpytest("--strict-markers")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(
        ["hypotheses/claims.yaml:5: `marks` of claim 'a typo in a mark': 'slwo' not found in `markers` configuration "
         "option. Did you mean 'slow'? Register the mark*"]
    )


def test_marks_that_cannot_apply_to_a_claim_are_mistakes_with_their_lines(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: bad marks
          marks: [{{}}, parametrize, "not a name", {{xfail: {{raises: ValueError}}}}]
          {HOLDS}
        - name: not a list
          marks: slow
          {HOLDS}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    where = "hypotheses/claims.yaml"
    result.stdout.fnmatch_lines(
        [
            f"{where}:5: `marks` of claim 'bad marks' lists a mapping: a mark is a name (slow) or a mapping of one name "
            "to its arguments ({xfail: {reason: ..., strict: true}}).",
            f"{where}:5: `marks` of claim 'bad marks': `parametrize` configures a Python test function; a claim has no "
            "parameters: write one claim per setting.",
            f"{where}:5: `marks` of claim 'bad marks' lists the mark name 'not a name': a mark's name is a Python identifier*",
            f"{where}:5: `marks` of claim 'bad marks': `raises` of `xfail` takes exception classes, which a YAML file "
            "cannot name; give a `reason` instead.",
            f"{where}:8: `marks` of claim 'not a list' must be a list of pytest marks (e.g. [[]slow[]] or *), not the "
            "string 'slow'.",
        ]
    )
