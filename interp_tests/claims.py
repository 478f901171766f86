"""Assertions that read like localization claims, mixed into PatchResult (``Claims``) and the robustness
Grid (``GridClaims``).

A failed claim raises ``ClaimError`` (an ``AssertionError``, so pytest reports it as a failure) whose
message is a small report: the component's effect, where it sits among all components (mean, SD,
z-score, rank), the top components, the threshold and the sweep's settings, so a failing test says why
without re-running anything. The same numbers are on the error as fields for programs to read. A claim
that holds but may not mean what it says (absence under the probability metric) warns with
``InterpWarning``.

Regression baselines are claims too: in the spirit of syrupy and pytest-regressions, a baseline is pretty
JSON next to the claims that own it, ``__baselines__/<file stem>/<name>.json``: the sweep's settings and
every component's mean effect rounded to 6 decimals, one per line, so a retrained model shows up in review
as a diff of numbers. ``check_baseline`` compares with one or (re)writes it atomically; a missing baseline
fails, and so do effects that moved by more than the tolerance, listed largest move first. Which file a
pytest test owns and whether ``--interp-update-baselines`` is on is the pytest layer's business
(``plugin.baselines``): this module, like results and stats, never imports pytest, and it stays free of
torch (statistics load on use), so the plugin loads it at startup for free.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InterpWarning, SettingsError
from .files import atomic_write
from .signs import signed

if TYPE_CHECKING:
    from .circuit_results import CircuitResult
    from .results import PatchResult
    from .robustness import Grid

Layers = range | Sequence[int]
TABLE_ROWS = 10
AGREEMENT_TOLERANCE = 1e-9


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
    ``"baseline"``, ``"stable"``, ``"agree"``, ``"robust"``, ``"verified"``), ``labels`` the components that
    broke it and ``figures`` their effect, z-score and rank. ``details`` holds a claim's own figures: per label the
    bootstrap ``detection_rate``, ``effect_ci`` and ``z_ci`` (stable); ``spearman``, ``kendall``,
    ``jaccard`` and the ``minimums`` (agree); per label the settings it is ``detected_in`` and
    ``n_settings`` (robust, whose ``threshold`` is ``at_least``); per label ``estimate_exact`` (verified,
    from ``attribution.AttributionComparison.assert_within``, whose ``threshold`` is the tolerance).
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
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.claim = claim
        self.labels = list(labels)
        self.figures = dict(figures or {})
        self.threshold = threshold
        self.sign = sign
        self.settings = dict(settings or {})
        self.details = dict(details or {})


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


def _label_list(labels: tuple[Any, ...]) -> list[str]:
    """Labels given as arguments or as one list."""
    if len(labels) == 1 and isinstance(labels[0], Iterable) and not isinstance(labels[0], str):
        labels = tuple(labels[0])
    if not labels:
        raise SettingsError("Name at least one component to claim about, e.g. result.assert_detected('9.9').")
    for label in labels:
        if not isinstance(label, str):
            raise SettingsError(f"Component labels are strings such as '9.9' or 'mlp.3', not {label!r}.")
    return list(labels)


def _labels(labels: tuple[Any, ...], result: PatchResult) -> list[str]:
    """Labels given as arguments or as one list, each checked to be a component of the sweep."""
    names = _label_list(labels)
    for label in names:
        result.grid.index(label)
    return names


def _subject(labels: Sequence[str]) -> str:
    """'0.1 is' or '0.1, 0.2 are'."""
    return f"{', '.join(labels)} {'is' if len(labels) == 1 else 'are'}"


def _figures(result: PatchResult, label: str, sign: str) -> ComponentFigures:
    scores = signed(result.zscores.reshape(-1), sign)
    index = result.labels.index(label)
    rank = int((scores > scores[index]).sum()) + 1
    return ComponentFigures(label, result[label], result.zscore(label), rank, scores.size)


def _threshold_text(sd: float, sign: str) -> str:
    return {"positive": f"z >= {sd:.2f}", "negative": f"z <= {-sd:.2f}", "both": f"|z| >= {sd:.2f}"}[sign]


def unreachable_threshold(sd: float, n_components: int) -> str | None:
    """Why no component can be detected at ``sd``, or None when one can: with n components and the population
    SD, the largest z-score is sqrt(n - 1) (one component apart, all others equal), so a claim asking for more
    fails whatever the effects, and a ``not_detected`` claim at that threshold cannot fail."""
    largest = math.sqrt(max(n_components - 1, 0))
    if sd <= largest:
        return None
    return (
        f"no component can reach |z| >= {sd:g} here: with {n_components} components the largest possible |z| is "
        f"sqrt({n_components} - 1) = {largest:.2f}, whatever the effects. Lower sd (at most {largest:.2f}), patch "
        "more components (heads instead of layers, or positions='each'), or claim a ranking (top_k) instead."
    )


def _context(result: PatchResult, sd: float, sign: str) -> str:
    """Mean and SD over components, the effect a component needs, what is detected, the top table, settings."""
    mean = result.mean.reshape(-1)
    centre, spread = float(mean.mean()), float(mean.std())
    above, below = centre + sd * spread, centre - sd * spread
    needs = {"positive": f">= {above:.4g}", "negative": f"<= {below:.4g}", "both": f">= {above:.4g} or <= {below:.4g}"}
    detected = result.detected(sd, sign)
    side = {"positive": "most positive", "negative": "most negative", "both": "largest absolute"}[sign]
    unreachable = unreachable_threshold(sd, mean.size)
    return "\n".join(
        [
            f"  over {mean.size} components: mean {centre:.4g}, SD {spread:.4g}; detection at {sd:g} SD needs "
            f"effect {needs[sign]} ({_threshold_text(sd, sign)})",
            *([f"  {unreachable}"] if unreachable else []),
            f"  detected at sd={sd:g}, sign={sign}: {', '.join(detected) if detected else 'none'}",
            f"top components ({side} first):",
            result.table(TABLE_ROWS, sign),
            f"settings: {result.describe_settings()}",
        ]
    )


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


def _detection_error(
    result: PatchResult,
    claim: str,
    verdict: str,
    failing: list[ComponentFigures],
    figures: list[ComponentFigures],
    sd: float,
    sign: str,
) -> ClaimError:
    """The report of a failed (not_)detected claim: the verdict on ``failing``, their figures, the sweep's context."""
    return ClaimError(
        "\n".join(
            [
                f"Claim failed: {_subject([f.label for f in failing])} {verdict}",
                *(f"  {f.describe()}" for f in failing),
                _context(result, sd, sign),
            ]
        ),
        claim=claim,
        labels=[f.label for f in failing],
        figures={f.label: f for f in figures},
        threshold=sd,
        sign=sign,
        settings=result.settings,
    )


class Claims:
    """Claim assertions on a PatchResult (``result.assert_detected("9.9", sd=2)``).

    Labels may be given as separate arguments or as one list. Each assertion returns None when the claim
    holds and raises ``ClaimError`` with a report when it does not.
    """

    def assert_detected(self: PatchResult, *labels: str, sd: float = 2.0, sign: str = "positive") -> None:
        """Each component is detected: ``sd`` SDs or more from the mean effect on ``sign``'s side (the paper's rule)."""
        __tracebackhide__ = True  # pytest shows the failure at the claim, not in here
        names = _labels(labels, self)
        detected = set(self.detected(sd, sign))  # checks the sign
        figures = [_figures(self, label, sign) for label in names]
        missing = [f for f in figures if f.label not in detected]
        weakest = min(figures, key=lambda f: signed(f.zscore, sign))
        claim = f"detected {', '.join(names)} ({_threshold_text(sd, sign)})"
        record_claim(claim, f"z({weakest.label})={weakest.zscore:+.2f}", not missing)
        if not missing:
            return
        verdict = f"not detected (needs {_threshold_text(sd, sign)}, sign={sign})."
        raise _detection_error(self, "detected", verdict, missing, figures, sd, sign)

    def assert_not_detected(self: PatchResult, *labels: str, sd: float = 2.0, sign: str = "positive") -> None:
        """No component is detected at ``sd`` SDs on ``sign``'s side (e.g. a metric that misses a head).

        Under metric "prob" a claim that holds warns (``InterpWarning``): probability cannot see negative
        components, so absence there may say nothing (Zhang & Nanda 2024, section 4.2).
        """
        __tracebackhide__ = True
        names = _labels(labels, self)
        detected = set(self.detected(sd, sign))  # checks the sign
        figures = [_figures(self, label, sign) for label in names]
        found = [f for f in figures if f.label in detected]
        strongest = min(figures, key=lambda f: f.rank)
        claim = f"not detected {', '.join(names)} ({_threshold_text(sd, sign)})"
        record_claim(claim, f"z({strongest.label})={strongest.zscore:+.2f}", not found)
        if not found:
            if self.metric == "prob":
                _warn_probability_blind_spot(self, names, sign)
            return
        verdict = f"detected ({_threshold_text(sd, sign)}, sign={sign}), but the claim says not."
        raise _detection_error(self, "not_detected", verdict, found, figures, sd, sign)

    def assert_negative(self: PatchResult, *labels: str, sd: float = 2.0) -> None:
        """Each component is detected with a negative effect: at least ``sd`` SDs below the mean."""
        __tracebackhide__ = True
        self.assert_detected(*labels, sd=sd, sign="negative")

    def assert_stable(
        self: PatchResult,
        *labels: str,
        min_detection_rate: float = 0.9,
        sd: float = 2.0,
        sign: str = "positive",
        n_resamples: int = 1000,
        seed: int = 0,
    ) -> None:
        """Each component stays detected when the prompts are redrawn: detected (``sd`` SDs on ``sign``'s
        side) in at least ``min_detection_rate`` of ``n_resamples`` bootstrap resamples (``stats.bootstrap``)."""
        __tracebackhide__ = True
        from .stats import bootstrap

        names = _labels(labels, self)
        rate_ok = isinstance(min_detection_rate, (int, float)) and not isinstance(min_detection_rate, bool)
        if not rate_ok or not 0 <= min_detection_rate <= 1:
            raise SettingsError(f"min_detection_rate={min_detection_rate!r} must be a share in 0..1 (e.g. 0.9).")
        boot = bootstrap(self, n_resamples=n_resamples, seed=seed, sd=sd)
        rates = {label: boot.detection_rate(label, sign) for label in names}
        unstable = [label for label in names if rates[label] < min_detection_rate]
        weakest = min(names, key=rates.__getitem__)
        claim = f"stable {', '.join(names)} (detected at {_threshold_text(sd, sign)} in >= {min_detection_rate:.0%})"
        record_claim(claim, f"detection rate({weakest})={rates[weakest]:.0%}", not unstable)
        if not unstable:
            return
        pct = f"{100 * boot.confidence:g}% CI"
        rows = []
        for label in unstable:
            (low, high), (z_low, z_high) = boot.ci(label), boot.z_interval(label)
            rows.append(
                f"  {label}: detected in {rates[label]:.1%} of resamples; effect {self[label]:.4g} "
                f"({pct} [{low:.4g}, {high:.4g}]), z {self.zscore(label):+.2f} ({pct} [{z_low:+.2f}, {z_high:+.2f}])"
            )
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {_subject(unstable)} detected ({_threshold_text(sd, sign)}, sign={sign}) in fewer "
                    f"than {100 * min_detection_rate:g}% of bootstrap resamples of the {self.n_prompts} prompts.",
                    *rows,
                    *([f"  {unreachable}"] if (unreachable := unreachable_threshold(sd, self.mean.size)) else []),
                    str(boot),
                    f"settings: {self.describe_settings()}",
                ]
            ),
            claim="stable",
            labels=unstable,
            figures={label: _figures(self, label, sign) for label in names},
            threshold=min_detection_rate,
            sign=sign,
            settings=self.settings,
            details={
                "detection_rate": rates,
                "effect_ci": {label: boot.ci(label) for label in names},
                "z_ci": {label: boot.z_interval(label) for label in names},
            },
        )

    def assert_agree(
        self: PatchResult,
        other: PatchResult,
        *,
        min_spearman: float | None = None,
        min_kendall: float | None = None,
        min_jaccard: float | None = None,
        sd: float = 2.0,
        sign: str = "positive",
    ) -> None:
        """This sweep and ``other`` (the same components under, say, another metric or corruption) agree:
        Spearman's rho and Kendall's tau of the two effect maps, and the Jaccard overlap of their detected
        sets (``sd`` SDs on ``sign``'s side), are at least the minimums given (``stats.agreement``)."""
        __tracebackhide__ = True
        from .stats import agreement

        given = {"spearman": min_spearman, "kendall": min_kendall, "jaccard": min_jaccard}
        minimums = {name: value for name, value in given.items() if value is not None}
        if not minimums:
            raise SettingsError("assert_agree() checks nothing: give min_spearman, min_kendall or min_jaccard.")
        for name, value in minimums.items():
            low = 0 if name == "jaccard" else -1
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= 1:
                raise SettingsError(f"min_{name}={value!r} must be a number in {low}..1.")
        found = agreement(self, other, sd=sd, sign=sign)
        figures = {name: getattr(found, name) for name in minimums}
        # NaN (a constant map) falls short; the tolerance keeps tau = 1 - 2e-16 of identical maps from failing 1
        short = [name for name, minimum in minimums.items() if not figures[name] >= minimum - AGREEMENT_TOLERANCE]
        shown = ", ".join(f"{name} {value:.2f}" for name, value in figures.items())
        record_claim(f"agrees with {_difference(self, other)}", shown, not short)
        if not short:
            return
        names = {"spearman": "Spearman rho", "kendall": "Kendall tau", "jaccard": "Jaccard"}
        reasons = ", ".join(
            f"{names[name]} {figures[name]:.3f}{' (a map is constant)' if np.isnan(figures[name]) else ''} < "
            f"{minimums[name]:g}"
            for name in short
        )
        detected = {"a": self.detected(sd, sign), "b": other.detected(sd, sign)}
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: the two sweeps agree less than claimed: {reasons}.",
                    f"  a (this sweep): {self.describe_settings()}",
                    f"     detected at sd={sd:g}, sign={sign}: {', '.join(detected['a']) or 'none'}",
                    f"  b (the other):  {other.describe_settings()}",
                    f"     detected at sd={sd:g}, sign={sign}: {', '.join(detected['b']) or 'none'}",
                    found.table(),
                ]
            ),
            claim="agree",
            labels=sorted(set(found.only_a) | set(found.only_b)),
            threshold=minimums,
            sign=sign,
            settings=self.settings,
            details={**{name: getattr(found, name) for name in given}, "minimums": minimums, "detected": detected},
        )

    def assert_top_k(self: PatchResult, labels: str | Iterable[str], k: int) -> None:
        """Each component is among the ``k`` with the largest mean effect."""
        __tracebackhide__ = True
        names = _labels((labels,), self)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise SettingsError(f"k={k!r} must be a positive integer (how many top components to look at).")
        figures = [_figures(self, label, "positive") for label in names]
        outside = [f for f in figures if f.rank > k]
        worst = max(figures, key=lambda f: f.rank)
        record_claim(f"top {k}: {', '.join(names)}", f"rank({worst.label})={worst.rank}", not outside)
        if not outside:
            return
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {_subject([f.label for f in outside])} not among the top {k} components.",
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
        __tracebackhide__ = True
        n_layers = self.grid.n_layers
        expected = _layer_range(layers, n_layers)
        profile = self.mean.reshape(n_layers, -1).max(axis=1)
        peak = int(np.argmax(profile))
        record_claim(f"peak in layers {expected.start}..{expected.stop - 1}", f"peak layer {peak}", peak in expected)
        if peak in expected:
            return
        others = [{"pos": "positions", "head": "heads"}[axis] for axis in self.grid.axes if axis != "layer"]
        over = f" (max over {' and '.join(others)})" if others else ""
        marks = ["   <- peak" if layer == peak else "" for layer in range(n_layers)]
        rows = [f"  layer {layer:>3}  {value:>10.4f}{mark}" for layer, (value, mark) in enumerate(zip(profile, marks))]
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
        __tracebackhide__ = True
        match_baseline(self, where, atol, name=name, update=update)


def match_baseline(
    result: PatchResult | CircuitResult, where: Any, atol: float, *, name: str | None, update: bool | None
) -> None:
    """``assert_matches_baseline`` of any result: ``where`` is a pytest ``request`` or a baseline file path."""
    __tracebackhide__ = True
    if hasattr(where, "node") and hasattr(where, "config"):  # the pytest layer's fixture knows the session
        where.getfixturevalue("interp_baseline")(result, name=name, atol=atol, update=update)
    else:
        check_baseline(result, Path(where), atol=atol, update=bool(update))


def _warn_probability_blind_spot(result: PatchResult, labels: list[str], sign: str) -> None:
    """Warn that an absence claim under metric "prob" may pass whatever the component does (section 4.2)."""
    from .stats import probability_blind_spot_warning  # stats needs torch, which claims loads on use only

    kind = "not_negative" if sign == "negative" else "not_detected"
    corrupted = result.settings.get("corrupted", {}).get("prob")
    text = probability_blind_spot_warning("prob", kind, corrupted_prob=corrupted)
    warnings.warn(InterpWarning(f"not detected {', '.join(labels)}: {text}"), stacklevel=3)


def _difference(a: PatchResult, b: PatchResult) -> str:
    """How ``b``'s settings differ from ``a``'s, e.g. "metric=prob"; "itself" when they do not."""
    keys = ("model", "component", "positions", "corruption", "noise_scale", "metric", "direction", "window", "seed")
    changed = [f"{key}={b.settings.get(key)}" for key in keys if a.settings.get(key) != b.settings.get(key)]
    return ", ".join(changed) or "itself"


# ------------------------------------------------------------------------------------ regression baselines
BASELINE_DIR = "__baselines__"
DECIMALS = 6
# Settings that say what the numbers mean: effects recorded under other values cannot be compared.
IDENTITY = (
    "component", "positions", "corruption", "metric", "direction", "window", "noise_scale",
    "circuit", "test", "ablation", "universe", "receivers",
)
# Settings that depend on the machine, not the numbers: kept out of baselines so they do not churn in review.
MACHINE_ONLY = ("rows_per_pass",)
UPDATE_HINT = "run pytest with --interp-update-baselines"
SHOWN_MOVES = 20


def safe_name(name: str) -> str:
    """A file name for a test or claim name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "baseline"


def baseline_path(owner: Path, name: str) -> Path:
    """Where baseline ``name`` of the test or claims file ``owner`` lives."""
    return owner.parent / BASELINE_DIR / owner.stem / f"{safe_name(name)}.json"


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return round(value, DECIMALS) if math.isfinite(value) else None
    return value


def snapshot(result: PatchResult | CircuitResult) -> dict[str, Any]:
    """Settings and the result's ``baseline_values()`` (a sweep's ``{label: mean effect}`` in grid order, a
    circuit's score and per-node contributions); NaN values are written as null."""
    effects = {label: _rounded(float(value)) for label, value in result.baseline_values().items()}
    settings = {key: value for key, value in result.settings.items() if key not in MACHINE_ONLY}
    return {"settings": _rounded(json.loads(json.dumps(settings, default=str))), "effects": effects}


def render(snap: dict[str, Any]) -> str:
    return json.dumps(snap, indent=2, allow_nan=False) + "\n"


def _read_baseline(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ClaimError(
            f"The baseline {path} is unreadable ({error}). Fix the file, or delete it and {UPDATE_HINT}.",
            claim="baseline",
        ) from None
    if not isinstance(stored, dict) or not isinstance(stored.get("effects"), dict):
        raise ClaimError(
            f"The baseline {path} has no `effects` mapping; it was not written by interp-tests. "
            f"Delete it and {UPDATE_HINT}.",
            claim="baseline",
        )
    return stored


def _differences(old: dict[str, Any], new: dict[str, Any], keys: Any) -> list[str]:
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _move(base: float | None, now: float | None) -> float:
    if base is None or now is None:
        return 0.0 if base is now else math.inf
    return abs(now - base)


def check_baseline(result: PatchResult | CircuitResult, path: Path, *, atol: float = 0.01, update: bool = False) -> str:
    """Compare the result's effects with the baseline at ``path`` (or rewrite it when ``update``).

    Returns ``"matched"``, ``"written"`` or ``"unchanged"``; raises ``ClaimError`` on a missing baseline,
    a different sweep, or effects that moved by more than ``atol``.
    """
    __tracebackhide__ = True  # pytest shows the failure at the claim, not in here
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise SettingsError(f"atol={atol!r} must be a number >= 0 (the largest allowed change of an effect).")
    current = snapshot(result)
    text = render(current)
    if update:
        status = "unchanged" if path.is_file() and path.read_text(encoding="utf-8") == text else "written"
        if status == "written":
            atomic_write(path, text)
        record_claim("baseline", status, True)
        return status
    if not path.is_file():
        record_claim("baseline", "missing", False)
        raise ClaimError(
            f"No baseline at {path}. To create it, {UPDATE_HINT}, then review and commit the file.", claim="baseline"
        )
    stored = _read_baseline(path)
    old_settings, new_settings = stored.get("settings") or {}, current["settings"]
    identity = _differences(old_settings, new_settings, IDENTITY)
    if identity:
        record_claim("baseline", "different sweep", False)
        raise ClaimError(
            f"The baseline {path} was recorded for a different sweep, so its effects cannot be compared:\n  "
            + "\n  ".join(identity)
            + f"\nIf the new sweep is intended, {UPDATE_HINT} and review the diff.",
            claim="baseline",
            settings=result.settings,
        )
    old, new = stored["effects"], current["effects"]
    if old.keys() != new.keys():
        gone, added = [k for k in old if k not in new], [k for k in new if k not in old]
        record_claim("baseline", "different components", False)
        raise ClaimError(
            f"The components differ from the baseline {path} (a different model shape or position count?).\n"
            f"  only in the baseline: {', '.join(gone) or 'none'}\n  only now: {', '.join(added) or 'none'}\n"
            f"If the change is intended, {UPDATE_HINT} and review the diff.",
            claim="baseline",
            settings=result.settings,
        )
    moves = sorted(((_move(old[k], new[k]), k) for k in new), reverse=True)
    largest = moves[0][0] if moves else 0.0
    beyond = [(move, label) for move, label in moves if move > atol]
    record_claim("baseline", f"max |change| {largest:.2g}", not beyond)
    if not beyond:
        return "matched"
    rows = [f"  {'component':<12}{'baseline':>12}{'now':>12}{'change':>12}"]
    for _, label in beyond[:SHOWN_MOVES]:
        base, now = old[label], new[label]
        change = "n/a" if base is None or now is None else f"{now - base:+.6f}"
        rows.append(f"  {label:<12}{base!s:>12}{now!s:>12}{change:>12}")
    if len(beyond) > SHOWN_MOVES:
        rows.append(f"  ... and {len(beyond) - SHOWN_MOVES} more")
    context = _differences(old_settings, new_settings, sorted(set(old_settings) | set(new_settings)))
    raise ClaimError(
        "\n".join(
            [
                f"Effects moved from the baseline {path}: {len(beyond)} of {len(new)} components by more than "
                f"atol={atol:g} (largest first).",
                *rows,
                "settings that changed since the baseline:" if context else "settings: unchanged since the baseline",
                *(f"  {line}" for line in context),
                f"If the change is intended, {UPDATE_HINT} and review the diff.",
            ]
        ),
        claim="baseline",
        labels=[label for _, label in beyond],
        threshold=atol,
        settings=result.settings,
    )


class GridClaims:
    """Claim assertions on a robustness ``Grid`` (``grid.assert_robust("9.9", at_least=4)``).

    Like ``Claims``: labels as arguments or one list; None when the claim holds, else ``ClaimError``.
    """

    def _unreachable(self: Grid, sd: float) -> str | None:
        sizes = {result.mean.size for result in self.results.values()}
        return unreachable_threshold(sd, min(sizes)) if sizes else None

    def assert_robust(
        self: Grid, *labels: str, at_least: int | None = None, sd: float | None = None, sign: str = "positive"
    ) -> None:
        """Each component is detected (``sd`` SDs on ``sign``'s side; default the grid's ``sd``) in at least
        ``at_least`` of the grid's settings (default: all). A setting whose metric could not be computed
        counts as one without the detection."""
        __tracebackhide__ = True
        names = _label_list(labels)
        m, sd = self._at_least(at_least), self._sd(sd)
        found = {label: self.detected_in(label, sd, sign) for label in names}  # checks label and sign
        n = len(self.settings)
        fragile = [label for label in names if len(found[label]) < m]
        weakest = min(names, key=lambda label: len(found[label]))
        record_claim(f"robust {', '.join(names)}", f"{weakest} in {len(found[weakest])}/{n} settings", not fragile)
        if not fragile:
            return
        needs = f"all {n} settings" if m == n else f"at least {m} of the {n} settings"
        invalid = f" ({len(self.invalid)} invalid settings count as not detected)" if self.invalid else ""
        robust = self.robust_components(m, sd, sign)
        raise ClaimError(
            "\n".join(
                [
                    f"Claim failed: {_subject(fragile)} not detected ({_threshold_text(sd, sign)}, sign={sign}) in "
                    f"{needs}{invalid}.",
                    *(f"  {label}: detected in {len(found[label])} of {n}" for label in fragile),
                    *(self.component_table(label, sd) for label in fragile),
                    f"components detected in {needs}: {', '.join(robust) or 'none'}",
                    *([f"  {unreachable}"] if (unreachable := self._unreachable(sd)) else []),
                ]
            ),
            claim="robust",
            labels=fragile,
            threshold=m,
            sign=sign,
            details={"detected_in": {label: [str(s) for s in found[label]] for label in names}, "n_settings": n},
        )
