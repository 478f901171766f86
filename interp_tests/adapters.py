"""Where each architecture keeps the activations that patching reads and writes.

Every supported model family is one ``Adapter``: module paths relative to the model (as nnsight and
``named_modules`` see them). Adding an architecture means registering one more adapter, not touching
the patching engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family.

    ``head_out`` is the attention output projection, relative to a layer: its *input* is the
    concatenation of all heads' outputs, which is where per-head patching happens. ``attn`` and
    ``mlp`` are relative to a layer and patched at their output; the residual stream before a block
    is that block's input.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    embed: str
    head_out: str
    attn: str
    mlp: str
    unembed: str = "lm_head"


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter) -> None:
    """Teach interp-tests a new architecture, keyed by the HF config's ``model_type``."""
    for model_type in adapter.model_types:
        _ADAPTERS[model_type] = adapter


def adapter_for(config: Any) -> Adapter:
    model_type = getattr(config, "model_type", None)
    if model_type in _ADAPTERS:
        return _ADAPTERS[model_type]
    raise UnsupportedArchitectureError(
        f"interp-tests has no adapter for model_type {model_type!r}. Supported: {supported_model_types()}. "
        "Register one with interp_tests.register_adapter(Adapter(name=..., model_types=(...,), layers=..., "
        "embed=..., head_out=..., attn=..., mlp=...)), giving the module paths as printed by print(model)."
    )


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def _config_int(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UnsupportedArchitectureError(f"The model config has none of {names}; cannot read its shape.")


@dataclass(frozen=True)
class Shape:
    n_layers: int
    n_heads: int
    d_head: int
    d_model: int
    n_ctx: int | None


def shape_of(config: Any) -> Shape:
    n_layers = _config_int(config, "num_hidden_layers", "n_layer")
    n_heads = _config_int(config, "num_attention_heads", "n_head")
    d_model = _config_int(config, "hidden_size", "n_embd")
    head_dim = getattr(config, "head_dim", None)
    d_head = head_dim if isinstance(head_dim, int) else d_model // n_heads
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return Shape(n_layers=n_layers, n_heads=n_heads, d_head=d_head, d_model=d_model, n_ctx=n_ctx)


for _adapter in (
    Adapter("gpt2", ("gpt2",), "transformer.h", "transformer.wte", "attn.c_proj", "attn", "mlp"),
    Adapter("gpt-neox", ("gpt_neox",), "gpt_neox.layers", "gpt_neox.embed_in", "attention.dense", "attention", "mlp"),
    Adapter("llama", ("llama", "mistral", "qwen2"), "model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn", "mlp"),
    Adapter("gpt-j", ("gptj",), "transformer.h", "transformer.wte", "attn.out_proj", "attn", "mlp"),
):
    register_adapter(_adapter)
