"""Assertions that read like localization claims, mixed into PatchResult.

A failed claim raises ``ClaimError`` (an ``AssertionError``, so pytest reports it as a failure) whose
message is a small report: the component's effect, where it sits among all components (mean, SD,
z-score, rank), the top components, the threshold and the sweep's settings, so a failing test says why
without re-running anything. The same numbers are on the error as fields for programs to read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .errors import SettingsError

if TYPE_CHECKING:
    from .results import PatchResult

Layers = Union[range, Sequence[int]]
TABLE_ROWS = 10


@dataclass(frozen=True)
class ComponentFigures:
    """Where one component stands in a sweep; ``rank`` counts from the claim's side (1 = most extreme)."""

    label: str
    effect: float
    zscore: float
    rank: int
    n_components: int

    def describe(self) -> str:
        return f"{self.label}: effect {self.effect:.4g}, z {self.zscore:+.2f}, rank {self.rank} of {self.n_components}"


class ClaimError(AssertionError):
    """A localization claim that the sweep contradicts. The message is a report; the fields are data.

    ``claim`` names the assertion (``"detected"``, ``"not_detected"``, ``"top_k"``, ``"peak"``,
    ``"baseline"``), ``labels`` the components that broke it and ``figures`` their effect, z-score and rank.
    """

    def __init__(
        self,
        message: str,
        *,
        claim: str,
        labels: Sequence[str] = (),
        figures: dict[str, ComponentFigures] | None = None,
        threshold: Any = None,
        sign: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.claim = claim
        self.labels = list(labels)
        self.figures = dict(figures or {})
        self.threshold = threshold
        self.sign = sign
        self.settings = dict(settings or {})


@dataclass(frozen=True)
class ClaimOutcome:
    """One checked claim, as the pytest plugin's summary shows it: what, its key figure, and the verdict."""

    claim: str
    figure: str
    passed: bool


_outcomes: ContextVar[list[ClaimOutcome] | None] = ContextVar("interp_claim_outcomes", default=None)


@contextlib.contextmanager
def recording_claims() -> Iterator[list[ClaimOutcome]]:
    """Collect the outcome of every claim checked inside the block (the plugin wraps each test in one)."""
    outcomes: list[ClaimOutcome] = []
    token = _outcomes.set(outcomes)
    try:
        yield outcomes
    finally:
        _outcomes.reset(token)


def record_claim(claim: str, figure: str, passed: bool) -> None:
    outcomes = _outcomes.get()
    if outcomes is not None:
        outcomes.append(ClaimOutcome(claim, figure, passed))


def _labels(labels: tuple[Any, ...], result: PatchResult) -> list[str]:
    """Labels given as arguments or as one list, each checked to be a component of the sweep."""
    if len(labels) == 1 and isinstance(labels[0], Iterable) and not isinstance(labels[0], str):
        labels = tuple(labels[0])
    if not labels:
        raise SettingsError("Name at least one component to claim about, e.g. result.assert_detected('9.9').")
    for label in labels:
        if not isinstance(label, str):
            raise SettingsError(f"Component labels are strings such as '9.9' or 'mlp.3', not {label!r}.")
        result.grid.index(label)
    return list(labels)


def _scores(result: PatchResult, sign: str) -> np.ndarray:
    z = result.zscores.reshape(-1)
    return {"positive": z, "negative": -z, "both": np.abs(z)}[sign]


def _figures(result: PatchResult, label: str, sign: str) -> ComponentFigures:
    scores = _scores(result, sign)
    index = result.labels.index(label)
    rank = int((scores > scores[index]).sum()) + 1
    return ComponentFigures(label, result[label], result.zscore(label), rank, scores.size)


def _threshold_text(sd: float, sign: str) -> str:
    return {"positive": f"z >= {sd:.2f}", "negative": f"z <= {-sd:.2f}", "both": f"|z| >= {sd:.2f}"}[sign]


def _ranked_table(result: PatchResult, sign: str, k: int = TABLE_ROWS) -> str:
    if sign == "positive":
        return result.table(k)
    z = result.zscores.reshape(-1)
    labels = result.labels
    rows = [f"{'rank':>4}  {'component':<12}{'effect':>10}{'z':>8}"]
    for rank, (label, value) in enumerate(result.top(k, sign), start=1):
        rows.append(f"{rank:>4}  {label:<12}{value:>10.4f}{z[labels.index(label)]:>8.2f}")
    return "\n".join(rows)


def _context(result: PatchResult, sd: float, sign: str) -> str:
    """Mean and SD over components, the effect a component needs, what is detected, the top table, settings."""
    mean = result.mean.reshape(-1)
    centre, spread = float(mean.mean()), float(mean.std())
    above, below = centre + sd * spread, centre - sd * spread
    needs = {"positive": f">= {above:.4g}", "negative": f"<= {below:.4g}", "both": f">= {above:.4g} or <= {below:.4g}"}
    detected = result.detected(sd, sign)
    side = {"positive": "most positive", "negative": "most negative", "both": "largest absolute"}[sign]
    return "\n".join(
        [
            f"  over {mean.size} components: mean {centre:.4g}, SD {spread:.4g}; detection at {sd:g} SD needs "
            f"effect {needs[sign]} ({_threshold_text(sd, sign)})",
            f"  detected at sd={sd:g}, sign={sign}: {', '.join(detected) if detected else 'none'}",
            f"top components ({side} first):",
            _ranked_table(result, sign),
            f"settings: {result.describe_settings()}",
        ]
    )


def _weakest(figures: list[ComponentFigures], sign: str) -> ComponentFigures:
    score = {"positive": lambda f: f.zscore, "negative": lambda f: -f.zscore, "both": lambda f: abs(f.zscore)}[sign]
    return min(figures, key=score)


def _check_sign(sign: str) -> str:
    if sign not in ("positive", "negative", "both"):
        raise SettingsError(f"sign={sign!r}: use 'positive', 'negative' or 'both'.")
    return sign


def _layer_range(layers: Layers, n_layers: int) -> range:
    if not isinstance(layers, range):
        if isinstance(layers, (str, bytes)) or len(layers) != 2 or not all(isinstance(x, int) for x in layers):
            raise SettingsError(f"layers={layers!r}: give range(a, b) or (a, b), half-open like range.")
        layers = range(layers[0], layers[1])
    if len(layers) == 0 or layers.step != 1:
        raise SettingsError(f"layers={layers!r} must be a non-empty range of consecutive layers, e.g. range(2, 5).")
    if layers.stop <= 0 or layers.start >= n_layers:
        raise SettingsError(f"layers={layers!r} lies outside this model's layers 0..{n_layers - 1}.")
    return layers


class Claims:
    """Claim assertions on a PatchResult (``result.assert_detected("9.9", sd=2)``).

    Labels may be given as separate arguments or as one list. Each assertion returns None when the claim
    holds and raises ``ClaimError`` with a report when it does not.
    """

    def assert_detected(self: PatchResult, *labels: str, sd: float = 2.0, sign: str = "positive") -> None:
        """Each component is detected: at least ``sd`` SDs from the mean effect on ``sign``'s side (the paper's rule)."""
        names = _labels(labels, self)
        _check_sign(sign)
        detected = set(self.detected(sd, sign))
        figures = [_figures(self, label, sign) for label in names]
        missing = [f for f in figures if f.label not in detected]
        weakest = _weakest(figures, sign)
        record_claim(f"detected {', '.join(names)}", f"z({weakest.label})={weakest.zscore:+.2f}", not missing)
        if not missing:
            return
        subject = ", ".join(f.label for f in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {subject} {verb} not detected (needs {_threshold_text(sd, sign)}, sign={sign}).",
                    *(f"  {f.describe()}" for f in missing),
                    _context(self, sd, sign),
                ]
            ),
            claim="detected",
            labels=[f.label for f in missing],
            figures={f.label: f for f in figures},
            threshold=sd,
            sign=sign,
            settings=self.settings,
        )

    def assert_not_detected(self: PatchResult, *labels: str, sd: float = 2.0, sign: str = "positive") -> None:
        """No component is detected at ``sd`` SDs on ``sign``'s side (e.g. a metric that misses a head)."""
        names = _labels(labels, self)
        _check_sign(sign)
        detected = set(self.detected(sd, sign))
        figures = [_figures(self, label, sign) for label in names]
        found = [f for f in figures if f.label in detected]
        strongest = min(figures, key=lambda f: f.rank)
        record_claim(f"not detected {', '.join(names)}", f"z({strongest.label})={strongest.zscore:+.2f}", not found)
        if not found:
            return
        subject = ", ".join(f.label for f in found)
        verb = "is" if len(found) == 1 else "are"
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {subject} {verb} detected ({_threshold_text(sd, sign)}, sign={sign}), "
                    "but the claim says not.",
                    *(f"  {f.describe()}" for f in found),
                    _context(self, sd, sign),
                ]
            ),
            claim="not_detected",
            labels=[f.label for f in found],
            figures={f.label: f for f in figures},
            threshold=sd,
            sign=sign,
            settings=self.settings,
        )

    def assert_negative(self: PatchResult, *labels: str, sd: float = 2.0) -> None:
        """Each component is detected with a negative effect: at least ``sd`` SDs below the mean."""
        self.assert_detected(*labels, sd=sd, sign="negative")

    def assert_top_k(self: PatchResult, labels: str | Iterable[str], k: int) -> None:
        """Each component is among the ``k`` with the largest mean effect."""
        names = _labels((labels,), self)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise SettingsError(f"k={k!r} must be a positive integer (how many top components to look at).")
        figures = [_figures(self, label, "positive") for label in names]
        outside = [f for f in figures if f.rank > k]
        worst = max(figures, key=lambda f: f.rank)
        record_claim(f"top {k}: {', '.join(names)}", f"rank({worst.label})={worst.rank}", not outside)
        if not outside:
            return
        subject = ", ".join(f.label for f in outside)
        verb = "is" if len(outside) == 1 else "are"
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {subject} {verb} not among the top {k} components.",
                    *(f"  {f.describe()}" for f in outside),
                    f"top components (most positive first):\n{self.table(max(k, TABLE_ROWS))}",
                    f"settings: {self.describe_settings()}",
                ]
            ),
            claim="top_k",
            labels=[f.label for f in outside],
            figures={f.label: f for f in figures},
            threshold=k,
            sign="positive",
            settings=self.settings,
        )

    def assert_peak(self: PatchResult, layers: Layers) -> None:
        """The layer with the largest mean effect lies in ``layers`` (half-open, like ``range``).

        A layer's effect is its largest over the sweep's other axes (positions, heads), so a by-position
        sweep peaks where any position of a layer peaks.
        """
        n_layers = self.grid.n_layers
        expected = _layer_range(layers, n_layers)
        profile = self.mean.reshape(n_layers, -1).max(axis=1)
        peak = int(np.argmax(profile))
        record_claim(f"peak in layers {expected.start}..{expected.stop - 1}", f"peak layer {peak}", peak in expected)
        if peak in expected:
            return
        others = [axis + "s" for axis in self.grid.axes if axis != "layer"]
        over = f" (max over {' and '.join(others)})" if others else ""
        rows = [f"  layer {layer:>3}  {value:>10.4f}{'   <- peak' if layer == peak else ''}" for layer, value in enumerate(profile)]
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: the effect peaks at layer {peak}, outside the claimed layers "
                    f"{expected.start}..{expected.stop - 1} (range({expected.start}, {expected.stop})).",
                    f"effect per layer{over}:",
                    *rows,
                    f"settings: {self.describe_settings()}",
                ]
            ),
            claim="peak",
            labels=[str(peak)],
            threshold=expected,
            settings=self.settings,
        )

    def assert_matches_baseline(
        self: PatchResult, where: Any, atol: float = 0.01, *, name: str | None = None, update: bool | None = None
    ) -> None:
        """Every component's effect is within ``atol`` of a stored baseline (a regression snapshot).

        ``where`` is the test's pytest ``request`` (the baseline lives in ``__baselines__/<test file>/``
        next to the test, named after the test or ``name``; ``--interp-update-baselines`` rewrites it) or
        the path of a baseline ``.json`` file (``update=True`` rewrites it).
        """
        from .baselines import check_baseline, check_for_request

        if hasattr(where, "node") and hasattr(where, "config"):
            check_for_request(self, where, name=name, atol=atol, update=update)
        else:
            check_baseline(self, Path(where), atol=atol, update=bool(update))
