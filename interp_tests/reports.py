"""Sweep reports: a heatmap a person can read at a glance, and JSON a program can diff or re-plot.

matplotlib is the optional ``plots`` extra, imported inside the plotting code only: the JSON report, the
pytest plugin and everything else work without it. Plots use the Agg canvas directly (no pyplot), so
drawing a report never changes the backend of the process that asked for it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import PlotsUnavailableError
from .files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

    from .results import PatchResult

REPORT_FORMAT_VERSION = 1
METRIC_DESCRIPTIONS = {
    "logit_diff": "normalised logit difference",
    "prob": "change in P(answer)",
    "kl": "reduction in KL(clean || run)",
}
COLOUR_MAP = "RdBu_r"  # diverging: red restores behaviour, blue works against it, white does nothing
MAX_SLUG_LENGTH = 80
MAX_ANNOTATED_CELLS = 150  # above this, numbers in the cells are too small to read
MAX_TICKS = 24
PANELS_PER_ROW = 6


def require_matplotlib() -> None:
    """Raise ``PlotsUnavailableError`` unless matplotlib can be imported (check before a long sweep)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsUnavailableError(
            "Heatmaps need matplotlib, which is not installed. Install the plots extra: "
            "pip install 'interp-tests[plots]'."
        ) from None


def slugify(name: str) -> str:
    """A file-name-safe form of a claim or test name, e.g. ``test_ioi[attn_head-str]`` -> ``test_ioi-attn_head-str``.

    Long names are cut and given a hash of the full name, so two long names never share a file.
    """
    slug = re.sub(r"[^a-z0-9._]+", "-", name.lower()).strip("-.") or "sweep"
    if len(slug) > MAX_SLUG_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        slug = f"{slug[: MAX_SLUG_LENGTH - 9].rstrip('-.')}-{digest}"
    return slug


# -- JSON --------------------------------------------------------------------------------------------
def _json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: write them as null rather than as invalid JSON."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_grid(values: np.ndarray) -> Any:
    if values.ndim == 0:
        return _json_number(values)
    return [_json_grid(row) for row in values]


def _jsonable(value: Any) -> Any:
    """numpy values in settings become numbers; anything else unknown (a callable corruption) its text."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def report_data(result: PatchResult, *, sd: float = 2.0, top: int = 10) -> dict[str, Any]:
    """Everything a report shows, as JSON-ready data: grid-shaped effects and z-scores, detections, top-k."""
    zscores = result.zscores
    flat_z = zscores.reshape(-1)
    index = {label: i for i, label in enumerate(result.labels)}
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "settings": result.settings,
        "metric": result.metric,
        "is_estimate": result.is_estimate,
        "n_prompts": result.n_prompts,
        "shape": list(result.shape),
        "axes": list(result.grid.axes),
        "labels": result.labels,
        "mean": _json_grid(result.mean),
        "zscores": _json_grid(zscores),
        "sd": sd,
        "detected": {"positive": result.detected(sd, "positive"), "negative": result.detected(sd, "negative")},
        "top": [
            {"label": label, "effect": _json_number(effect), "z": _json_number(flat_z[index[label]])}
            for label, effect in result.top(top)
        ],
    }


def result_json(result: PatchResult, path: str | os.PathLike, *, sd: float = 2.0, top: int = 10) -> Path:
    """Write ``report_data(result)`` as JSON to ``path``, atomically; returns the path."""
    text = json.dumps(report_data(result, sd=sd, top=top), indent=1, allow_nan=False, default=_jsonable) + "\n"
    return atomic_write(path, text)


# -- heatmaps ----------------------------------------------------------------------------------------
def _short_list(labels: list[str], limit: int = 6) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" (+{len(labels) - limit} more)" if len(labels) > limit else "")


def _caption(result: PatchResult, sd: float, title: str | None) -> str:
    s = result.settings
    heading = title or "activation patching"
    keys = ("model", "component", "positions", "corruption", "metric", "direction")
    details = [f"{key}={s[key]}" for key in keys if key in s]
    if result.grid.window != 1:
        details.append(f"window={result.grid.window}")
    details.append(f"n={result.n_prompts} prompts" + (" (estimate)" if result.is_estimate else ""))
    positive, negative = result.detected(sd, "positive"), result.detected(sd, "negative")
    if positive or negative:
        found = "; ".join(
            f"{sign} {_short_list(labels)}" for sign, labels in (("positive", positive), ("negative", negative)) if labels
        )
        detected = f"detected (|z| \u2265 {sd:g}, outlined): {found}"
    else:
        detected = f"nothing detected at |z| \u2265 {sd:g}"
    lines = [heading, ", ".join(details), detected]
    return "\n".join(textwrap.fill(line, 90) for line in lines)


def _metric_label(metric: str) -> str:
    return f"{metric}: {METRIC_DESCRIPTIONS.get(metric, metric)}"


def _ticks(n: int) -> range:
    return range(0, n, max(1, math.ceil(n / MAX_TICKS)))


def _draw_matrix(
    ax: Axes, values: np.ndarray, detected: np.ndarray, norm: Normalize, *, xlabel: str, annotate: bool
) -> AxesImage:
    """One layer-by-``xlabel`` heatmap, layer 0 at the top, detected cells outlined."""
    from matplotlib.patches import Rectangle

    image = ax.imshow(values, cmap=COLOUR_MAP, norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer")
    ax.set_xticks(list(_ticks(values.shape[1])))
    ax.set_yticks(list(_ticks(values.shape[0])))
    for row, col in zip(*np.nonzero(detected)):
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    if annotate:
        for (row, col), value in np.ndenumerate(values):
            dark = abs(norm(value) - 0.5) > 0.3
            text = f"{value:.2f}".replace("-0.00", "0.00")
            ax.text(col, row, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return image


def _draw_layers(ax: Axes, result: PatchResult, detected: np.ndarray, norm: Normalize, sd: float) -> None:
    """Layer sweeps as bars, with the detection thresholds (mean +- sd SDs over layers) drawn in."""
    from matplotlib import colormaps

    values = result.mean
    layers = np.arange(len(values))
    colours = colormaps[COLOUR_MAP](norm(values))
    ax.bar(layers, values, color=colours, edgecolor=np.where(detected, "black", "none"), linewidth=2)
    centre, spread = float(np.nanmean(values)), float(np.nanstd(values))
    ax.axhline(0, color="black", linewidth=0.8)
    for bound in (centre + sd * spread, centre - sd * spread):
        ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
    ax.plot([], [], color="grey", linestyle="--", label=f"detection threshold (mean \u00b1 {sd:g} SD)")
    ax.legend(loc="best", fontsize=8)
    for layer in np.flatnonzero(detected):
        above = values[layer] >= 0
        ax.annotate(result.labels[layer], (layer, values[layer]), xytext=(0, 3 if above else -3),
                    textcoords="offset points", ha="center", va="bottom" if above else "top", fontsize=8)
    ax.set_xticks(list(_ticks(len(values))))
    ax.set_xlabel("layer")
    ax.set_ylabel(_metric_label(result.metric))


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def png_bytes(figure: Figure, dpi: float | None = None) -> bytes:
    """A figure as PNG bytes, through the Agg canvas (no pyplot, no backend change); ``dpi`` None keeps the
    figure's own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)  # attaches itself to the figure
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi="figure" if dpi is None else dpi)
    return png.getvalue()


def heatmap(result: PatchResult, path: str | os.PathLike, *, sd: float = 2.0, title: str | None = None) -> Path:
    """Write ``heatmap_figure(result)`` as a PNG at ``path``, atomically; returns the path."""
    return atomic_write(path, png_bytes(heatmap_figure(result, sd=sd, title=title)))


def heatmap_figure(result: PatchResult, *, sd: float = 2.0, title: str | None = None) -> Figure:
    """``result`` as a matplotlib Figure: the grid in a diverging colour map centred at 0, detections outlined.

    Heads are a layer-by-head heatmap, layers by position a layer-by-position heatmap, heads by position
    one layer-by-head panel per position (a shared colour scale), and layer sweeps a bar chart. Cells
    with ``|z| >= sd`` (either sign) are outlined.
    """
    require_matplotlib()
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    values = result.mean
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    norm = Normalize(vmin=-limit, vmax=limit)
    detected = np.abs(result.zscores) >= sd
    axes = result.grid.axes
    n_layers = result.shape[0]

    if axes == ("layer",):
        figure = Figure(figsize=(_clamp(2 + 0.5 * n_layers, 6, 16), 4.8), layout="constrained")
        _draw_layers(figure.add_subplot(), result, detected, norm, sd)
    elif axes == ("layer", "pos", "head"):
        n_pos, n_heads = result.shape[1], result.shape[2]
        columns = min(n_pos, PANELS_PER_ROW)
        rows = math.ceil(n_pos / columns)
        panel_w, panel_h = _clamp(0.35 * n_heads + 0.9, 1.8, 5), _clamp(0.3 * n_layers + 0.9, 1.6, 5)
        figure = Figure(figsize=(columns * panel_w + 1.5, rows * panel_h + 1.3), layout="constrained")
        grid_axes = figure.subplots(rows, columns, squeeze=False)
        for pos, ax in enumerate(grid_axes.flat):
            if pos >= n_pos:
                ax.set_visible(False)
                continue
            image = _draw_matrix(ax, values[:, pos, :], detected[:, pos, :], norm, xlabel="head", annotate=False)
            ax.set_title(f"position {pos}", fontsize=9)
            if pos + columns < n_pos:  # another panel below: the axis is labelled there
                ax.set_xlabel("")
                ax.tick_params(labelbottom=False)
            if pos % columns:
                ax.set_ylabel("")
                ax.tick_params(labelleft=False)
        figure.colorbar(image, ax=grid_axes, label=_metric_label(result.metric), shrink=0.9)
    else:
        xlabel = "head" if axes == ("layer", "head") else "position"
        n_cols = values.shape[1]
        figure = Figure(
            figsize=(_clamp(2.4 + 0.55 * n_cols, 6, 18), _clamp(1.9 + 0.45 * n_layers, 3.8, 12)), layout="constrained"
        )
        ax = figure.add_subplot()
        image = _draw_matrix(ax, values, detected, norm, xlabel=xlabel, annotate=values.size <= MAX_ANNOTATED_CELLS)
        figure.colorbar(image, ax=ax, label=_metric_label(result.metric))
    figure.suptitle(_caption(result, sd, title), fontsize=9)
    return figure


def bar_figure(labels: list[str], values: list[float], *, ylabel: str, title: str) -> Figure:
    """A bar per label (circuit nodes, searched subsets), coloured like the heatmaps: red helps, blue hurts."""
    require_matplotlib()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    finite = [abs(v) for v in values if math.isfinite(v)]
    limit = max(finite + [1e-12])
    figure = Figure(figsize=(_clamp(2 + 0.5 * len(labels), 5, 16), 4), layout="constrained")
    ax = figure.add_subplot()
    ax.bar(range(len(values)), values, color=colormaps[COLOUR_MAP](Normalize(-limit, limit)(values)))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center")
    ax.set_ylabel(ylabel)
    figure.suptitle("\n".join(textwrap.fill(line, 90) for line in title.splitlines()), fontsize=9)
    return figure


# -- both --------------------------------------------------------------------------------------------
def write_sweep_report(result: PatchResult, directory: str | os.PathLike, name: str, *, sd: float = 2.0) -> list[Path]:
    """Write ``<slug>.png`` and ``<slug>.json`` for one sweep into ``directory``; returns the files written.

    Without matplotlib the PNG is skipped with a warning and the JSON is still written, so a report
    directory never fails a test run.
    """
    directory = Path(directory)
    slug = slugify(name)
    written = [result_json(result, directory / f"{slug}.json", sd=sd)]
    try:
        written.append(heatmap(result, directory / f"{slug}.png", sd=sd, title=name))
    except PlotsUnavailableError as error:
        warnings.warn(f"interp-tests reports: PNG heatmaps skipped, JSON still written. {error}", stacklevel=2)
    return written
