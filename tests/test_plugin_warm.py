"""A warm run of unchanged claims: each cached result is found by the hash of the model's files and the pairs'
text, so no model loads and torch, transformers and nnsight are never imported; the outcomes, the reported
figures and the clean run's warnings are those of the cold run; a changed weight file or prompt recomputes."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from interp_tests.identities import (
    FILES_PREFIX,
    WEIGHTS_PREFIX,
    files_fingerprint,
    model_files,
)

HEAVY = ("torch", "transformers", "nnsight")
REPORTER = f'''
import sys


def pytest_unconfigure(config):
    print("imported=" + ",".join(name for name in {HEAVY!r} if name in sys.modules))
'''
PYTHON_CLAIMS = '''
import pytest

pytestmark = [pytest.mark.interp_model("organism"), pytest.mark.interp_task(file="unspaced.jsonl")]


def test_head_0_5_leads(interp_sweep):
    assert interp_sweep().top(1)[0][0] == "0.5"


def test_head_0_5_restores_most(interp_circuit):
    interp_circuit(["0.5"]).assert_score(at_least=0.5)


def test_attention_evaluation_and_the_gn_check_are_cached_too(interp_attention, interp_evaluate, interp_off_distribution):
    assert interp_attention("last", "previous").mean.shape == (6, 8)
    assert interp_evaluate(corruption=None).accuracy == 0.0  # answers without their space are never predicted
    assert not interp_off_distribution().is_off_distribution
'''
YAML_CLAIMS = """model: organism
task: {file: unspaced.jsonl}
claims:
  - {name: head 0.5 leads, expect: {top_k: {labels: ['0.5'], k: 1}}}
  - {name: head 0.5 under every setting, robust: {corruptions: [str, gn], metrics: [logit_diff, kl]}, expect: {robust: ['0.5']}}
  - {name: circuit, circuit: {nodes: ['0.5']}, expect: {score: {at_least: 0.5}}}
  - {name: gpt2, model: openai-community/gpt2, expect: {detected: ['9.9']}}
"""


def unspaced_pairs(path: Path) -> None:
    """IOI pairs whose answers lack their leading space: tokens the organism never predicts, so every clean run
    warns (``CleanRun``)."""
    from interp_tests import tasks
    from interp_tests.pairs import PromptPairs

    pairs = tasks.ioi(n=8, seed=0, corrupt="S2")
    PromptPairs(pairs.clean, pairs.corrupted, [a.strip() for a in pairs.answer],
                [w.strip() for w in pairs.wrong]).save(path)


def claims_table(output: str) -> list[str]:
    """The interp claims rows without the sweep column (computed cold, cached warm)."""
    rows = re.findall(r"^(passed|failed|skipped|xfailed)\s+\S+\s+(.*)$", output, re.MULTILINE)
    return [" ".join(row) for row in rows]


def test_a_warm_run_imports_no_torch_and_repeats_the_outcomes_and_warnings(pytester):
    hypotheses = pytester.path / "hypotheses"
    hypotheses.mkdir()
    unspaced_pairs(hypotheses / "unspaced.jsonl")
    (hypotheses / "claims.yaml").write_text(YAML_CLAIMS)
    (hypotheses / "test_python_claims.py").write_text(PYTHON_CLAIMS)
    (pytester.path / "conftest.py").write_text(REPORTER)
    os.environ.pop("PYTEST_ADDOPTS", None)

    def run() -> pytest.RunResult:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "always::interp_tests.errors.InterpWarning", "-s")
        result.assert_outcomes(passed=6, skipped=1)
        return result

    cold = run()
    assert re.search(r"^imported=.*torch", cold.stdout.str(), re.MULTILINE)  # the check itself sees imports
    warm = run()
    output = warm.stdout.str()
    assert re.search(r"^imported=$", output, re.MULTILINE), output
    assert "sweeps: 0 computed" in output and "from the cache" in output
    assert claims_table(output) == claims_table(cold.stdout.str()) and len(claims_table(output)) == 7
    assert output.count("never predicts the answer tokens") == cold.stdout.str().count("never predicts the answer tokens") > 0


@pytest.fixture
def own_files(tmp_path, tiny_files) -> Path:
    """A copy of ``tiny_files`` this test may change."""
    folder = tmp_path / "own"
    shutil.copytree(tiny_files, folder)
    return folder


def write_claims(folder: Path, files: Path) -> None:
    (folder / "test_claims.yaml").write_text(
        f"model: {files / 'model'}\ntask: {{file: {files / 'pairs.jsonl'}}}\nclaims:\n"
        "  - {name: heads, expect: {not_detected: ['0.0'], sd: 50}}\n"
        "  - {name: circuit, circuit: {nodes: ['0.0']}, expect: {score: {at_least: -100}}}\n"
    )


def cache_the_claims(pytester: pytest.Pytester, files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims on ``files``: a cold run computes both results, a second run reads them with the model unloadable."""

    def refuse(*args, **kwargs):
        raise AssertionError("a cached claim loaded the model")

    write_claims(pytester.path, files)
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])
    with monkeypatch.context() as patched:
        patched.setattr("interp_tests.models.load_model", refuse)
        pytester.runpytest().stdout.fnmatch_lines(["sweeps: 0 computed, 2 from the cache*"])


def test_a_changed_weight_file_recomputes(pytester, own_files, monkeypatch):
    from safetensors.numpy import load_file, save_file

    cache_the_claims(pytester, own_files, monkeypatch)
    weights_file = own_files / "model" / "model.safetensors"
    weights = load_file(weights_file)
    name = min(weights)
    weights[name] = weights[name] + 1e-3
    stat = weights_file.stat()
    save_file(weights, weights_file, metadata={"format": "pt"})
    os.utime(weights_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its old mtime
    assert weights_file.stat().st_size == stat.st_size
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])


def test_a_changed_prompt_recomputes(pytester, own_files, monkeypatch):
    cache_the_claims(pytester, own_files, monkeypatch)
    pairs = own_files / "pairs.jsonl"
    lines = pairs.read_text().splitlines()
    lines[0] = lines[0].replace("When", "Then", 1)
    assert lines[0] != pairs.read_text().splitlines()[0]
    pairs.write_text("\n".join(lines) + "\n")
    pytester.runpytest().stdout.fnmatch_lines(["sweeps: 2 computed, 0 from the cache*"])


def test_file_and_weight_identities_cannot_collide(tiny_files):
    from interp_tests import load_model
    from interp_tests.testing import tiny_gpt2

    loaded = load_model(tiny_files / "model")
    assert loaded.files == model_files(str(tiny_files / "model"))
    assert loaded.fingerprint() == files_fingerprint(loaded.files) and loaded.fingerprint().startswith(FILES_PREFIX)
    model, tokenizer = tiny_gpt2()
    in_memory = load_model(model, tokenizer=tokenizer)
    assert in_memory.files is None and in_memory.fingerprint().startswith(WEIGHTS_PREFIX)
    assert "torch" in sys.modules  # (both loaded the model; only the first is identified without it)


def test_a_model_whose_files_went_or_changed_after_loading_is_identified_by_its_weights(tmp_path, tiny_files):
    from interp_tests import load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_files / "model", folder)
    hashed, gone, rewritten = load_model(folder), load_model(folder), load_model(folder)
    assert hashed.fingerprint().startswith(FILES_PREFIX)  # taken while the files are there, then kept
    config = folder / "config.json"
    config.write_text(config.read_text())  # the same bytes, written again
    assert rewritten.fingerprint().startswith(WEIGHTS_PREFIX)
    shutil.rmtree(folder)  # e.g. a temporary directory it was loaded from
    assert gone.fingerprint() == rewritten.fingerprint() == load_model(gone.hf, tokenizer=gone.tokenizer).fingerprint()
    assert hashed.fingerprint().startswith(FILES_PREFIX)


def test_a_file_hash_follows_the_bytes_not_the_mtime(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"a" * 64)
    (folder / "config.json").write_text("{}")
    before = files_fingerprint(model_files(str(folder)))
    stat = weights.stat()
    weights.write_bytes(b"b" * 64)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files_fingerprint(model_files(str(folder))) != before
    (folder / "tokenizer.json").write_text("{}")
    assert len({before, files_fingerprint(model_files(str(folder)))}) == 2
