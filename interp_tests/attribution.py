"""Attribution patching (AtP; Nanda 2023, Kramar et al. 2024): a first-order estimate of every patching effect.

Patching component ``c`` replaces its activation ``a_target`` by ``a_source``. AtP linearises the metric
``M`` around the target run::

    M(patched_c) - M(target) ~= (a_source_c - a_target_c) . dM/da_c |_target

so one forward pass of the source run (its activations), one forward pass of the target run with autograd on,
and one backward pass per metric give every component's estimate at once. ``M`` is the per-prompt raw metric:
the logit difference, the probability of the answer set, and ``KL(clean || run)``; the estimates of the
patched runs' metrics are turned into effects by ``metrics.raw_effects``, exactly as the exact engine does
(so the KL effect ``KL_corr - KL_patched`` is estimated as ``-(delta_a . dKL/da)`` in the denoise direction).
All three metrics come from the same two forward passes, with three backward passes (one per metric).

``direction="denoise"`` (default) linearises at the corrupted run and moves clean activations in;
``"noise"`` linearises at the clean run and moves corrupted activations in. Note that ``KL(clean || run)``
has zero gradient at the clean run, so noise-direction KL estimates are all ``KL_corrupted`` (a known
limitation of first-order estimates, not a bug).

The result is a ``PatchResult`` with ``settings["method"] == "attribution"`` (``.is_estimate`` is true) and
the same settings keys as the exact ``patch``; ``rows_per_pass`` counts prompts per forward pass. Sliding
windows (``window > 1``) are not supported. Not implemented: AtP*'s QK fix for attention saturation and
GradDrop (Kramar et al. 2024), so large-effect heads whose attention pattern saturates can be badly
under-estimated: ``verify_top`` / ``compare_with_exact`` check estimates against the exact sweep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .components import SITE_OF_KIND
from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput
from .errors import SettingsError
from .metrics import AnswerReader, RunStats, warn_if_at_chance
from .models import PatchableModel
from .results import PatchResult

METHOD = "attribution"
_FIELDS = ("prob", "logit_diff", "kl")


@contextlib.contextmanager
def _parameters_require_grad(model: PatchableModel) -> Iterator[None]:
    """Activations only carry a graph when something upstream requires grad: switch it on for frozen models.

    ``torch.autograd.grad`` is asked only for activation gradients, so no parameter's ``.grad`` is touched.
    """
    frozen = [p for p in model.hf.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _grad_run(
    model: PatchableModel, tokens: Any, run_input: RunInput, index: torch.Tensor, site: str
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Forward pass over prompts ``index`` with autograd on: last-token logits [rows, vocab] and every
    layer's live (graph-connected) activation of ``site`` [rows, seq, features]."""
    # Imported here: patching imports this module lazily, and _site_activation lives there.
    from .patching import _site_activation

    device = model.device
    ids = run_input.ids[index].to(device)
    mask = tokens.attention_mask[index].to(device)
    last = tokens.lengths[index] - 1
    read_at, row_read = torch.unique(last, return_inverse=True)
    delta = None if run_input.embed_delta is None else run_input.embed_delta[index].to(device)
    inputs = {"input_ids": ids, "attention_mask": mask, "logits_to_keep": read_at.to(device)}
    activations = []
    with model.nn.trace(inputs):
        if delta is not None:
            embeddings = model.envoy(model.adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        for layer in range(model.n_layers):
            activations.append(_site_activation(model, site, layer).save())
        logits = model.envoy(model.adapter.unembed).output
        final = logits[torch.arange(len(index), device=device), row_read.to(device)].save()
    return final, list(activations)


def _per_component(
    products: torch.Tensor, kind: str, positions: str | int, tokens: Any, index: torch.Tensor, d_head: int
) -> torch.Tensor:
    """``delta . grad`` elementwise [rows, seq, features] -> one layer's estimates [rows, (seq), (heads)]."""
    rows, seq, features = products.shape
    if kind == "attn_head":
        per = products.reshape(rows, seq, features // d_head, d_head).sum(-1)
    else:
        per = products.sum(-1)
    if positions == "all":
        return per.sum(1)
    if positions == "each":
        return per
    at = torch.full((rows,), positions) if isinstance(positions, int) else tokens.position(positions)[index]
    return per[torch.arange(rows), at.to(per.device)]


def attribution_patch(
    model: PatchableModel,
    pairs: Any,
    component: str = "attn_head",
    corruption: Corruption = "str",
    metric: str = "logit_diff",
    *,
    positions: str | int = "all",
    window: int = 1,
    direction: str = "denoise",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PatchResult:
    """AtP estimates of ``patch(model, pairs, component, ...)``'s effects; ``patch(..., method="attribution")``
    calls this. Same arguments and result layout as the exact ``patch``; ``batch_size`` is prompts per pass
    and ``progress(done, total)`` counts prompts."""
    from .patching import _rows_per_pass, eval_mode, prepare_sweep, run, sweep_result

    tokens, grid, source, target = prepare_sweep(
        model, pairs, component, corruption, metric, positions=positions, window=window, direction=direction,
        seed=seed, noise_scale=noise_scale,
    )
    if window != 1:
        raise SettingsError(
            f"window={window}: attribution patching estimates single-layer effects only; use window=1, or "
            "method='exact' for sliding-window patching."
        )
    site = SITE_OF_KIND[component]
    n, vocab = tokens.n, model.hf.config.vocab_size
    reader = AnswerReader(tokens, vocab)
    reader.clean_logprobs = torch.zeros(n, vocab)  # filled chunk by chunk, as set_clean would
    rows_per_pass = _rows_per_pass(model, tokens.seq_len, tokens.seq_len, batch_size)
    estimates: dict[str, list[torch.Tensor]] = {f: [] for f in _FIELDS}
    clean_chunks, source_chunks, target_chunks = [], [], []
    with eval_mode(model), _parameters_require_grad(model):
        for begin in range(0, n, rows_per_pass):
            index = torch.arange(begin, min(n, begin + rows_per_pass))
            with torch.no_grad():
                source_logits, cache = run(model, tokens, source, index.tolist(), cache_sites=(site,))
            with torch.enable_grad():
                target_logits, activations = _grad_run(model, tokens, target, index, site)
                clean_logits = source_logits if direction == "denoise" else target_logits.detach().float().cpu()
                reader.clean_logprobs[index] = torch.log_softmax(clean_logits.float().cpu(), dim=-1)
                stats = reader.stats(target_logits, index)
                deltas = [(cache[(layer, site)] - a.detach()).to(a.dtype) for layer, a in enumerate(activations)]
                for f in _FIELDS:
                    grads = torch.autograd.grad(getattr(stats, f).sum(), activations, retain_graph=f != _FIELDS[-1],
                                                allow_unused=True)
                    per_layer = [
                        torch.zeros(()) if g is None else
                        _per_component((d * g).float().cpu(), component, positions, tokens, index, model.shape.d_head)
                        for d, g in zip(deltas, grads)
                    ]
                    shape = next((p.shape for p in per_layer if p.dim()), None)
                    per_layer = [p.expand(shape) if p.dim() == 0 else p for p in per_layer]
                    estimates[f].append(torch.stack(per_layer, dim=1))  # [rows, layer, (seq), (head)]
            clean_chunks.append(clean_logits.float().cpu())
            source_chunks.append(source_logits.float().cpu())
            target_chunks.append(target_logits.detach().float().cpu())
            del activations, stats, deltas, cache
            if progress is not None:
                progress(int(index[-1]) + 1, n)
        clean_logits = torch.cat(clean_chunks)
        warn_if_at_chance(*reader.accuracy(clean_logits))
        all_prompts = torch.arange(n)
        source_stats = reader.stats(torch.cat(source_chunks), all_prompts)
        target_stats = reader.stats(torch.cat(target_chunks), all_prompts)
    clean_stats, corrupt_stats = (source_stats, target_stats) if direction == "denoise" else (target_stats, source_stats)
    n_cells = int(np.prod(grid.shape))
    patched = RunStats(**{
        f: (getattr(target_stats, f)[:, None] + torch.cat(estimates[f]).reshape(n, n_cells)).T for f in _FIELDS
    })
    return sweep_result(
        model, tokens, grid, patched, clean_stats, corrupt_stats, metric=metric, method=METHOD,
        rows_per_pass=rows_per_pass, component=component, positions=positions, corruption=corruption,
        direction=direction, window=window, seed=seed, noise_scale=noise_scale,
    )


# ---- checking estimates against the exact sweep ---------------------------------------------------------
@dataclass(frozen=True)
class AttributionComparison:
    """How well AtP estimates (mean effects under ``metric``) track exact patching over ``labels``."""

    metric: str
    labels: list[str]
    estimate: np.ndarray  # mean effects, one per label
    exact: np.ndarray
    pearson: float
    spearman: float
    worst: list[tuple[str, float, float]] = field(default_factory=list)  # (label, estimate, exact), largest |error|

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.estimate - self.exact).max()) if len(self.labels) else 0.0

    def __str__(self) -> str:
        lines = [
            (
                f"AtP vs exact patching ({self.metric}, {len(self.labels)} components): "
                f"Pearson r={self.pearson:.3f}, Spearman rho={self.spearman:.3f}, max |error|={self.max_abs_error:.4g}"
            ),
            f"  {'component':<12} {'estimate':>10} {'exact':>10} {'error':>10}",
        ]
        lines += [f"  {label:<12} {e:>10.4f} {x:>10.4f} {e - x:>+10.4f}" for label, e, x in self.worst]
        return "\n".join(lines)


def _correlations(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if len(estimate) < 2 or np.ptp(estimate) == 0 or np.ptp(exact) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(estimate, exact)[0]), float(stats.spearmanr(estimate, exact)[0])


def _compare(metric: str, labels: list[str], estimate: np.ndarray, exact: np.ndarray, k: int) -> AttributionComparison:
    pearson, spearman = _correlations(estimate, exact)
    order = np.argsort(-np.abs(estimate - exact), kind="stable")[:k]
    worst = [(labels[i], float(estimate[i]), float(exact[i])) for i in order]
    return AttributionComparison(metric, labels, estimate, exact, pearson, spearman, worst)


def compare_with_exact(estimate: PatchResult, exact: PatchResult, k: int = 10) -> AttributionComparison:
    """Pearson and Spearman correlation of mean effects over all components (under ``estimate.metric``), and
    the ``k`` components with the largest |estimate - exact|."""
    if estimate.grid != exact.grid:
        raise SettingsError(f"The two results patch different components: {estimate.grid} vs {exact.grid}.")
    exact = exact.with_metric(estimate.metric)
    return _compare(estimate.metric, estimate.labels, estimate.mean.reshape(-1), exact.mean.reshape(-1), k)


def verify_top(
    model: PatchableModel, pairs: Any, estimate: PatchResult, k: int = 5, **patch_kwargs: Any
) -> AttributionComparison:
    """Check the estimate's ``k`` largest-|effect| components against exact patching.

    This runs the *full* exact sweep (as expensive as ``patch(..., method="exact")``) with the estimate's
    settings (component, positions, corruption, direction, seed, noise scale; ``patch_kwargs`` override them,
    e.g. ``corruption=`` for a callable corruption, which settings store only by name), then compares over
    the top-``k`` components only; ``worst`` lists all ``k`` ordered by |error|.
    """
    from .patching import patch

    s = estimate.settings
    kwargs: dict[str, Any] = {
        "component": s["component"], "corruption": s["corruption"], "positions": s["positions"],
        "direction": s["direction"], "seed": s["seed"],
    }
    if "noise_scale" in s:
        kwargs["noise_scale"] = s["noise_scale"]
    kwargs.update(patch_kwargs)
    kwargs.update(metric=estimate.metric, method="exact")
    exact = patch(model, pairs, **kwargs)
    if exact.grid != estimate.grid:
        raise SettingsError(f"The exact sweep patches different components: {exact.grid} vs {estimate.grid}.")
    est = estimate.mean.reshape(-1)
    top = np.argsort(-np.abs(est), kind="stable")[:k]
    labels = [estimate.labels[i] for i in top]
    return _compare(estimate.metric, labels, est[top], exact.mean.reshape(-1)[top], k)


__all__: Sequence[str] = ("AttributionComparison", "attribution_patch", "compare_with_exact", "verify_top")
