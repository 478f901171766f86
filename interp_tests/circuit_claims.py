"""Claim assertions on circuit results: "the circuit recovers >= 80%", "it is complete", "every node matters".

Each returns None when the claim holds and raises ``ClaimError`` with a report (the score with its interval,
what each node carries, the worst subset, the settings) when it does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .claims import ClaimError, match_baseline, record_claim
from .errors import SettingsError

if TYPE_CHECKING:
    from .circuit_results import CircuitResult, Completeness, Minimality


def _settings_line(settings: dict) -> str:
    keys = ("test", "ablation", "metric", "corruption", "universe_size", "n_prompts", "model")
    return "settings: " + ", ".join(f"{k}={settings[k]}" for k in keys if settings.get(k) is not None)


class CircuitClaims:
    def assert_score(self: CircuitResult, at_least: float | None = None, at_most: float | None = None) -> None:
        """The circuit's score (batch means) is at least ``at_least`` and/or at most ``at_most``: e.g.
        sufficiency ``at_least=0.8``, or necessity ``at_most=0.1`` for "ablating these changes nothing"."""
        __tracebackhide__ = True
        if at_least is None and at_most is None:
            raise SettingsError("assert_score needs at_least= and/or at_most=, e.g. assert_score(at_least=0.8).")
        bounds = ([f">= {at_least}"] if at_least is not None else []) + ([f"<= {at_most}"] if at_most is not None else [])
        passed = (at_least is None or self.score >= at_least) and (at_most is None or self.score <= at_most)
        record_claim(f"{self.test} of {self.circuit} {' and '.join(bounds)}", f"score={self.score:.3f}", passed)
        if passed:
            return
        raise ClaimError(
            f"The {self.test} score of circuit {self.circuit} is {self.score:.3f}, not {' and '.join(bounds)}.\n"
            f"{self.describe()}\n{_settings_line(self.settings)}",
            claim="score",
            labels=self.circuit.labels,
            threshold=(at_least, at_most),
            settings=self.settings,
            details={"score": self.score, "interval": self.interval, "contributions": self.contributions},
        )


    def assert_matches_baseline(
        self: CircuitResult, where: Any, atol: float = 0.01, *, name: str | None = None, update: bool | None = None
    ) -> None:
        """The score and every node's contribution are within ``atol`` of a stored baseline; ``where`` is the
        test's pytest ``request`` or a baseline ``.json`` path, as for ``PatchResult.assert_matches_baseline``."""
        __tracebackhide__ = True
        match_baseline(self, where, atol, name=name, update=update)


class CompletenessClaims:
    def assert_complete(self: Completeness, max_incompleteness: float = 0.1) -> None:
        """No searched subset K makes ``|F(C\\K) - F(M\\K)|`` exceed ``max_incompleteness`` of the full-vs-empty gap."""
        __tracebackhide__ = True
        value = self.incompleteness
        passed = value <= max_incompleteness
        record_claim(f"circuit {self.circuit} is complete", f"incompleteness={value:.3f}", passed)
        if passed:
            return
        _, worst, _, _ = self.worst
        raise ClaimError(
            f"Circuit {self.circuit} is incomplete: knocking out K = {worst} changes the circuit and the whole model "
            f"differently, by {value:.3f} of the gap (> {max_incompleteness}). The model does part of the task "
            f"through components the circuit leaves out.\n{self}\n{_settings_line(self.settings)}",
            claim="complete",
            labels=worst.labels,
            threshold=max_incompleteness,
            settings=self.settings,
            details={"incompleteness": value, "worst": worst.labels, "n_runs": self.n_runs},
        )


class MinimalityClaims:
    def assert_minimal(self: Minimality, min_effect: float = 0.01) -> None:
        """Every node changes the faithfulness metric by at least ``min_effect`` of the gap for some subset K."""
        __tracebackhide__ = True
        best = self.by_node()
        idle = {node: value for node, (_, value) in best.items() if value < min_effect}
        weakest = min(best.items(), key=lambda item: item[1][1])
        record_claim(f"circuit {self.circuit} is minimal", f"min effect={weakest[1][1]:.3f} ({weakest[0]})", not idle)
        if not idle:
            return
        raise ClaimError(
            f"Circuit {self.circuit} is not minimal: {sorted(idle)} change the metric by less than {min_effect} of the "
            f"gap for every subset searched, so the circuit need not contain them.\n{self}\n{_settings_line(self.settings)}",
            claim="minimal",
            labels=sorted(idle),
            threshold=min_effect,
            settings=self.settings,
            details={"effects": {node: value for node, (_, value) in best.items()}, "n_runs": self.n_runs},
        )
