"""Remote models (NDIF) through an in-process stand-in for NDIF's round trip (tests/ndif_standin.py): every method
that runs remotely gives the local numbers, in one request each, with kilobytes coming back; what cannot run
remotely is refused by name; each failure of the server or the network is its own InterpError."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import interp_tests as it
from interp_tests import remote as remote_module
from interp_tests.attribution import verify_top
from interp_tests.engine import shared_prefix, sweep_inputs
from interp_tests.errors import (
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteRequestError,
    RemoteResultTooLargeError,
    RemoteTimeoutError,
    RemoteUnreachableError,
    RemoteUnsupportedError,
)
from interp_tests.testing import ioi_pairs, orient_answers, tiny_gpt2
from ndif_standin import NdifStandIn

REPO = "local/tiny-gpt2"
ATOL = 1e-6


def save_in_hub_cache(model, tokenizer, repo_id: str, cache: Path) -> Path:
    """The model and tokenizer in the Hugging Face cache layout under ``repo_id``: what NDIF and the client read."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / "c0ffee"
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("c0ffee")
    return snapshot


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hugging Face cache holding the tiny model as ``local/tiny-gpt2``, read offline; its model and pairs."""
    import huggingface_hub.constants
    from nnsight.modeling import huggingface

    cache = tmp_path_factory.mktemp("hub")
    hf_model, tokenizer = tiny_gpt2(3, 4, 64)
    snapshot = save_in_hub_cache(hf_model, tokenizer, REPO, cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setitem(huggingface._ID_CACHE, REPO, REPO)
        yield {"snapshot": snapshot, "pairs": orient_answers(hf_model, tokenizer, ioi_pairs(6))}


@pytest.fixture(scope="module")
def server(hub):
    from nnsight.modeling.transformers import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = TransformersModel(REPO, task="text-generation", dispatch=True)
    return NdifStandIn(served, served.to_model_key())


@pytest.fixture(scope="module")
def remote(server):
    return it.load_model(REPO, remote=server)


@pytest.fixture(scope="module")
def local(hub):
    return it.load_model(hub["snapshot"])


@pytest.fixture
def pairs(hub):
    return hub["pairs"]


def assert_same_effects(remote_result, local_result):
    assert remote_result.effects.keys() == local_result.effects.keys()
    for name, effects in local_result.effects.items():
        np.testing.assert_allclose(remote_result.effects[name], effects, atol=ATOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(remote_result.ld_clean, local_result.ld_clean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(remote_result.ld_corrupted, local_result.ld_corrupted, atol=ATOL, rtol=0)
    assert remote_result.settings["clean_run"] == local_result.settings["clean_run"]


def one_request(server, call):
    """``call()``'s value, checking it cost the server exactly one request, with a result of kilobytes."""
    before = len(server.requests)
    value = call()
    assert len(server.requests) == before + 1
    request = server.requests[-1]
    assert request.error is None and request.result_bytes < 20_000, request
    return value


def test_a_remote_model_has_no_weights_here_and_is_identified_by_repo_id(remote, local):
    assert {p.device.type for p in remote.hf.parameters()} == {"meta"}
    assert remote.fingerprint() == f"remote:{REPO}@default-branch"
    assert remote.placement == "remote" and local.placement == "cpu"
    assert remote.shape == local.shape and remote.adapter == local.adapter


@pytest.mark.parametrize("kind", ["attn_head", "attn", "mlp", "resid"])
def test_exact_sweep_of_every_kind_equals_the_local_one_in_one_request(server, remote, local, pairs, kind):
    tokens = pairs.tokenize(local.tokenizer)
    runs = sweep_inputs(local, tokens, "str", direction="denoise", seed=0, noise_scale=3.0)
    assert shared_prefix(local, tokens, *runs).length > 0  # the remote sweep computes a shared prefix too
    result = one_request(server, lambda: it.patch(remote, pairs, kind))
    assert_same_effects(result, it.patch(local, pairs, kind))
    assert result.settings["model_fingerprint"] == remote.fingerprint()
    assert "repo id and revision" in result.settings["model_identity"]


@pytest.mark.parametrize("settings", [
    {"component": "resid", "positions": "each"},
    {"component": "attn_head", "direction": "noise"},
    {"component": "mlp", "corruption": "gn", "seed": 3},
    {"component": "attn", "window": 2, "batch_size": 5},
])
def test_exact_sweep_settings_equal_the_local_ones(server, remote, local, pairs, settings):
    assert_same_effects(one_request(server, lambda: it.patch(remote, pairs, **settings)), it.patch(local, pairs, **settings))


@pytest.mark.parametrize("grad_drop", [False, True])
def test_attribution_equals_the_local_one(server, remote, local, pairs, grad_drop):
    run = lambda model: it.patch(model, pairs, "attn_head", method="attribution", grad_drop=grad_drop)  # noqa: E731
    assert_same_effects(one_request(server, lambda: run(remote)), run(local))


def test_verify_top_and_path_patching_equal_the_local_ones(server, remote, local, pairs):
    estimate = it.patch(local, pairs, "attn_head", method="attribution")
    remote_check = one_request(server, lambda: verify_top(remote, pairs, estimate, k=3))
    local_check = verify_top(local, pairs, estimate, k=3)
    np.testing.assert_allclose(remote_check.exact, local_check.exact, atol=ATOL, rtol=0)
    receivers = ["2.1.q", "2.0"]
    assert_same_effects(one_request(server, lambda: it.path_patch(remote, pairs, receivers)), it.path_patch(local, pairs, receivers))


@pytest.mark.parametrize("test, ablation", [("sufficiency", "resample"), ("necessity", "mean"), ("faithfulness", "zero")])
def test_circuit_scores_equal_the_local_ones(server, remote, local, pairs, test, ablation):
    nodes = ["0.1", "1.2", "2.3"]
    mine = one_request(server, lambda: it.circuit_patch(remote, pairs, nodes, test=test, ablation=ablation))
    theirs = it.circuit_patch(local, pairs, nodes, test=test, ablation=ablation)
    assert mine.score == pytest.approx(theirs.score, abs=ATOL)
    assert mine.contributions == pytest.approx(theirs.contributions, abs=ATOL)
    assert mine.settings["runs"] == theirs.settings["runs"]
    assert "repo id and revision" in mine.settings["model_identity"]


def test_subset_searches_equal_the_local_ones(server, remote, local, pairs):
    from interp_tests.circuit_patching import completeness, minimality

    for search in (completeness, minimality):
        mine = one_request(server, lambda: search(remote, pairs, ["0.1", "1.2", "2.3"], samples=2))
        theirs = search(local, pairs, ["0.1", "1.2", "2.3"], samples=2)
        assert [(r[0], r[1].labels) for r in mine.rows] == [(r[0], r[1].labels) for r in theirs.rows]
        np.testing.assert_allclose([r[2:] for r in mine.rows], [r[2:] for r in theirs.rows], atol=ATOL, rtol=0)
        assert mine.n_runs == theirs.n_runs


def test_progress_of_a_remote_sweep_comes_from_the_server(remote, pairs):
    seen = []
    it.patch(remote, pairs, "attn_head", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == 12 * len(pairs)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_an_interrupted_remote_sweep_stops_cleanly(remote, pairs):
    import sys

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        it.patch(remote, pairs, "mlp", progress=interrupt)
    assert "interp_tests.engine" in sys.modules  # the stand-in's hidden packages are back
    assert it.patch(remote, pairs, "mlp").effects  # and the model still works


def test_what_cannot_run_remotely_is_refused_by_name(remote, pairs):
    with pytest.raises(RemoteUnsupportedError, match="holds only its configuration and tokenizer"):
        it.evaluate(remote, pairs)
    with pytest.raises(RemoteUnsupportedError, match="Patching edges"):
        it.circuit_patch(remote, pairs, ["0.1->logits"])
    with pytest.raises(RemoteUnsupportedError, match="corruption callable"):
        it.patch(remote, pairs, "mlp", corruption=lambda embeddings, tokens: embeddings)


def test_remote_needs_a_repo_id():
    with pytest.raises(it.errors.ModelLoadError, match="named by its Hugging Face repo id"):
        it.load_model("organism", remote=True)


# -- what a faithful stand-in catches -----------------------------------------------------------------


def test_saves_collected_in_a_dict_inside_a_trace_come_back_empty(server, remote, local):
    """The engine kept its caches in a dict filled inside the trace: NDIF (and the stand-in) return only top-level
    saved names, so such a dict comes back empty, while a local trace fills it."""
    remote_module.register_package()  # as every engine call does; alone on an xdist worker, no earlier test did it
    ids = torch.tensor([[2, 3, 4, 5]])
    collected: dict[str, torch.Tensor] = {}
    with remote.nn.trace(ids, backend=server(remote.nn, None)):
        collected["h"] = remote.nn.transformer.h[0].output.save()
        top = remote.nn.transformer.h[0].output.save()
    assert collected == {}
    assert top.shape == (1, 4, 64)
    with local.nn.trace(ids):
        collected["h"] = local.nn.transformer.h[0].output.save()
    assert collected["h"].shape == (1, 4, 64)


def test_interp_tests_code_runs_remotely_only_when_registered(server, remote, pairs, monkeypatch):
    from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES

    monkeypatch.setattr(remote_module, "register_package", lambda: None)
    monkeypatch.setattr("interp_tests.engine.register_package", lambda: None)
    monkeypatch.setattr("cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES", _PICKLE_BY_VALUE_MODULES - {"interp_tests"})
    with pytest.raises(RemoteRequestError, match="No module named 'interp_tests'"):
        it.patch(remote, pairs, "mlp")


# -- failures ---------------------------------------------------------------------------------------


def test_a_model_the_server_does_not_serve_is_named(remote, pairs, server):
    other = NdifStandIn(server.server_model, server.model_key.replace(REPO, "local/another"))
    with pytest.raises(ModelNotDeployedError, match="cannot serve .*local/tiny-gpt2.*nnsight.ndif.status"):
        it.patch(it.load_model(REPO, remote=other), pairs, "mlp")


def test_a_result_over_the_inline_limit_is_named(remote, pairs, server):
    small = NdifStandIn(server.server_model, server.model_key, inline_limit=100)
    with pytest.raises(RemoteResultTooLargeError, match="inline limit"):
        it.patch(it.load_model(REPO, remote=small), pairs, "mlp")


def test_server_failures_are_classified():
    key, host = "TransformersModel:{...}", "http://ndif"
    assert isinstance(remote_module.classify_failure("Your job exceeded the execution timeout of 3600s.", key, host),
                      RemoteTimeoutError)
    assert isinstance(remote_module.classify_failure("Missing or invalid API key.", key, host), RemoteAuthError)
    assert isinstance(remote_module.classify_failure("CANT_ACCOMMODATE: placed 0 of 1", key, host), ModelNotDeployedError)
    assert type(remote_module.classify_failure("ValueError: boom", key, host)) is RemoteRequestError


def test_a_failure_is_classified_by_what_failed_not_by_the_paths_in_its_traceback():
    """NDIF sends a traceback for a failure inside the request; its frames name NDIF's own modules
    (``ndif/services/ray/deployments/...``), which once made a user's mistake read as a model not deployed. Both
    descriptions are as the real server sent them (tests/test_ndif_e2e.py), abridged."""
    from ndif_standin import NO_OBJECT_STORE

    key, host = "TransformersModel:{...}", "http://ndif"
    user_mistake = (
        "Traceback (most recent call last):\n"
        '  File "/srv/venv/lib/python3.11/site-packages/ndif/services/ray/deployments/modeling/nns.py", line 183, '
        "in execute_traced_block\n    tracer.execute(tracer.info.code)\n"
        '  File "/home/me/claims.py", line 17, in <module>\n    x = model.transformer.h[7].output.save()\n'
        "AttributeError: 'Envoy' object (nor its module) has attribute '7'"
    )
    error = remote_module.classify_failure(user_mistake, key, host)
    assert type(error) is RemoteRequestError
    assert "h[7]" in str(error)  # the user's line stays in the message
    too_large = remote_module.classify_failure(NO_OBJECT_STORE, key, host)
    assert isinstance(too_large, RemoteResultTooLargeError)
    assert "over the server's inline limit" in str(too_large) and "EndpointConnectionError" in str(too_large)
    assert "File " not in str(too_large)


def test_an_unreachable_server_is_retried_then_named(remote, monkeypatch):
    import socket

    from nnsight import CONFIG

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(CONFIG.API, "HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(remote_module, "RETRY_DELAY_S", 0.0)
    attempts = []
    backend = remote_module.ndif_backend(remote.nn, None)
    real_request = type(backend).__mro__[1].request
    monkeypatch.setattr(type(backend).__mro__[1], "request", lambda self, *a: attempts.append(1) or real_request(self, *a))
    model = it.load_model(REPO, remote=True)
    with pytest.raises(RemoteUnreachableError, match=f"127.0.0.1:{port} after 3 attempts"):
        it.patch(model, ioi_pairs(2), "mlp")
    assert len(attempts) == remote_module.CONNECT_ATTEMPTS


def test_the_public_server_without_an_api_key_is_refused_before_sending(remote, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", "https://api.ndif.us")
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(RemoteAuthError, match="NDIF_API_KEY"):
        remote_module.ndif_backend(remote.nn, None)


def test_host_and_key_come_from_the_environment(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", CONFIG.API.HOST)
    monkeypatch.setattr(CONFIG.API, "APIKEY", CONFIG.API.APIKEY)
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:8001/")
    monkeypatch.setenv("NDIF_API_KEY", "0000")
    remote_module.configure()
    assert (CONFIG.API.HOST, CONFIG.API.APIKEY) == ("http://127.0.0.1:8001", "0000")
    remote_module.configure(host="http://elsewhere:1")
    assert CONFIG.API.HOST == "http://elsewhere:1"
    with pytest.raises(RemoteUnreachableError, match="not a URL"):
        remote_module.configure(host="127.0.0.1:8001")


# -- the pytest plugin ------------------------------------------------------------------------------


def test_a_yaml_claims_file_gives_the_same_numbers_with_remote(pytester, hub, server, local, monkeypatch):
    """The same claims on the local copy and, with `remote: true`, on the stand-in: both pass, one request per
    claim, and the reports hold the same numbers."""
    import json

    monkeypatch.setattr("interp_tests.models.ndif_backend", server)
    hub["pairs"].save(pytester.path / "pairs.jsonl")
    score = it.circuit_patch(local, hub["pairs"], ["0.1", "2.3"]).score
    claims = ("task: {file: pairs.jsonl}\nclaims:\n"
              "  - {name: heads, sweep: {component: attn_head}, expect: {not_detected: ['0.0'], sd: 100}}\n"
              "  - {name: circuit, circuit: {nodes: ['0.1', '2.3'], test: sufficiency}, "
              f"expect: {{score: {{at_least: {score - 1e-6!r}}}}}}}\n")
    pytester.makefile(".yaml", test_local_claims=f"model: {hub['snapshot']}\n" + claims)
    pytester.makefile(".yaml", test_remote_claims=f"model: {REPO}\nremote: true\n" + claims)
    before = len(server.requests)
    result = pytester.runpytest("--interp-no-cache", "--interp-report-dir", "reports", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert len(server.requests) == before + 2
    reports = {
        which: json.loads((pytester.path / "reports" / f"test_{which}_claims.heads.json").read_text())
        for which in ("local", "remote")
    }
    for key in ("mean", "zscores"):
        np.testing.assert_allclose(np.array(reports["remote"][key], dtype=float), np.array(reports["local"][key], dtype=float),
                                   atol=ATOL, rtol=0)
    assert "repo id and revision" in reports["remote"]["settings"]["model_identity"]
    assert reports["remote"]["settings"]["model_fingerprint"] == f"remote:{REPO}@default-branch"
