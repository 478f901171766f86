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
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    qkv_layout: str = "separate"

    def qkv_slice(self, which: str, head: int, n_heads: int, d_head: int) -> tuple[str, slice]:
        """The module (relative to a layer) whose output holds head ``head``'s ``which`` ("q", "k" or "v")
        input, and that head's feature slice of it."""
        path = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj}[which]
        if path is None:
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter does not say where the heads' {which} inputs are: register it with "
                "q_proj=, k_proj=, v_proj= (and qkv_layout= for a fused projection) to patch paths into them."
            )
        i = "qkv".index(which)
        if self.qkv_layout == "stacked":
            start = i * n_heads * d_head + head * d_head
        elif self.qkv_layout == "per_head":
            start = (3 * head + i) * d_head
        elif self.qkv_layout == "separate":
            start = head * d_head
        else:
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter's qkv_layout={self.qkv_layout!r} is not 'separate', 'stacked' or 'per_head'."
            )
        return path, slice(start, start + d_head)


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
    Adapter("gpt2", ("gpt2",), "transformer.h", "transformer.wte", "attn.c_proj", "attn", "mlp",
            q_proj="attn.c_attn", k_proj="attn.c_attn", v_proj="attn.c_attn", qkv_layout="stacked"),
    Adapter("gpt-neox", ("gpt_neox",), "gpt_neox.layers", "gpt_neox.embed_in", "attention.dense", "attention", "mlp",
            q_proj="attention.query_key_value", k_proj="attention.query_key_value",
            v_proj="attention.query_key_value", qkv_layout="per_head"),
    Adapter("llama", ("llama", "mistral", "qwen2"), "model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn", "mlp",
            q_proj="self_attn.q_proj", k_proj="self_attn.k_proj", v_proj="self_attn.v_proj"),
    Adapter("gpt-j", ("gptj",), "transformer.h", "transformer.wte", "attn.out_proj", "attn", "mlp",
            q_proj="attn.q_proj", k_proj="attn.k_proj", v_proj="attn.v_proj"),
):
    register_adapter(_adapter)
