"""Exact activation patching: every component's effect measured by its own patched run.

Runs are grouped by the first layer they patch and resume there from the target run's cache, many rows
per forward pass (``engine.run``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .components import SITE_OF_KIND, ComponentGrid
from .corruptions import Corruption, RunInput
from .engine import (
    Pairs,
    Progress,
    SharedPrefix,
    eval_mode,
    in_passes,
    on_model,
    prepare_sweep,
    progress_reporter,
    rows_per_pass,
    run,
    shared_prefix,
    sweep_inputs,
    sweep_result,
)
from .metrics import AnswerReader, Metric, RunStats, UserMetric, check_clean_run, resolve_metric
from .models import PatchableModel
from .pairs import TokenizedPairs
from .results import PatchResult


def exact_patch(
    model: PatchableModel,
    pairs: Pairs,
    component: str,
    corruption: Corruption,
    metric: Metric,
    *,
    positions: str | int,
    window: int,
    direction: str,
    seed: int,
    noise_scale: float,
    batch_size: int | None,
    progress: Progress,
    only: Sequence[str] | None = None,
) -> PatchResult:
    """``patch(..., method="exact")``; with ``only`` (component labels), patches those components alone and
    leaves every other effect NaN: what checking an estimate's top components costs."""
    tokens, grid = prepare_sweep(
        model, pairs, component, corruption, metric, positions=positions, window=window, direction=direction,
        noise_scale=noise_scale,
    )
    name, custom = resolve_metric(metric)
    cells = None if only is None else [int(np.ravel_multi_index(grid.index(label), grid.shape)) for label in only]
    with progress_reporter(progress, f"patching {component}") as report:
        outcome = on_model(
            model, exact_work, tokens, grid, SITE_OF_KIND[component], corruption, direction=direction, seed=seed,
            noise_scale=noise_scale, custom=custom, batch_size=batch_size, cells=cells, progress=report,
            user_code=[m.fn for m in custom],
        )
    clean_run = check_clean_run(outcome["clean_run"], model.tokenizer)
    return sweep_result(
        model, tokens, grid, RunStats(outcome["patched"]), RunStats(outcome["clean"]), RunStats(outcome["corrupted"]),
        metric=name, method="exact", rows_per_pass=outcome["rows_per_pass"], component=component, positions=positions,
        corruption=corruption, direction=direction, window=window, seed=seed, noise_scale=noise_scale, custom=custom,
        clean_run=clean_run,
    )


def exact_work(
    model: PatchableModel,
    tokens: TokenizedPairs,
    grid: ComponentGrid,
    site: str,
    corruption: Corruption,
    *,
    direction: str,
    seed: int,
    noise_scale: float,
    custom: Sequence[UserMetric],
    batch_size: int | None,
    cells: Sequence[int] | None,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    """Where the model runs (``engine.on_model``): the source and target runs, every patched run, and their stats."""
    source, target = sweep_inputs(model, tokens, corruption, direction=direction, seed=seed, noise_scale=noise_scale)
    all_prompts = list(range(tokens.n))
    reader = AnswerReader(tokens, model.shape.vocab_size, custom)
    with torch.no_grad(), eval_mode(model):
        prefix = shared_prefix(model, tokens, source, target)
        source_logits, cache = run(model, tokens, source, all_prompts, cache_sites=(site,), prefix=prefix)
        target_logits, target_cache = run(model, tokens, target, all_prompts, cache_sites=("out",), prefix=prefix)
        cache.update(target_cache)
        clean_logits, corrupt_logits = (source_logits, target_logits) if direction == "denoise" else (target_logits, source_logits)
        reader.set_clean(clean_logits)
        index = torch.arange(tokens.n)
        clean_stats, corrupt_stats = reader.stats(clean_logits, index), reader.stats(corrupt_logits, index)
        target_stats = corrupt_stats if direction == "denoise" else clean_stats
        per_pass = rows_per_pass(model, tokens.seq_len - prefix.length, tokens.seq_len, batch_size)
        patched, per_pass = patched_stats(
            model, tokens, grid, target, cache, prefix, reader, target_stats, per_pass, progress, cells
        )
    return {
        "patched": dict(patched.values), "clean": dict(clean_stats.values), "corrupted": dict(corrupt_stats.values),
        "clean_run": reader.clean_summary(clean_logits), "rows_per_pass": per_pass,
    }


def patched_stats(
    model: PatchableModel,
    tokens: TokenizedPairs,
    grid: ComponentGrid,
    target: RunInput,
    cache: dict[tuple[int, str], Any],
    prefix: SharedPrefix,
    reader: AnswerReader,
    unpatched: RunStats,
    rows_per_pass: int,
    progress: Callable[[int, int], None] | None,
    only_cells: Sequence[int] | None = None,
) -> tuple[RunStats, int]:
    """Stats of every (component, prompt) patched run, as fields shaped [components, prompts], and the
    rows per forward pass that fit in device memory.

    Runs are grouped by the first layer they patch and resume there from the target run's cache; a
    component that lies wholly inside the shared prefix changes nothing and keeps the unpatched stats.
    A pass that runs out of device memory is retried with half its rows, down to one row. With
    ``only_cells`` (flat indices) the other components are not run and their stats are NaN.
    """
    cells = grid.cells()
    sites = [grid.sites(cell) for cell in cells]
    out = {f: value.repeat(len(cells), 1) for f, value in unpatched.values.items()}
    inert = [all(isinstance(s.position, int) and s.position < prefix.length for s in cell) for cell in sites]
    if only_cells is not None:
        skipped = torch.ones(len(cells), dtype=torch.bool)
        skipped[list(only_cells)] = False
        for value in out.values():
            value[skipped] = torch.nan
    by_layer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for c, cell_sites in enumerate(sites):
        if not inert[c] and (only_cells is None or c in only_cells):
            by_layer[min(s.layer for s in cell_sites)].extend((c, p) for p in range(tokens.n))
    total = sum(len(rows) for rows in by_layer.values())
    done = 0

    def take(chunk: Sequence[tuple[int, int]], logits: torch.Tensor) -> None:
        nonlocal done
        prompt_index = torch.tensor([p for _, p in chunk])
        stats = reader.stats(logits, prompt_index)
        cell_index = torch.tensor([c for c, _ in chunk])
        for f, value in out.items():
            value[cell_index, prompt_index] = stats[f]
        done += len(chunk)
        if progress is not None:
            progress(done, total)

    for layer, rows in sorted(by_layer.items()):

        def run_rows(chunk: Sequence[tuple[int, int]], layer: int = layer) -> torch.Tensor:
            logits, _ = run(
                model, tokens, target, [p for _, p in chunk], row_sites=[sites[c] for c, _ in chunk], cache=cache,
                prefix=prefix, resume_at=layer,
            )
            return logits

        rows_per_pass = in_passes(model, tokens, rows, rows_per_pass, run_rows, take)
    return RunStats(out), rows_per_pass
