"""The project calls no deprecated API of its dependencies: every kind of run, in a fresh interpreter where
deprecation warnings are errors and transformers' logged deprecation notices are failures.

The autouse fixture in conftest.py catches the same thing inside this test process; these tests also cover
what it cannot see: model loading at import time, the pytest plugin's own claim runs, and the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260K"
AS_ERRORS = ["-W", "error::FutureWarning", "-W", "error::DeprecationWarning", "-W", "error::PendingDeprecationWarning"]


def run_strict(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *AS_ERRORS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def assert_no_deprecation(done: subprocess.CompletedProcess) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    notices = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert not notices, "\n".join(notices)


SWEEPS = """\
import interp_tests as it
m = it.load_model({model!r})
p = {pairs}
it.evaluate(m, p)
it.patch(m, p, "attn_head")
it.patch(m, p, "mlp", positions="each", direction="noise")
it.patch(m, p, "resid", corruption="gn", positions="each")
it.patch(m, p, "attn_head", method="attribution")
it.patch(m, p, "attn_head", method="attribution", grad_drop=True)
it.grid(m, p, "attn_head")
print("ok")
"""


def test_sweeps_attribution_and_grids_on_the_organism(tmp_path: Path) -> None:
    done = run_strict(["-c", SWEEPS.format(model="organism", pairs="it.tasks.greater_than(n=8)")], tmp_path)
    assert_no_deprecation(done)
    assert done.stdout.strip() == "ok"


@pytest.mark.skipif(not STORIES.is_dir(), reason=f"stories260K is not at {STORIES} (see shared/models/README.md)")
def test_sweeps_attribution_and_grids_on_stories260k(tmp_path: Path) -> None:
    pairs = (
        'it.PromptPairs(clean=["Once upon a time, there was a little girl named Lily. One day,"], '
        'corrupted=["Once upon a time, there was a little girl named Tim. One day,"], answer=["Lily"], wrong=["Tim"])'
    )
    done = run_strict(["-c", SWEEPS.format(model=str(STORIES / "stories260K.bin"), pairs=pairs)], tmp_path)
    assert_no_deprecation(done)
    assert done.stdout.strip() == "ok"


def test_claim_runs_and_the_cli(tmp_path: Path) -> None:
    (tmp_path / "hypotheses").mkdir()
    (tmp_path / "hypotheses" / "claims.yaml").write_text(
        textwrap.dedent(
            """\
            model: organism
            task: {name: ioi, n: 8, seed: 0, corrupt: S2}
            claims:
              - name: head 0.5 is detected
                sweep: {component: attn_head, corruption: str, metric: logit_diff}
                expect: {detected: ["0.5"], sd: 2}
              - name: attribution ranks 0.5 first
                sweep: {component: attn_head, method: attribution, verify_top: 2, verify_tolerance: 0.8}
                expect: {top_k: {labels: ["0.5"], k: 1}}
            """
        )
    )
    claims = run_strict(["-m", "pytest", "hypotheses", "-p", "no:cacheprovider", "-q", *AS_ERRORS], tmp_path)
    assert_no_deprecation(claims)
    assert "2 passed" in claims.stdout
    cli = run_strict(
        ["-m", "interp_tests.cli", "sweep", "--model", "organism", "--task", "ioi", "--n", "8"], tmp_path
    )
    assert_no_deprecation(cli)
