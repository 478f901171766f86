"""The edge graph of a pre-norm transformer: which sender outputs add up to which receiver inputs.

Senders are the token embeddings (``"embed"``: the input of layer 0, position embeddings included), every
attention head (``"L.H"``: its slice of the output projection's input times the matching weight rows; the
projection's bias is the same in every run and belongs to no sender) and every MLP (``"mlp.L"``: its output).
Receivers are each head's query, key and value input (``"L.H.q"``, ``".k"``, ``".v"``), each MLP's input
(``"mlp.L"``) and the logits (the final norm's input). In a pre-norm block whose attention and MLP outputs are
added straight to the residual stream, a receiver's input (before its own norm) is exactly the sum of the
outputs of the senders before it plus constant biases, so replacing one edge replaces one summand of one
receiver's input and the receiver's norm is recomputed from the patched sum.

That holds for GPT-2 and Llama/Mistral/Qwen2 blocks (``BLOCKS``). GPT-NeoX and GPT-J run attention and the
MLP in parallel from the same layer input, which this graph does not model; they are refused with
``UnsupportedArchitectureError``, as is any architecture without an entry here.

On grouped-query models a key or value input belongs to a KV head that several query heads share, so key and
value receivers are the KV heads: ``"L.G.k"`` with G in 0..n_kv_heads-1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .circuits import Circuit, Edge
from .errors import ComponentError, UnsupportedArchitectureError, did_you_mean
from .models import PatchableModel

INPUTS = ("q", "k", "v")
LOGITS = "logits"
EMBED = "embed"


@dataclass(frozen=True)
class Blocks:
    """Module paths the graph needs beyond the adapter's: each block's two norms (relative to a layer) and the
    final norm. The MLP receiver's input is the MLP norm's input (the residual stream after attention)."""

    attn_norm: str
    mlp_norm: str
    final_norm: str


_LLAMA = Blocks("input_layernorm", "post_attention_layernorm", "model.norm")
BLOCKS = {"gpt2": Blocks("ln_1", "ln_2", "transformer.ln_f"), "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA}
_PARALLEL = {
    "gpt_neox": "GPT-NeoX blocks (use_parallel_residual) read attention and the MLP from the same layer input, and "
    "GPT-NeoX's sequential mode is not mapped either",
    "gptj": "GPT-J blocks run attention and the MLP in parallel from one shared norm of the layer input",
}


def weight_in_out(module: torch.nn.Module, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A projection's weight as ``[in, out]`` and its bias: nn.Linear stores ``[out, in]``, GPT-2's Conv1D ``[in, out]``."""
    if isinstance(module, torch.nn.Linear):
        return module.weight.T, module.bias
    if type(module).__name__ == "Conv1D":
        return module.weight, module.bias
    raise UnsupportedArchitectureError(
        f"The {what} is a {type(module).__name__}, neither nn.Linear nor Conv1D: edge patching cannot split it "
        "into per-head weights."
    )


def norm(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The norm's own computation on a tensor of any leading shape, bypassing module hooks (nnsight's included)."""
    return type(module).forward(module, x)


@dataclass
class EdgeGraph:
    """Senders, receivers and edges of one model, with the index of each in the dense ``[senders, receivers]``
    masks that edge patching and attribution use."""

    n_layers: int
    n_heads: int
    n_kv: int
    blocks: Blocks
    senders: list[str] = field(init=False)
    receivers: list[str] = field(init=False)
    allowed: torch.Tensor = field(init=False)  # bool [senders, receivers]: the model has this edge

    def __post_init__(self) -> None:
        self.senders = [EMBED]
        sender_layer = [-1]
        for layer in range(self.n_layers):
            self.senders += [f"{layer}.{h}" for h in range(self.n_heads)] + [f"mlp.{layer}"]
            sender_layer += [layer] * self.n_heads + [layer + 0.9]
        self.receivers = []
        receiver_layer: list[float] = []
        for layer in range(self.n_layers):
            for which, count in (("q", self.n_heads), ("k", self.n_kv), ("v", self.n_kv)):
                self.receivers += [f"{layer}.{h}.{which}" for h in range(count)]
                receiver_layer += [layer] * count
            self.receivers.append(f"mlp.{layer}")
            receiver_layer.append(layer + 0.75)
        self.receivers.append(LOGITS)
        receiver_layer.append(float(self.n_layers))
        # A head at layer L feeds receivers above L and the MLP of layer L; an MLP feeds receivers above its layer.
        self.allowed = torch.tensor(sender_layer)[:, None] < torch.tensor(receiver_layer)[None, :]
        self.sender_index = {s: i for i, s in enumerate(self.senders)}
        self.receiver_index = {r: i for i, r in enumerate(self.receivers)}

    @classmethod
    def of(cls, model: PatchableModel) -> EdgeGraph:
        """The model's graph, or UnsupportedArchitectureError naming what the architecture lacks."""
        config = model.hf.config
        model_type = getattr(config, "model_type", None)
        if model_type in _PARALLEL:
            raise UnsupportedArchitectureError(
                f"Edge patching is exact only for pre-norm blocks that add attention and then the MLP to the residual "
                f"stream (GPT-2, Llama, Mistral, Qwen2); {_PARALLEL[model_type]}. Use node-level circuits "
                "(circuit_patch with node labels) or path_patch for this model."
            )
        if model_type not in BLOCKS:
            raise UnsupportedArchitectureError(
                f"Edge patching does not know where model_type {model_type!r} keeps its block norms, nor that its "
                f"blocks are pre-norm with attention and MLP outputs added to the residual stream. Supported: "
                f"{sorted(BLOCKS)} (edges.BLOCKS maps a model_type to its norms once that holds)."
            )
        n_kv = getattr(config, "num_key_value_heads", None)
        n_kv = n_kv if isinstance(n_kv, int) and n_kv > 0 else model.n_heads
        return cls(model.n_layers, model.n_heads, n_kv, BLOCKS[model_type])

    @property
    def edges(self) -> list[str]:
        """Every edge label, senders-major."""
        return [f"{self.senders[s]}->{self.receivers[r]}" for s, r in self.allowed.nonzero().tolist()]

    def index(self, edge: Edge) -> tuple[int, int]:
        return self.sender_index[edge.sender], self.receiver_index[edge.receiver]

    def check(self, circuit: Circuit) -> None:
        """Raise ComponentError for an edge this model does not have, with the nearest one that it has."""
        for edge in circuit:
            if not isinstance(edge, Edge):
                raise ComponentError(f"{edge.label!r} is a node; an edge circuit holds edges only.")
            s, r = self.sender_index.get(edge.sender), self.receiver_index.get(edge.receiver)
            if s is None or r is None or not self.allowed[s, r]:
                why = (
                    f"no sender {edge.sender!r}" if s is None else f"no receiver {edge.receiver!r}" if r is None
                    else f"{edge.sender} is not before {edge.receiver}, so it does not feed it"
                )
                raise ComponentError(
                    f"{edge.label!r} is not an edge of this model ({why}; {self.n_layers} layers x {self.n_heads} "
                    f"heads, {self.n_kv} key/value heads).{did_you_mean(edge.label, self.edges)}"
                )

    def universe(self) -> Circuit:
        return Circuit(self.edges)

    def mask(self, edges: Iterable[Edge], value: bool = True, into: torch.Tensor | None = None) -> torch.Tensor:
        """A bool ``[senders, receivers]`` mask with ``edges`` set to ``value``."""
        mask = torch.zeros(self.allowed.shape, dtype=torch.bool) if into is None else into
        for edge in edges:
            mask[self.index(edge)] = value
        return mask

    def layer_receivers(self, layer: int) -> dict[str, list[int]]:
        """Receiver columns of ``layer`` by input: ``{"q": [...], "k": [...], "v": [...], "mlp": [col]}``."""
        per_layer = 2 * self.n_kv + self.n_heads + 1
        start = layer * per_layer
        q, kv = self.n_heads, self.n_kv
        return {
            "q": list(range(start, start + q)),
            "k": list(range(start + q, start + q + kv)),
            "v": list(range(start + q + kv, start + q + 2 * kv)),
            "mlp": [start + q + 2 * kv],
        }

    def layer_senders(self, layer: int) -> tuple[list[int], int]:
        """Sender rows of ``layer``'s heads and of its MLP."""
        start = 1 + layer * (self.n_heads + 1)
        return list(range(start, start + self.n_heads)), start + self.n_heads

    @property
    def sites(self) -> set[tuple[int, str]]:
        """The engine sites the senders' outputs are read from: layer 0's input, every layer's heads and MLP."""
        return {(0, "resid"), *((layer, site) for layer in range(self.n_layers) for site in ("head", "mlp"))}

    def row_cost(self) -> int:
        """How many plain patched rows one edge-patched row costs in memory: every sender's difference and every
        receiver's recomputed input are held per position."""
        return 1 + (len(self.senders) + 3 * self.n_heads) // 16


def output_weights(model: PatchableModel, layer: int) -> torch.Tensor:
    """Each head's output weights ``[heads, d_head, d_model]``: its contribution is its slice of the output
    projection's input times these."""
    weight, _ = weight_in_out(model.hf_module(f"{model.adapter.layers}.{layer}.{model.adapter.head_out}"), "attention output projection")
    return weight.reshape(model.n_heads, model.shape.d_head, -1)


def input_weights(model: PatchableModel, graph: EdgeGraph, layer: int) -> list[tuple[str, list[tuple[int, slice, torch.Tensor, Any]]]]:
    """The layer's q/k/v receivers grouped by projection module in forward order: ``(path, [(column, output
    slice, weight [d_model, d_head], bias [d_head] or None)])``."""
    adapter, d_head = model.adapter, model.shape.d_head
    columns = graph.layer_receivers(layer)
    modules: dict[str, list[tuple[int, slice, torch.Tensor, Any]]] = {}
    for which in INPUTS:
        for head, column in enumerate(columns[which]):
            # k and v receivers are KV heads: name the first query head that reads KV head ``head``.
            query_head = head if which == "q" else head * (graph.n_heads // graph.n_kv)
            path, features = adapter.qkv_slice(which, query_head, graph.n_heads, graph.n_kv, d_head)
            weight, bias = weight_in_out(model.hf_module(f"{adapter.layers}.{layer}.{path}"), f"{which} projection")
            modules.setdefault(path, []).append((column, features, weight[:, features], None if bias is None else bias[features]))
    return list(modules.items())


__all__ = ["BLOCKS", "Blocks", "EdgeGraph", "input_weights", "norm", "output_weights", "weight_in_out"]
