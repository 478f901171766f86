"""The real local NDIF server of ``tests/ndif_server.py`` against plain PyTorch: remote traces and sessions
return what a local forward pass computes, a remote trace body returns only its top-level saves, a failed start
says why and leaves nothing running, and the stack knows every process it started.

Skipped unless ``INTERP_NDIF_VENV`` names the server's virtual environment (``bash .ci/ndif-setup``); ``.ci/run``
sets it, so CI runs them.
"""

from __future__ import annotations

import operator
from pathlib import Path

import nnsight
import pytest
import torch
from ndif_server import LocalNDIF, ServerStartError, alive
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.ndif

LAYERS = {"local/tiny-gpt2": "transformer.h", "local/tiny-llama": "model.layers"}
PROMPT = "When Mary and John went to the store , John gave a drink to"
OTHER = "When Anna and Tom went to the park , Tom gave a ball to"  # as many tokens as PROMPT


def layers(model, repo_id: str):
    return operator.attrgetter(LAYERS[repo_id])(model)


def local_run(server: LocalNDIF, repo_id: str, prompt: str, hook=None):
    """The plain Hugging Face forward pass of ``prompt`` on the weights the server loaded, with a forward hook
    on the first layer if given: logits and every layer's hidden states."""
    folder = server.model_dirs[repo_id]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = AutoTokenizer.from_pretrained(folder)(prompt, return_tensors="pt").input_ids
    handle = layers(model, repo_id)[0].register_forward_hook(hook) if hook else None
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    if handle is not None:
        handle.remove()
    return out


def test_a_start_that_times_out_says_where_shows_the_logs_and_leaves_nothing_running(ndif_venv, tmp_path):
    """Three seconds are too few for Ray's head to listen: the error names the step and holds the logs' tails,
    and every process started by then (redis, ``ray start`` and the daemons it spawned) is gone afterwards."""
    server = LocalNDIF({"local/tiny": tmp_path}, venv=ndif_venv, startup_timeout=3)
    seen: set[int] = set()
    stop = server.stop

    def record_then_stop():
        seen.update(server.pids())
        stop()

    server.stop = record_then_stop
    with pytest.raises(ServerStartError, match=r"(?s)Waited 3 s until Ray listens.*--- redis.*--- ray") as error, server:
        pass
    assert "Ready to accept connections" in str(error.value)  # redis' log
    assert len(seen) >= 2
    assert not [pid for pid in seen if alive(pid)]
    assert server.workdir is None


@pytest.mark.parametrize("repo_id", LAYERS)
def test_a_remote_trace_returns_what_a_local_forward_pass_computes(ndif_client, repo_id):
    model = ndif_client.model(repo_id)
    with model.trace(PROMPT, remote=True):
        hidden = layers(model, repo_id)[0].output.save()
        logits = model.output.logits.save()
    reference = local_run(ndif_client, repo_id, PROMPT)
    torch.testing.assert_close(hidden, reference.hidden_states[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits, reference.logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("repo_id", LAYERS)
def test_a_session_keeps_values_on_the_server_between_its_traces(ndif_client, repo_id):
    """The first trace's last-token activation patches the second trace without coming back to the client."""
    model = ndif_client.model(repo_id)
    with model.session(remote=True):
        with model.trace(OTHER):
            donor = layers(model, repo_id)[0].output[:, -1]
            donor_logits = model.output.logits.save()
        with model.trace(PROMPT):
            layers(model, repo_id)[0].output[:, -1] = donor
            patched_logits = model.output.logits.save()

    other = local_run(ndif_client, repo_id, OTHER)

    def patch_last_token(module, args, output):
        output = output.clone()
        output[:, -1] = other.hidden_states[1][:, -1]
        return output

    patched = local_run(ndif_client, repo_id, PROMPT, hook=patch_last_token)
    torch.testing.assert_close(donor_logits, other.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(patched_logits, patched.logits, atol=1e-6, rtol=0)
    assert not torch.allclose(patched.logits, local_run(ndif_client, repo_id, PROMPT).logits, atol=1e-3)
    assert "donor" not in locals()  # never saved, so never sent back: nnsight leaves the name unbound


def test_only_saves_bound_to_top_level_names_come_back(ndif_client):
    """The pitfall a remote engine must avoid: a dict filled inside the trace body comes back empty, while the same
    dict passed through ``nnsight.save`` and bound to a name of the body survives."""
    repo_id = "local/tiny-gpt2"
    model = ndif_client.model(repo_id)
    filled: dict[str, torch.Tensor] = {}
    with model.trace(PROMPT, remote=True):
        filled["hidden"] = layers(model, repo_id)[0].output.save()
        saved = nnsight.save({"hidden": layers(model, repo_id)[0].output})
    assert filled == {}
    torch.testing.assert_close(saved["hidden"], local_run(ndif_client, repo_id, PROMPT).hidden_states[1], atol=1e-6, rtol=0)


def test_the_stack_knows_every_process_it_started(ndif_server):
    """What ``stop()`` ends: redis, Ray's daemons and workers (the controller and one actor per model), the API
    and its dispatcher, each found through its session, none through its name."""
    commands = []
    for pid in ndif_server.pids():
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        commands.append(command)
    # multiprocessing.spawn: the API's queue dispatcher, which gunicorn's master spawns.
    for daemon in ("redis-server", "gcs_server", "raylet", "ray::ControllerActor", "gunicorn", "multiprocessing.spawn"):
        assert any(daemon in command for command in commands), daemon
    assert sum("ray::CPUModelActor" in command for command in commands) == len(ndif_server.repo_ids)
