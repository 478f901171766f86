"""Circuit and path-patching claims through pytest: YAML `circuit:` and `path:` blocks, the interp_circuit and
interp_path fixtures, cached and baselined like sweeps, with reports on failure and schema errors by line."""

from __future__ import annotations

import json

import pytest
from pytester_support import write_claims

import interp_tests as it


@pytest.fixture(scope="module")
def tiny_circuit(tiny_files):
    """The truth the claims below are judged by: a two-head circuit's sufficiency on the tiny model."""
    model, pairs = it.load_model(tiny_files / "model"), it.PromptPairs.load(tiny_files / "pairs.jsonl")
    return it.circuit_patch(model, pairs, ["0.1", "1.2"], test="sufficiency"), it.path_patch(model, pairs, ["logits"])


def test_yaml_circuit_claims_pass_fail_with_reports_and_come_from_the_cache(pytester, tiny_files, tiny_circuit, monkeypatch):
    circuit, path = tiny_circuit
    top = path.top(1)[0][0]
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: the circuit restores its share
          circuit: {{nodes: ["0.1", "1.2"], test: sufficiency}}
          expect: {{score: {{at_least: {circuit.score - 0.01:.4f}}}}}
        - name: the circuit restores everything
          circuit: {{nodes: ["0.1", "1.2"]}}
          expect: {{score: {{at_least: {circuit.score + 0.5:.4f}}}}}
        - name: the top head reaches the logits
          path: {{receivers: [logits]}}
          expect: {{top_k: {{labels: ["{top}"], k: 1}}}}
        """,
    )
    first = pytester.runpytest("-v")
    first.assert_outcomes(passed=2, failed=1)
    first.stdout.fnmatch_lines(
        [
            "*claims.yaml::the circuit restores its share PASSED*",
            f"hypotheses/claims.yaml:9: The sufficiency score of circuit {{0.1, 1.2}} is {circuit.score:.3f}, not >= *",
            "sufficiency of circuit {0.1, 1.2} (2 nodes): score * [[]*[]] (95% bootstrap over 16 prompts)",
            "  per node, score lost when it alone is left out: *",
            "settings: test=sufficiency, ablation=resample, metric=logit_diff, corruption=str, *",
            "*= interp claims =*",
            f"passed   computed  score={circuit.score:.3f}*the circuit restores its share",
            f"failed   reused    score={circuit.score:.3f}*the circuit restores everything",
            f"passed   computed  rank({top})=1*the top head reaches the logits",
        ]
    )

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("a cached claim ran the model")

    monkeypatch.setattr("interp_tests.engine.run", no_forward_pass)
    second = pytester.runpytest("-v")
    second.assert_outcomes(passed=2, failed=1)
    second.stdout.fnmatch_lines(["passed   cached*the circuit restores its share", "passed   cached*the top head*"])


def test_yaml_completeness_minimality_and_baseline(pytester, tiny_files):
    file = write_claims(
        pytester,
        tiny_files,
        """\
        - name: searched
          circuit: {nodes: ["0.1", "1.2", "2.0"], test: faithfulness, groups: {late: ["1.2", "2.0"]}}
          expect:
            complete: {max_incompleteness: 100, samples: 2, greedy_steps: 1}
            minimal: {min_effect: 0, samples: 1}
            baseline: {name: circuit, atol: 0.001}
        """,
    )
    pytester.runpytest("--interp-update-baselines").assert_outcomes(passed=1)
    baseline = file.parent / "__baselines__" / "claims" / "circuit.json"
    stored = json.loads(baseline.read_text())
    assert set(stored["effects"]) == {"score", "contribution 0.1", "contribution 1.2", "contribution 2.0"}
    assert stored["settings"]["test"] == "faithfulness"
    pytester.runpytest().assert_outcomes(passed=1)
    stored["effects"]["score"] += 0.5
    baseline.write_text(json.dumps(stored))
    moved = pytester.runpytest()
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(["*Effects moved from the baseline *circuit.json: 1 of 4 components*", "  score *"])


def test_yaml_circuit_schema_errors_name_the_line_and_the_fix(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: typo
          circuit: {nodes: [0.1], tset: necessity}
          expect: {score: {at_leat: 1}, detected: ["0.1"]}
        - name: two measures
          sweep: {}
          path: {receivers: []}
          expect: {score: {at_least: 1}, robust: ["0.1"]}
        - name: nothing checked
          circuit: {nodes: ["0.1"]}
          expect: {score: {}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=3)  # one item per claim, listing each of its mistakes
    result.stdout.fnmatch_lines_random(
        [
            "hypotheses/claims.yaml:5: unknown key `tset` in `circuit` of claim 'typo'. Did you mean 'test'? *",
            'hypotheses/claims.yaml:5: `nodes` in `circuit` of claim \'typo\' lists 0.1 unquoted, *Quote it: "0.1".',
            "hypotheses/claims.yaml:6: unknown key `detected` in `expect` of claim 'typo'. Allowed keys: score, complete, minimal, baseline.",
            "hypotheses/claims.yaml:6: unknown key `at_leat` in `score` in `expect` of claim 'typo'. Did you mean 'at_least'? *",
            "hypotheses/claims.yaml:9: claim 'two measures' gives both `sweep` and `path`: a claim measures one thing. *",
            "hypotheses/claims.yaml:9: `receivers` in `path` of claim 'two measures' is empty: *",
            "hypotheses/claims.yaml:10: `score` in `expect` of claim 'two measures' checks a circuit: give the claim a `circuit:` block*",
            "hypotheses/claims.yaml:10: `robust` in `expect` of claim 'two measures' needs a robustness grid or a second sweep*",
            "hypotheses/claims.yaml:13: `score` in `expect` of claim 'nothing checked' needs at_least and/or at_most *",
        ]
    )


def test_a_bad_circuit_node_is_reported_at_the_circuit_line(pytester, tiny_files):
    write_claims(
        pytester,
        tiny_files,
        """\
        - name: no such head
          circuit: {nodes: ["0.9"]}
          expect: {score: {at_least: 0.5}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["hypotheses/claims.yaml:5: Circuit node '0.9' is not in this model (3 layers x 4 heads: *. Did you mean '0.3'?"])


def test_circuit_and_path_fixtures_are_cached(pytester, tiny_files, tiny_circuit):
    circuit, _ = tiny_circuit
    (pytester.path / "model").symlink_to(tiny_files / "model")
    (pytester.path / "pairs.jsonl").symlink_to(tiny_files / "pairs.jsonl")
    pytester.makepyfile(
        test_fixtures=f"""
        import pytest

        pytestmark = [pytest.mark.interp_model("model"), pytest.mark.interp_task(file="pairs.jsonl")]

        def test_circuit(interp_circuit, request):
            result = interp_circuit(["0.1", "1.2"])
            assert result.score == pytest.approx({circuit.score!r}, abs=1e-9)
            result.assert_matches_baseline(request, atol=1e-6)
            interp_circuit.minimality(["0.1", "1.2"], samples=1).assert_minimal(min_effect=0)

        def test_path(interp_path):
            interp_path(["logits"]).assert_top_k(interp_path(["logits"]).top(1)[0][0], k=1)
        """
    )
    pytester.runpytest("--interp-update-baselines").assert_outcomes(passed=2)
    again = pytester.runpytest()
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["sweeps: 0 computed, 3 from the cache, 1 reused within the session*"])


def test_yaml_edge_claims_check_ranks_containment_and_the_curve(pytester, tiny_files):
    model, pairs = it.load_model(tiny_files / "model"), it.PromptPairs.load(tiny_files / "pairs.jsonl")
    scores = it.edge_attribution(model, pairs, "eap_ig", steps=3)
    curve = it.faithfulness_curve(model, pairs, scores)
    first, second, low = scores.top(1)[0], scores.top(2)[1], scores.top(40)[-1]
    write_claims(
        pytester,
        tiny_files,
        f"""\
        - name: the top edges hold
          edges: {{method: eap_ig, steps: 3}}
          expect:
            in_top: {{edges: ["{first}", "{second}"], k: 2}}
            contains: {{edges: ["{first}"], top: 1}}
            faithful: {{at_fraction: 0.5, at_least: {curve.at(0.5) - 0.01:.4f}}}
            cmd: {{at_most: {curve.cmd + 0.01:.4f}}}
        - name: a low edge is not on top
          edges: {{method: eap_ig, steps: 3}}
          expect:
            in_top: {{edges: ["{low}"], k: 3}}
        - name: a typo
          edges: {{method: eap_ig, stepz: 3}}
          expect: {{cmd: {{}}}}
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2)  # the typo claim's two mistakes are one item
    result.stdout.fnmatch_lines_random(
        [
            f"hypotheses/claims.yaml:14: {low} (rank 40, score *) not in the top 3 edges by abs eap_ig score.",
            "hypotheses/claims.yaml:16: unknown key `stepz` in `edges` of claim 'a typo'. Did you mean 'steps'? *",
            "hypotheses/claims.yaml:17: `cmd` in `expect` of claim 'a typo' lacks the required key `at_most`.",
        ]
    )
