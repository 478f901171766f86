"""Exact edge patching in one batched forward pass (the graph: interp_tests.edges).

Each row runs the target prompt with a set of patched edges, each carrying a value for its sender (the clean
run's, to restore; the corrupted run's, a mean or zero, to ablate). As the pass reaches each receiver, its input
is rebuilt as

    input_r = (its input in this run) + sum over patched edges s->r of (value_s - output_s in this run)

and the receiver computes from it through its own norm: a q/k/v receiver's projection slice is recomputed from
the norm of its rebuilt input and written into that head's slice of the projection output; an MLP receiver's
input (its norm's output) is replaced; the logits' input (the final norm's input) is shifted. Every edge not
patched carries whatever its sender outputs in this run, upstream patches included (auto-circuit's semantics),
so patching every edge out of a node patches exactly as patching the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .corruptions import RunInput
from .edges import EdgeGraph, input_weights, norm, output_weights
from .engine import SharedPrefix, final_logits, pass_inputs, take_rows
from .models import PatchableModel


class EdgeMasks:
    """Which edges a run patches: a bool ``[senders, receivers]`` mask, the same at every position (the circuit
    test's counterpart of circuit_patching.Masks)."""

    def __init__(self, graph: EdgeGraph) -> None:
        self.graph = graph
        self.mask = torch.zeros(graph.allowed.shape, dtype=torch.bool)

    def add(self, edges: Any, value: bool = True) -> EdgeMasks:
        self.graph.mask(edges, value, into=self.mask)
        return self

    def without(self, edges: Any) -> EdgeMasks:
        return self.add(edges, value=False)


def edge_pass(
    model: PatchableModel,
    graph: EdgeGraph,
    tokens: Any,
    target: RunInput,
    target_cache: dict[Any, Any],
    prefix: SharedPrefix,
    runs: Sequence[tuple[EdgeMasks, dict[tuple[int, str], torch.Tensor]]],
    chunk: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """Last-token logits of rows ``chunk`` ((run, prompt) pairs): the target run with each row's run's edges
    patched to that run's values. Resumes at the first layer any row's patched edges reach."""
    device = model.device
    masks = torch.stack([runs[r][0].mask for r, _ in chunk]).to(device)  # [rows, S, R]
    prompts = [p for _, p in chunk]
    index = torch.as_tensor(prompts)
    gather = index.to(device)

    def values(key: tuple[int, str]) -> torch.Tensor:
        return torch.stack([runs[r][1][key][p] for r, p in chunk]).to(device)

    receiving = masks.any(1)  # [rows, R]
    sending = masks.any(2).any(0)  # [S]
    first = next(
        (layer for layer in range(graph.n_layers)
         if any(receiving[:, cols].any() for cols in graph.layer_receivers(layer).values())),
        graph.n_layers - 1,
    )
    inputs, delta, row_read = pass_inputs(model, tokens, target, index, prefix)
    adapter, blocks, rows = model.adapter, graph.blocks, len(chunk)
    # Per sender group in sender order (embed, then each layer's heads and MLP): its number of senders and
    # (value - output in this run) [rows, senders, positions, d_model], or None when no row patches its edges.
    diffs: list[tuple[int, torch.Tensor | None]] = []

    def add_senders(key: tuple[int, str], columns: list[int], current: Any, weights: torch.Tensor | None = None) -> None:
        if not sending[columns].any():
            diffs.append((len(columns), None))
            return
        live = current()
        change = values(key).to(live.dtype) - live
        if weights is not None:  # a head's contribution: its slice of the projection input times its weights
            per_head = change.reshape(rows, change.shape[1], graph.n_heads, -1)
            change = torch.einsum("bphk,hkd->bhpd", per_head, weights.to(change.dtype))
        else:
            change = change[:, None]
        diffs.append((len(columns), change))

    def delta_into(columns: list[int], like: torch.Tensor) -> torch.Tensor:
        """Sum over each row's patched edges into ``columns`` of (value - output): [rows, len(columns), pos, d]."""
        total = like.new_zeros((rows, len(columns), *like.shape[1:]))
        start = 0
        for width, change in diffs:
            if change is not None:
                weight = masks[:, start : start + width, columns].to(change.dtype)  # [rows, width, len(columns)]
                total += torch.einsum("bkr,bkpd->brpd", weight, change)
            start += width
        return total

    resumed = take_rows(target_cache[(first - 1, "out")], gather) if first > 0 else None
    with torch.no_grad(), model.trace(inputs):
        if delta is not None and first == 0:
            embeddings = model.envoy(adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        layers = model.envoy(adapter.layers)
        for layer in range(first):
            layers[layer].skip(resumed)
        for layer in range(graph.n_layers):
            heads, mlp = graph.layer_senders(layer)
            if layer < first:  # not computed: every sender here outputs its target-run value
                if layer == 0:
                    add_senders((0, "resid"), [0], lambda: target_cache[(0, "resid")][gather])
                add_senders((layer, "head"), heads, lambda: target_cache[(layer, "head")][gather], output_weights(model, layer))
                add_senders((layer, "mlp"), [mlp], lambda: target_cache[(layer, "mlp")][gather])
                continue
            receivers = graph.layer_receivers(layer)
            qkv = receivers["q"] + receivers["k"] + receivers["v"]
            resid = layers[layer].input if layer == 0 or receiving[:, qkv].any() else None
            if layer == 0:
                add_senders((0, "resid"), [0], lambda: resid)
            if receiving[:, qkv].any():
                _write_qkv(model, graph, layer, resid, receiving, delta_into)
            add_senders((layer, "head"), heads, lambda: model.envoy(adapter.head_out, layer).input, output_weights(model, layer))
            column = receivers["mlp"]
            if receiving[:, column].any():
                stream = model.envoy(blocks.mlp_norm, layer).input
                normed = norm(model.hf_module(f"{adapter.layers}.{layer}.{blocks.mlp_norm}"), stream + delta_into(column, stream)[:, 0])
                mlp_in = model.envoy(adapter.mlp, layer).input
                mlp_in[:] = torch.where(receiving[:, column[0], None, None], normed.to(mlp_in.dtype), mlp_in)
            add_senders((layer, "mlp"), [mlp], lambda: model.envoy(adapter.mlp, layer).output)
        logits_column = [len(graph.receivers) - 1]
        if receiving[:, logits_column].any():
            final = model.envoy(blocks.final_norm).input
            final[:] = final + delta_into(logits_column, final)[:, 0].to(final.dtype)
        out = final_logits(model, row_read).save()
    return out.float().cpu()


def _write_qkv(model: PatchableModel, graph: EdgeGraph, layer: int, resid: torch.Tensor, receiving: torch.Tensor, delta_into: Any) -> None:
    """Recompute the q/k/v slices of the receivers of ``layer`` that some row patches, from the norm of their
    rebuilt inputs, and write them into the projection outputs (in forward order)."""
    norm_module = model.hf_module(f"{model.adapter.layers}.{layer}.{graph.blocks.attn_norm}")
    for path, receivers in input_weights(model, graph, layer):
        live = [(c, f, w, b) for c, f, w, b in receivers if receiving[:, c].any()]
        if not live:
            continue
        columns = [c for c, _, _, _ in live]
        rebuilt = resid[:, None] + delta_into(columns, resid)  # [rows, R, pos, d]
        normed = norm(norm_module, rebuilt)
        projected = model.envoy(path, layer).output
        for j, (column, features, weight, bias) in enumerate(live):
            new = normed[:, j] @ weight.to(normed.dtype)
            if bias is not None:
                new = new + bias.to(new.dtype)
            active = receiving[:, column, None, None]
            projected[:, :, features] = torch.where(active, new.to(projected.dtype), projected[:, :, features])
