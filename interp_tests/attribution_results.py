"""How well attribution estimates track exact patching, as plain data: what ``attribution.verify_top`` and
``compare_with_exact`` return, and what a claim on a cached verified estimate reads without torch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .claims import ClaimError
from .results import PatchResult


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
    verified: PatchResult | None = None  # from verify_top: the estimate with these components measured exactly

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.estimate - self.exact).max()) if len(self.labels) else 0.0

    def assert_within(self, tolerance: float) -> None:
        """Fail (``ClaimError``) when an estimate misses its exact effect by more than ``tolerance``, in units
        of the metric's mean effect (fractions of the clean-corrupted gap for the logit difference)."""
        if self.max_abs_error <= tolerance:
            return
        missed = {label: (e, x) for label, e, x in self.worst if not abs(e - x) <= tolerance}
        raise ClaimError(
            f"Attribution estimates miss exact patching by up to {self.max_abs_error:.4g} (> tolerance "
            f"{tolerance:g}) for {', '.join(missed)}:\n{self}\nThe first-order estimate is unreliable for these "
            "components: use method='exact' for this claim, or allow a larger tolerance.",
            claim="verified", labels=list(missed), threshold=tolerance, details={"estimate_exact": missed},
        )

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


def compare(metric: str, labels: list[str], estimate: np.ndarray, exact: np.ndarray, k: int) -> AttributionComparison:
    pearson, spearman = _correlations(estimate, exact)
    order = np.argsort(-np.abs(estimate - exact), kind="stable")[:k]
    worst = [(labels[i], float(estimate[i]), float(exact[i])) for i in order]
    return AttributionComparison(metric, labels, estimate, exact, pearson, spearman, worst)


def verified_comparison(estimate: PatchResult, verified: PatchResult, k: int) -> AttributionComparison:
    """The comparison of an estimate with ``verified`` (the estimate with its ``k`` largest-|effect| components
    measured exactly, as ``verify_top`` makes it), carrying ``verified``."""
    est = estimate.mean.reshape(-1)
    top = np.argsort(-np.abs(est), kind="stable")[:k]
    labels = [estimate.labels[i] for i in top]
    comparison = compare(estimate.metric, labels, est[top], verified.mean.reshape(-1)[top], k)
    return dataclasses.replace(comparison, verified=verified)
