"""Remote models on NDIF (nnsight's server): which server, and its failures as InterpErrors naming the fix.

A remote model has no weights here: the client holds its configuration and tokenizer, and every method runs its
whole computation as one request (``engine.on_model``: one ``model.nn.session(...)`` whose body nnsight ships as
source; interp-tests' own functions travel with it because the package is registered with ``nnsight.register``).
The server runs the body next to the weights, streams what it prints back as LOG updates (which carry a method's
progress here) and returns only the values the body saved.

A backend factory ``(nnsight_model, progress) -> nnsight Backend`` says where a remote model's requests go:
``ndif_backend`` (NDIF at ``nnsight.CONFIG.API.HOST``) for ``remote=True``, or a stand-in for tests.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

from .errors import (
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteError,
    RemoteRequestError,
    RemoteResultTooLargeError,
    RemoteTimeoutError,
    RemoteUnreachableError,
)

PACKAGE = "interp_tests"
HOST_ENV, API_KEY_ENV = "NDIF_HOST", "NDIF_API_KEY"
PROGRESS_PREFIX = "interp-tests progress "
# Connecting (the websocket subscription and the POST of the request) is retried this many times, waiting
# RETRY_DELAY_S, then twice that, ...: until the server has accepted the request nothing has run, so a retry
# cannot run it twice. Once accepted, a failure is reported, never retried.
CONNECT_ATTEMPTS = 3
RETRY_DELAY_S = 1.0
Progress = Callable[[int, int], None] | None
BackendFactory = Callable[[Any, Progress], Any]


def configure(host: str | None = None, api_key: str | None = None) -> None:
    """Point nnsight at an NDIF server: ``host`` and ``api_key`` when given, else the environment's
    ``NDIF_HOST`` and ``NDIF_API_KEY``, else whatever nnsight's config holds (``nnsight.CONFIG.API``)."""
    from nnsight import CONFIG

    host = host or os.environ.get(HOST_ENV)
    api_key = api_key or os.environ.get(API_KEY_ENV)
    if host:
        if not host.startswith(("http://", "https://")):
            raise RemoteUnreachableError(
                f"NDIF host {host!r} is not a URL: give it with its scheme, e.g. http://127.0.0.1:8001 or "
                "https://api.ndif.us (--interp-ndif-host, or the NDIF_HOST environment variable)."
            )
        CONFIG.API.HOST = host.rstrip("/")
    if api_key:
        CONFIG.API.APIKEY = api_key


def register_package() -> None:
    """Ship interp-tests' own code with each request (the server does not have the package installed)."""
    import nnsight

    nnsight.register(PACKAGE)


def register_metric_module(module: str | None) -> None:
    """Ship the module that defines a user metric with the request too (a conftest.py, a test file), unless it is
    an installed package the server has as well."""
    import sys

    import nnsight

    if module and module in sys.modules and module.split(".")[0] not in ("torch", "numpy", "builtins", PACKAGE):
        nnsight.register(module)


def log_progress(done: int, total: int) -> None:
    """Server side: report progress on stdout, which the server streams to the client as a LOG update."""
    print(f"{PROGRESS_PREFIX}{done}/{total}", flush=True)


def parse_progress(line: str) -> tuple[int, int] | None:
    """``(done, total)`` from a line ``log_progress`` printed, None for any other line."""
    match = re.fullmatch(re.escape(PROGRESS_PREFIX) + r"(\d+)/(\d+)\s*", line)
    return None if match is None else (int(match[1]), int(match[2]))


def model_key(nn_model: Any) -> str:
    """The key NDIF serves the model under: its class, repo id and revision."""
    try:
        return nn_model.to_model_key()
    except Exception as error:  # the hub lookup that canonicalises the repo id
        raise RemoteUnreachableError(
            f"Could not resolve the repo id {nn_model.repo_id!r} on the Hugging Face hub to name the model for NDIF "
            f"({type(error).__name__}: {error}). Set HF_HUB_OFFLINE=1 to use the id as given."
        ) from None


def ndif_backend(nn_model: Any, progress: Progress) -> Any:
    """The nnsight backend that sends one request to NDIF (``remote=True``)."""
    from nnsight import CONFIG

    if "ndif.us" in CONFIG.API.HOST and not CONFIG.API.APIKEY:
        raise RemoteAuthError(
            f"The NDIF server at {CONFIG.API.HOST} needs an API key and none is set: set NDIF_API_KEY (create a key at "
            "https://login.ndif.us), or point --interp-ndif-host / NDIF_HOST at a server that needs none."
        )
    return _ndif_backend_class()(model_key(nn_model), host=CONFIG.API.HOST, progress=progress)


def exception_lines(description: str) -> list[str]:
    """The lines of a server's failure description that say what failed: a Python traceback without its frames
    (``  File ...`` lines and the source under them) and headers, so the paths of the server's own modules
    (``ndif/services/ray/deployments/...``) never decide what kind of failure it was."""
    return [
        line for line in description.strip().splitlines()
        if line.strip() and not line[0].isspace() and line != "Traceback (most recent call last):"
    ]


def classify_failure(description: str, key: str, host: str) -> RemoteError:
    """The InterpError for a failed request, from the server's description of it (NDIF sends a traceback for a
    failure while running the request, a sentence for one before it)."""
    text = description.strip()
    said = exception_lines(text)
    lowered = "\n".join(said).lower()
    where = f"the NDIF server at {host}"
    if "execution timeout" in lowered:
        return RemoteTimeoutError(
            f"{where} stopped the request: {text} A method runs as one request; make it smaller (fewer prompts, "
            "one component kind per sweep, only= for exact re-checks) or ask the server's operator for a longer "
            "timeout."
        )
    if "api key" in lowered or "unauthorized" in lowered or "forbidden" in lowered:
        return RemoteAuthError(
            f"{where} refused the request: {text} Set NDIF_API_KEY (an NDIF API key, from https://login.ndif.us) "
            "or nnsight's CONFIG.API.APIKEY."
        )
    if any(s in lowered for s in ("repository not found", "cant_accommodate", "not deployed", "deploy", "unknownpersistentid")):
        return ModelNotDeployedError(
            f"{where} cannot serve {key}: {text} Check that the server deploys this repo id and revision "
            "(nnsight.ndif.status() lists what it serves), or load the model locally (remote=False)."
        )
    # NDIF hands a result over its inline limit to its object store (S3 through botocore); a blocking request
    # uses the store for nothing else, so its failure means the result was too large to come back inline.
    if re.search(r"object ?store|botocore|\bs3\b|presign", lowered):
        return RemoteResultTooLargeError(
            f"{where} could not return the result: it is over the server's inline limit (about 8 MiB, from its "
            f"redis' pub/sub limits), and uploading it to the server's object store failed ({said[-1]}). "
            "interp-tests' results are kilobytes; fewer prompts per call make them smaller."
        )
    return RemoteRequestError(f"{where} failed to run the request for {key}: {text}")


def _connection_failure(error: BaseException) -> bool:
    """Whether ``error`` happened before the server accepted the request (so a retry cannot run it twice)."""
    import httpx

    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code in (502, 503, 504)
    return isinstance(cause, (httpx.TransportError, ConnectionError, TimeoutError, OSError))


def _http_failure(error: BaseException, key: str, host: str) -> RemoteError:
    import httpx

    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code in (400, 401, 403):
        return classify_failure(f"{error} (HTTP {cause.response.status_code}); api key", key, host)
    if _connection_failure(error):
        return RemoteUnreachableError(
            f"Could not reach the NDIF server at {host} after {CONNECT_ATTEMPTS} attempts "
            f"({type(cause).__name__}: {cause}). Check the host (--interp-ndif-host, NDIF_HOST or nnsight's "
            "CONFIG.API.HOST) and the network; nothing was run."
        )
    return classify_failure(str(error), key, host)


def _ndif_backend_class() -> type:
    """NdifBackend, defined on first use: nnsight's remote backend is only imported for remote runs."""
    global _NDIF_BACKEND
    if _NDIF_BACKEND is not None:
        return _NDIF_BACKEND
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError
    from nnsight.schema.response import Status

    class NdifBackend(RemoteBackend):
        """nnsight's blocking remote backend, with retried connections, progress from the server's LOG updates
        and every failure as an InterpError."""

        def __init__(self, key: str, *, host: str, progress: Progress) -> None:
            super().__init__(key, host=host)
            self.progress = progress
            self.accepted = False

        def request(self, request: Any, tracer: Any) -> Any:
            import websocket

            for attempt in range(CONNECT_ATTEMPTS):
                self.accepted = False
                try:
                    return super().request(request, tracer)
                except RemoteError:
                    raise
                except (NnsightRemoteError, OSError, websocket.WebSocketException) as error:
                    if self.accepted or not _connection_failure(error) or attempt == CONNECT_ATTEMPTS - 1:
                        if isinstance(error, websocket.WebSocketBadStatusException) and error.status_code in (401, 403):
                            raise classify_failure(f"{error}; api key", self.model_key, self.host) from None
                        if self.accepted:
                            raise RemoteRequestError(
                                f"The connection to the NDIF server at {self.host} broke while it ran the request "
                                f"for {self.model_key} ({type(error).__name__}: {error}); run it again."
                            ) from None
                        raise _http_failure(error, self.model_key, self.host) from None
                time.sleep(RETRY_DELAY_S * 2**attempt)
            raise AssertionError("unreachable")

        def _serialize(self, tracer: Any) -> bytes:
            import warnings

            # Pickling an object that does not name its module makes pickle look for it in every imported module,
            # which sets off deprecated modules' import-time warnings (scipy's): noise about nothing this calls.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return super()._serialize(tracer)

        def send(self, request: Any, blob: bytes) -> Any:
            response = self._post(request, blob)
            self.accepted = True
            return self.handle(response)

        def note(self, response: Any) -> bool:
            if response.status == Status.LOG:
                parsed = parse_progress(response.description or "")
                if parsed is not None:
                    if self.progress is not None:
                        self.progress(*parsed)
                    return False
            if response.status == Status.ERROR:
                raise classify_failure(response.description or "", self.model_key, self.host)
            return super().note(response)

        def download_result(self, url: Any) -> Any:
            import httpx

            try:
                return super().download_result(url)
            except httpx.HTTPError as error:
                raise RemoteResultTooLargeError(
                    f"The result for {self.model_key} was larger than the NDIF server at {self.host} returns inline, "
                    f"and downloading it from the server's object store failed ({type(error).__name__}: {error}). "
                    "interp-tests' results are kilobytes; fewer prompts per call make them smaller."
                ) from None

    _NDIF_BACKEND = NdifBackend
    return NdifBackend


_NDIF_BACKEND: type | None = None
