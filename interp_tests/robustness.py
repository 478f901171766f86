"""Zhang & Nanda (2024)'s central warning as code: a localization can change with the corruption method, the
metric and which tokens are corrupted, so check it across all of them.

``grid`` runs one sweep per (corruption, corrupted tokens) and reads every metric from it; ``Grid`` prints
the paper's Table 1/5 style detections, says whether a component is detected robustly, and saves CSV,
JSON and a figure. The other functions are two of the paper's specific cautions: Gaussian noise pushes
activations off distribution (section 3.2), and sliding-window patching amplifies single-layer effects
(section 5). The third, that probability cannot see negative components (section 4.2), is
``stats.probability_blind_spot_warning``, below the claims that warn with it.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import display
from .choices import BUILTIN_METRICS, CORRUPTIONS, METRICS
from .claims import GridClaims
from .corruptions import (
    DEFAULT_NOISE_SCALE,
    Corruption,
    check_corruption,
    corruption_name,
)
from .errors import MetricError, SettingsError
from .files import atomic_write
from .metrics import Metric, check_metric
from .pairs import PromptPairs
from .reports import COLOUR_MAP, png_bytes, require_matplotlib
from .results import PatchResult
from .signs import check_sign
from .specs import TaskSpec
from .stats import detected_in_at_least

if TYPE_CHECKING:  # a grid of cached sweeps is read and claimed on without torch; running one loads it

    from . import engine
    from .models import PatchableModel

PairsFactory = Callable[[str | None], PromptPairs]  # corrupt_tokens choice -> pairs
PairsSource = PromptPairs | Mapping[str, Any] | PairsFactory
Sweep = Callable[..., PatchResult]  # patch(model, tokens, component, corruption, metric, **patch_kwargs)
FORMAT_VERSION = 1
CSV_COLUMNS = ("corruption", "corrupt_tokens", "metric", "label", "effect", "z", "detected_positive", "detected_negative")


class Setting(NamedTuple):
    """One cell of a robustness grid; equal to the plain tuple ``(corruption, corrupt_tokens, metric)``."""

    corruption: str
    corrupt_tokens: str | None
    metric: str

    def __str__(self) -> str:
        parts = (_corruption_label(self.corruption), self.corrupt_tokens, self.metric)
        return " / ".join(part for part in parts if part is not None)


def _corruption_label(name: str) -> str:
    return name.upper() if name in CORRUPTIONS else name


# -------------------------------------------------------------------------------------------- the grid
def _task_pairs(model: PatchableModel, spec: Mapping[str, Any], corrupt_tokens: Sequence[str] | None) -> PairsFactory:
    variant = dict(spec)
    tokenizer = variant.pop("tokenizer", model.tokenizer)
    task = TaskSpec(name=variant.pop("name", None), n=variant.pop("n", None), seed=variant.pop("seed", None), variant=variant)
    task.check()
    if corrupt_tokens is not None:
        if "corrupt" not in task.options():
            raise SettingsError(f"Task {task.name!r} has no corrupt= variants for corrupt_tokens to vary; leave it None.")
        if "corrupt" in task.variant:
            raise SettingsError(
                f"The task spec fixes corrupt={task.variant['corrupt']!r} and corrupt_tokens={list(corrupt_tokens)} "
                "varies it: give one of them."
            )
    return lambda choice: task.corrupting(choice).pairs(tokenizer)


def _pairs_source(model: PatchableModel, source: PairsSource, corrupt_tokens: Sequence[str] | None) -> PairsFactory:
    if isinstance(source, PromptPairs):
        if corrupt_tokens is not None:
            raise SettingsError(
                "corrupt_tokens regenerates the pairs once per choice, which fixed PromptPairs cannot do. Pass a task "
                "spec such as {'name': 'ioi', 'n': 64, 'seed': 0} or a callable corrupt -> PromptPairs instead."
            )
        return lambda choice: source
    if isinstance(source, Mapping):
        return _task_pairs(model, source, corrupt_tokens)
    if callable(source):
        return source
    raise SettingsError(
        f"pairs_or_task is a {type(source).__name__}; give PromptPairs, a task spec mapping "
        "({'name': 'ioi', 'n': 64, 'seed': 0}) or a callable corrupt_tokens -> PromptPairs."
    )


def _unique(name: str, values: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
    values = list(values)
    names = [key(v) for v in values]
    if not values:
        raise SettingsError(f"{name} is empty: give at least one.")
    if len(set(names)) != len(names):
        raise SettingsError(f"{name}={names} repeats an entry.")
    return values


def grid(
    model: PatchableModel,
    pairs_or_task: PairsSource,
    component: str = "attn_head",
    *,
    corruptions: Sequence[Corruption] = ("str", "gn"),
    metrics: Sequence[Metric] = METRICS,
    corrupt_tokens: Sequence[str] | str | None = None,
    sd: float = 2.0,
    sweep: Sweep | None = None,
    **patch_kwargs: Any,
) -> Grid:
    """Patch ``component`` under every corruption and corrupted-token choice and read every metric.

    ``pairs_or_task`` is PromptPairs (``corrupt_tokens`` must then be None), a task spec mapping such as
    ``{"name": "ioi", "n": 64, "seed": 0}`` (its generator from ``interp_tests.tasks.TASKS`` is called with
    ``corrupt=`` each choice and this model's tokenizer), or a callable ``corrupt_tokens -> PromptPairs``
    (called with each choice, or once with None). Each (corruption, choice) costs one sweep; the metrics are
    read from it for free (attribution estimates, ``method="attribution"``, take one sweep per metric; a sweep
    computes one user metric besides the built-ins, so each further user metric costs one more sweep). A
    setting whose metric cannot be computed honestly (a ``MetricError``, e.g. a logit-difference denominator
    of ~0) is recorded in ``Grid.invalid`` with the reason. ``patch_kwargs`` go to ``patch`` (positions,
    window, direction, seed, noise_scale, batch_size, progress, method, grad_drop). ``sweep`` replaces
    ``patching.patch`` with a function of the same signature, e.g. one that serves sweeps from a cache; it
    gets each choice's pairs as the source gives them (the default tokenizes them once per choice).
    """

    clash = {"corruption", "metric"} & set(patch_kwargs)
    if clash:
        raise SettingsError(f"grid() varies {sorted(clash)} itself: use corruptions=[...] and metrics=[...].")
    corruptions = _unique("corruptions", corruptions, corruption_name)
    by_name = {check_metric(m): m for m in metrics}  # names, and the functions a callable metric names
    metrics = _unique("metrics", [check_metric(m) for m in metrics], str)
    if isinstance(corrupt_tokens, str):
        corrupt_tokens = [corrupt_tokens]
    choices = [None] if corrupt_tokens is None else _unique("corrupt_tokens", corrupt_tokens, str)
    make_pairs = _pairs_source(model, pairs_or_task, corrupt_tokens)
    if sweep is None:
        from . import engine, patching

        run = patching.patch
    else:
        run = sweep
    settings: list[Setting] = []
    results: dict[Setting, PatchResult] = {}
    invalid: dict[Setting, str] = {}
    for choice in choices:
        pairs = make_pairs(choice)
        tokens = engine.tokenize(model, pairs) if sweep is None else pairs
        for corruption in corruptions:
            keys = [Setting(corruption_name(corruption), choice, metric) for metric in metrics]
            settings += keys
            for asked, group in _sweep_groups(keys, patch_kwargs.get("method", "exact") == "exact"):
                try:
                    result = run(model, tokens, component, corruption, by_name.get(asked, asked), **patch_kwargs)
                except MetricError as error:
                    invalid.update((key, str(error)) for key in group)
                    continue
                for key in group:
                    try:
                        results[key] = result.with_metric(key.metric)
                    except MetricError as error:
                        invalid[key] = str(error)
    return Grid(component=component, sd=sd, settings=tuple(settings), results=results, invalid=invalid)


def _sweep_groups(keys: list[Setting], exact: bool) -> list[tuple[str, list[Setting]]]:
    """Which sweeps serve which settings: (the metric to sweep under, the settings read from that sweep).

    An exact sweep measures every built-in metric at once and one user metric besides, so the built-ins ride
    on the first user metric's sweep (or on "prob", which never raises, when there is none) and each further
    user metric takes a sweep of its own; an attribution estimate needs one sweep per metric.
    """
    if not exact:
        return [(key.metric, [key]) for key in keys]
    builtin = [key for key in keys if key.metric in BUILTIN_METRICS]
    custom = [key for key in keys if key not in builtin]
    if not custom:
        return [("prob", builtin)]
    return [(custom[0].metric, [*builtin, custom[0]]), *((key.metric, [key]) for key in custom[1:])]


def _names(labels: Sequence[str]) -> str:
    return ", ".join(labels) or "-"


def _first_sentence(text: str) -> str:
    return text.split(". ")[0]


@dataclass(frozen=True, eq=False)
class Grid(GridClaims):
    """Patching results of one component kind across corruptions, corrupted tokens and metrics.

    ``results[(corruption, corrupt_tokens, metric)]`` is a ``PatchResult``; settings that could not be
    computed are in ``invalid`` with the reason. ``settings`` lists every setting in sweep order.
    ``grid.assert_robust(label, at_least=m)`` is the claim that ``label`` is detected in ``m`` of them.
    """

    component: str
    sd: float
    settings: tuple[Setting, ...]
    results: dict[Setting, PatchResult]
    invalid: dict[Setting, str]

    def _sd(self, sd: float | None) -> float:
        return self.sd if sd is None else sd

    def _check_label(self, label: str) -> None:
        for result in self.results.values():
            result.grid.index(label)  # raises ComponentError naming the valid labels

    def table(self, sd: float | None = None) -> str:
        """Per setting, the negative and positive detections (the paper's Tables 1 and 5)."""
        sd = self._sd(sd)
        rows = [("corruption", "corrupt", "metric", "negative", "positive")]
        for s in self.settings:
            corruption, tokens = _corruption_label(s.corruption), s.corrupt_tokens or "-"
            if s in self.invalid:
                rows.append((corruption, tokens, s.metric, f"invalid: {_first_sentence(self.invalid[s])}", ""))
            else:
                result = self.results[s]
                negative, positive = _names(result.detected(sd, "negative")), _names(result.detected(sd, "positive"))
                rows.append((corruption, tokens, s.metric, negative, positive))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        head = f"{self.component} detections at {sd:g} SD"
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4] for row in rows]
        return "\n".join([head, *lines])

    def component_table(self, label: str, sd: float | None = None) -> str:
        """One component's effect, z-score and detection in every setting (for failure messages)."""
        sd = self._sd(sd)
        self._check_label(label)
        rows = [f"{label}: effect, z-score and detection at {sd:g} SD per setting"]
        width = max(len(str(s)) for s in self.settings)
        for s in self.settings:
            if s in self.invalid:
                rows.append(f"  {str(s):<{width}}  invalid: {_first_sentence(self.invalid[s])}")
                continue
            result = self.results[s]
            z = result.zscore(label)
            detected = "positive" if z >= sd else "negative" if -z >= sd else "no"
            rows.append(f"  {str(s):<{width}}  effect {result[label]:>9.4f}  z {z:>6.2f}  detected: {detected}")
        return "\n".join(rows)

    def detected_in(self, label: str, sd: float | None = None, sign: str = "positive") -> list[Setting]:
        """The settings in which ``label`` is detected with ``sign``."""
        sd = self._sd(sd)
        check_sign(sign)
        self._check_label(label)
        return [s for s in self.settings if s in self.results and label in self.results[s].detected(sd, sign)]

    def robust(self, label: str, at_least: int | None = None, sd: float | None = None, sign: str = "positive") -> bool:
        """True when ``label`` is detected in at least ``at_least`` settings (default: all of them).

        Invalid settings count as settings in which nothing is detected: a claim that could not be checked
        there is not robust there.
        """
        return len(self.detected_in(label, sd, sign)) >= self._at_least(at_least)

    def robust_components(
        self, at_least: int | None = None, sd: float | None = None, sign: str = "positive"
    ) -> list[str]:
        """Components detected in at least ``at_least`` settings (default: all), the most often detected first."""
        m = self._at_least(at_least)
        valid = list(self.results.values())
        if m > len(valid):
            return []
        return detected_in_at_least(valid, m, sd=self._sd(sd), sign=sign)

    def _at_least(self, at_least: int | None) -> int:
        n = len(self.settings)
        if at_least is None:
            return n
        if not isinstance(at_least, int) or not 1 <= at_least <= n:
            raise SettingsError(f"at_least={at_least!r} must be an integer in 1..{n} (the number of settings).")
        return at_least

    def __str__(self) -> str:
        return self.table()

    # -- notebooks --------------------------------------------------------------------------------
    def to_dataframe(self, sd: float | None = None) -> Any:
        """One row per valid setting and component: ``corruption``, ``corrupt_tokens``, ``metric``, then the
        ``PatchResult.to_dataframe`` columns and ``detected_positive``/``detected_negative`` at ``sd`` (needs pandas)."""
        sd = self._sd(sd)
        rows, columns = [], ["corruption", "corrupt_tokens", "metric"]
        for s in self.settings:
            if s not in self.results:
                continue
            result = self.results[s]
            columns += [c for c in result.columns if c not in columns]
            for row in result.component_rows():
                rows.append({**s._asdict(), **row, "detected_positive": row["z"] >= sd, "detected_negative": -row["z"] >= sd})
        return display.dataframe(rows, [*columns, "detected_positive", "detected_negative"])

    def _repr_html_(self) -> str:
        sd = self.sd
        rows = []
        for s in self.settings:
            if s in self.invalid:
                rows.append((str(s), f"invalid: {_first_sentence(self.invalid[s])}", ""))
            else:
                r = self.results[s]
                rows.append((str(s), _names(r.detected(sd, "positive")), _names(r.detected(sd, "negative"))))
        return display.block(
            f"Grid of {self.component} sweeps",
            [f"{len(self.settings)} settings; detections at {sd:g} SD; robust in all: "
             f"{', '.join(self.robust_components()) or 'none'}"],
            display.table(["setting", "positive", "negative"], rows),
            display.inline_figure(self.plot),
        )

    # -- saving -----------------------------------------------------------------------------------
    def save(self, directory: str | Path, sd: float | None = None) -> tuple[Path, Path]:
        """Write ``grid.csv`` (one row per valid setting and component) and ``grid.json`` (everything,
        invalid settings with their reasons included) into ``directory``; returns both paths."""
        sd = self._sd(sd)
        directory = Path(directory)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        entries = []
        for s in self.settings:
            entry: dict[str, Any] = {"corruption": s.corruption, "corrupt_tokens": s.corrupt_tokens, "metric": s.metric}
            if s in self.invalid:
                entries.append({**entry, "valid": False, "reason": self.invalid[s]})
                continue
            result = self.results[s]
            effect, z = result.mean.reshape(-1), result.zscores.reshape(-1)
            for label, e, zz in zip(result.labels, effect, z):
                tokens = s.corrupt_tokens or ""
                writer.writerow([s.corruption, tokens, s.metric, label, repr(float(e)), repr(float(zz)), zz >= sd, -zz >= sd])
            entries.append({
                **entry, "valid": True, "shape": list(result.shape), "labels": result.labels,
                "effect": effect.tolist(), "z": z.tolist(),
                "detected_positive": result.detected(sd, "positive"),
                "detected_negative": result.detected(sd, "negative"),
                "patch_settings": result.settings,
            })
        document = {"format_version": FORMAT_VERSION, "component": self.component, "sd": sd, "settings": entries}
        csv_path, json_path = directory / "grid.csv", directory / "grid.json"
        atomic_write(csv_path, text.getvalue())
        atomic_write(json_path, json.dumps(document, indent=1) + "\n")
        return csv_path, json_path

    def figure(self, path: str | Path, sd: float | None = None) -> Path:
        """Write ``plot(sd)`` as a PNG at ``path``, atomically; returns the path."""
        return atomic_write(path, png_bytes(self.plot(sd), dpi=100))

    def plot(self, sd: float | None = None) -> Any:
        """A matplotlib Figure of small-multiple heatmaps, one per setting (rows: corruption and corrupted
        tokens; columns: metrics), '+'/'-' on detected components.

        Each metric column shares one colour scale symmetric about 0; metrics have different units, so
        they do not share one with each other. Without matplotlib, raises ``PlotsUnavailableError``.
        """
        require_matplotlib()
        from matplotlib.figure import (
            Figure,  # the object API: no pyplot, no global backend change
        )

        sd = self._sd(sd)
        rows = list(dict.fromkeys((s.corruption, s.corrupt_tokens) for s in self.settings))
        columns = list(dict.fromkeys(s.metric for s in self.settings))
        figure = Figure(figsize=(4.2 * len(columns), 3.2 * len(rows)), layout="constrained")
        axes = figure.subplots(len(rows), len(columns), squeeze=False)
        for c, metric in enumerate(columns):
            maps = [r.mean for s, r in self.results.items() if s.metric == metric]
            vmax = max([float(np.abs(m).max()) for m in maps] + [1e-12])
            image = None
            for r, (corruption, tokens) in enumerate(rows):
                setting = Setting(corruption, tokens, metric)
                ax = axes[r, c]
                ax.set_title(str(setting), fontsize=9)
                if setting in self.invalid:
                    reason = "\n".join(textwrap.wrap(_first_sentence(self.invalid[setting]), 40)[:6])
                    ax.text(0.5, 0.5, "invalid:\n" + reason, ha="center", va="center", fontsize=7)
                    ax.set_axis_off()
                    continue
                image = _heatmap(ax, self.results[setting], vmax, sd)
            if image is not None:
                figure.colorbar(image, ax=list(axes[:, c]), shrink=0.8, label=metric)
        return figure


def _heatmap(ax: Any, result: PatchResult, vmax: float, sd: float) -> Any:
    """Draw ``result.mean`` as [layer, rest] (one row for per-layer grids) and mark detections."""
    from matplotlib.patheffects import withStroke
    from matplotlib.ticker import MaxNLocator

    axes = result.grid.axes
    data = result.mean.reshape(1, -1) if len(axes) == 1 else result.mean.reshape(result.shape[0], -1)
    image = ax.imshow(data, cmap=COLOUR_MAP, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    if len(axes) == 1:
        ax.set_xlabel("layer")
        ax.set_yticks([])
    else:
        ax.set_ylabel("layer")
        ax.set_xlabel(" x ".join(axes[1:]))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    labels = result.labels
    outline = [withStroke(linewidth=2.5, foreground="white")]
    for sign, mark in (("positive", "+"), ("negative", "\u2212")):
        for label in result.detected(sd, sign):
            row, col = np.unravel_index(labels.index(label), data.shape)
            ax.text(col, row, mark, ha="center", va="center", fontsize=12, fontweight="bold", path_effects=outline)
    return image


@dataclass(frozen=True, eq=False)
class OffDistribution:
    """Per layer, how far the corrupted run's residual stream at the corrupted tokens is from the clean one.

    ``z[l] = (corrupted_mean[l] - clean_mean[l]) / clean_sd[l]``, where ``corrupted_mean`` is the mean norm
    of the corrupted residual stream entering layer ``l`` at the corrupted positions and ``clean_mean``,
    ``clean_sd`` are the mean and SD of the clean norms over all real positions. ``ratio`` compares the
    corrupted norm with the clean norm at the same positions. A layer from 1 on is flagged when
    ``|z| > threshold``: typical clean activations rarely lie that far out, so the corrupted run feeds the
    layer inputs it does not see on real text (Zhang & Nanda 2024, section 3.2). Layer 0's input is the
    corrupted embedding itself, far out by construction under GN, so it is shown but never flagged.
    """

    corruption: str
    noise_scale: float | None
    threshold: float
    clean_mean: np.ndarray
    clean_sd: np.ndarray
    corrupted_mean: np.ndarray
    ratio: np.ndarray
    z: np.ndarray

    @property
    def flagged_layers(self) -> list[int]:
        return [layer for layer in range(1, len(self.z)) if abs(self.z[layer]) > self.threshold]

    @property
    def is_off_distribution(self) -> bool:
        return bool(self.flagged_layers)

    @property
    def max_z(self) -> float:
        return float(np.abs(self.z).max())

    def table(self) -> str:
        rows = [f"{'layer':>5}{'clean norm':>12}{'clean SD':>10}{'corrupted':>11}{'ratio':>8}{'z':>8}"]
        for layer in range(len(self.z)):
            flag = "  off" if layer in self.flagged_layers else "  (the corrupted input)" if layer == 0 else ""
            rows.append(
                f"{layer:>5}{self.clean_mean[layer]:>12.3f}{self.clean_sd[layer]:>10.3f}"
                f"{self.corrupted_mean[layer]:>11.3f}"
                f"{self.ratio[layer]:>8.2f}{self.z[layer]:>8.2f}{flag}"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        scale = "" if self.noise_scale is None else f", noise_scale={self.noise_scale:g}"
        flagged = self.flagged_layers
        verdict = f"off distribution at layers {flagged}" if flagged else "within the clean distribution"
        head = f"Residual norms, corruption={self.corruption}{scale}: {verdict} (|z| > {self.threshold:g})"
        return head + "\n" + self.table()


def off_distribution(
    model: PatchableModel,
    pairs: engine.Pairs,
    *,
    corruption: Corruption = "gn",
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    threshold: float = 3.0,
    batch_size: int = 16,
) -> OffDistribution:
    """Compare residual-stream norms of the corrupted run at the corrupted tokens with the clean run's.

    A heuristic for the paper's concern that Gaussian noise puts the model off distribution; with
    ``corruption="str"`` the same numbers show whether token replacement stays in distribution.
    """
    from . import engine

    tokens = engine.tokenize(model, pairs)
    tokens.require_corrupt_positions()
    check_corruption(model, tokens, corruption, noise_scale)
    norms = engine.on_model(
        model, engine.residual_norms, tokens, corruption, seed=seed, noise_scale=noise_scale, batch_size=batch_size
    )
    clean_mean, clean_sd, corrupted_mean = norms["clean_mean"], norms["clean_sd"], norms["corrupted_mean"]
    z = np.divide(corrupted_mean - clean_mean, clean_sd, out=np.zeros_like(clean_mean), where=clean_sd > 0)
    return OffDistribution(
        corruption=corruption_name(corruption),
        noise_scale=noise_scale if corruption == "gn" else None,
        threshold=threshold,
        clean_mean=clean_mean,
        clean_sd=clean_sd,
        corrupted_mean=corrupted_mean,
        ratio=corrupted_mean / norms["clean_marked_mean"],
        z=z,
    )


def middle_layers(n_layers: int) -> list[int]:
    """Centres of the 3-layer windows that leave out the first and last MLP: the paper's "middle MLP layers"
    (section 5), for ``window_comparison(..., layers=)``."""
    return list(range(2, n_layers - 1))


@dataclass(frozen=True, eq=False)
class WindowComparison:
    """Sliding-window (joint) effects next to summed single-layer effects over the same windows.

    ``peak_ratio = max(joint) / max(summed)``; the paper finds the joint peak typically much higher, i.e.
    sliding windows amplify weak single-layer localization. NaN when no summed effect is positive.
    """

    window: int
    metric: str
    labels: tuple[str, ...]
    joint: np.ndarray
    summed: np.ndarray

    @property
    def peak_joint(self) -> float:
        return float(self.joint.max())

    @property
    def peak_summed(self) -> float:
        return float(self.summed.max())

    @property
    def peak_ratio(self) -> float:
        return self.peak_joint / self.peak_summed if self.peak_summed > 0 else float("nan")

    def table(self) -> str:
        rows = [f"{'component':<12}{'joint':>10}{'summed':>10}"]
        rows += [f"{label:<12}{j:>10.4f}{s:>10.4f}" for label, j, s in zip(self.labels, self.joint, self.summed)]
        return "\n".join(rows)

    def __str__(self) -> str:
        return (
            f"Window {self.window}, metric={self.metric}: "
            f"joint peak {self.peak_joint:.4f} ({self.labels[int(self.joint.argmax())]}), "
            f"summed peak {self.peak_summed:.4f} ({self.labels[int(self.summed.argmax())]}), "
            f"ratio {self.peak_ratio:.2f}\n"
            + self.table()
        )


_SAME_RUN_KEYS = ("model_fingerprint", "dataset", "corruption", "direction", "seed", "noise_scale", "positions")


def window_comparison(
    single: PatchResult, windowed: PatchResult, layers: Sequence[int] | None = None
) -> WindowComparison:
    """Compare a sliding-window sweep with the single-layer sweep summed over the same windows (section 5).

    Both must patch the same component kind on the same model, prompts and corruption; ``single`` has
    window 1. The comparison uses ``windowed``'s metric. ``layers`` keeps only the windows centred on those
    layers, as the paper compares peaks "at the middle MLP layers": in small models layer 0's MLP acts as part of
    the embedding, and restoring it alone restores nearly everything, which hides what the middle layers do.
    """
    window = windowed.grid.window
    if window < 2:
        raise SettingsError("window_comparison(single, windowed): `windowed` must be a sliding-window sweep (window >= 2)")
    if single.grid.kind != windowed.grid.kind:
        kinds = f"{single.grid.kind!r} and {windowed.grid.kind!r}"
        raise SettingsError(f"window_comparison: `single` and `windowed` patch different components ({kinds}).")
    a, b = single.settings, windowed.settings
    differ = [k for k in _SAME_RUN_KEYS if k in a and k in b and a[k] != b[k]]
    if differ:
        raise SettingsError(
            f"window_comparison: the two sweeps differ in {differ}; run both on the same model, prompts and corruption."
        )
    summed = single.with_metric(windowed.metric).window_sum(window)
    if summed.labels != windowed.labels:
        raise SettingsError(f"window_comparison: the sweeps' grids differ ({single.shape} vs {windowed.shape}).")
    keep = list(range(len(windowed.labels)))
    if layers is not None:
        n_layers = len(windowed.labels)
        wrong = [layer for layer in layers if not (isinstance(layer, int) and 0 <= layer < n_layers)]
        if wrong or not layers:
            raise SettingsError(f"window_comparison: layers={list(layers)!r} must be layer indices in 0..{n_layers - 1}.")
        keep = sorted(set(layers))
    return WindowComparison(
        window=window,
        metric=windowed.metric,
        labels=tuple(windowed.labels[i] for i in keep),
        joint=windowed.mean.reshape(-1)[keep],
        summed=summed.mean.reshape(-1)[keep],
    )
