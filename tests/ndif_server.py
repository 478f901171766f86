"""A real NDIF server on 127.0.0.1 for end-to-end tests of remote execution: redis, a Ray head, NDIF's
controller and its API, serving tiny models from a private Hugging Face cache.

NDIF 0.1.2 and its Ray live in their own virtual environment (``bash .ci/ndif-setup`` builds ``.venv-ndif``;
``INTERP_NDIF_VENV`` points at it), apart from the project's, whose versions they would change. The test process
is the client: ``LocalNDIF.client()`` points this process's nnsight at the server. ``/work/shared/ndif/README.md``
(the project's notes on running NDIF on a CPU machine) says why each shim below is needed::

    with LocalNDIF({"local/tiny-gpt2": model_dir}) as server, server.client():
        model = server.model("local/tiny-gpt2")
        with model.trace("When Mary and John", remote=True):
            hidden = model.transformer.h[0].output.save()

Every process the stack starts is a session leader (``start_new_session``), so its daemons (Ray's GCS, raylet,
workers, the API's dispatcher) share its session id; ``stop()`` ends each of them by process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self

VENV_VARIABLE = "INTERP_NDIF_VENV"
INSTALL_COMMAND = "bash .ci/ndif-setup"
# The CPU model actor; this folder is all of the project the server's Python can import.
SHIMS = Path(__file__).resolve().parent / "ndif_shims"
ACTOR_CLASS = "ndif_cpu_actor.CPUModelActor"
# What the fake GPU of the Ray node advertises: NDIF's controller places models by GPU memory.
FAKE_GPU_BYTES = 16 * 1024**3
# Ray's shared-memory object store holds requests and results in flight; tiny models need little.
OBJECT_STORE_BYTES = 200 * 1024**2
# Starts of Ray's head before giving up (see LocalNDIF._start_ray).
RAY_ATTEMPTS = 3
# Ray's start gives its daemons 30 s (hard-coded) to come up and register, which a 2-core machine busy with other
# work exceeds (measured: 3 of 3 starts failed at a load average of 10). Where this process may raise priorities
# (root), Ray's daemons start at a higher one, and go back to this process's priority once Ray listens.
START_PRIORITY = ["nice", "-n", "-10"] if os.geteuid() == 0 else []
# The pipeline task is part of a model's key; offline, neither nnsight nor transformers can infer it from the hub.
TASK = "text-generation"


class ServerNotInstalled(RuntimeError):
    """The local NDIF server's virtual environment (or redis-server) is missing."""


class ServerStartError(RuntimeError):
    """A process of the local NDIF stack failed or did not come up in time; the message holds its log's tail."""


def server_venv() -> Path:
    """The NDIF server's virtual environment named by ``INTERP_NDIF_VENV``, checked to hold what the stack runs."""
    value = os.environ.get(VENV_VARIABLE)
    if not value:
        raise ServerNotInstalled(
            f"{VENV_VARIABLE} is not set: install the local NDIF server with '{INSTALL_COMMAND}' "
            f"and run with {VENV_VARIABLE}=.venv-ndif"
        )
    venv = Path(value).resolve()
    missing = [name for name in ("python", "ray", "gunicorn") if not (venv / "bin" / name).exists()]
    if missing:
        raise ServerNotInstalled(
            f"{VENV_VARIABLE}={value} has no {', '.join(missing)} in bin/: install the local NDIF server "
            f"into it with '{INSTALL_COMMAND} {value}'"
        )
    return venv


def place_in_hub_cache(model_dir: Path, repo_id: str, hub_cache: Path) -> Path:
    """Copy a ``save_pretrained`` folder into ``hub_cache`` as revision ``main`` of ``repo_id``, the layout
    Hugging Face's offline loaders resolve a repo id in; returns the snapshot folder."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log, without the API's refusals of the start's own polling."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(unreadable: {error})"
    kept = [line for line in text.splitlines() if "path=/connected status_code=503" not in line]
    return "\n".join(kept[-lines:]) or "(empty)"


def _stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (a zombie, dead but not yet reaped, is not running)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def session_members(session_ids: set[int]) -> set[int]:
    """Live processes whose session id is one of ``session_ids``."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            # After the state: ppid, pgrp, session.
            if fields is not None and fields[0] != "Z" and int(fields[3]) in session_ids:
                members.add(int(entry.name))
    return members


def environment_mentions(text: str) -> set[int]:
    """Live processes whose environment contains ``text`` (those of other users are unreadable and left out)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "environ").read_bytes():
                    found.add(int(entry.name))
    return found


def rss_bytes(pids: set[int]) -> int:
    """Resident memory of ``pids`` together (shared pages counted once per process)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


@dataclass
class Service:
    """One process the stack started, the leader of its own session, and its log."""

    name: str
    process: subprocess.Popen
    log: Path


# Run in the server's environment: NDIF's own deploy, which waits until each replica's actor has loaded its weights.
DEPLOY_SCRIPT = """
import json, sys
from ndif.cli.lib.deploy import deploy

print("DEPLOYED " + json.dumps(deploy(json.loads(sys.argv[1]), on_message=print)))
"""

# Run by the client's Python: one real remote trace per model, the proof that the server answers.
PROBE_SCRIPT = """
import json, sys
import nnsight, torch
from nnsight.modeling import huggingface
from nnsight.modeling.transformers import TransformersModel
from transformers import AutoTokenizer

host, models, TASK = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
nnsight.CONFIG.API.HOST = host
for repo_id, model_dir in models.items():
    huggingface._ID_CACHE[repo_id] = repo_id
    model = TransformersModel(repo_id, task=TASK, tokenizer=AutoTokenizer.from_pretrained(model_dir))
    with model.trace(torch.tensor([[0, 1, 2]]), remote=True):
        logits = model.output.logits.save()
    assert logits.shape[:2] == (1, 3), logits.shape
    print("SERVED", repo_id, model.to_model_key(), flush=True)
"""


class LocalNDIF:
    """A local NDIF stack serving ``models`` (repo id -> ``save_pretrained`` folder), as a context manager.

    ``host`` is the API's address, ``repo_ids`` the models it serves, ``hub_cache`` the Hugging Face cache they
    are stored in, ``pids()`` every live process of the stack. Leaving the ``with`` block stops them all and
    removes the working folder. ``startup_timeout`` bounds each step of the start (seconds).
    """

    def __init__(self, models: dict[str, Path], *, venv: Path | None = None, startup_timeout: float = 300) -> None:
        if not models:
            raise ValueError("LocalNDIF needs at least one model to serve: {repo_id: save_pretrained folder}.")
        self.venv = venv or server_venv()
        redis = shutil.which("redis-server")
        if redis is None:
            raise ServerNotInstalled(f"redis-server is not on PATH: '{INSTALL_COMMAND}' installs it (Debian's package)")
        self.redis_server = redis
        self.model_dirs = {repo_id: Path(folder) for repo_id, folder in models.items()}
        self.repo_ids = list(models)
        self.startup_timeout = startup_timeout
        self.services: list[Service] = []
        self.model_keys: dict[str, str] = {}
        self.workdir: Path | None = None
        self.host = ""
        # Seconds each step of the start took, in order.
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ start

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        # Short and under /tmp: Ray's unix sockets live below it and their paths may not exceed 107 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="ndif-", dir="/tmp"))
        self.hub_cache = self.workdir / "hf" / "hub"
        self.hub_cache.mkdir(parents=True)
        for repo_id, folder in self.model_dirs.items():
            place_in_hub_cache(folder, repo_id, self.hub_cache)
        self.ports = {name: free_port() for name in ("redis", "api", "store")}
        self.host = f"http://127.0.0.1:{self.ports['api']}"
        bin_dir = self.venv / "bin"

        self._spawn("redis", [self.redis_server, "--bind", "127.0.0.1", "--port", str(self.ports["redis"]),
                              "--save", "", "--appendonly", "no", "--dir", str(self.workdir)], self._server_env())
        self._wait_until("redis listens", lambda: listening(self.ports["redis"]))
        self._lap("redis")
        self._start_ray()
        self._lap("ray")
        env = self._server_env()

        controller = self._spawn("controller", [str(bin_dir / "python"), "-m",
                                                "ndif.services.ray.deployments.controller.controller"], env)
        self._wait_until("the controller is launched", lambda: self._exited(controller))
        self._lap("controller")

        self._spawn("api", [str(bin_dir / "gunicorn"), "--config", "python:ndif.services.api.gunicorn_conf",
                            "--bind", f"127.0.0.1:{self.ports['api']}",
                            # Its default control socket lives in ~/.gunicorn/, shared by every stack.
                            "--no-control-socket", "ndif.services.api.app:app"], env)
        self._wait_until("the API is connected to Ray", self._api_connected)
        self._lap("api")

        # The keys as this client mints them (the server's nnsight cannot: offline, its pipeline finds no tokenizer
        # for a model it builds without weights).
        with self.client():
            self.model_keys = {repo_id: self.model(repo_id).to_model_key() for repo_id in self.repo_ids}
        specs = [
            {"checkpoint": repo_id, "model_key": self.model_keys[repo_id], "size_bytes": _weights_bytes(folder),
             "dtype": "float32", "task": TASK, "actor_class": ACTOR_CLASS, "trusted": True}
            for repo_id, folder in self.model_dirs.items()
        ]
        deployed = self._run("deploy", [str(bin_dir / "python"), "-c", DEPLOY_SCRIPT, json.dumps(specs)], env)
        result = json.loads(deployed.split("DEPLOYED ", 1)[1])
        failed = [d for d in result["deployments"] if d["status"] != "READY"]
        if failed:
            raise ServerStartError(f"NDIF did not deploy {failed}\n\n{self._logs()}")
        self._lap("deploy")

        probe_env = {**os.environ, "HF_HUB_CACHE": str(self.hub_cache), "HF_HUB_OFFLINE": "1"}
        models = {repo_id: str(folder) for repo_id, folder in self.model_dirs.items()}
        self._run("probe", [sys.executable, "-c", PROBE_SCRIPT, self.host, json.dumps(models), TASK], probe_env)
        self._lap("probe")

    def _lap(self, step: str) -> None:
        self.timings[step] = time.monotonic() - self._started - sum(self.timings.values())

    def _start_ray(self) -> None:
        """A Ray head on fresh ports, at ``START_PRIORITY`` until it listens, tried up to ``RAY_ATTEMPTS`` times:
        ``ray start`` gives its raylet 30 s to register, which a machine busy with other work can exceed (the
        raylet then exits, and so does the start)."""
        resources = {"head": 10, "cuda_memory_bytes": FAKE_GPU_BYTES, "cpu_memory_bytes": _total_memory()}
        for attempt in range(1, RAY_ATTEMPTS + 1):
            self.ports.update({name: free_port() for name in ("gcs", "client", "dashboard", "agent")})
            ray = self._spawn("ray", [
                *START_PRIORITY, str(self.venv / "bin" / "ray"), "start", "--head", "--block", "--disable-usage-stats",
                "--node-ip-address=127.0.0.1", f"--port={self.ports['gcs']}",
                f"--ray-client-server-port={self.ports['client']}",
                # Ray's dashboard serves the state API NDIF's controller lists the nodes with.
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.ports['dashboard']}",
                f"--dashboard-agent-listen-port={self.ports['agent']}",
                f"--temp-dir={self.workdir / 'ray' / str(attempt)}",
                # A fake GPU (NDIF's controller ignores nodes without one); a CPU for the controller, one per model.
                "--num-gpus=1", f"--num-cpus={len(self.model_dirs) + 2}", f"--resources={json.dumps(resources)}",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
            ], self._server_env())
            deadline = time.monotonic() + self.startup_timeout
            while ray.process.poll() is None:
                # Printed once the raylet has registered, after which no hard-coded deadline is left.
                if "Ray runtime started" in ray.log.read_text(errors="replace") and listening(self.ports["client"]):
                    for pid in session_members({ray.process.pid}):  # back to the priority of everything else
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0))
                    return
                if time.monotonic() > deadline:
                    raise ServerStartError(f"Waited {self.startup_timeout:.0f} s until Ray listens\n\n{self._logs()}")
                time.sleep(0.5)
            if attempt == RAY_ATTEMPTS:
                raise ServerStartError(f"NDIF's ray exited with {ray.process.returncode}, {attempt} times\n\n{self._logs()}")
            self._end({ray.process.pid})
            ray.name = f"ray (attempt {attempt}, exited with {ray.process.returncode})"

    def _server_env(self) -> dict[str, str]:
        """The environment of every server process: the server's venv first on PATH, only the CPU actor shim on
        PYTHONPATH (never this project), the private Hugging Face cache, offline, and NDIF's settings."""
        inherited = {
            key: value for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HF_HOME", "HF_HUB_CACHE"}
            and not key.startswith(("NDIF_", "RAY_", "NNSIGHT_"))
        }
        ports = self.ports
        return {
            **inherited,
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(SHIMS),
            "HF_HOME": str(self.hub_cache.parent),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Otherwise Ray binds the machine's external address despite --node-ip-address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_ADDRESS": f"127.0.0.1:{ports.get('gcs')}",
            "RAY_USAGE_STATS_ENABLED": "0",
            "NDIF_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}",
            # A native Ray driver, not Ray's client server (ray://), whose per-client server processes fail to start
            # in time on a busy 2-core machine.
            "NDIF_RAY_ADDRESS": f"127.0.0.1:{ports.get('gcs')}",
            # No object store runs: results over ~8 MiB (redis' pub/sub limit) fail instead of being uploaded.
            "NDIF_OBJECT_STORE_URL": f"http://127.0.0.1:{ports['store']}",
            "NDIF_DEFAULT_DTYPE": "float32",
            "NDIF_MODEL_IMPORT_PATH": ACTOR_CLASS,
            "NDIF_HOME": str(self.workdir / "ndif-home"),
        }

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> Service:
        assert self.workdir is not None
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        service = Service(name, process, log)
        self.services.append(service)
        return service

    def _run(self, name: str, command: list[str], env: dict[str, str]) -> str:
        """Run a step to completion (its own session, stopped with the stack); its output, or ServerStartError."""
        service = self._spawn(name, command, env)
        try:
            service.process.wait(self.startup_timeout)
        except subprocess.TimeoutExpired:
            raise ServerStartError(f"NDIF's {name} step took over {self.startup_timeout:.0f} s\n\n{self._logs()}") from None
        if service.process.returncode != 0:
            raise ServerStartError(f"NDIF's {name} step failed (exit {service.process.returncode})\n\n{self._logs()}")
        return service.log.read_text()

    def _exited(self, service: Service) -> bool:
        if service.process.poll() is None:
            return False
        if service.process.returncode != 0:
            raise ServerStartError(f"NDIF's {service.name} exited with {service.process.returncode}\n\n{self._logs()}")
        return True

    def _api_connected(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.host}/connected", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_until(self, what: str, ready: Any) -> None:
        """Poll ``ready()`` until it holds; fail at once, with the logs, when a long-running service exits."""
        deadline = time.monotonic() + self.startup_timeout
        while not ready():
            for service in self.services:
                if service.name in {"redis", "ray", "api"} and service.process.poll() is not None:
                    raise ServerStartError(
                        f"NDIF's {service.name} exited with {service.process.returncode} while waiting until "
                        f"{what}\n\n{self._logs()}"
                    )
            if time.monotonic() > deadline:
                raise ServerStartError(f"Waited {self.startup_timeout:.0f} s until {what}\n\n{self._logs()}")
            time.sleep(0.5)

    def _logs(self) -> str:
        """The tail of every log the stack wrote: each process's own, then Ray's non-empty error logs."""
        parts = [f"--- {service.name} ({service.log}):\n{tail(service.log)}" for service in self.services]
        if self.workdir is not None:
            ray_logs = sorted((self.workdir / "ray").glob("*/session_2*/logs/*.err"), key=lambda p: p.stat().st_mtime)
            for log in [p for p in ray_logs if p.stat().st_size][-4:]:
                parts.append(f"--- Ray {log.name}:\n{tail(log, 20)}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ use

    def pids(self) -> set[int]:
        """Every live process of the stack: the processes it started, everything in their sessions, and any
        process that left them but whose environment names the stack's working folder."""
        return session_members({service.process.pid for service in self.services}) | self._strays()

    def _strays(self) -> set[int]:
        if self.workdir is None:
            return set()
        return environment_mentions(str(self.workdir)) - {os.getpid()}

    @contextlib.contextmanager
    def client(self) -> Iterator[None]:
        """Point this process's nnsight at the server, offline, restoring the previous settings on exit.

        Sets ``nnsight.CONFIG.API.HOST``; fills nnsight's repo-id cache (``_ID_CACHE``, which would otherwise
        ask the hub for each repo's canonical id); and makes Hugging Face's loaders read configurations from the
        server's cache (``huggingface_hub.constants.HF_HUB_CACHE``, read by each lookup). No API key: without
        Postgres (``NDIF_POSTGRES_URL``) NDIF 0.1.2 checks none.
        """
        import huggingface_hub.constants as hub_constants
        import nnsight
        from nnsight.modeling import huggingface

        saved = (nnsight.CONFIG.API.HOST, hub_constants.HF_HUB_CACHE, dict(huggingface._ID_CACHE))
        nnsight.CONFIG.API.HOST = self.host
        hub_constants.HF_HUB_CACHE = str(self.hub_cache)
        huggingface._ID_CACHE.update({repo_id: repo_id for repo_id in self.repo_ids})
        try:
            yield
        finally:
            nnsight.CONFIG.API.HOST, hub_constants.HF_HUB_CACHE = saved[:2]
            huggingface._ID_CACHE.clear()
            huggingface._ID_CACHE.update(saved[2])

    def client_env(self) -> dict[str, str]:
        """Environment variables that point a fresh client process at the server (for subprocess tests).
        nnsight's repo-id cache cannot be filled from the environment: the client must do that itself."""
        return {"NDIF_HOST": self.host, "HF_HUB_CACHE": str(self.hub_cache), "HF_HUB_OFFLINE": "1"}

    def model(self, repo_id: str) -> Any:
        """An nnsight ``TransformersModel`` of ``repo_id`` with no weights (meta tensors), to trace remotely.
        Call it inside ``client()``."""
        from nnsight.modeling.transformers import TransformersModel
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.model_dirs[repo_id])
        return TransformersModel(repo_id, task=TASK, tokenizer=tokenizer)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop every process of the stack by process id and remove the working folder. Safe to call twice."""
        self._end({service.process.pid for service in self.services}, strays=True)
        for service in self.services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(5)  # reaps the processes this one started
        left = self.pids()
        if left:
            raise RuntimeError(f"NDIF processes {sorted(left)} survived SIGKILL")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _end(self, sessions: set[int], strays: bool = False, grace: float = 10.0) -> None:
        """SIGTERM every live process of ``sessions`` (with ``strays``, also those that left the stack's sessions,
        see ``pids``), then SIGKILL what is left after ``grace`` seconds."""

        def members() -> set[int]:
            return session_members(sessions) | (self._strays() if strays else set())

        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid in members():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while members() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not members():
                return


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _weights_bytes(folder: Path) -> int:
    """Size of a model folder's weight files: what NDIF would otherwise estimate from the hub."""
    return sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))


def tiny_models(folder: Path) -> dict[str, Path]:
    """``local/tiny-gpt2`` (2 layers, d_model 64) and ``local/tiny-llama`` (2 layers, d_model 32, 4 query heads
    sharing 2 key-value heads), random with fixed seeds, saved under ``folder`` with the word-level tokenizer of
    ``interp_tests.testing``: built offline, the same on every run."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from interp_tests.testing import save_model, tiny_gpt2

    gpt2, tokenizer = tiny_gpt2(n_layers=2, d_model=64)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        llama = LlamaForCausalLM(config).eval()
    return {
        "local/tiny-gpt2": save_model(gpt2, tokenizer, Path(folder) / "tiny-gpt2"),
        "local/tiny-llama": save_model(llama, tokenizer, Path(folder) / "tiny-llama"),
    }


def env_lines(server: LocalNDIF) -> str:
    """``export`` lines (for a shell's ``.``) that point a client at ``server``: ``LocalNDIF.client_env()``."""
    import shlex

    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in server.client_env().items())


def serve(env_file: Path) -> None:
    """Start the local server with ``tiny_models``, write ``env_file`` (``env_lines``) once it serves, and
    serve until interrupted (Ctrl-C or SIGTERM); then stop every process it started and remove ``env_file``."""
    # Both stop it, even where the shell that started it in the background set it to ignore SIGINT.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="ndif-models-") as models, LocalNDIF(tiny_models(Path(models))) as server:
        partial = env_file.with_name(env_file.name + ".partial")
        partial.write_text(env_lines(server))
        partial.replace(env_file)  # whole or absent: a shell that sources it never reads half of it
        print(f"serving {', '.join(server.repo_ids)} at {server.host}; '. {env_file}' points a client at it; "
              "Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            env_file.unlink(missing_ok=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run the local NDIF server (tiny models) until interrupted.")
    parser.add_argument("env_file", type=Path, help="where to write the client's environment (export lines)")
    serve(parser.parse_args().env_file)
