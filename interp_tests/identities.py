"""What identifies a model in cache keys without loading it, and therefore without importing torch.

A model loaded from files (the organism, a model directory, a llama2.c checkpoint) is identified by the bytes
of those files, tokenizer files included: ``files:<hash>``. Each file's hash is streamed once and memoised per
path, size, mtime, ctime and inode, in the process and (given a directory) on disk, so a warm run of a large
model re-reads nothing. A model built in memory is identified by its loaded weights instead
(``PatchableModel.fingerprint``: ``weights:<hash>``); the prefixes keep the two from ever colliding. The
pytest plugin looks cached results up with these identities before it loads any model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import WeightsUnavailableError
from .files import atomic_write
from .specs import ORGANISM

FILES_PREFIX = "files:"
WEIGHTS_PREFIX = "weights:"
CHUNK = 2**20
_digests: dict[tuple[str, int, int, int, int], str] = {}


def organism_dir() -> Path:
    return Path(__file__).resolve().parent / "organism" / "model"


def model_files(spec: str) -> list[Path] | None:
    """The files ``load_model(spec)`` reads: every file of a model directory; a llama2.c checkpoint file and the
    ``tok*`` tokenizer files beside it. None for a hub id or a path that does not exist (nothing to hash)."""
    path = organism_dir() if spec == ORGANISM else Path(spec).expanduser()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    elif path.is_file():
        files = [path, *(p for p in path.parent.glob("tok*") if p.is_file() and p != path)]
    else:
        return None
    return sorted(p.resolve() for p in files) or None


def file_digest(path: Path, memo_dir: Path | None = None) -> str:
    """The BLAKE2b hash of a file's bytes, memoised per (path, size, mtime, ctime, inode)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key in _digests:
        return _digests[key]
    memo = None if memo_dir is None else memo_dir / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.json"
    try:
        digest = json.loads(memo.read_text(encoding="utf-8"))["digest"] if memo is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        digest = None
    if not isinstance(digest, str):
        hasher = hashlib.blake2b(digest_size=16)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        digest = hasher.hexdigest()
        if memo is not None:
            atomic_write(memo, json.dumps({"file": key[0], "digest": digest}))
    _digests[key] = digest
    return digest


def file_states(files: Sequence[Path]) -> list[tuple[int, int, int, int]] | None:
    """Each file's size, mtime, ctime and inode (any write changes one of them); None when one is gone."""
    try:
        return [(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino) for stat in (path.stat() for path in files)]
    except OSError:
        return None


def files_fingerprint(files: Sequence[Path], memo_dir: Path | None = None) -> str:
    """``files:<hash>`` of the files' names and bytes: a changed, added or removed file changes it."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        digest.update(f"{path.name}\0{file_digest(path, memo_dir)}\0".encode())
    return FILES_PREFIX + digest.hexdigest()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def weights_unavailable(source: str) -> WeightsUnavailableError:
    """The error (a skip in pytest) for a hub model whose weights are not on this machine."""
    return WeightsUnavailableError(
        f"The weights of {source!r} are not available on this machine"
        f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ' and the Hugging Face hub could not be reached'}.\n"
        f"Download them where the hub is reachable (`huggingface-cli download {source}`) and copy the "
        "cache (HF_HOME) here, or save the model with save_pretrained(dir) and pass load_model(dir)."
    )


def hub_weights_missing(spec: str) -> bool:
    """Whether loading the hub id ``spec`` certainly fails for want of weights: offline, and its config is not in
    the local Hugging Face cache. Known without torch, so such a claim skips without loading anything."""
    if spec == ORGANISM or Path(spec).expanduser().exists() or not hub_offline():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return not isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except ValueError:  # not a valid repo id: loading it reports that
        return False


def certain_device(requested: str) -> str | None:
    """The device type ``load_model(device=requested)`` puts a model on, where that is certain without torch:
    the one asked for; for "auto", "cpu" when torch is built without CUDA or ROCm, or, for a CUDA or ROCm build,
    when this machine shows no way to reach a GPU. None when only importing torch can tell."""
    if requested != "auto":
        return requested
    folder = torch_folder()
    build = None if folder is None else torch_build(folder)
    if build == "cpu":
        return "cpu"
    if build == "cuda" and os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return "cpu"  # CUDA then shows torch no device
    if build is not None and sys.platform.startswith("linux") and not gpu_driver_traces(folder.parent):
        return "cpu"
    return None


def torch_folder() -> Path | None:
    """The installed torch package's folder, found without importing it."""
    spec = importlib.util.find_spec("torch")
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def torch_build(folder: Path) -> str | None:
    """"cpu", "cuda" or "rocm": what torch is built for, read from its ``version.py`` (``cuda = '13.0'``,
    ``hip = None``). None when that file is missing or unclear."""
    try:
        text = (folder / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    built = {}
    for name in ("cuda", "hip"):
        match = re.search(rf"^{name}\b[^=\n]*=\s*(.+)$", text, re.MULTILINE)
        if match is None:
            return None
        built[name] = match.group(1).strip() != "None"
    if built["cuda"] and built["hip"]:
        return None
    return "rocm" if built["hip"] else "cuda" if built["cuda"] else "cpu"


# What any way of reaching a GPU from Linux leaves on the machine, relative to ``SYSTEM_ROOT``: device nodes of the
# NVIDIA driver, WSL and ROCm; a loaded NVIDIA or AMD kernel module (nvidia-modprobe can then still make the
# nodes); nvidia-modprobe (it can load the module); the CUDA driver library, libcuda, through which torch reaches
# every CUDA device (a GPU on another machine too), wherever the dynamic loader looks for it.
DRIVER_PATTERNS = (
    "dev/nvidia*", "dev/dxg", "dev/kfd", "proc/driver/nvidia", "sys/module/nvidia", "sys/module/amdgpu",
    "bin/nvidia-modprobe", "sbin/nvidia-modprobe", "usr/bin/nvidia-modprobe", "usr/sbin/nvidia-modprobe",
    "lib/libcuda.so*", "lib/*/libcuda.so*", "lib64/libcuda.so*", "usr/lib/libcuda.so*", "usr/lib/*/libcuda.so*",
    "usr/lib/wsl/lib/libcuda.so*", "usr/lib64/libcuda.so*", "usr/local/lib/libcuda.so*",
)
SYSTEM_ROOT = Path("/")


def gpu_driver_traces(site_packages: Path) -> list[str]:
    """Every sign that torch might see a GPU: ``DRIVER_PATTERNS``, libcuda in the loader's cache, on
    LD_LIBRARY_PATH or among the pip-installed NVIDIA libraries, a preloaded library, nvidia-modprobe on PATH.
    Empty only when it certainly cannot."""
    traces = [str(path) for pattern in DRIVER_PATTERNS for path in SYSTEM_ROOT.glob(pattern)]
    if not os.access(SYSTEM_ROOT / "dev", os.R_OK | os.X_OK):
        traces.append("/dev cannot be listed")  # its device nodes could be there
    try:
        if b"libcuda.so" in (SYSTEM_ROOT / "etc" / "ld.so.cache").read_bytes():
            traces.append("libcuda in /etc/ld.so.cache")
    except FileNotFoundError:
        pass
    except OSError:
        traces.append("/etc/ld.so.cache is unreadable")
    folders = [Path(folder) for folder in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if folder]
    traces += [str(path) for folder in folders for path in folder.glob("libcuda.so*")]
    traces += [str(path) for path in (site_packages / "nvidia").glob("**/libcuda.so*")]
    if os.environ.get("LD_PRELOAD", "").strip():
        traces.append("LD_PRELOAD is set")
    if shutil.which("nvidia-modprobe"):
        traces.append("nvidia-modprobe on PATH")
    return traces
