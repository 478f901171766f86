"""interp-tests against the real local NDIF server (tests/ndif_server.py): every sweep, circuit score and claims
file run on a model loaded with ``remote=True`` gives the numbers of the same call on a local copy of the weights
the server loaded; the README's ``--interp-remote`` example runs as written; the server's failures arrive as the
InterpErrors that name them.

The server is the session's ``ndif_server`` (started once for every ndif test). Skipped unless ``INTERP_NDIF_VENV``
names the server's virtual environment (``bash .ci/ndif-setup``); ``.ci/run`` sets it, so CI runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from ndif_server import LocalNDIF, env_lines, free_port, place_in_hub_cache

import interp_tests as it
from interp_tests import remote as remote_module
from interp_tests.attribution import verify_top
from interp_tests.circuit_patching import completeness, minimality
from interp_tests.errors import ModelNotDeployedError, RemoteRequestError, RemoteResultTooLargeError
from interp_tests.testing import ioi_pairs, orient_answers

pytestmark = pytest.mark.ndif

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "hypotheses" / "ndif"
ATOL = 1e-6
# Heads of the claims below: layer 0 and layer 1 of both tiny models (2 layers x 4 heads).
NODES = ["0.1", "0.3", "1.1"]


@pytest.fixture(scope="module")
def served(ndif_server: LocalNDIF):
    """For each model the server serves: the model loaded with ``remote=True``, the same weights loaded here from
    the folder the server loaded them from, and 8 IOI pairs oriented to what the model prefers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with ndif_server.client():
        models = {}
        for repo_id, folder in ndif_server.model_dirs.items():
            hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
            pairs = orient_answers(hf_model, AutoTokenizer.from_pretrained(folder), ioi_pairs(8))
            models[repo_id] = (it.load_model(repo_id, remote=True), it.load_model(folder), pairs)
        yield models


def assert_same_effects(remote_result, local_result) -> None:
    assert remote_result.effects.keys() == local_result.effects.keys()
    for name, effects in local_result.effects.items():
        np.testing.assert_allclose(remote_result.effects[name], effects, atol=ATOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(remote_result.ld_clean, local_result.ld_clean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(remote_result.ld_corrupted, local_result.ld_corrupted, atol=ATOL, rtol=0)


# -- the library on the server ------------------------------------------------------------------------


@pytest.mark.parametrize("repo_id", ["local/tiny-gpt2", "local/tiny-llama"])
def test_sweeps_on_the_server_equal_the_local_ones(ndif_client, served, repo_id):
    remote, local, pairs = served[repo_id]
    assert {p.device.type for p in remote.hf.parameters()} == {"meta"}  # no weights here
    for settings in ({"component": "attn_head"}, {"component": "resid", "positions": "each"},
                     {"component": "attn_head", "method": "attribution"}):
        mine = it.patch(remote, pairs, **settings)
        assert_same_effects(mine, it.patch(local, pairs, **settings))
        assert mine.settings["model_fingerprint"] == f"remote:{repo_id}@default-branch"
    estimate = it.patch(local, pairs, "attn_head", method="attribution")
    np.testing.assert_allclose(verify_top(remote, pairs, estimate, k=3).exact,
                               verify_top(local, pairs, estimate, k=3).exact, atol=ATOL, rtol=0)
    for receivers in (["1.1.q", "1.2.q"], ["logits"]):
        assert_same_effects(it.path_patch(remote, pairs, receivers), it.path_patch(local, pairs, receivers))


def test_circuit_claims_on_the_server_equal_the_local_ones(ndif_client, served):
    remote, local, pairs = served["local/tiny-gpt2"]
    for test in ("sufficiency", "faithfulness"):
        mine = it.circuit_patch(remote, pairs, NODES, test=test)
        theirs = it.circuit_patch(local, pairs, NODES, test=test)
        assert mine.score == pytest.approx(theirs.score, abs=ATOL)
        assert mine.contributions == pytest.approx(theirs.contributions, abs=ATOL)
    # The claim, with bounds a wrong score on either side would break: measured 0.71 on these 8 pairs.
    mine.assert_score(at_least=theirs.score - 0.01, at_most=theirs.score + 0.01)
    for search in (completeness, minimality):
        mine, theirs = search(remote, pairs, NODES, samples=2), search(local, pairs, NODES, samples=2)
        assert [(r[0], r[1].labels) for r in mine.rows] == [(r[0], r[1].labels) for r in theirs.rows]
        np.testing.assert_allclose([r[2:] for r in mine.rows], [r[2:] for r in theirs.rows], atol=ATOL, rtol=0)


# -- claims files run by pytest -----------------------------------------------------------------------


def run_pytest(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``pytest args`` in a fresh process of this Python, in ``cwd``: this process's environment without a server's
    address or Hugging Face cache, then ``env``; the interp-tests this process imports comes first on its path."""
    full = {key: value for key, value in os.environ.items() if key not in ("NDIF_HOST", "HF_HUB_CACHE")}
    full.update(env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300)


def claim_properties(junit: Path) -> dict[str, str]:
    """Every claim's figure and verdict in a JUnit XML file (``interp claim: ...`` properties), by test and claim."""
    found = {}
    for case in ET.parse(junit).iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name", "").startswith("interp claim: "):
                found[f"{case.get('name')} / {prop.get('name')}"] = prop.get("value")
    return found


def sweep_properties(junit: Path) -> list[str]:
    return [p.get("value") for p in ET.parse(junit).iter("property") if p.get("name") == "interp sweep"]


def test_a_claims_file_gives_the_same_numbers_locally_and_with_interp_remote(ndif_server, tmp_path):
    """The shipped claims file (sweeps, attribution with its exact check, path patching, circuits), run by pytest
    on a local copy of the weights and with ``--interp-remote --interp-ndif-host``: both pass, every sweep computed
    (none from the cache), and every number in the reports and the JUnit properties is the same."""
    shutil.copytree(EXAMPLES, tmp_path / "claims")
    env = {key: value for key, value in ndif_server.client_env().items() if key != "NDIF_HOST"}
    runs = {}
    for where, options in (("local", []), ("remote", ["--interp-remote", "--interp-ndif-host", ndif_server.host])):
        runs[where] = run_pytest(tmp_path, ["claims", "--interp-no-cache", "--interp-report-dir", f"reports/{where}",
                                            "--junitxml", f"{where}.xml", *options], env)
        assert runs[where].returncode == 0, runs[where].stdout[-3000:] + runs[where].stderr[-2000:]
    local, remote = claim_properties(tmp_path / "local.xml"), claim_properties(tmp_path / "remote.xml")
    assert len(local) == 6 and all(value.startswith("passed") for value in local.values()), local
    assert remote == local
    assert sweep_properties(tmp_path / "remote.xml") and all(
        value.startswith("computed") for value in sweep_properties(tmp_path / "remote.xml"))
    reports = sorted(p.name for p in (tmp_path / "reports" / "local").glob("*.json"))
    assert len(reports) == 3 and reports == sorted(p.name for p in (tmp_path / "reports" / "remote").glob("*.json"))
    for name in reports:
        mine = json.loads((tmp_path / "reports" / "remote" / name).read_text())
        theirs = json.loads((tmp_path / "reports" / "local" / name).read_text())
        assert mine.pop("settings")["model_fingerprint"] == "remote:local/tiny-gpt2@default-branch"
        theirs.pop("settings")
        assert mine == theirs, name


def readme_blocks() -> list[str]:
    """The README's fenced bash blocks of the local server example: the server's, then the client's."""
    section = (ROOT / "README.md").read_text().split("## Remote models (NDIF)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    server = [b for b in blocks if "tests/ndif_server.py" in b]
    client = [b for b in blocks if "--interp-remote" in b and re.search(r"^\. \S+", b, re.MULTILINE)]
    assert len(server) == 1 and len(client) == 1, "README's local-server example changed shape: update this test"
    return [server[0], client[0]]


def test_the_readme_remote_example_runs_as_written(ndif_server, tmp_path):
    """The README's client commands, run verbatim by bash in a folder holding the example claims and the file
    ``tests/ndif_server.py`` writes for its server (``env_lines``): every command succeeds, and the local and
    remote runs' JUnit reports hold the same claims with the same figures."""
    server_block, client_block = readme_blocks()
    env_file = re.search(r"^\. (\S+)", client_block, re.MULTILINE)[1]
    assert f"python tests/ndif_server.py {env_file}" in server_block
    (tmp_path / "hypotheses").mkdir()
    shutil.copytree(EXAMPLES, tmp_path / "hypotheses" / "ndif")
    (tmp_path / env_file).write_text(env_lines(ndif_server))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("NDIF_HOST", "HF_HUB_CACHE"):  # only what the README's commands set
        env.pop(name, None)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", client_block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    junits = re.findall(r"--junitxml (\S+)", client_block)
    assert len(junits) == 2, "the README's example writes a JUnit report per run"
    local, remote = (claim_properties(tmp_path / name) for name in junits)
    assert len(local) == 6 and all(value.startswith("passed") for value in local.values())
    assert remote == local


def test_an_unreachable_host_fails_the_claim_naming_the_host(ndif_server, tmp_path):
    """``--interp-ndif-host`` naming a port nothing listens on: the claim fails at its line with the error that names
    the host, after the client's 3 attempts (1 s, then 2 s apart), and nothing else."""
    shutil.copytree(EXAMPLES, tmp_path / "claims")
    port = free_port()
    env = {key: value for key, value in ndif_server.client_env().items() if key != "NDIF_HOST"}
    done = run_pytest(tmp_path, ["claims", "--interp-no-cache", "--interp-remote", "-k", "largest",
                                 "--interp-ndif-host", f"http://127.0.0.1:{port}"], env)
    assert done.returncode == 1, done.stdout[-3000:]
    assert (f"test_tiny_gpt2.yaml:9: Could not reach the NDIF server at http://127.0.0.1:{port} after 3 attempts "
            "(ConnectionRefusedError") in done.stdout


# -- the server's failures ----------------------------------------------------------------------------


def test_a_result_over_the_inline_limit_is_named(ndif_client, served):
    """The local server has no object store: NDIF 0.1.2 tries to upload a result over its inline limit (8 MiB,
    from redis' pub/sub limits) to it, and reports botocore's connection error as the request's failure."""
    remote = served["local/tiny-gpt2"][0]
    remote_module.register_package()
    with pytest.raises(RemoteResultTooLargeError, match=r"(?s)inline limit.*EndpointConnectionError"):
        with remote.nn.trace(torch.tensor([[2, 3, 4]]), backend=remote_module.ndif_backend(remote.nn, None)):
            big = torch.randn(3_000_000).save()  # 12 MB, which compression cannot shrink  # noqa: F841


def test_a_mistake_inside_a_request_is_a_request_error_with_its_line(ndif_client, served):
    remote = served["local/tiny-gpt2"][0]
    remote_module.register_package()
    with pytest.raises(RemoteRequestError, match=r"(?s)transformer\.h\[7\].*has attribute '7'") as error:
        with remote.nn.trace(torch.tensor([[2, 3, 4]]), backend=remote_module.ndif_backend(remote.nn, None)):
            hidden = remote.nn.transformer.h[7].output.save()  # noqa: F841
    assert type(error.value) is RemoteRequestError


def test_a_model_the_server_does_not_serve_is_named(ndif_client, tmp_path, monkeypatch):
    """A repo id whose configuration this client has but the server does not serve: NDIF 0.1.2 tries to deploy
    it on demand, and reports 'Could not deploy this model' with why."""
    import huggingface_hub.constants as hub_constants

    place_in_hub_cache(ndif_client.model_dirs["local/tiny-gpt2"], "local/undeployed", tmp_path)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    model = it.load_model("local/undeployed", remote=True)
    with pytest.raises(ModelNotDeployedError, match="cannot serve .*local/undeployed"):
        it.patch(model, ioi_pairs(2), "mlp")
