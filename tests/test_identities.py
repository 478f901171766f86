"""The device a model loads on with ``--interp-device auto``, known without importing torch: "cpu" for a torch
built without CUDA or ROCm, and for a CUDA or ROCm build on a machine that shows no way to reach a GPU. Any sign
of one (a device node, a driver module, nvidia-modprobe, libcuda where the loader finds it) leaves the answer to
torch (None: the model loads), since a wrong "cpu" would key a GPU run's results as CPU ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from interp_tests import identities
from interp_tests.identities import certain_device, torch_build, torch_folder

VERSION_FILES = {  # torch/version.py as the wheels write it (2.13.0+cpu, 2.14.1+cu130, a ROCm build)
    "cpu": "__version__ = '2.13.0+cpu'\ndebug = False\ncuda: Optional[str] = None\nhip: Optional[str] = None\n",
    "cuda": "__version__ = '2.14.1+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n",
    "rocm": "__version__ = '2.14.1+rocm6.4'\ncuda: Optional[str] = None\nhip: Optional[str] = '6.4.43482'\n",
    "unclear": "__version__ = '2.14.1'\ncuda: Optional[str] = '13.0'\n",
}
TRACES = [  # paths under the machine's root, each enough to make "auto" uncertain
    "dev/nvidiactl", "dev/nvidia0", "dev/nvidia-uvm", "dev/dxg", "dev/kfd", "proc/driver/nvidia/version",
    "sys/module/nvidia/refcnt", "sys/module/amdgpu/refcnt", "usr/bin/nvidia-modprobe",
    "usr/lib/x86_64-linux-gnu/libcuda.so.1", "usr/lib/wsl/lib/libcuda.so.1", "usr/lib64/libcuda.so",
    "site-packages/nvidia/cu13/lib/libcuda.so.1",
]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake machine under ``tmp_path``: its root, a torch in ``site-packages/torch`` whose build ``build(name)``
    sets, no loader variables, and a PATH with nothing on it."""
    root = tmp_path / "root"
    folder = root / "site-packages" / "torch"
    folder.mkdir(parents=True)
    (root / "empty-bin").mkdir()
    (root / "dev").mkdir()
    monkeypatch.setattr(identities, "SYSTEM_ROOT", root)
    monkeypatch.setattr(identities, "torch_folder", lambda: folder)
    monkeypatch.setattr(identities.sys, "platform", "linux")
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(root / "empty-bin"))

    def build(name: str) -> Path:
        (folder / "version.py").write_text(VERSION_FILES[name])
        return root

    return build


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("build", ["cpu", "cuda", "rocm"])
@pytest.mark.parametrize("requested", ["cpu", "cuda"])
def test_an_explicit_device_is_the_answer(machine, build, requested):
    touch(machine(build) / "dev" / "nvidia0")
    assert certain_device(requested) == requested


def test_a_cpu_build_loads_on_cpu_even_beside_a_gpu(machine):
    root = machine("cpu")
    for trace in TRACES:
        touch(root / trace)
    assert certain_device("auto") == "cpu"


@pytest.mark.parametrize("build", ["cuda", "rocm"])
def test_a_gpu_build_on_a_machine_without_any_gpu_loads_on_cpu(machine, build):
    touch(machine(build) / "etc" / "ld.so.cache", "libcudart.so.13\0/usr/local/cuda-13.0/lib/libcudart.so.13\0")
    assert certain_device("auto") == "cpu"


@pytest.mark.parametrize("build", ["cuda", "rocm"])
@pytest.mark.parametrize("trace", TRACES)
def test_any_sign_of_a_gpu_leaves_a_gpu_build_to_torch(machine, build, trace):
    touch(machine(build) / trace)
    assert certain_device("auto") is None


@pytest.mark.parametrize("where", ["ld.so.cache", "LD_LIBRARY_PATH", "LD_PRELOAD", "PATH"])
def test_libcuda_or_nvidia_modprobe_where_the_loader_or_shell_finds_them_leaves_it_to_torch(
        machine, monkeypatch, tmp_path, where):
    root = machine("cuda")
    if where == "ld.so.cache":
        touch(root / "etc" / "ld.so.cache", "libcuda.so.1\0/opt/driver/libcuda.so.1\0")
    elif where == "LD_LIBRARY_PATH":
        touch(tmp_path / "driver" / "libcuda.so.1")
        monkeypatch.setenv("LD_LIBRARY_PATH", f"/nowhere:{tmp_path / 'driver'}")
    elif where == "LD_PRELOAD":
        monkeypatch.setenv("LD_PRELOAD", "/opt/remote-gpu/libshim.so")
    else:
        modprobe = tmp_path / "bin" / "nvidia-modprobe"
        touch(modprobe)
        modprobe.chmod(0o755)
        monkeypatch.setenv("PATH", str(modprobe.parent))
    assert certain_device("auto") is None


@pytest.mark.parametrize(("visible", "expected"), [("", "cpu"), ("-1", "cpu"), ("0", None), (None, None)])
def test_cuda_visible_devices_empty_hides_every_gpu_of_a_cuda_build(machine, monkeypatch, visible, expected):
    touch(machine("cuda") / "dev" / "nvidia0")
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert certain_device("auto") == expected


def test_cuda_visible_devices_is_not_trusted_for_a_rocm_build(machine, monkeypatch):
    touch(machine("rocm") / "dev" / "kfd")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert certain_device("auto") is None  # HIP has its own variables (HIP_VISIBLE_DEVICES, ROCR_VISIBLE_DEVICES)


def test_no_answer_without_a_readable_build_or_dev_or_off_linux(machine, monkeypatch):
    machine("unclear")
    assert certain_device("auto") is None
    root = machine("cuda")
    assert certain_device("auto") == "cpu"
    with monkeypatch.context() as patched:  # a /dev this user cannot list could hide device nodes
        patched.setattr(identities.os, "access", lambda path, mode: Path(path) != root / "dev")
        assert certain_device("auto") is None
    monkeypatch.setattr(identities.sys, "platform", "win32")  # no /dev to look at
    assert certain_device("auto") is None
    monkeypatch.setattr(identities, "torch_folder", lambda: None)  # torch not installed
    assert certain_device("auto") is None


def test_the_installed_torch_build_is_read_as_torch_reports_it():
    import torch

    assert torch_build(torch_folder()) == ("rocm" if torch.version.hip else "cuda" if torch.version.cuda else "cpu")
    if certain_device("auto") == "cpu":
        assert not torch.cuda.is_available()
