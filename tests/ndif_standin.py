"""An in-process stand-in for an NDIF server's round trip, for fast tests of every remote engine path.

It does what NDIF 0.1.2 does with a request (ndif services/ray/deployments/modeling/base.py ``run``/``execute`` and
nns.py), in-process: the client side is interp-tests' own NDIF backend with only the network replaced, so the
request is serialised by nnsight's ``RequestModel.serialize`` exactly as for NDIF (local modules registered by
``pull_env``, interp-tests by ``nnsight.register``). The server side runs on a worker thread (as NDIF's actor
does: its own nnsight save set), with every package an NDIF server lacks made unimportable (interp_tests,
pytest, hypothesis, scipy, ...: only the standard library and the distributions nnsight needs stay) while it
deserialises the request with ``RequestModel.deserialize`` against a separately loaded model that has the
weights, executes it as ``execute_traced_block`` does (the values of top-level names marked saved), and writes the
result with ``torch.save``. Its stdout comes back line by line as LOG updates; a failure comes back as an ERROR
update with the exception's text; the result comes back inline through ``torch.load`` (the client's
``finalize``), or, over ``inline_limit`` bytes, as the error NDIF gives without an object store.

nnsight's own ``remote="local"`` is no stand-in: it re-runs the block in the caller's frame (so saves in a dict
come back) and leaves installed packages importable (so unregistered code runs).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.metadata
import io
import linecache
import queue
import re
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from interp_tests.remote import Progress, _ndif_backend_class, model_key

INLINE_LIMIT = 8 * 2**20  # NDIF returns results up to its redis pub/sub limit inline (shared/ndif/README.md)
# What NDIF 0.1.2 sends (as an ERROR update) for a result over that limit when its object store cannot be reached,
# as measured against the real local server (tests/test_ndif_e2e.py), its traceback abridged.
NO_OBJECT_STORE = """Traceback (most recent call last):
  File "/srv/venv/lib/python3.11/site-packages/ndif/common/providers/objectstore.py", line 160, in put
    cls._ensure_bucket()
  File "/srv/venv/lib/python3.11/site-packages/botocore/httpsession.py", line 540, in send
    raise EndpointConnectionError(endpoint_url=request.url, error=e)
botocore.exceptions.EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:9000/ndif-results\""""


class ObjectStoreUnreachable(Exception):
    """The stand-in's result was over its inline limit: NDIF would upload it to an object store there is none of."""

    description = NO_OBJECT_STORE


@functools.cache
def server_packages() -> frozenset[str]:
    """Import names an NDIF server has: the standard library's and those of nnsight's distributions, transitively."""
    owners = importlib.metadata.packages_distributions()
    wanted, seen = ["nnsight", "torch", "transformers", "numpy"], set()
    while wanted:
        name = re.split(r"[ ;<>=!~\[(]", wanted.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        wanted += [r for r in requirements if "extra ==" not in r]
    names = {module for module, dists in owners.items() if any(d.lower().replace("_", "-") in seen for d in dists)}
    return frozenset(names | set(sys.stdlib_module_names) | {"__main__"})


@contextlib.contextmanager
def packages_hidden(kept: frozenset[str]) -> Iterator[None]:
    """Every imported module outside ``kept`` removed from ``sys.modules``, and importing one refused (whatever
    finder would find it: an editable install's too), as on a server without it; restored afterwards."""
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] not in kept}
    blocker = _Unimportable(kept)
    sys.meta_path.insert(0, blocker)
    try:
        yield
    finally:
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


class _Unimportable(importlib.abc.MetaPathFinder):
    """A finder that refuses every top-level package outside ``kept``."""

    def __init__(self, kept: frozenset[str]) -> None:
        self.kept = kept

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] not in self.kept:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not installed on the server)", name=fullname)
        return None


@contextlib.contextmanager
def own_class_tracker() -> Iterator[None]:
    """cloudpickle, unpickling a class shipped by value, reuses (and overwrites the methods of) a class of the same
    tracker id that this process already has: the client's own class, in-process. A server is another process and
    builds its own copies; so does the stand-in, with a tracker of its own while it runs."""
    from cloudpickle import cloudpickle

    saved = cloudpickle._DYNAMIC_CLASS_TRACKER_BY_ID, cloudpickle._DYNAMIC_CLASS_TRACKER_BY_CLASS
    cloudpickle._DYNAMIC_CLASS_TRACKER_BY_ID = weakref.WeakValueDictionary()
    cloudpickle._DYNAMIC_CLASS_TRACKER_BY_CLASS = weakref.WeakKeyDictionary()
    try:
        yield
    finally:
        cloudpickle._DYNAMIC_CLASS_TRACKER_BY_ID, cloudpickle._DYNAMIC_CLASS_TRACKER_BY_CLASS = saved


@contextlib.contextmanager
def block_scope() -> Iterator[None]:
    """ndif's nns.block_scope: a request's linecache and nnsight block-cache entries do not outlive it."""
    from nnsight.tracing.globals import BLOCKS, SOURCES

    saved = dict(linecache.cache), dict(SOURCES), dict(BLOCKS)
    try:
        yield
    finally:
        for cache, snapshot in zip((linecache.cache, SOURCES, BLOCKS), saved):
            cache.clear()
            cache.update(snapshot)


class LineStream(io.TextIOBase):
    """A stdout that hands each complete line to ``emit`` (ndif's LogStream)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.partial = emit, ""

    def write(self, text: str) -> int:
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self.emit(line)
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.emit(self.partial)
            self.partial = ""


@dataclass
class Request:
    """One request the stand-in served: its payload and result sizes, in bytes."""

    model_key: str
    payload_bytes: int
    result_bytes: int | None = None
    error: str | None = None


@dataclass
class NdifStandIn:
    """A server holding ``server_model`` (an nnsight model with weights) under ``model_key``; pass it as
    ``load_model(repo_id, remote=standin)``. ``requests`` records every request served."""

    server_model: Any
    model_key: str
    inline_limit: int = INLINE_LIMIT
    requests: list[Request] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def __call__(self, nn_model: Any, progress: Progress) -> Any:
        return _standin_backend_class()(self, model_key(nn_model), progress)

    def serve(self, model_key: str, payload: bytes, compress: bool, log: Callable[[str], None]) -> bytes:
        """What NDIF's model actor does with a request: the result blob (``torch.save`` bytes), or an exception."""
        record = Request(model_key, len(payload))
        self.requests.append(record)
        if model_key != self.model_key:
            raise LookupError(f"Repository Not Found: this stand-in serves {self.model_key}, not {model_key}")
        outcome: dict[str, Any] = {}
        kept = server_packages()

        def execute() -> None:
            from nnsight.schema.request import RequestModel
            from nnsight.tracing.tracer import _saves, dec, inc

            stream = LineStream(lines.put)
            try:
                with block_scope(), own_class_tracker(), packages_hidden(kept), contextlib.redirect_stdout(stream):
                    tracer = RequestModel.deserialize(
                        payload, self.server_model._remoteable_persistent_objects(), compress=compress
                    )
                    inc()
                    try:
                        tracer.execute(tracer.info.code)
                        saves = _saves()
                        saved = {name: v for name, v in tracer.info.frame.f_locals.items() if id(v) in saves}
                    finally:
                        dec()
                    buffer = io.BytesIO()
                    torch.save(saved, buffer)
                    blob = buffer.getvalue()
                    if compress:  # ndif's prepare_result: compressed as the request was
                        import zstandard

                        blob = zstandard.ZstdCompressor(level=6).compress(blob)
                    outcome["blob"] = blob
            except Exception as error:  # the server reports any failure as an ERROR update
                outcome["error"] = error
            finally:
                stream.flush()

        # The server's stdout lines reach the client while it waits, on the client's thread (as over the websocket),
        # so a progress callback that raises (KeyboardInterrupt) stops the waiting; the server finishes its request.
        lines: queue.Queue[str] = queue.Queue()
        worker = threading.Thread(target=execute, name="ndif-standin-actor")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the server's warnings go to its stderr, not the client's
            worker.start()
            try:
                while worker.is_alive() or not lines.empty():
                    try:
                        log(lines.get(timeout=0.01))
                    except queue.Empty:
                        pass
            finally:
                worker.join()
        if "error" in outcome:
            import traceback

            record.error = "".join(traceback.format_exception(outcome["error"]))
            raise outcome["error"]
        blob = outcome["blob"]
        record.result_bytes = len(blob)
        if len(blob) > self.inline_limit:
            raise ObjectStoreUnreachable(NO_OBJECT_STORE)
        return blob


def _standin_backend_class() -> type:
    """interp-tests' NDIF backend with the network replaced by ``NdifStandIn.serve``."""
    from nnsight.schema.response import ResponseModel, Status

    class StandInBackend(_ndif_backend_class()):
        def __init__(self, server: NdifStandIn, key: str, progress: Progress) -> None:
            super().__init__(key, host="http://ndif-standin", progress=progress)
            self.server = server

        def request(self, request: Any, tracer: Any) -> Any:
            payload = self._serialize(tracer)

            def log(line: str) -> None:
                self.server.logs.append(line)
                self.handle(ResponseModel(id="standin", status=Status.LOG, description=line))

            try:
                blob = self.server.serve(self.model_key, payload, request.compress, log)
            except Exception as error:
                description = getattr(error, "description", f"{type(error).__name__}: {error}")
                self.handle(ResponseModel(id="standin", status=Status.ERROR, description=description))
                raise AssertionError("an ERROR update raises") from error
            return self.handle(ResponseModel(id="standin", status=Status.COMPLETED, data=blob))

    return StandInBackend
