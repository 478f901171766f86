"""Edge scores: exact (one patched run per edge and prompt), EAP and EAP-IG estimates, their verification, and
faithfulness curves of the circuits they rank.

An edge's score is the share of the clean-corrupted gap that corrupting that edge alone in the clean run destroys
(edge_results.EdgeScores). Exact: the necessity test of the one-edge circuit under resample ablation. EAP (Syed
et al. 2023) linearises at the clean run::

    m(clean, edge s->r corrupted) - m(clean) ~= (a_corr_s - a_clean_s) . dm/d(input_r) |_clean

with ``input_r`` the receiver's input before its own norm (edges.py), so two forward passes (the corrupted
run's sender outputs, the clean run with autograd) and one backward pass give every edge. ``dm/d(input_r)``
is the gradient through that receiver only: the projection output's gradient times the receiver's weight
slice, pulled back through the receiver's norm. EAP-IG (Hanna et al. 2024) averages that gradient over
``steps`` runs whose input embeddings are ``e_corr + (k/steps)(e_clean - e_corr)``, k = 1..steps, so
``steps=1`` is EAP. A model whose blocks are linear (fixed norms, fixed attention patterns, linear MLPs) makes
both exact; KL to the clean run has zero gradient at the clean run, so EAP cannot see it (use EAP-IG).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .choices import EDGE_METHODS
from .circuit_patching import CircuitRuns
from .circuits import Circuit
from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput, corrupted_input, corruption_name
from .edge_results import EdgeScores, EdgeVerification, FaithfulnessCurve, edges_at
from .edges import EdgeGraph, input_weights, norm, output_weights
from .engine import Pairs, check_choice, eval_mode, final_logits, pass_inputs, rows_per_pass, run, shared_prefix, tokenize
from .errors import SettingsError
from .metrics import AnswerReader, check_clean_run, check_metric
from .models import PatchableModel

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _m(stats: Any, metric: str) -> torch.Tensor:
    """m per row, higher is closer to the clean behaviour (as circuit scores use it)."""
    return {"logit_diff": stats.logit_diff, "prob": stats.prob, "kl": -stats.kl}[metric]


def _sender_outputs(model: PatchableModel, graph: EdgeGraph, cache: dict[Any, Any]) -> torch.Tensor:
    """Every sender's output ``[prompts, senders, positions, d_model]`` from a run's cache."""
    parts = [cache[(0, "resid")][:, None]]
    for layer in range(graph.n_layers):
        heads = cache[(layer, "head")]
        n, seq, _ = heads.shape
        per_head = heads.reshape(n, seq, graph.n_heads, -1)
        parts.append(torch.einsum("bphk,hkd->bhpd", per_head, output_weights(model, layer).to(heads.dtype)))
        parts.append(cache[(layer, "mlp")][:, None])
    return torch.cat(parts, 1).float()


def _receiver_grads(model: PatchableModel, graph: EdgeGraph, tokens: Any, run_input: RunInput, index: torch.Tensor,
                    prefix: Any, embed_shift: torch.Tensor | None, reader: AnswerReader, metric: str) -> torch.Tensor:
    """dm/d(input_r) for every receiver r ``[rows, receivers, positions, d_model]`` at one run (with autograd):
    each receiver's gradient through that receiver alone."""
    adapter, blocks = model.adapter, graph.blocks
    inputs, delta, row_read = pass_inputs(model, tokens, run_input, index, prefix)
    saved: dict[Any, Any] = {}
    with model.trace(inputs):
        embeddings = model.envoy(adapter.embed).output
        if delta is not None:
            embeddings += delta.to(embeddings.dtype)
        if embed_shift is not None:
            embeddings += embed_shift.to(embeddings.dtype)
        for layer in range(graph.n_layers):
            saved[(layer, "resid")] = model.envoy(adapter.layers)[layer].input.save()
            for path, _ in input_weights(model, graph, layer):
                saved[(layer, path)] = model.envoy(path, layer).output.save()
            saved[(layer, "stream")] = model.envoy(blocks.mlp_norm, layer).input.save()
            saved[(layer, "mlp_in")] = model.envoy(adapter.mlp, layer).input.save()
        saved["final"] = model.envoy(blocks.final_norm).input.save()
        final = final_logits(model, row_read).save()
    value = _m(reader.stats(final, index), metric).sum()
    keys = [k for k in saved if k == "final" or k[1] not in ("resid", "stream")]
    grads = dict(zip(keys, torch.autograd.grad(value, [saved[k] for k in keys], allow_unused=True)))
    rows, seq, d = saved["final"].shape
    out = torch.zeros(rows, len(graph.receivers), seq, d)
    for layer in range(graph.n_layers):
        columns, pulled = [], []
        for path, receivers in input_weights(model, graph, layer):
            grad = grads[(layer, path)]
            for column, features, weight, _ in receivers:
                columns.append(column)
                pulled.append(torch.zeros(rows, seq, d) if grad is None else (grad[:, :, features] @ weight.T.to(grad.dtype)).float())
        out[:, columns] = _through_norm(model, graph.blocks.attn_norm, layer, saved[(layer, "resid")], torch.stack(pulled, 1))
        mlp_grad = grads[(layer, "mlp_in")]
        if mlp_grad is not None:
            column = graph.layer_receivers(layer)["mlp"]
            out[:, column] = _through_norm(model, graph.blocks.mlp_norm, layer, saved[(layer, "stream")], mlp_grad.float()[:, None])
    if grads["final"] is not None:
        out[:, -1] = grads["final"].float()
    return out


def _through_norm(model: PatchableModel, path: str, layer: int, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """Pull gradients w.r.t. a norm's output ``[rows, R, pos, d]`` back to its input ``x`` ``[rows, pos, d]``."""
    module = model.hf_module(f"{model.adapter.layers}.{layer}.{path}")
    leaf = x.detach()[:, None].expand(-1, cotangents.shape[1], -1, -1).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(norm(module, leaf), leaf, grad_outputs=cotangents.to(leaf.dtype))
    return grad.float()


def edge_attribution(
    model: PatchableModel,
    pairs: Pairs,
    method: str = "eap",
    *,
    steps: int = 5,
    metric: str = "logit_diff",
    corruption: Corruption = "str",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
) -> EdgeScores:
    """EAP or EAP-IG scores of every edge of the model (see the module docstring), per prompt kept."""
    check_choice("method", method, EDGE_METHODS)
    check_metric(metric)
    if method == "eap_ig" and not (isinstance(steps, int) and steps >= 1):
        raise SettingsError(f"steps={steps!r} must be a positive integer (interpolation points of EAP-IG).")
    steps = 1 if method == "eap" else steps
    graph = EdgeGraph.of(model)
    tokens = tokenize(model, pairs)
    clean_input = RunInput(tokens.clean_ids, None)
    corrupt_input = corrupted_input(model, tokens, corruption, seed=seed, noise_scale=noise_scale)
    reader = AnswerReader(tokens, model.shape.vocab_size)
    everyone = list(range(tokens.n))
    sites = ("resid", "head", "mlp")
    with eval_mode(model):
        with torch.no_grad():
            prefix = shared_prefix(model, tokens, clean_input, corrupt_input)
            clean_logits, clean_cache = run(model, tokens, clean_input, everyone, cache_sites=sites, prefix=prefix)
            corrupt_logits, corrupt_cache = run(model, tokens, corrupt_input, everyone, cache_sites=sites, prefix=prefix)
            reader.set_clean(clean_logits)
            clean_run = check_clean_run(reader.clean_summary(clean_logits), model.tokenizer)
            index = torch.arange(tokens.n)
            m_clean = _m(reader.stats(clean_logits, index), metric)
            m_corrupt = _m(reader.stats(corrupt_logits, index), metric)
            change = _sender_outputs(model, graph, corrupt_cache) - _sender_outputs(model, graph, clean_cache)
            embed = model.hf_module(model.adapter.embed)
            start = prefix.length
            toward_corrupt = (embed(corrupt_input.ids[:, start:].to(model.device)) - embed(clean_input.ids[:, start:].to(model.device))).float()
            if corrupt_input.embed_delta is not None:
                toward_corrupt += corrupt_input.embed_delta[:, start:].to(toward_corrupt.device).float()
        per_pass = max(1, rows_per_pass(model, tokens.seq_len - start, tokens.seq_len, batch_size) // graph.row_cost())
        raw = torch.zeros(tokens.n, *graph.allowed.shape)
        with _grads_on(model), torch.enable_grad():
            for begin in range(0, tokens.n, per_pass):
                rows = torch.arange(begin, min(tokens.n, begin + per_pass))
                grad = torch.zeros(len(rows), len(graph.receivers), tokens.seq_len - start, change.shape[-1])
                for k in range(1, steps + 1):
                    shift = None if k == steps else (1 - k / steps) * toward_corrupt[rows]
                    grad += _receiver_grads(model, graph, tokens, clean_input, rows, prefix, shift, reader, metric).detach()
                raw[rows] = torch.einsum("bspd,brpd->bsr", change[rows].cpu(), grad / steps)
    labels = graph.edges
    allowed = graph.allowed.nonzero()
    settings = _settings(model, tokens, method, metric, corruption, seed, steps=steps, clean_run=clean_run.as_settings())
    return EdgeScores(labels, raw[:, allowed[:, 0], allowed[:, 1]].numpy(), m_clean.numpy(), m_corrupt.numpy(),
                      method=method, metric=metric, settings=settings)


class _grads_on:
    """Activations carry a graph only when something upstream requires grad: switch it on for frozen weights
    (only activation gradients are asked for, so no parameter's .grad is touched)."""

    def __init__(self, model: PatchableModel) -> None:
        self.frozen = [p for p in model.hf.parameters() if not p.requires_grad]

    def __enter__(self) -> None:
        for p in self.frozen:
            p.requires_grad_(True)

    def __exit__(self, *exc: Any) -> None:
        for p in self.frozen:
            p.requires_grad_(False)


def _settings(model: PatchableModel, tokens: Any, method: str, metric: str, corruption: Corruption, seed: int, **extra: Any) -> dict[str, Any]:
    return {"model": model.name, "model_fingerprint": model.fingerprint(), "dataset": tokens.fingerprint(),
            "n_prompts": tokens.n, "method": method, "metric": metric, "corruption": corruption_name(corruption), "seed": seed,
            **extra}


def _runs(model: PatchableModel, pairs: Pairs, *, ablation: str, metric: str, corruption: Corruption, seed: int,
          noise_scale: float, batch_size: int | None) -> CircuitRuns:
    graph = EdgeGraph.of(model)
    runs = CircuitRuns(
        model, pairs, Circuit(), universe=graph.universe(), ablation=ablation, metric=metric, corruption=corruption,
        reference=None, seed=seed, noise_scale=noise_scale, batch_size=batch_size, uses_universe=True,
    )
    runs.start()
    runs.check_clean_run(runs.clean_summary)
    return runs


def exact_edge_scores(
    model: PatchableModel,
    pairs: Pairs,
    edges: Sequence[str] | None = None,
    *,
    metric: str = "logit_diff",
    corruption: Corruption = "str",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
) -> EdgeScores:
    """Exact scores of ``edges`` (default: all): the clean run with each edge alone set to its corrupted value."""
    runs = _runs(model, pairs, ablation="resample", metric=metric, corruption=corruption, seed=seed,
                 noise_scale=noise_scale, batch_size=batch_size)
    labels = runs.graph.edges if edges is None else list(edges)
    runs.graph.check(Circuit(labels))
    patched = runs.ablated([Circuit([edge]) for edge in labels])
    raw = np.stack([p - runs.clean for p in patched], axis=1)
    return EdgeScores(labels, raw, runs.clean, runs.corrupted, method="exact", metric=runs.metric,
                      settings=_settings(model, runs.tokens, "exact", runs.metric, corruption, seed, runs=runs.runs))


def verify_top_edges(model: PatchableModel, pairs: Pairs, scores: EdgeScores, k: int = 10, by: str = "abs",
                     **kwargs: Any) -> EdgeVerification:
    """Exact scores of the estimate's ``k`` top-ranked edges alone (k patched runs per prompt), against the estimate.
    ``kwargs`` override the estimate's corruption, seed and noise scale (as for attribution.verify_top)."""
    if not (isinstance(k, int) and 1 <= k <= len(scores.labels)):
        raise SettingsError(f"k={k!r}: verify between 1 and {len(scores.labels)} edges.")
    s = scores.settings
    options = {"metric": scores.metric, "corruption": s["corruption"], "seed": s["seed"], **kwargs}
    top = scores.top(k, by)
    exact = exact_edge_scores(model, pairs, top, **options)
    return EdgeVerification(top, np.array([scores.score(e) for e in top]), exact.scores)


def faithfulness_curve(
    model: PatchableModel,
    pairs: Pairs,
    scores: EdgeScores,
    fractions: Sequence[float] = FRACTIONS,
    *,
    ablation: str = "resample",
    metric: str | None = None,
    corruption: Corruption | None = None,
    seed: int | None = None,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
) -> FaithfulnessCurve:
    """Faithfulness of the top ``fractions`` of edges under both rankings, every other edge ablated; one patched
    run per circuit and prompt (2 x len(fractions) circuits, and the empty one)."""
    fractions = sorted(float(f) for f in fractions)
    if not fractions or fractions[0] <= 0 or fractions[-1] > 1:
        raise SettingsError(f"fractions={fractions}: give shares of the edges in (0, 1].")
    s = scores.settings
    corruption = s["corruption"] if corruption is None else corruption
    runs = _runs(model, pairs, ablation=ablation, metric=metric or scores.metric, corruption=corruption,
                 seed=s["seed"] if seed is None else seed, noise_scale=noise_scale, batch_size=batch_size)
    if sorted(runs.graph.edges) != sorted(scores.labels):
        raise SettingsError("The scores do not cover every edge of this model: a faithfulness curve ranks all of them.")
    sizes = [edges_at(f, len(scores.labels)) for f in fractions]
    circuits = [Circuit(scores.top(n, by)) for by in ("signed", "abs") for n in sizes]
    *kept, empty = runs.kept([*circuits, Circuit()])
    full, empty_mean = float(runs.clean.mean()), float(empty.mean())
    faith = np.array([(float(k.mean()) - empty_mean) / (full - empty_mean) for k in kept])
    settings = runs.settings(ranked_by=scores.method, corruption=corruption_name(corruption), runs=runs.runs)
    return FaithfulnessCurve(fractions, sizes, faith[: len(sizes)], faith[len(sizes):], settings)
