"""The sweep cache: an unchanged claim re-runs without a forward pass, a changed model or dataset
recomputes, a damaged entry is recomputed rather than trusted, and xdist workers share it safely."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from interp_tests.files import atomic_write
from interp_tests.plugin.cache import SweepCache, sweep_key

SETTINGS = {"model_fingerprint": "abc", "dataset": "def", "component": "attn_head", "seed": 0}


def entries(folder: Path) -> list[Path]:
    return sorted((folder / ".interp_cache" / "sweeps").glob("*.sweep"))


def test_an_entry_reads_back_as_the_same_result(tmp_path, tiny_sweep):
    cache = SweepCache(tmp_path)
    key = sweep_key(SETTINGS)
    assert cache.read(key, SETTINGS) == (None, None)
    cache.write(key, SETTINGS, tiny_sweep)
    result, problem = cache.read(key, SETTINGS)
    assert problem is None
    assert result.labels == tiny_sweep.labels and result.settings == tiny_sweep.settings
    for metric, effects in tiny_sweep.effects.items():
        np.testing.assert_array_equal(result.effects[metric], effects)
    header = json.loads(cache.entry_path(key).read_bytes().partition(b"\n")[0])
    assert header["key"] == key and header["settings"] == SETTINGS
    assert (tmp_path / ".gitignore").read_text().endswith("*\n")
    assert [p.name for p in cache.sweeps.iterdir() if p.suffix not in (".sweep", ".lock")] == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda data: data[:-10], "its checksum does not match (truncated or modified)"),
        (lambda data: data[:-10] + bytes([data[-10] ^ 1]) + data[-9:], "its checksum does not match (truncated or modified)"),
        (lambda data: b"garbage" + data, "its header is not JSON"),
        (lambda data: b"", "its header is not JSON"),
        (lambda data: data.replace(b'"seed":0', b'"seed":1', 1), "its settings do not match its key"),
    ],
)
def test_a_damaged_entry_is_rejected_with_the_reason(tmp_path, tiny_sweep, damage, problem):
    cache = SweepCache(tmp_path)
    key = sweep_key(SETTINGS)
    cache.write(key, SETTINGS, tiny_sweep)
    path = cache.entry_path(key)
    path.write_bytes(damage(path.read_bytes()))
    assert cache.read(key, SETTINGS) == (None, problem)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "deep" / "file.json"
    atomic_write(target, b"one")
    assert atomic_write(target, "two \u00e9") == target
    assert target.read_bytes() == "two \u00e9".encode()
    assert target.stat().st_mode & 0o777 == 0o644  # readable by others, like a file open() writes
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def write_claims(folder: Path, tiny_files: Path, n: int | None = None) -> None:
    task = f"{{file: {tiny_files / 'pairs.jsonl'}{'' if n is None else f', n: {n}'}}}"
    (folder / "test_claims.yaml").write_text(
        f"model: {tiny_files / 'model'}\ntask: {task}\nclaims:\n"
        "  - {name: heads, expect: {not_detected: ['0.0'], sd: 50}}\n"
        "  - {name: heads by probability, sweep: {metric: prob}, expect: {not_detected: ['0.0'], sd: 50}}\n"
        "  - {name: mlps, sweep: {component: mlp}, expect: {not_detected: ['mlp.0'], sd: 50}}\n"
    )


def test_a_cached_rerun_performs_no_forward_pass(pytester, tiny_files, monkeypatch):
    write_claims(pytester.path, tiny_files)
    first = pytester.runpytest()
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache, 1 reused within the session*"])
    assert len(entries(pytester.path)) == 2

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("a cached claim ran the model")

    monkeypatch.setattr("interp_tests.engine.run", no_forward_pass)
    second = pytester.runpytest()
    second.assert_outcomes(passed=3)
    second.stdout.fnmatch_lines(["passed   cached *heads", "sweeps: 0 computed, 2 from the cache, 1 reused within the session*"])


def test_a_changed_dataset_or_model_recomputes(pytester, tiny_files, tmp_path):
    from interp_tests.testing import save_model, tiny_gpt2

    write_claims(pytester.path, tiny_files)
    pytester.runpytest().assert_outcomes(passed=3)
    write_claims(pytester.path, tiny_files, n=8)
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])
    other = tmp_path / "other"
    save_model(*tiny_gpt2(seed=1), other / "model")
    (other / "pairs.jsonl").write_bytes((tiny_files / "pairs.jsonl").read_bytes())
    write_claims(pytester.path, other)
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])
    assert len(entries(pytester.path)) == 6


def test_a_corrupt_entry_is_recomputed_and_reported(pytester, tiny_files):
    write_claims(pytester.path, tiny_files)
    pytester.runpytest().assert_outcomes(passed=3)
    for entry in entries(pytester.path):
        entry.write_bytes(entry.read_bytes()[:-100])
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        [
            "sweeps: 2 computed, 0 from the cache*",
            "note: cache entry *.sweep was rejected (its checksum does not match (truncated or modified)) and recomputed",
        ]
    )
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 0 computed, 2 from the cache*"])


def test_no_cache_leaves_the_disk_alone(pytester, tiny_files):
    write_claims(pytester.path, tiny_files)
    result = pytester.runpytest("--interp-no-cache")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache, 1 reused within the session (disk cache off)"])
    assert not (pytester.path / ".interp_cache").exists()


def test_xdist_workers_share_the_cache(pytester, tiny_files):
    write_claims(pytester.path, tiny_files)
    (pytester.path / "test_more.yaml").write_text(
        (pytester.path / "test_claims.yaml").read_text().replace("name: ", "name: more ")
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*= interp claims =*"])
    assert len(entries(pytester.path)) == 2
    sweeps = pytester.path / ".interp_cache" / "sweeps"
    assert all(p.suffix in (".sweep", ".lock") for p in sweeps.iterdir())


ATTRIBUTION_SWEEPS = """
import pytest

from interp_tests.claims import ClaimError

pytestmark = [pytest.mark.interp_model("model"), pytest.mark.interp_task(file="pairs.jsonl")]
EXPECTED = {expected!r}


def means(result):
    return {{label: result[label] for label in result.labels}}


def test_sweeps(interp_sweep):
    exact, exact_prob = interp_sweep(), interp_sweep(metric="prob")
    estimate, estimate_prob = interp_sweep(method="attribution"), interp_sweep(metric="prob", method="attribution")
    assert (exact.is_estimate, exact_prob.is_estimate, estimate.is_estimate, estimate_prob.is_estimate) == (
        False, False, True, True
    )
    assert (estimate.metric, list(estimate.effects), estimate_prob.metric, list(estimate_prob.effects)) == (
        "logit_diff", ["logit_diff"], "prob", ["prob"]
    )
    assert means(exact) == pytest.approx(EXPECTED["exact"], abs=1e-12)
    assert means(exact_prob) == pytest.approx(EXPECTED["exact_prob"], abs=1e-12)
    assert means(estimate) == pytest.approx(EXPECTED["estimate"], abs=1e-12)
    assert means(estimate_prob) == pytest.approx(EXPECTED["estimate_prob"], abs=1e-12)


def test_verify_top(interp_sweep):
    verified = interp_sweep(method="attribution", verify_top=2, verify_tolerance=0.5)
    top = {top2!r}
    assert verified.settings["verified"] == top
    assert means(verified) == pytest.approx(
        {{label: EXPECTED["exact" if label in top else "estimate"][label] for label in verified.labels}}, abs=1e-12
    )
    again = interp_sweep(method="attribution")  # the memoised estimate is not replaced by the verified one
    assert "verified" not in again.settings and means(again) == pytest.approx(EXPECTED["estimate"], abs=1e-12)
    with pytest.raises(ClaimError) as caught:
        interp_sweep(method="attribution", verify_top=2, verify_tolerance={tolerance})
    assert (caught.value.claim, caught.value.labels, caught.value.threshold) == ("verified", {missed!r}, {tolerance})
    assert "use method='exact' for this claim" in str(caught.value)
"""


def test_attribution_and_exact_sweeps_are_cached_apart_by_method_and_metric(pytester, tiny_files, tiny_sweep, monkeypatch):
    from interp_tests import PromptPairs, load_model, patch

    model, pairs = load_model(tiny_files / "model"), PromptPairs.load(tiny_files / "pairs.jsonl")
    sweeps = {
        "exact": tiny_sweep, "exact_prob": tiny_sweep.with_metric("prob"),
        "estimate": patch(model, pairs, method="attribution"),
        "estimate_prob": patch(model, pairs, metric="prob", method="attribution"),
    }
    expected = {name: {label: float(result[label]) for label in result.labels} for name, result in sweeps.items()}
    top2 = [label for label, _ in sweeps["estimate"].top(2)]
    errors = {label: abs(expected["estimate"][label] - expected["exact"][label]) for label in top2}
    tolerance = round(sum(errors.values()) / 2, 4)  # between the two errors: one head misses it
    missed = [label for label in top2 if errors[label] > tolerance]
    assert len(missed) == 1, errors
    for name in ("exact", "exact_prob", "estimate_prob"):  # distinct sweeps: a collision could not pass unnoticed
        assert expected[name] != pytest.approx(expected["estimate"], abs=1e-3), name
    (pytester.path / "model").symlink_to(tiny_files / "model")
    (pytester.path / "pairs.jsonl").symlink_to(tiny_files / "pairs.jsonl")
    pytester.makepyfile(
        test_sweeps=ATTRIBUTION_SWEEPS.format(expected=expected, top2=top2, tolerance=tolerance, missed=missed)
    )
    first = pytester.runpytest()
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(
        [
            "passed   computed+reused  *test_sweeps.py::test_sweeps",
            "passed   reused  *test_sweeps.py::test_verify_top",
            "sweeps: 3 computed, 0 from the cache, 4 reused within the session*",
            (f"note: attribution estimate: its 2 largest effects re-measured exactly (max |error| "
            f"{max(errors.values()):.3g}, tolerance 0.5)"),
            (f"note: attribution estimate: its 2 largest effects re-measured exactly (max |error| "
            f"{max(errors.values()):.3g}, tolerance {tolerance:g})"),
        ]
    )
    # exact (every metric), attribution logit_diff, attribution prob, and the exact re-measurement of the estimate's top 2
    assert len(entries(pytester.path)) == 4

    def no_sweep(*args, **kwargs):
        raise AssertionError("a cached sweep was recomputed")

    monkeypatch.setattr("interp_tests.patching.patch", no_sweep)
    second = pytester.runpytest()
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["sweeps: 0 computed, 3 from the cache, 4 reused within the session*"])


def test_a_cached_sweep_or_circuit_repeats_the_clean_run_warnings(pytester, monkeypatch):
    """The never-predicted (and at-chance) warnings come from the clean run, which a cached result does not
    repeat: they are replayed from the result's settings, once per claim, as when it was computed."""
    from transformers import GPT2LMHeadModel  # noqa: F401  (imported out here: pytester's run would re-import it)

    from interp_tests import tasks
    from interp_tests.pairs import PromptPairs
    from pytester_support import interp_warnings

    pairs = tasks.ioi(n=8, seed=0, corrupt="S2")
    PromptPairs(pairs.clean, pairs.corrupted, [a.strip() for a in pairs.answer],
                [w.strip() for w in pairs.wrong]).save(pytester.path / "hypotheses" / "unspaced.jsonl")
    (pytester.path / "hypotheses" / "claims.yaml").write_text(
        "model: organism\ntask: {file: unspaced.jsonl}\nclaims:\n"
        "  - {name: head 0.5, expect: {top_k: {labels: ['0.5'], k: 1}}}\n"
        "  - {name: circuit, circuit: {nodes: ['0.5']}, expect: {score: {at_least: 0.5}}}\n"
    )

    def never_predicted(result):
        return [w for w in interp_warnings(result) if "never predicts the answer tokens" in str(w.message)]

    first = pytester.runpytest("-W", "always::interp_tests.errors.InterpWarning")
    first.assert_outcomes(passed=2)
    assert len(never_predicted(first)) == 2

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("a cached claim ran the model")

    monkeypatch.setattr("interp_tests.engine.run", no_forward_pass)
    second = pytester.runpytest("-W", "always::interp_tests.errors.InterpWarning")
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(["*sweeps: 0 computed, 2 from the cache*"])
    assert len(never_predicted(second)) == 2


def test_clear_cache_empties_it_before_the_session(pytester, tiny_files):
    write_claims(pytester.path, tiny_files)
    pytester.runpytest().assert_outcomes(passed=3)
    assert len(entries(pytester.path)) == 2
    cleared = pytester.runpytest("--interp-clear-cache")
    cleared.assert_outcomes(passed=3)
    cleared.stdout.fnmatch_lines(["interp-tests: cleared the sweep cache (2 files) in *.interp_cache",
                                  "*sweeps: 2 computed, 0 from the cache*"])


def test_a_lock_held_elsewhere_times_out_with_the_reason(tmp_path):
    from filelock import FileLock

    from interp_tests.errors import InterpError

    cache = SweepCache(tmp_path, lock_timeout=0.1)
    with cache.locked("k"), FileLock(cache.sweeps / "k2.lock"):
        with pytest.raises(InterpError, match=r"Waited 0.1 s for the sweep cache lock .*k2\.lock: another process holds it"):
            with cache.locked("k2"):
                pass
