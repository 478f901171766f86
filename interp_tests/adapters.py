"""Where each architecture keeps the activations that patching reads and writes.

Every supported model family is one ``Adapter``: module paths relative to the model (as nnsight and
``named_modules`` see them). Adding an architecture means registering one more adapter, not touching
the patching engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedArchitectureError


QKV_LAYOUTS = ("separate", "stacked", "per_head")


@dataclass(frozen=True)
class Adapter:
    """Module paths of one architecture family: a row of data, no code.

    ``head_out`` is the attention output projection, relative to a layer: its *input* is the
    concatenation of all heads' outputs, which is where per-head patching happens. ``attn`` and
    ``mlp`` are relative to a layer and patched at their output (for blocks with a norm after the
    sublayer, as in Gemma 2/3 and OLMo 2, that is the value *before* it: the norm is per position, so
    restoring its input restores its output). The residual stream before a block is that block's input.

    ``q_proj``/``k_proj``/``v_proj`` are the modules whose outputs hold each head's query, key and value
    inputs (for path patching), laid out as ``qkv_layout`` says: ``"separate"`` (one module each, heads
    side by side), ``"stacked"`` (one fused module: all queries, then all keys, then all values) or
    ``"per_head"`` (one fused module: head 0's q, k, v, then head 1's, ...). ``text_config`` names the
    attribute of a multimodal model's config that holds its language model's config.
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    embed: str
    head_out: str
    attn: str
    mlp: str
    q_proj: str | None = None
    k_proj: str | None = None
    v_proj: str | None = None
    qkv_layout: str = "separate"
    text_config: str | None = None

    def __post_init__(self) -> None:
        if self.qkv_layout not in QKV_LAYOUTS:
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter's qkv_layout={self.qkv_layout!r} is not one of {list(QKV_LAYOUTS)}."
            )
        declared = [p is not None for p in (self.q_proj, self.k_proj, self.v_proj)]
        if any(declared) and not all(declared):
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter declares only some of q_proj, k_proj, v_proj: give all three "
                "(the same path three times for a fused projection) or none."
            )
        if not self.model_types or not all(isinstance(t, str) and t for t in self.model_types):
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter's model_types={self.model_types!r} must be a non-empty tuple of "
                "config model_type strings."
            )

    def language_config(self, config: Any) -> Any:
        """The config that describes the language model (the model's own, or its ``text_config``)."""
        if self.text_config is None:
            return config
        inner = getattr(config, self.text_config, None)
        if inner is None:
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter reads the language model's config from config.{self.text_config}, "
                f"which this {getattr(config, 'model_type', '?')!r} config does not have."
            )
        return inner

    def qkv_slice(self, which: str, head: int, n_heads: int, n_kv_heads: int, d_head: int) -> tuple[str, slice]:
        """The module (relative to a layer) whose output holds head ``head``'s ``which`` ("q", "k" or "v")
        input, and that head's feature slice of it. Under grouped-query attention a key or value slice is
        that of the KV head the query head reads."""
        path = {"q": self.q_proj, "k": self.k_proj, "v": self.v_proj}[which]
        if path is None:
            raise UnsupportedArchitectureError(
                f"The {self.name!r} adapter does not say where the heads' {which} inputs are: register it with "
                "q_proj=, k_proj=, v_proj= (and qkv_layout= for a fused projection) to patch paths into them."
            )
        slot = head if which == "q" else head // (n_heads // n_kv_heads)
        if self.qkv_layout == "stacked":
            start = {"q": 0, "k": n_heads, "v": n_heads + n_kv_heads}[which] * d_head + slot * d_head
        elif self.qkv_layout == "per_head":
            if n_kv_heads != n_heads:
                raise UnsupportedArchitectureError(
                    f"The {self.name!r} adapter's qkv_layout='per_head' interleaves one key and value per query "
                    f"head, but the model has {n_heads} query heads and {n_kv_heads} key/value heads."
                )
            start = (3 * head + "qkv".index(which)) * d_head
        else:
            start = slot * d_head
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
    """The config ``model_type`` values that have an adapter (``config.model_type``, e.g. "gemma3_text")."""
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
    n_kv_heads: int
    d_head: int
    d_model: int
    vocab_size: int
    n_ctx: int | None


def shape_of(config: Any) -> Shape:
    """The language model's shape from its config (for a multimodal model: ``Adapter.language_config``)."""
    n_layers = _config_int(config, "num_hidden_layers", "n_layer")
    n_heads = _config_int(config, "num_attention_heads", "n_head")
    d_model = _config_int(config, "hidden_size", "n_embd")
    vocab_size = _config_int(config, "vocab_size")
    head_dim = getattr(config, "head_dim", None)
    d_head = head_dim if isinstance(head_dim, int) else d_model // n_heads
    n_kv = getattr(config, "num_key_value_heads", None)
    n_kv_heads = n_kv if isinstance(n_kv, int) and n_kv > 0 else n_heads
    if n_heads % n_kv_heads:
        raise UnsupportedArchitectureError(
            f"The model config has {n_heads} attention heads and {n_kv_heads} key/value heads; grouped-query "
            "attention needs the first to be a multiple of the second."
        )
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return Shape(n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, d_head=d_head, d_model=d_model,
                 vocab_size=vocab_size, n_ctx=n_ctx)


# One row per family. "Separate" q/k/v paths are the projections' outputs, except OLMo 2's: its q_norm and k_norm
# normalise all heads' queries (keys) together, so one head's query is only separable after them.
_LLAMA_QKV = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj"}
for _adapter in (
    Adapter("gpt2", ("gpt2",), "transformer.h", "transformer.wte", "attn.c_proj", "attn", "mlp",
            q_proj="attn.c_attn", k_proj="attn.c_attn", v_proj="attn.c_attn", qkv_layout="stacked"),
    Adapter("gpt-neox", ("gpt_neox",), "gpt_neox.layers", "gpt_neox.embed_in", "attention.dense", "attention", "mlp",
            q_proj="attention.query_key_value", k_proj="attention.query_key_value",
            v_proj="attention.query_key_value", qkv_layout="per_head"),
    Adapter("llama", ("llama", "mistral", "qwen2", "qwen3"), "model.layers", "model.embed_tokens", "self_attn.o_proj",
            "self_attn", "mlp", **_LLAMA_QKV),
    Adapter("gemma", ("gemma2", "gemma3_text"), "model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn",
            "mlp", **_LLAMA_QKV),
    Adapter("gemma3-multimodal", ("gemma3",), "model.language_model.layers", "model.language_model.embed_tokens",
            "self_attn.o_proj", "self_attn", "mlp", **_LLAMA_QKV, text_config="text_config"),
    Adapter("olmo2", ("olmo2",), "model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn", "mlp",
            q_proj="self_attn.q_norm", k_proj="self_attn.k_norm", v_proj="self_attn.v_proj"),
    Adapter("phi3", ("phi3",), "model.layers", "model.embed_tokens", "self_attn.o_proj", "self_attn", "mlp",
            q_proj="self_attn.qkv_proj", k_proj="self_attn.qkv_proj", v_proj="self_attn.qkv_proj", qkv_layout="stacked"),
    Adapter("gpt-j", ("gptj",), "transformer.h", "transformer.wte", "attn.out_proj", "attn", "mlp",
            q_proj="attn.q_proj", k_proj="attn.k_proj", v_proj="attn.v_proj"),
):
    register_adapter(_adapter)
