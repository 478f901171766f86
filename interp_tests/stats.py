"""How much to trust a patching result: bootstrap over prompts, per-component tests, agreement of two maps.

Everything here reads a ``PatchResult``'s stored per-prompt effects, so no model runs again. The paper's
detection rule (z-score over components >= sd) says which components stand out *relative to the others*;
``bootstrap`` says how stable that is under a different draw of prompts, and ``significance`` asks the
different question of whether a component's effect differs from zero at all. ``probability_blind_spot_warning``
says when an absence claim cannot be trusted at all (Zhang & Nanda 2024, section 4.2).

Results are read through their attributes only (``PatchResult`` is an annotation here): claims, which
``PatchResult`` mixes in, use these statistics, so this module sits below results.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ComponentError, MetricError, SettingsError, did_you_mean
from .metrics import MIN_LOGIT_DIFF_GAP, check_metric
from .signs import check_sign

if TYPE_CHECKING:
    from .edge_results import EdgeScores
    from .results import PatchResult

CORRECTIONS = ("holm", "fdr_bh")
TESTS = ("t", "wilcoxon")


def _index(labels: Sequence[str], label: str) -> int:
    try:
        return list(labels).index(label)
    except ValueError:
        raise ComponentError(f"{label!r} is not a component of this result.{did_you_mean(label, labels)}") from None


def _flat_effects(result: PatchResult) -> np.ndarray:
    """Raw per-prompt effects as ``[n_prompts, n_components]``."""
    return result.effects[result.metric].reshape(result.n_prompts, -1)


# ------------------------------------------------------------------------------------------ bootstrap
@dataclass(frozen=True, eq=False)
class Bootstrap:
    """Percentile intervals of each component's mean effect and z-score over prompt resamples.

    Arrays are flat over components, in the order of ``labels``. ``detection_positive[i]`` is the share of
    resamples in which component ``i`` is detected (z >= sd); ``detection_negative`` likewise for z <= -sd.
    Resamples whose logit-difference denominator is ~0 are left out and counted in ``n_degenerate``.
    """

    labels: tuple[str, ...]
    metric: str
    sd: float
    confidence: float
    n_resamples: int
    n_degenerate: int
    mean: np.ndarray
    zscores: np.ndarray
    mean_ci: np.ndarray  # [2, n_components]: low, high
    z_ci: np.ndarray  # [2, n_components]
    detection_positive: np.ndarray
    detection_negative: np.ndarray

    def ci(self, label: str) -> tuple[float, float]:
        """The percentile interval of ``label``'s mean effect."""
        i = _index(self.labels, label)
        return float(self.mean_ci[0, i]), float(self.mean_ci[1, i])

    def z_interval(self, label: str) -> tuple[float, float]:
        """The percentile interval of ``label``'s z-score."""
        i = _index(self.labels, label)
        return float(self.z_ci[0, i]), float(self.z_ci[1, i])

    def detection_rate(self, label: str, sign: str = "positive") -> float:
        """Share of resamples in which ``label`` is detected with ``sign`` (``"both"``: either side)."""
        check_sign(sign)
        i = _index(self.labels, label)
        rate = {"positive": self.detection_positive, "negative": self.detection_negative}
        if sign == "both":
            return float(self.detection_positive[i] + self.detection_negative[i])
        return float(rate[sign][i])

    def table(self, k: int = 10) -> str:
        """The ``k`` components with the largest |z|: effect and z with intervals, detection rates."""
        order = np.argsort(-np.abs(self.zscores), kind="stable")[:k]
        pct = f"{100 * self.confidence:g}%"
        rows = [
            f"{'component':<12}{'effect':>10}  {pct + ' CI':<21}{'z':>7}  {pct + ' CI':<17}{'det+':>6}{'det-':>6}"
        ]
        for i in order:
            effect_ci = f"[{self.mean_ci[0, i]:.4f}, {self.mean_ci[1, i]:.4f}]"
            z_ci = f"[{self.z_ci[0, i]:.2f}, {self.z_ci[1, i]:.2f}]"
            rows.append(
                f"{self.labels[i]:<12}{self.mean[i]:>10.4f}  {effect_ci:<21}{self.zscores[i]:>7.2f}  {z_ci:<17}"
                f"{self.detection_positive[i]:>6.0%}{self.detection_negative[i]:>6.0%}"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        valid = self.n_resamples - self.n_degenerate
        head = f"Bootstrap over prompts: {valid} resamples, metric={self.metric}, detection at {self.sd:g} SD"
        if self.n_degenerate:
            head += f" ({self.n_degenerate} resamples dropped: logit-difference denominator ~0)"
        return head + "\n" + self.table()


def bootstrap(
    result: PatchResult, *, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95, sd: float = 2.0
) -> Bootstrap:
    """Resample prompts with replacement and recompute the mean effect map, z-scores and detections.

    Resample ``b`` takes the prompts ``idx[b]`` with ``idx = np.random.default_rng(seed).integers(0, n,
    (n_resamples, n))``. Each resample's map is computed as ``PatchResult.mean`` does: for the logit
    difference (and other normalised metrics), the resampled batch mean of raw effects over the resampled mean
    gap m_clean - m_corrupted.
    """
    if not isinstance(n_resamples, int) or n_resamples < 2:
        raise SettingsError(f"n_resamples={n_resamples!r} must be an integer >= 2.")
    if not 0 < confidence < 1:
        raise SettingsError(f"confidence={confidence!r} must lie strictly between 0 and 1 (e.g. 0.95).")
    if not sd > 0:
        raise SettingsError(f"sd={sd!r} must be positive (the paper detects at 2 SDs).")
    n = result.n_prompts
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1.0)
    means = counts @ _flat_effects(result) / n  # [resamples, components]
    n_degenerate = 0
    if result.gap is not None:
        gaps = counts @ result.gap / n
        valid = np.abs(gaps) > MIN_LOGIT_DIFF_GAP
        n_degenerate = int((~valid).sum())
        if not valid.any():
            raise MetricError(
                f"Every bootstrap resample has a {result.metric} denominator of ~0; use metric='prob' or 'kl'."
            )
        means = means[valid] / gaps[valid, None]
    centred = means - means.mean(axis=1, keepdims=True)
    spread = means.std(axis=1, keepdims=True)
    z = np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)
    tail = 100 * (1 - confidence) / 2
    quantiles = [tail, 100 - tail]
    return Bootstrap(
        labels=tuple(result.labels),
        metric=result.metric,
        sd=sd,
        confidence=confidence,
        n_resamples=n_resamples,
        n_degenerate=n_degenerate,
        mean=result.mean.reshape(-1),
        zscores=result.zscores.reshape(-1),
        mean_ci=np.percentile(means, quantiles, axis=0),
        z_ci=np.percentile(z, quantiles, axis=0),
        detection_positive=(z >= sd).mean(axis=0),
        detection_negative=(-z >= sd).mean(axis=0),
    )


# --------------------------------------------------------------------------------------- significance
def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: ``max_{j<=i} min(1, (m - j + 1) p_(j))`` in sorted order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def _adjust(pvalues: np.ndarray, method: str) -> np.ndarray:
    if method == "holm":
        return holm(pvalues)
    import scipy.stats  # in the functions that use it: claims on a cached result that need none skip its import

    return scipy.stats.false_discovery_control(pvalues, method="bh")


@dataclass(frozen=True, eq=False)
class Significance:
    """Per-component tests that the per-prompt effect differs from zero, corrected over components.

    Arrays are flat over components in ``labels`` order. ``*_adjusted`` are Holm (family-wise error) or
    Benjamini-Hochberg (false discovery rate) adjusted p-values; a component is significant when its
    adjusted p-value is below ``alpha``.
    """

    labels: tuple[str, ...]
    metric: str
    method: str
    alpha: float
    n_prompts: int
    dropped_prompts: tuple[int, ...]
    mean: np.ndarray
    t_statistic: np.ndarray
    t_pvalue: np.ndarray
    t_adjusted: np.ndarray
    wilcoxon_statistic: np.ndarray
    wilcoxon_pvalue: np.ndarray
    wilcoxon_adjusted: np.ndarray

    def _adjusted(self, test: str) -> np.ndarray:
        if test not in TESTS:
            raise SettingsError(f"test={test!r}: use 't' (one-sample t-test) or 'wilcoxon' (signed-rank).")
        return self.t_adjusted if test == "t" else self.wilcoxon_adjusted

    def pvalue(self, label: str, test: str = "t", adjusted: bool = True) -> float:
        p = self._adjusted(test) if adjusted else (self.t_pvalue if test == "t" else self.wilcoxon_pvalue)
        return float(p[_index(self.labels, label)])

    def is_significant(self, label: str, test: str = "t") -> bool:
        return bool(self._adjusted(test)[_index(self.labels, label)] < self.alpha)

    def significant(self, test: str = "t") -> list[str]:
        """Components whose adjusted p-value is below ``alpha``, the smallest p first."""
        p = self._adjusted(test)
        order = np.argsort(p, kind="stable")
        return [self.labels[i] for i in order if p[i] < self.alpha]

    def table(self, k: int = 10) -> str:
        """The ``k`` components with the smallest adjusted t-test p-values."""
        order = np.argsort(self.t_adjusted, kind="stable")[:k]
        rows = [f"{'component':<12}{'mean':>10}{'t':>9}{'p_t(adj)':>11}{'p_wilcoxon(adj)':>17}"]
        for i in order:
            rows.append(
                f"{self.labels[i]:<12}{self.mean[i]:>10.4f}{self.t_statistic[i]:>9.2f}"
                f"{self.t_adjusted[i]:>11.3g}{self.wilcoxon_adjusted[i]:>17.3g}"
            )
        return "\n".join(rows)

    def __str__(self) -> str:
        head = (
            f"Effect != 0 over {self.n_prompts} prompts, metric={self.metric}, {self.method} correction over "
            f"{len(self.labels)} components, alpha={self.alpha:g}"
        )
        if self.dropped_prompts:
            head += f"; dropped degenerate prompts {list(self.dropped_prompts)}"
        return head + "\n" + self.table()


def significance(result: PatchResult, *, method: str = "holm", alpha: float = 0.05) -> Significance:
    """One-sample t-test and Wilcoxon signed-rank test of each component's per-prompt effect against 0.

    For the logit difference (and any other normalised metric) the per-prompt normalised effects are tested, without the prompts whose own
    denominator is ~0. A component whose effects are all exactly 0 gets p = 1 in both tests.
    """
    if method not in CORRECTIONS:
        raise SettingsError(f"method={method!r}: use 'holm' (family-wise error) or 'fdr_bh' (false discovery rate).")
    if not 0 < alpha < 1:
        raise SettingsError(f"alpha={alpha!r} must lie strictly between 0 and 1.")
    per_prompt = result.per_prompt.reshape(result.n_prompts, -1)
    dropped = tuple(result.degenerate_prompts) if result.gap is not None else ()
    x = np.delete(per_prompt, dropped, axis=0)
    if x.shape[0] < 2:
        raise MetricError(
            f"Significance tests need at least 2 usable prompts; {x.shape[0]} remain after dropping {list(dropped)}."
        )
    import scipy.stats

    zero = np.all(x == 0, axis=0)
    t_stat, t_p = np.zeros(x.shape[1]), np.ones(x.shape[1])
    w_stat, w_p = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if not zero.all():
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # constant non-zero effects: t = +-inf, p = 0
            t = scipy.stats.ttest_1samp(x[:, ~zero], 0.0, axis=0)
            w = scipy.stats.wilcoxon(x[:, ~zero], axis=0)
        t_stat[~zero], t_p[~zero] = t.statistic, t.pvalue
        w_stat[~zero], w_p[~zero] = w.statistic, w.pvalue
    return Significance(
        labels=tuple(result.labels),
        metric=result.metric,
        method=method,
        alpha=alpha,
        n_prompts=x.shape[0],
        dropped_prompts=dropped,
        mean=x.mean(axis=0),
        t_statistic=t_stat,
        t_pvalue=t_p,
        t_adjusted=_adjust(t_p, method),
        wilcoxon_statistic=w_stat,
        wilcoxon_pvalue=w_p,
        wilcoxon_adjusted=_adjust(w_p, method),
    )


# ------------------------------------------------------------------------------------------ agreement
@dataclass(frozen=True)
class Agreement:
    """How alike two effect maps of the same components are: rank correlations and detected-set overlap.

    Correlations are NaN when either map is constant. ``jaccard`` is 1 when neither detects anything.
    """

    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    jaccard: float
    both: tuple[str, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    sd: float
    sign: str

    def table(self) -> str:
        def names(labels: tuple[str, ...]) -> str:
            return ", ".join(labels) or "-"

        return "\n".join([
            f"Spearman rho   {self.spearman:.3f} (p={self.spearman_p:.3g})",
            f"Kendall tau    {self.kendall:.3f} (p={self.kendall_p:.3g})",
            f"Jaccard        {self.jaccard:.3f} of {self.sign} detections at {self.sd:g} SD",
            f"detected both  {names(self.both)}",
            f"only in a      {names(self.only_a)}",
            f"only in b      {names(self.only_b)}",
        ])

    def __str__(self) -> str:
        return self.table()


def agreement(a: PatchResult, b: PatchResult, *, sd: float = 2.0, sign: str = "positive") -> Agreement:
    """Rank agreement of ``a.mean`` and ``b.mean`` and the Jaccard overlap of their detected sets."""
    if a.labels != b.labels:
        raise SettingsError(
            f"agreement() compares maps of the same components, but the grids differ: {a.shape} {a.grid.kind} "
            f"vs {b.shape} {b.grid.kind}. Sweep the same component kind and positions."
        )
    import scipy.stats

    x, y = a.mean.reshape(-1), b.mean.reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        rho = scipy.stats.spearmanr(x, y)
        tau = scipy.stats.kendalltau(x, y)
    in_a, in_b = a.detected(sd, sign), b.detected(sd, sign)
    union = set(in_a) | set(in_b)
    shared = set(in_a) & set(in_b)
    return Agreement(
        spearman=float(rho.statistic),
        spearman_p=float(rho.pvalue),
        kendall=float(tau.statistic),
        kendall_p=float(tau.pvalue),
        jaccard=len(shared) / len(union) if union else 1.0,
        both=tuple(label for label in in_a if label in shared),
        only_a=tuple(label for label in in_a if label not in shared),
        only_b=tuple(label for label in in_b if label not in shared),
        sd=sd,
        sign=sign,
    )


def detected_in_at_least(
    results: Sequence[PatchResult], m: int, *, sd: float = 2.0, sign: str = "positive"
) -> list[str]:
    """Components detected in at least ``m`` of ``results``, the most often detected first."""
    results = list(results)
    if not results:
        raise SettingsError("detected_in_at_least() needs at least one result.")
    if not isinstance(m, int) or not 1 <= m <= len(results):
        raise SettingsError(f"m={m!r} must be an integer in 1..{len(results)} (the number of results).")
    counts = Counter(label for result in results for label in result.detected(sd, sign))
    first_seen = {label: i for i, label in enumerate(dict.fromkeys(x for result in results for x in result.labels))}
    kept = [label for label, count in counts.items() if count >= m]
    return sorted(kept, key=lambda label: (-counts[label], first_seen[label]))


# ----------------------------------------------------------------------------------- the paper's cautions
CLAIM_KINDS = ("detected", "negative", "not_detected", "not_negative")


def probability_blind_spot_warning(metric: str, claim_kind: str, *, corrupted_prob: float | None = None) -> str | None:
    """A warning when a claim asserts absence (``"not_detected"``: not involved; ``"not_negative"``) under
    metric "prob", else None.

    Patching can lower P(answer) by at most the corrupted run's P(answer), so when the corruption drives it
    near 0 no component can show a negative effect (Zhang & Nanda 2024, section 4.2): such a claim passes
    whatever the component does. ``corrupted_prob`` (e.g. ``result.settings["corrupted"]["prob"]``) puts
    the bound in the text.
    """
    check_metric(metric)
    if claim_kind not in CLAIM_KINDS:
        hint = did_you_mean(claim_kind, CLAIM_KINDS)
        raise SettingsError(f"claim_kind={claim_kind!r}: use one of {list(CLAIM_KINDS)}.{hint}")
    if metric != "prob" or claim_kind not in ("not_detected", "not_negative"):
        return None
    bound = "" if corrupted_prob is None else f" (here {corrupted_prob:.3g})"
    what = "is not involved" if claim_kind == "not_detected" else "is not negative"
    return (
        f"This claim says a component {what} using metric='prob', which cannot see negative components: "
        f"patching can lower P(answer) by at most the corrupted run's P(answer){bound}, so when the corruption "
        "drives it near 0 every component looks non-negative (Zhang & Nanda 2024, section 4.2). Check the claim "
        "with metric='logit_diff' as well."
    )


def roc_auc(scores: EdgeScores, true_circuit: Iterable[str], by: str = "abs") -> float:
    """Area under the ROC curve of recovering ``true_circuit``'s edges from ``scores``: TPR against FPR over every
    top-k circuit (k = 0..all edges, ranked ``by`` |score| or score), by the trapezoid rule. 1.0: every true edge
    ranks above every other; 0.5: chance."""
    truth = {str(label) for label in true_circuit}
    unknown = sorted(truth - set(scores.labels))
    if unknown:
        raise ComponentError(f"The true circuit names edges the scores do not have: {unknown[:5]}.{did_you_mean(unknown[0], scores.labels)}")
    positive = np.array([scores.labels[i] in truth for i in scores.order(by)])
    if positive.all() or not positive.any():
        raise SettingsError("ROC AUC needs edges both inside and outside the true circuit.")
    tpr = np.concatenate([[0.0], np.cumsum(positive) / positive.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(~positive) / (~positive).sum()])
    return float(np.trapezoid(tpr, fpr))
