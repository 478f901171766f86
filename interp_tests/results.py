"""Patching results: effects per prompt and component, the paper's detection rule, save and load.

A result stores un-normalised effects (linear in the patched run) for every metric of its sweep, and the
per-prompt clean-corrupted gaps of the normalised ones, so switching metric, summing over sliding windows or
resampling prompts never needs the model again.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import display
from .claims import Claims
from .components import ComponentGrid, make_grid
from .errors import ResultFileError, SettingsError
from .files import atomic_write
from .metrics import MIN_LOGIT_DIFF_GAP, check_denominator, check_metric
from .signs import signed

FORMAT_VERSION = 1


class PatchResult(Claims):
    """Effects of patching each component, under one metric (``.metric``), for every prompt.

    ``per_prompt`` is ``[n_prompts, *grid]``; ``mean`` is ``grid``-shaped, e.g. ``[n_layers, n_heads]``.
    For the normalised logit difference, ``mean`` normalises the batch means (as Wang et al. 2023 and the
    TransformerLens demos do) while ``per_prompt`` normalises each prompt by its own denominator; prompts
    whose own denominator is ~0 are NaN there and listed in ``degenerate_prompts``. Other normalised metrics
    (``logprob``, user metrics registered with ``normalise=True``) are normalised the same way, by their own
    per-prompt gaps ``gaps[metric] = m_clean - m_corrupted``; a metric without a gap is not normalised.
    """

    def __init__(
        self,
        *,
        metric: str,
        effects: dict[str, np.ndarray],
        ld_clean: np.ndarray,
        ld_corrupted: np.ndarray,
        grid: ComponentGrid,
        settings: dict[str, Any],
        gaps: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.effects = {k: np.asarray(v, dtype=np.float64) for k, v in effects.items()}
        # A result read back from a file names its metrics itself; a user metric need not be registered here.
        self.metric = metric if isinstance(metric, str) and metric in self.effects else check_metric(metric)
        self.ld_clean = np.asarray(ld_clean, dtype=np.float64)
        self.ld_corrupted = np.asarray(ld_corrupted, dtype=np.float64)
        self.gaps = {k: np.asarray(v, dtype=np.float64) for k, v in (gaps or {}).items()}
        self.grid = grid
        self.settings = dict(settings, metric=self.metric)
        gap = self.gap
        if gap is not None:
            check_denominator(float(gap.mean()), "batch means", self.metric)

    # -- views -----------------------------------------------------------------------------------
    def with_metric(self, metric: str) -> PatchResult:
        """The same sweep read under another metric (no model runs: all metrics come from the same runs).

        Attribution estimates hold one metric only (AtP takes one backward pass per metric).
        """
        if metric not in self.effects:
            name = check_metric(metric)
            why = (
                "attribution patching estimates one metric per backward pass"
                if self.is_estimate
                else "a sweep computes the built-in metrics and the user metric it was asked for"
            )
            raise SettingsError(
                f"This result holds {', '.join(sorted(self.effects))} effects only, not {name!r}: {why}. Rerun it "
                f"with metric={name!r}."
            )
        return PatchResult(
            metric=metric, effects=self.effects, ld_clean=self.ld_clean, ld_corrupted=self.ld_corrupted,
            grid=self.grid, settings=self.settings, gaps=self.gaps,
        )

    @property
    def n_prompts(self) -> int:
        return self.ld_clean.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.grid.shape

    def baseline_values(self) -> dict[str, float]:
        """What a regression baseline stores: every component's mean effect, in grid order."""
        return dict(zip(self.labels, self.mean.reshape(-1).tolist()))

    @property
    def labels(self) -> list[str]:
        """Component labels in the flattened order of ``mean``."""
        return self.grid.labels

    @property
    def is_estimate(self) -> bool:
        return self.settings.get("method", "exact") != "exact"

    def _expand(self, per_prompt: np.ndarray) -> np.ndarray:
        return per_prompt.reshape(per_prompt.shape + (1,) * len(self.shape))

    @property
    def denominators(self) -> np.ndarray:
        """Per-prompt ``LD_clean - LD_corrupted``: the normalisers of the logit difference."""
        return self.ld_clean - self.ld_corrupted

    @property
    def gap(self) -> np.ndarray | None:
        """Per-prompt ``m_clean - m_corrupted`` of this metric when it is normalised, else None."""
        if self.metric == "logit_diff":
            return self.denominators
        return self.gaps.get(self.metric)

    @property
    def degenerate_prompts(self) -> list[int]:
        """Prompts whose own gap (the logit difference's, for an unnormalised metric) is ~0: NaN in the
        normalised ``per_prompt``."""
        gap = self.denominators if self.gap is None else self.gap
        return [int(i) for i in np.flatnonzero(~(np.abs(gap) > MIN_LOGIT_DIFF_GAP))]

    @property
    def per_prompt(self) -> np.ndarray:
        raw = self.effects[self.metric]
        if self.gap is None:
            return raw
        den = self.gap.copy()
        den[self.degenerate_prompts] = np.nan
        return raw / self._expand(den)

    @property
    def mean(self) -> np.ndarray:
        raw = self.effects[self.metric]
        if self.gap is None:
            return raw.mean(axis=0)
        return raw.mean(axis=0) / self.gap.mean()

    # -- detection -------------------------------------------------------------------------------
    @property
    def zscores(self) -> np.ndarray:
        """(effect - mean over components) / SD over components (population SD), grid-shaped."""
        mean = self.mean
        sd = mean.std()
        if not sd > 0:
            return np.zeros_like(mean)
        return (mean - mean.mean()) / sd

    def _flat_index(self, label: str) -> int:
        return int(np.ravel_multi_index(self.grid.index(label), self.shape))

    def __getitem__(self, label: str) -> float:
        """Mean effect of one component, e.g. ``result["9.9"]``."""
        return float(self.mean.reshape(-1)[self._flat_index(label)])

    def zscore(self, label: str) -> float:
        return float(self.zscores.reshape(-1)[self._flat_index(label)])

    def rank(self, label: str) -> int:
        """1 for the component with the largest mean effect."""
        flat = self.mean.reshape(-1)
        return int((flat > flat[self._flat_index(label)]).sum()) + 1

    def detected(self, sd: float = 2.0, sign: str = "positive") -> list[str]:
        """Components at least ``sd`` SDs from the mean effect over components (the paper's rule).

        Ordered from the strongest; ``sign`` selects effects above (positive), below (negative) or
        either side of the mean.
        """
        score = signed(self.zscores.reshape(-1), sign)
        order = np.argsort(-score, kind="stable")
        labels = self.labels
        return [labels[i] for i in order if score[i] >= sd]

    def top(self, k: int = 10, sign: str = "positive") -> list[tuple[str, float]]:
        """The ``k`` components with the largest (or most negative, or largest absolute) mean effects."""
        flat = self.mean.reshape(-1)
        score = signed(flat, sign)
        order = np.argsort(-score, kind="stable")[:k]
        labels = self.labels
        return [(labels[i], float(flat[i])) for i in order]

    # -- sliding windows -------------------------------------------------------------------------
    def window_sum(self, window: int) -> PatchResult:
        """Single-layer effects summed over the windows a sliding-window sweep restores jointly.

        Zhang & Nanda (2024, section 5) compare this with the joint (sliding-window) effect.
        """
        if self.grid.window != 1 or self.grid.kind not in ("mlp", "attn"):
            raise SettingsError("window_sum() needs a single-layer (window=1) sweep of 'mlp' or 'attn' components.")
        g = self.grid
        grid = make_grid(g.kind, g.positions, n_layers=g.n_layers, n_heads=g.n_heads, seq_len=g.seq_len, window=window)
        summed = {
            name: np.stack([raw[:, grid.window_layers(layer)].sum(axis=1) for layer in range(grid.n_layers)], axis=1)
            for name, raw in self.effects.items()
        }
        return PatchResult(
            metric=self.metric, effects=summed, ld_clean=self.ld_clean, ld_corrupted=self.ld_corrupted,
            grid=grid, settings=dict(self.settings, window=window, window_sum=True), gaps=self.gaps,
        )

    # -- display ---------------------------------------------------------------------------------
    def describe_settings(self) -> str:
        keys = ("model", "component", "positions", "corruption", "metric", "direction", "window", "n_prompts", "seed")
        if self.is_estimate:
            keys += ("method", "grad_drop", "verified")
        return ", ".join(f"{k}={self.settings[k]}" for k in keys if k in self.settings)

    def table(self, k: int = 10, sign: str = "positive") -> str:
        """A ranked text table of the ``k`` top components (as ``top`` ranks them), with effects and z-scores."""
        z = self.zscores.reshape(-1)
        rows = [f"{'rank':>4}  {'component':<12}{'effect':>10}{'z':>8}"]
        for rank, (label, value) in enumerate(self.top(k, sign), start=1):
            rows.append(f"{rank:>4}  {label:<12}{value:>10.4f}{z[self._flat_index(label)]:>8.2f}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"PatchResult({self.describe_settings()}, shape={self.shape})"

    # -- notebooks -------------------------------------------------------------------------------
    def plot(self, sd: float = 2.0, title: str | None = None) -> Any:
        """The report heatmap as a matplotlib Figure (``reports.heatmap_figure``; needs the plots extra)."""
        from .reports import heatmap_figure

        return heatmap_figure(self, sd=sd, title=title)

    @property
    def columns(self) -> list[str]:
        """``to_dataframe``'s columns: ``label``, the grid's axes (``layer``, ``head``, ``position``), ``effect``,
        ``z``, ``rank``."""
        return ["label", *("position" if axis == "pos" else axis for axis in self.grid.axes), "effect", "z", "rank"]

    def component_rows(self) -> list[dict[str, Any]]:
        """One dict per component, in ``labels`` order, with ``columns`` as keys (rank 1 = largest effect)."""
        axes = self.columns[1:-3]
        effect, z = self.mean.reshape(-1), self.zscores.reshape(-1)
        ranks = (-effect).argsort(kind="stable").argsort() + 1
        return [
            {"label": label, **dict(zip(axes, map(int, np.unravel_index(i, self.shape)))),
             "effect": float(effect[i]), "z": float(z[i]), "rank": int(ranks[i])}
            for i, label in enumerate(self.labels)
        ]

    def to_dataframe(self) -> Any:
        """``component_rows()`` as a pandas DataFrame, one row per component (needs the pandas extra)."""
        return display.dataframe(self.component_rows(), self.columns)

    def _repr_html_(self) -> str:
        top = self.table(10).splitlines()[1:]
        rows = [line.split() for line in top]
        return display.block(
            "PatchResult" + (" (estimate)" if self.is_estimate else ""),
            [self.describe_settings(), f"detected at 2 SD: {', '.join(self.detected(2.0)) or 'none'}"],
            display.table(["rank", "component", "effect", "z"], rows),
            display.inline_figure(self.plot),
        )

    # -- persistence -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The lossless ``.npz`` form (arrays plus JSON metadata: settings, grid, format version) that ``load`` reads."""
        meta = {"format_version": FORMAT_VERSION, "metric": self.metric, "grid": asdict(self.grid), "settings": self.settings}
        arrays = {f"effects_{k}": v for k, v in self.effects.items()}
        arrays.update({f"gaps_{k}": v for k, v in self.gaps.items()})
        buffer = io.BytesIO()
        np.savez(buffer, ld_clean=self.ld_clean, ld_corrupted=self.ld_corrupted, meta=np.array(json.dumps(meta)), **arrays)
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Save losslessly as ``.npz``, atomically (``files.atomic_write``)."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> PatchResult:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                effects = {k[len("effects_"):]: data[k] for k in data.files if k.startswith("effects_")}
                gaps = {k[len("gaps_"):]: data[k] for k in data.files if k.startswith("gaps_")}
                ld_clean, ld_corrupted = data["ld_clean"], data["ld_corrupted"]
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise ResultFileError(f"{path} is not a readable PatchResult file ({error}). Recompute it.") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ResultFileError(f"{path} has result format {meta.get('format_version')}, expected {FORMAT_VERSION}. Recompute it.")
        return cls(
            metric=meta["metric"], effects=effects, ld_clean=ld_clean, ld_corrupted=ld_corrupted,
            grid=ComponentGrid(**meta["grid"]), settings=meta["settings"], gaps=gaps,
        )
