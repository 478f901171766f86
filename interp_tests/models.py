"""Loading causal LMs and wrapping them in nnsight, with the adapter that locates their components."""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .adapters import Adapter, Shape, adapter_for, shape_of
from .errors import ModelLoadError, RemoteUnsupportedError, WeightsUnavailableError
from .identities import (
    WEIGHTS_PREFIX,
    file_states,
    files_fingerprint,
    hub_offline,
    model_files,
    organism_dir,
    weights_unavailable,
)
from .remote import BackendFactory, configure, ndif_backend
from .specs import ORGANISM, looks_like_path


class PatchableModel:
    """A Hugging Face causal LM under nnsight, plus where its heads, MLPs and residual stream live.

    ``nn`` is the nnsight ``TransformersModel`` that interventions trace through; ``hf`` is the
    underlying ``transformers`` module and ``tokenizer`` its tokenizer. ``files`` are the files it was loaded
    from, tokenizer included, when it was (``identities.model_files``): they identify it in cache keys. A remote
    model (``remote`` set: where its requests go, see ``interp_tests.remote``) is built on the meta device from
    its configuration: its weights are on the server, and every trace runs there (``engine.on_model``).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, name: str, remote: BackendFactory | None = None,
        files: Sequence[Path] | None = None,
    ) -> None:
        """``model`` is a ``transformers`` module, or (for a remote model) the nnsight model built without weights."""
        from nnsight.modeling.transformers import TransformersModel

        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            # Pad ids only fill the right end of shorter prompts, where causal attention never looks.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
        self.name = name
        self.remote = remote
        self.files = None if files is None else list(files)
        self._file_states = None if files is None else file_states(self.files)  # as they were when loaded
        config = model.config if isinstance(model, torch.nn.Module) else model._module.config
        self.adapter: Adapter = adapter_for(config)  # first: an unsupported model is refused before nnsight wraps it
        self.shape: Shape = shape_of(self.adapter.language_config(config))
        if isinstance(model, TransformersModel):
            self.nn = model
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.nn = TransformersModel(model.eval(), tokenizer=tokenizer, task="text-generation")
        hf_model = self.hf
        self._fingerprint: str | None = None
        # transformers 5.24 renamed the forward pass's `past_key_values` to `cache` (the old name is removed in
        # 5.40); earlier 5.x releases only know the old name.
        self.cache_argument = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"

    def __getstate__(self) -> dict[str, Any]:
        """What a remote request carries (nnsight pickles the model into it): the nnsight model, which the server
        resolves to its own copy, and the adapter and shape. The tokenizer stays here; on the server the model is
        a local one."""
        state = self.__dict__.copy()
        state.update(tokenizer=None, remote=None, _fingerprint=None)
        return state

    @property
    def hf(self) -> torch.nn.Module:
        return self.nn._module

    def trace(self, *inputs: Any, **kwargs: Any) -> Any:
        """``nn.trace``, the one way interp-tests traces the model: refused on this machine for a remote model,
        whose traces run inside its request (``engine.on_model``)."""
        if self.remote is not None:
            raise RemoteUnsupportedError(self.remote_refusal("This computation"))
        return self.nn.trace(*inputs, **kwargs)

    def remote_refusal(self, what: str) -> str:
        return (
            f"{what} would run {self.name!r} on this machine, which holds only its configuration and tokenizer "
            "(the model is remote, on NDIF). The methods that run remotely are patch() (exact and attribution), "
            "verify_top, path_patch and circuit_patch on node circuits; for this one, load the model locally "
            "(load_model(..., remote=False) or without --interp-remote)."
        )

    @property
    def n_layers(self) -> int:
        return self.shape.n_layers

    @property
    def n_heads(self) -> int:
        return self.shape.n_heads

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def placement(self) -> str:
        """Where the model runs: ``"remote"``, or the device type (``"cpu"``, ``"cuda"``)."""
        return "remote" if self.remote is not None else self.device.type

    def __repr__(self) -> str:
        s = self.shape
        return f"PatchableModel({self.name!r}, {self.adapter.name}, {s.n_layers} layers x {s.n_heads} heads, d_model {s.d_model})"

    def envoy(self, path: str, layer: int | None = None) -> Any:
        """The nnsight envoy at ``path`` (relative to layer ``layer`` when given)."""
        envoy = self.nn
        if layer is not None:
            for part in self.adapter.layers.split("."):
                envoy = getattr(envoy, part)
            envoy = envoy[layer]
        for part in path.split("."):
            envoy = getattr(envoy, part)
        return envoy

    def hf_module(self, path: str) -> torch.nn.Module:
        if self.remote is not None:
            raise RemoteUnsupportedError(self.remote_refusal("Reading a module's weights"))
        return self.hf.get_submodule(path)

    def fingerprint(self) -> str:
        """What identifies the model in cache keys, so a changed model never reuses a cached result. A remote
        model's weights are not here: it is identified by its repo id and revision (``remote:`` prefix); a local
        one by the hash of the files it was loaded from (``files:...``, computable before loading it) while they are
        as they were then, else (deleted, rewritten, or loaded from memory) of its architecture and every weight
        (``weights:...``)."""
        if self.remote is not None:
            return f"remote:{self.nn.repo_id}@{self.nn.revision or 'default-branch'}"
        if self._fingerprint is None:
            if self.files and self._file_states is not None and file_states(self.files) == self._file_states:
                self._fingerprint = files_fingerprint(self.files)
            else:
                digest = hashlib.blake2b(digest_size=16)
                digest.update(f"{self.hf.config.model_type}:{type(self.hf).__name__}".encode())
                for name, tensor in sorted(self.hf.state_dict().items()):
                    digest.update(name.encode())
                    digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
                self._fingerprint = WEIGHTS_PREFIX + digest.hexdigest()
        return self._fingerprint


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device='cuda' was asked for but torch sees no CUDA device. Use device='cpu' or 'auto'.")
    return device


def _corrupt_file_errors() -> tuple[type[BaseException], ...]:
    """What reading a truncated or damaged weights file raises (safetensors, or torch.load for .bin)."""
    import pickle

    from safetensors import SafetensorError

    return SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError


def _load_pretrained(source: str, local: bool, tokenizer: Any = None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a sweep's own output should not drown in load bars
    offline = hub_offline()
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline and not local)
            if not set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens):
                raise ModelLoadError(
                    f"The tokenizer of {source} has no vocabulary: its tokenizer files (tokenizer.json, or "
                    "vocab.json and merges.txt, ...) are missing. Save them with tokenizer.save_pretrained(dir), "
                    "or pass load_model(..., tokenizer=tokenizer)."
                )
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=offline and not local)
    except _corrupt_file_errors() as error:
        raise ModelLoadError(
            f"The weights of {source} are damaged or truncated and cannot be read ({type(error).__name__}: "
            f"{error}). Write them again with model.save_pretrained(dir)"
            f"{'' if local else ', or delete them from the Hugging Face cache and download them again'}."
        ) from None
    except (OSError, ValueError) as error:
        if local:
            raise ModelLoadError(
                f"Could not load a model from the directory {source}: {error}\n"
                "It needs config.json, the weights (model.safetensors or pytorch_model.bin) and tokenizer "
                "files, as written by model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
            ) from None
        raise weights_unavailable(source) from None
    return model, tokenizer


def load_model(
    spec: str | os.PathLike | torch.nn.Module,
    *,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    remote: bool | BackendFactory = False,
    revision: str | None = None,
) -> PatchableModel:
    """Load a causal LM for patching.

    ``spec`` is ``"organism"`` (the small model shipped with interp-tests), a local directory in HF
    format, a llama2.c checkpoint (``.bin`` or its folder), a hub id such as
    ``"openai-community/gpt2"`` (when its weights are cached or the hub is reachable), or an in-memory
    ``transformers`` model given together with ``tokenizer=``.

    ``remote=True`` runs the hub id ``spec`` (at ``revision``) on NDIF, nnsight's server (host and key from
    ``NDIF_HOST`` / ``NDIF_API_KEY`` or nnsight's config): only its configuration and tokenizer are read here, from
    the Hugging Face cache or the hub. A backend factory instead of True sends the requests elsewhere (tests use
    an in-process stand-in for NDIF).
    """
    if remote:
        return _load_remote(spec, tokenizer=tokenizer, revision=revision, backend=ndif_backend if remote is True else remote)
    target = _resolve_device(device)
    if isinstance(spec, torch.nn.Module):
        if tokenizer is None:
            raise ModelLoadError("An in-memory model needs its tokenizer: load_model(model, tokenizer=tokenizer).")
        name = getattr(spec.config, "name_or_path", "") or type(spec).__name__
        return PatchableModel(spec.to(target), tokenizer, name=name)
    if not isinstance(spec, (str, os.PathLike)):
        raise ModelLoadError(
            f"load_model() takes a name, a path or a transformers model, not {type(spec).__name__}."
        )
    name = os.fspath(spec)
    path = organism_dir() if name == ORGANISM else Path(name).expanduser()
    if name == ORGANISM and not path.is_dir():
        raise ModelLoadError(f"The organism's files are missing from {path}; reinstall interp-tests.")
    if path.is_dir() and (path / "config.json").is_file():
        model, tok = _load_pretrained(str(path), local=True, tokenizer=tokenizer)
    elif path.exists():
        from .llama2c import convert_llama2c, is_llama2c_checkpoint

        if is_llama2c_checkpoint(path):
            model, tok = convert_llama2c(path)
        elif path.is_dir():
            model, tok = _load_pretrained(str(path), local=True, tokenizer=tokenizer)
        else:
            raise ModelLoadError(
                f"{path} is a file but not a llama2.c checkpoint. Pass a Hugging Face model directory "
                "(with config.json), a llama2.c .bin checkpoint, or a hub id."
            )
    else:
        if looks_like_path(name):
            raise ModelLoadError(f"No model at {path}: the path does not exist.")
        model, tok = _load_pretrained(name, local=False, tokenizer=tokenizer)
    files = None if tokenizer is not None else model_files(name)  # a tokenizer given here is not among the files
    return PatchableModel(model.to(target), tokenizer or tok, name=name, files=files)


def _load_remote(spec: Any, *, tokenizer: Any, revision: str | None, backend: BackendFactory) -> PatchableModel:
    """A model on NDIF, built here from its configuration and tokenizer alone (on the meta device)."""
    from nnsight.modeling import huggingface
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    if not isinstance(spec, str) or spec == ORGANISM or Path(spec).expanduser().exists():
        raise ModelLoadError(
            f"remote=True runs a model that an NDIF server holds, named by its Hugging Face repo id (e.g. "
            f"'meta-llama/Llama-3.1-70B'); {spec!r} is not one. Load local models and directories without remote=True."
        )
    configure()
    offline = hub_offline()
    if offline:
        huggingface._ID_CACHE.setdefault(spec, spec)  # the key names the repo as given; the hub is not asked
    try:
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(spec, revision=revision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nn_model = TransformersModel(spec, revision=revision, task="text-generation", tokenizer=tokenizer)
    except (OSError, ValueError) as error:
        raise WeightsUnavailableError(
            f"The configuration and tokenizer of {spec!r} are not available on this machine"
            f"{' (HF_HUB_OFFLINE is set)' if offline else ' and the Hugging Face hub could not be reached'}: {error}\n"
            "A remote model needs only these files here (config.json and the tokenizer files, no weights): "
            f"`huggingface-cli download {spec} config.json tokenizer.json tokenizer_config.json` where the hub is "
            "reachable, and copy the cache (HF_HOME) here."
        ) from None
    return PatchableModel(nn_model, tokenizer, name=spec, remote=backend)
