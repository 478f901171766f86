"""Claim assertions on edge scores and faithfulness curves: "this edge is in the top 20", "2% of the edges recover
80%", "CMD at most 0.1", "the top-k circuit contains the claimed edges".

Each returns None (``contains`` returns the circuit) when the claim holds and raises ``ClaimError`` with the
figures when it does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .circuits import Circuit, as_circuit
from .claims import ClaimError, record_claim
from .errors import SettingsError

if TYPE_CHECKING:
    from .edge_results import EdgeScores, FaithfulnessCurve


class EdgeScoreClaims:
    def assert_in_top(self: EdgeScores, *edges: str, k: int = 20, by: str = "abs") -> None:
        """Every edge named is among the ``k`` highest-ranked edges (``by`` "abs" |score| or "signed" score)."""
        __tracebackhide__ = True
        if not edges:
            raise SettingsError("Name at least one edge, e.g. scores.assert_in_top('5.5->9.9.q', k=20).")
        ranks = {edge: self.rank(edge, by=by) for edge in edges}
        missing = {edge: rank for edge, rank in ranks.items() if rank > k}
        record_claim(f"{', '.join(edges)} in the top {k} edges ({self.method})", f"ranks={list(ranks.values())}", not missing)
        if not missing:
            return
        raise ClaimError(
            f"{', '.join(f'{e} (rank {r}, score {self.score(e):+.4f})' for e, r in missing.items())} not in the top {k} "
            f"edges by {by} {self.method} score.\n{self.table(k)}",
            claim="in_top", labels=list(missing), threshold=k, settings=self.settings,
            details={"ranks": ranks},
        )


class TopCircuit(Circuit):
    """The circuit of the highest-ranked edges of some scores, which can claim to contain edges."""

    def contains(self, claimed: Circuit | Iterable[str]) -> TopCircuit:
        """Claim: every edge of ``claimed`` is in this circuit (ClaimError listing the ones left out)."""
        __tracebackhide__ = True
        claimed = as_circuit(claimed)
        missing = [e.label for e in claimed if e not in set(self)]
        record_claim(f"top-{len(self)} circuit contains {claimed}", f"missing={len(missing)}", not missing)
        if missing:
            raise ClaimError(
                f"The circuit of the {len(self)} top-ranked edges leaves out {missing} of the claimed {claimed}.",
                claim="contains", labels=missing, threshold=len(self),
            )
        return self


class CurveClaims:
    def assert_faithful(self: FaithfulnessCurve, at_fraction: float, at_least: float, ranking: str = "signed") -> None:
        """The circuit of the top ``at_fraction`` of edges (ranked by ``ranking``: "signed" or "abs" score) has
        faithfulness at least ``at_least``; ``at_fraction`` must be one of the curve's fractions."""
        __tracebackhide__ = True
        value = self.at(at_fraction, ranking)
        passed = value >= at_least
        record_claim(f"top {at_fraction:g} of edges faithful >= {at_least}", f"faithfulness={value:.3f}", passed)
        if passed:
            return
        raise ClaimError(
            f"The top {at_fraction:g} of edges ({ranking} ranking) recover faithfulness {value:.3f} < {at_least}.\n{self}",
            claim="faithful", labels=[], threshold=at_least, settings=self.settings, details={"faithfulness": value},
        )

    def assert_cmd(self: FaithfulnessCurve, at_most: float) -> None:
        """MIB's CMD (area under |1 - faithfulness|, edges ranked by |score|) is at most ``at_most``."""
        __tracebackhide__ = True
        passed = self.cmd <= at_most
        record_claim(f"CMD <= {at_most}", f"CMD={self.cmd:.3f}", passed)
        if passed:
            return
        raise ClaimError(
            f"CMD = {self.cmd:.3f} > {at_most}: the top-ranked edge circuits stray from the full model's behaviour.\n{self}",
            claim="cmd", labels=[], threshold=at_most, settings=self.settings, details={"cmd": self.cmd},
        )
