"""Attribution patching (AtP; Nanda 2023, Kramar et al. 2024): a first-order estimate of every patching effect.

Patching component ``c`` replaces its activation ``a_target`` by ``a_source``. AtP linearises the metric
``M`` around the target run::

    M(patched_c) - M(target) ~= (a_source_c - a_target_c) . dM/da_c |_target

so one forward pass of the source run (its activations), one forward pass of the target run with autograd on,
and one backward pass give every component's estimate at once. ``M`` is the per-prompt raw metric: the
logit difference, the probability of the answer set, or ``KL(clean || run)``; the estimated patched metric is
turned into an effect by ``metrics.raw_effects``, exactly as the exact engine does (so the KL effect
``KL_corr - KL_patched`` is estimated as ``-(delta_a . dKL/da)`` in the denoise direction). Each metric needs
its own backward pass, so an estimate holds the requested metric only (``with_metric`` to another raises).

The runs reuse the exact engine's shortcuts: positions before the first one where the runs differ are
computed once and enter both runs as cached keys and values (their activations are equal in both runs, so
their estimates are exactly 0, as their exact effects are), and logits are computed at the last token only.

``direction="denoise"`` (default) linearises at the corrupted run and moves clean activations in;
``"noise"`` linearises at the clean run and moves corrupted activations in. ``KL(clean || run)`` has zero
gradient at the clean run, so noise-direction KL estimates are all ``KL_corrupted`` (a known limitation of
first-order estimates, not a bug).

AtP* (Kramar et al. 2024) adds two fixes for false negatives:

* GradDrop (``grad_drop=True``): effects cancelling along different paths can hide a component. For each
  layer l the estimate is recomputed with no gradient flowing through layer l's residual-stream contribution
  (its attention and MLP outputs), and the result is the mean of their absolute values over the layers whose
  block does not hold the component. One extra backward pass per layer. These are magnitudes, >= 0: use
  them to rank components (``top``, ``verify_top``), not to claim a sign.
* The QK fix recomputes a head's attention softmax exactly when the node patched is that head's query or
  key. interp-tests' components are head outputs, attention and MLP outputs and the residual stream; each
  one's change ``a_source - a_target`` is read exactly from the two runs, so no component's own softmax is
  linearised and the fix has nothing to correct. Saturation in *downstream* heads is linearised, by AtP and
  AtP* alike: check the largest estimates exactly (``verify_top``, or ``verify_top`` in a claim).

The result is a ``PatchResult`` with ``settings["method"] == "attribution"`` (``.is_estimate`` is true),
``settings["grad_drop"]`` and the same other settings keys as the exact ``patch``; ``rows_per_pass`` counts
prompts per pass. Sliding windows (``window > 1``) are not supported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .attribution_results import AttributionComparison, compare, verified_comparison
from .components import SITE_OF_KIND, SITE_ORDER
from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput
from .engine import (
    Progress,
    SharedPrefix,
    eval_mode,
    final_logits,
    on_model,
    pass_inputs,
    prepare_sweep,
    progress_reporter,
    rows_per_pass,
    run,
    shared_prefix,
    site_activation,
    sweep_inputs,
    sweep_result,
)
from .errors import SettingsError
from .exact import exact_patch
from .metrics import (
    AnswerReader,
    Metric,
    RunStats,
    UserMetric,
    check_clean_run,
    resolve_metric,
)
from .models import PatchableModel
from .pairs import TokenizedPairs
from .results import PatchResult

METHOD = "attribution"


class _parameters_require_grad:  # noqa: N801  (a context manager)
    """Activations only carry a graph when something upstream requires grad: switch it on for frozen models.

    ``torch.autograd.grad`` is asked only for activation gradients, so no parameter's ``.grad`` is touched
    and no weight gradient is computed. A class, not a ``contextlib.contextmanager``: it runs where the model
    is, and nnsight ships functions there by their source, without decorators.
    """

    def __init__(self, model: PatchableModel) -> None:
        self.frozen = [p for p in model.hf.parameters() if not p.requires_grad]

    def __enter__(self) -> None:
        for p in self.frozen:
            p.requires_grad_(True)

    def __exit__(self, *exc_info: object) -> None:
        for p in self.frozen:
            p.requires_grad_(False)


def _grad_run(
    model: PatchableModel, tokens: Any, run_input: RunInput, index: torch.Tensor, sites: set[str], prefix: SharedPrefix
) -> tuple[torch.Tensor, dict[tuple[int, str], torch.Tensor]]:
    """Forward pass over prompts ``index`` from the end of the shared prefix, with autograd on.

    Returns last-token logits [rows, vocab] and each layer's live (graph-connected) activation of every
    site in ``sites`` [rows, seq - prefix, features]. The prefix's keys and values come from the cache and
    carry no graph: nothing a patch after the prefix does can change them.
    """
    inputs, delta, row_read = pass_inputs(model, tokens, run_input, index, prefix)
    activations = {}
    with model.trace(inputs):
        if delta is not None:
            embeddings = model.envoy(model.adapter.embed).output
            embeddings += delta.to(embeddings.dtype)
        for layer in range(model.n_layers):
            for site in SITE_ORDER:
                if site in sites:
                    activations[(layer, site)] = site_activation(model, site, layer).save()
        final = final_logits(model, row_read).save()
    return final, dict(activations)


def _per_component(
    products: torch.Tensor, kind: str, positions: str | int, tokens: Any, index: torch.Tensor, d_head: int, start: int
) -> torch.Tensor:
    """``delta . grad`` elementwise [rows, seq - start, features] -> one layer's estimates [rows, (seq), (heads)].

    Positions before ``start`` (the shared prefix) are the same in both runs: their estimate is 0.
    """
    rows, _, features = products.shape
    if kind == "attn_head":
        per = products.reshape(rows, -1, features // d_head, d_head).sum(-1)
    else:
        per = products.sum(-1)
    if positions == "all":
        return per.sum(1)
    per = torch.cat([per.new_zeros((rows, start, *per.shape[2:])), per], dim=1)
    if positions == "each":
        return per
    at = torch.full((rows,), positions) if isinstance(positions, int) else tokens.position(positions)[index]
    return per[torch.arange(rows), at.to(per.device)]


def _estimates(
    grads: Sequence[torch.Tensor | None],
    *,
    deltas: list[torch.Tensor],
    component: str,
    positions: str | int,
    tokens: Any,
    index: torch.Tensor,
    d_head: int,
    start: int,
) -> torch.Tensor:
    """Every layer's ``delta . grad`` per component: [rows, layers, (seq), (heads)]; 0 where no gradient reached."""
    per_layer = [
        None if g is None else _per_component((d * g).float().cpu(), component, positions, tokens, index, d_head, start)
        for d, g in zip(deltas, grads)
    ]
    shape = next(p.shape for p in per_layer if p is not None)
    return torch.stack([torch.zeros(shape) if p is None else p for p in per_layer], dim=1)


def attribution_patch(
    model: PatchableModel,
    pairs: Any,
    component: str = "attn_head",
    corruption: Corruption = "str",
    metric: Metric = "logit_diff",
    *,
    positions: str | int = "all",
    window: int = 1,
    direction: str = "denoise",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    grad_drop: bool = False,
    batch_size: int | None = None,
    progress: Progress = None,
) -> PatchResult:
    """AtP estimates of ``patch(model, pairs, component, ...)``'s effects under ``metric``;
    ``patch(..., method="attribution")`` calls this. Same arguments and result layout as the exact ``patch``,
    except that the result holds ``metric``'s effects only (one backward pass per metric). ``grad_drop=True``
    gives AtP*'s GradDrop magnitudes (see the module docstring); ``batch_size`` is prompts per pass and
    ``progress`` (True: a bar; or a callable ``(done, total)``) counts prompts."""
    tokens, grid = prepare_sweep(
        model, pairs, component, corruption, metric, positions=positions, window=window, direction=direction,
        noise_scale=noise_scale,
    )
    if window != 1:
        raise SettingsError(
            f"window={window}: attribution patching estimates single-layer effects only; use window=1, or "
            "method='exact' for sliding-window patching."
        )
    site = SITE_OF_KIND[component]
    if grad_drop and model.n_layers < 2 and site != "resid":
        raise SettingsError(
            "grad_drop=True averages over the other layers' gradients, and this model has one layer: use "
            "grad_drop=False."
        )
    metric, custom = resolve_metric(metric)
    with progress_reporter(progress, "attribution") as report:
        outcome = on_model(
            model, attribution_work, tokens, site, corruption, metric, component=component, positions=positions,
            direction=direction, seed=seed, noise_scale=noise_scale, grad_drop=grad_drop, batch_size=batch_size,
            custom=custom, progress=report, user_code=[m.fn for m in custom],
        )
    clean_run = check_clean_run(outcome["clean_run"], model.tokenizer)
    clean_stats, corrupt_stats = RunStats(outcome["clean"]), RunStats(outcome["corrupted"])
    target_stats = corrupt_stats if direction == "denoise" else clean_stats
    n_cells = int(np.prod(grid.shape))
    raw = outcome["estimates"].reshape(tokens.n, n_cells).T  # [components, prompts]: estimated change of the raw metric
    patched = RunStats({metric: target_stats[metric][None, :] + raw})
    result = sweep_result(
        model, tokens, grid, patched, clean_stats, corrupt_stats, metric=metric, method=METHOD,
        rows_per_pass=outcome["rows_per_pass"], component=component, positions=positions, corruption=corruption,
        direction=direction, window=window, seed=seed, noise_scale=noise_scale, custom=custom, clean_run=clean_run,
    )
    result.settings["grad_drop"] = grad_drop
    return result


def attribution_work(
    model: PatchableModel,
    tokens: TokenizedPairs,
    site: str,
    corruption: Corruption,
    metric: str,
    *,
    component: str,
    positions: str | int,
    direction: str,
    seed: int,
    noise_scale: float,
    grad_drop: bool,
    batch_size: int | None,
    custom: Sequence[UserMetric],
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Where the model runs (``engine.on_model``): the source run, the target run with autograd and the backward
    passes, chunk by chunk; returns the estimates ``[prompts, cells]`` and the two runs' stats."""
    source, target = sweep_inputs(model, tokens, corruption, direction=direction, seed=seed, noise_scale=noise_scale)
    n, vocab = tokens.n, model.shape.vocab_size
    reader = AnswerReader(tokens, vocab, custom)
    reader.clean_logprobs = torch.zeros(n, vocab)  # filled chunk by chunk, as set_clean would
    estimates: list[torch.Tensor] = []
    target_chunks = []
    with eval_mode(model):
        with torch.no_grad():
            prefix = shared_prefix(model, tokens, source, target)
            source_logits, cache = run(model, tokens, source, list(range(n)), cache_sites=(site,), prefix=prefix)
        batch_rows = rows_per_pass(model, tokens.seq_len - prefix.length, tokens.seq_len, batch_size)
        sites = {site, "attn", "mlp"} if grad_drop else {site}
        with _parameters_require_grad(model), torch.enable_grad():
            for begin in range(0, n, batch_rows):
                index = torch.arange(begin, min(n, begin + batch_rows))
                target_logits, live = _grad_run(model, tokens, target, index, sites, prefix)
                clean_logits = source_logits[index] if direction == "denoise" else target_logits.detach()
                reader.clean_logprobs[index] = torch.log_softmax(clean_logits.float().cpu(), dim=-1)
                value = reader.stats(target_logits, index)[metric].sum()
                activations = [live[(layer, site)] for layer in range(model.n_layers)]
                deltas = [(cache[(layer, site)][index.to(a.device)] - a.detach()).to(a.dtype) for layer, a in enumerate(activations)]
                estimate = functools.partial(
                    _estimates, deltas=deltas, component=component, positions=positions, tokens=tokens, index=index,
                    d_head=model.shape.d_head, start=prefix.length,
                )
                if grad_drop:
                    estimates.append(_grad_drop(model, value, live, activations, estimate, site))
                else:
                    estimates.append(estimate(torch.autograd.grad(value, activations, allow_unused=True)))
                target_chunks.append(target_logits.detach().float().cpu())
                del live, activations, deltas, value
                if progress is not None:
                    progress(int(index[-1]) + 1, n)
    target_logits = torch.cat(target_chunks)
    clean_logits = source_logits if direction == "denoise" else target_logits
    all_prompts = torch.arange(n)
    source_stats = reader.stats(source_logits, all_prompts)
    target_stats = reader.stats(target_logits, all_prompts)
    clean_stats, corrupt_stats = (source_stats, target_stats) if direction == "denoise" else (target_stats, source_stats)
    return {
        "estimates": torch.cat(estimates), "clean": dict(clean_stats.values), "corrupted": dict(corrupt_stats.values),
        "clean_run": reader.clean_summary(clean_logits), "rows_per_pass": batch_rows,
    }


def _grad_drop(
    model: PatchableModel,
    value: torch.Tensor,
    live: dict[tuple[int, str], torch.Tensor],
    activations: list[torch.Tensor],
    estimate: Callable[[Sequence[torch.Tensor | None]], torch.Tensor],
    site: str,
) -> torch.Tensor:
    """AtP*'s GradDrop: mean over layers l of |AtP estimate with no gradient through layer l's residual
    contribution| (its attention and MLP outputs), over the layers whose block does not hold the component."""
    dropped: list[int | None] = [None]

    def hook(layer: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
        return lambda grad: torch.zeros_like(grad) if dropped[0] == layer else None

    handles = [live[(layer, s)].register_hook(hook(layer)) for layer in range(model.n_layers) for s in ("attn", "mlp")]
    try:
        total = None
        for layer in range(model.n_layers):
            dropped[0] = layer
            grads = torch.autograd.grad(value, activations, retain_graph=layer < model.n_layers - 1, allow_unused=True)
            magnitude = estimate(grads).abs()  # [rows, layers, ...]
            if site != "resid":
                magnitude[:, layer] = 0  # the component's own layer: its whole effect was dropped
            total = magnitude if total is None else total + magnitude
    finally:
        for handle in handles:
            handle.remove()
    return total / (model.n_layers - (site != "resid"))


# ---- checking estimates against the exact sweep ---------------------------------------------------------
def compare_with_exact(estimate: PatchResult, exact: PatchResult, k: int = 10) -> AttributionComparison:
    """Pearson and Spearman correlation of mean effects over all components (under ``estimate.metric``), and
    the ``k`` components with the largest |estimate - exact|."""
    if estimate.grid != exact.grid:
        raise SettingsError(f"The two results patch different components: {estimate.grid} vs {exact.grid}.")
    exact = exact.with_metric(estimate.metric)
    return compare(estimate.metric, estimate.labels, estimate.mean.reshape(-1), exact.mean.reshape(-1), k)


def verify_top(
    model: PatchableModel, pairs: Any, estimate: PatchResult, k: int = 5, **patch_kwargs: Any
) -> AttributionComparison:
    """Re-measure the estimate's ``k`` largest-|effect| components by exact patching, those ``k`` alone.

    The exact runs use the estimate's settings (component, positions, corruption, direction, seed, noise scale;
    ``patch_kwargs`` override them, e.g. ``corruption=`` for a callable corruption, which settings store only
    by name, or ``batch_size=``) and cost ``k`` patched runs per prompt. The comparison covers those ``k``
    (``worst`` lists all of them by |error|); its ``verified`` result is the estimate with their effects
    replaced by the exact ones. A GradDrop estimate holds magnitudes, so it is compared with |exact|.
    """
    if not estimate.is_estimate:
        raise SettingsError("verify_top checks an attribution estimate; this result is already exact.")
    if not (isinstance(k, int) and 1 <= k <= len(estimate.labels)):
        raise SettingsError(f"k={k!r}: verify between 1 and {len(estimate.labels)} components (the estimate's grid).")
    s = estimate.settings
    kwargs: dict[str, Any] = {
        "component": s["component"], "corruption": s["corruption"], "positions": s["positions"], "window": 1,
        "direction": s["direction"], "seed": s["seed"], "noise_scale": s.get("noise_scale", DEFAULT_NOISE_SCALE),
        "batch_size": None, "progress": None,
    }
    kwargs.update(patch_kwargs)
    est = estimate.mean.reshape(-1)
    top = np.argsort(-np.abs(est), kind="stable")[:k]
    labels = [estimate.labels[i] for i in top]
    exact = exact_patch(model, pairs, metric=estimate.metric, only=labels, **kwargs)
    if exact.grid != estimate.grid:
        raise SettingsError(f"The exact sweep patches different components: {exact.grid} vs {estimate.grid}.")
    metric = estimate.metric
    measured = exact.effects[metric].reshape(estimate.n_prompts, -1)[:, top]
    if s.get("grad_drop"):
        measured = np.abs(measured)
    effects = estimate.effects[metric].reshape(estimate.n_prompts, -1).copy()
    effects[:, top] = measured
    verified = PatchResult(
        metric=metric, effects={metric: effects.reshape(estimate.effects[metric].shape)}, ld_clean=estimate.ld_clean,
        ld_corrupted=estimate.ld_corrupted, grid=estimate.grid, settings=dict(estimate.settings, verified=labels),
        gaps=estimate.gaps,
    )
    return verified_comparison(estimate, verified, k)


__all__: Sequence[str] = ("AttributionComparison", "attribution_patch", "compare_with_exact", "verify_top")
