"""Regression baselines: created on request, compared within a tolerance, and drift reported by component."""

from __future__ import annotations

import json

import pytest

from interp_tests.claims import ClaimError, check_baseline, snapshot


def test_a_baseline_is_reviewable_json_with_one_effect_per_line(tmp_path, tiny_sweep):
    path = tmp_path / "heads.json"
    assert check_baseline(tiny_sweep, path, update=True) == "written"
    assert check_baseline(tiny_sweep, path, update=True) == "unchanged"
    text = path.read_text()
    stored = json.loads(text)
    assert list(stored["effects"]) == tiny_sweep.labels
    assert stored["settings"]["model_fingerprint"] == tiny_sweep.settings["model_fingerprint"]
    label = tiny_sweep.labels[0]
    assert f'    "{label}": {round(tiny_sweep[label], 6)},\n' in text
    assert check_baseline(tiny_sweep, path) == "matched"
    tiny_sweep.assert_matches_baseline(path)


def test_drift_beyond_tolerance_lists_the_components_that_moved_largest_first(tmp_path, tiny_sweep):
    path = tmp_path / "heads.json"
    stored = snapshot(tiny_sweep)
    first, second, third = tiny_sweep.labels[:3]
    stored["effects"][first] += 0.02
    stored["effects"][second] -= 0.5
    stored["effects"][third] += 0.005
    stored["settings"]["model_fingerprint"] = "older"
    path.write_text(json.dumps(stored))
    with pytest.raises(ClaimError) as caught:
        check_baseline(tiny_sweep, path, atol=0.01)
    message = str(caught.value)
    assert caught.value.labels == [second, first]
    assert f"Effects moved from the baseline {path}: 2 of {len(tiny_sweep.labels)} components by more than atol=0.01" in message
    assert message.index(f"  {second} ") < message.index(f"  {first} ")
    assert "+0.500000" in message and "-0.020000" in message
    assert f"  model_fingerprint: 'older' -> '{tiny_sweep.settings['model_fingerprint']}'" in message
    assert "run pytest with --interp-update-baselines" in message
    assert check_baseline(tiny_sweep, path, atol=0.6) == "matched"


def test_a_baseline_of_another_sweep_is_not_compared(tmp_path, tiny_sweep):
    path = tmp_path / "heads.json"
    check_baseline(tiny_sweep.with_metric("prob"), path, update=True)
    with pytest.raises(ClaimError, match=r"recorded for a different sweep.*\n  metric: 'prob' -> 'logit_diff'"):
        check_baseline(tiny_sweep, path)
    path.write_text("{not json")
    with pytest.raises(ClaimError, match="is unreadable"):
        check_baseline(tiny_sweep, path)


PYTHON_TEST = """
import pytest

pytestmark = [pytest.mark.interp_model({model!r}), pytest.mark.interp_task(file={pairs!r})]


def test_heads(interp_sweep, interp_baseline):
    interp_baseline(interp_sweep(), atol=0.01)


def test_two_unnamed_baselines(interp_sweep, interp_baseline):
    result = interp_sweep()
    interp_baseline(result)
    interp_baseline(result.with_metric("prob"))
"""


def test_python_and_yaml_baselines_are_created_then_guard_against_drift(pytester, tiny_files):
    pytester.makepyfile(test_base=PYTHON_TEST.format(model=str(tiny_files / "model"), pairs=str(tiny_files / "pairs.jsonl")))
    (pytester.path / "hypotheses").mkdir()
    (pytester.path / "hypotheses" / "claims.yaml").write_text(
        f"model: {tiny_files / 'model'}\ntask: {{file: {tiny_files / 'pairs.jsonl'}}}\nclaims:\n"
        "  - {name: mlp effects, sweep: {component: mlp}, expect: {baseline: {atol: 0.001}}}\n"
    )
    missing = pytester.runpytest("-k", "not unnamed")
    missing.assert_outcomes(failed=2)
    missing.stdout.fnmatch_lines_random(
        [
            "E   *ClaimError: No baseline at */__baselines__/test_base/test_heads.json. To create it, run pytest with "
            "--interp-update-baselines, then review and commit the file.",
            "hypotheses/claims.yaml:4: No baseline at */hypotheses/__baselines__/claims/mlp_effects.json.*",
        ]
    )
    written = pytester.runpytest("--interp-update-baselines", "-k", "not unnamed")
    written.assert_outcomes(passed=2)
    written.stdout.fnmatch_lines(["passed   cached  *written*test_base.py::test_heads"])
    heads = pytester.path / "__baselines__" / "test_base" / "test_heads.json"
    mlps = pytester.path / "hypotheses" / "__baselines__" / "claims" / "mlp_effects.json"
    pytester.runpytest("-k", "not unnamed").assert_outcomes(passed=2)

    stored = json.loads(mlps.read_text())
    stored["effects"]["mlp.1"] += 0.25
    mlps.write_text(json.dumps(stored))
    drifted = pytester.runpytest("-k", "not unnamed")
    drifted.assert_outcomes(passed=1, failed=1)
    drifted.stdout.fnmatch_lines(
        [
            "hypotheses/claims.yaml:4: Effects moved from the baseline *mlp_effects.json: 1 of 3 components by more than atol=0.001*",
            "  component       baseline         now      change",
            "  mlp.1 * -0.250000",
        ]
    )
    assert heads.is_file()
    unnamed = pytester.runpytest("--interp-update-baselines", "-k", "unnamed")
    unnamed.assert_outcomes(failed=1)
    unnamed.stdout.fnmatch_lines(["E   *SettingsError: This test already checked the baseline test_two_unnamed_baselines.json. Give each*"])
