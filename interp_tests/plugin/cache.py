"""On-disk cache of patching sweeps, safe under concurrent pytest-xdist workers.

A sweep's key hashes everything that determines its numbers (model and dataset fingerprints, sweep
settings, library version), so re-running an unchanged claim costs no forward pass and any change
recomputes. Each entry is one file: a JSON header line (format, key, the key's settings, SHA-256 and
size of the payload) followed by the result's ``.npz`` bytes. Entries are written with
``files.atomic_write``, so a reader sees a whole entry or none; a per-key ``filelock`` lock (an OS lock on
Linux, macOS and Windows, released when its holder dies) makes workers that want the same sweep wait for
the one computing it and then read its entry, for at most ``LOCK_TIMEOUT`` seconds.
An entry that fails any check is recomputed, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import InterpError
from ..files import atomic_write

ENTRY_FORMAT = 1
# How long a worker waits for another one computing the same sweep (a GPT-2-size sweep takes minutes).
LOCK_TIMEOUT = 3600.0
# What the cache directory holds besides its .gitignore: sweep entries and their locks, GN checks.
CONTENTS = ("sweeps", "checks")
GITIGNORE = "# Created by interp-tests: cached patching sweeps, safe to delete.\n*\n"


def canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def sweep_key(settings: Mapping[str, Any]) -> str:
    """A stable hash of the settings that determine a sweep's numbers."""
    return hashlib.sha256(canonical(settings).encode()).hexdigest()[:32]


class SweepCache:
    """Sweep results stored under ``directory``, one entry file per key."""

    def __init__(self, directory: str | os.PathLike, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.directory = Path(directory)
        self.sweeps = self.directory / "sweeps"
        self.lock_timeout = lock_timeout

    def entry_path(self, key: str) -> Path:
        return self.sweeps / f"{key}.sweep"

    def _prepare(self) -> None:
        self.sweeps.mkdir(parents=True, exist_ok=True)
        ignore = self.directory / ".gitignore"
        if not ignore.exists():
            atomic_write(ignore, GITIGNORE)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock: one worker computes a sweep while the others wait for its entry."""
        self._prepare()
        path = self.sweeps / f"{key}.lock"
        try:
            lock = FileLock(path, timeout=self.lock_timeout)
            lock.acquire()
        except Timeout:
            raise InterpError(
                f"Waited {self.lock_timeout:g} s for the sweep cache lock {path}: another process holds it, "
                "computing the same sweep (or hung). Let it finish, stop it, or run with --interp-no-cache."
            ) from None
        try:
            yield
        finally:
            lock.release()

    def clear(self) -> int:
        """Delete every cached entry and check; returns how many files went. The directory and its
        .gitignore stay."""
        removed = 0
        for name in CONTENTS:
            folder = self.directory / name
            if folder.is_dir():
                removed += sum(1 for path in folder.rglob("*") if path.is_file() and path.suffix != ".lock")
                shutil.rmtree(folder)
        return removed

    def read(
        self, key: str, settings: Mapping[str, Any], load: Callable[[bytes], Any] | None = None
    ) -> tuple[Any, str | None]:
        """The cached result, or None and why an existing entry was rejected (None when there is none).

        ``load`` turns the payload into the result (default: a sweep's ``PatchResult``)."""
        from ..results import PatchResult

        path = self.entry_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as error:
            return None, f"unreadable ({error.strerror})"
        head, newline, payload = data.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError:
            return None, "its header is not JSON"
        if not newline or not isinstance(header, dict):
            return None, "it has no header"
        if header.get("format") != ENTRY_FORMAT:
            return None, f"it has entry format {header.get('format')!r}, expected {ENTRY_FORMAT}"
        if header.get("key") != key or canonical(header.get("settings", {})) != canonical(settings):
            return None, "its settings do not match its key"
        if header.get("size") != len(payload) or header.get("sha256") != hashlib.sha256(payload).hexdigest():
            return None, "its checksum does not match (truncated or modified)"
        try:
            return (PatchResult.load(io.BytesIO(payload)) if load is None else load(payload)), None
        except InterpError as error:
            return None, f"its result is unreadable ({error})"

    def write(self, key: str, settings: Mapping[str, Any], result: Any) -> None:
        """Store ``result`` (anything with ``to_bytes()``: a sweep, a circuit score, a subset search)."""
        self._prepare()
        payload = result.to_bytes()
        header = {
            "format": ENTRY_FORMAT,
            "key": key,
            "settings": json.loads(canonical(settings)),
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        atomic_write(self.entry_path(key), canonical(header).encode() + b"\n" + payload)
