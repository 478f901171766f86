"""Edge scores, faithfulness curves and exact checks of estimated edges as plain data, with their claims
(edge_claims), and their bytes for the plugin's result cache (``to_bytes`` / ``from_bytes``: JSON and ``.npz``)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .claims import ClaimError
from .edge_claims import CurveClaims, EdgeScoreClaims, TopCircuit
from .errors import ComponentError, ResultFileError, SettingsError, did_you_mean
from .files import atomic_write

RANKINGS = ("abs", "signed")
FORMAT_VERSION = 1


def _to_bytes(kind: str, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    header = {"format_version": FORMAT_VERSION, "kind": kind, **meta}
    np.savez(buffer, meta=np.array(json.dumps(header)), **arrays)
    return buffer.getvalue()


def _from_bytes(kind: str, data: bytes, names: Sequence[str], source: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {name: archive[name] for name in names}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise ResultFileError(f"{source} is not a readable {kind} file ({error}). Recompute it.") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != kind:
        raise ResultFileError(
            f"{source} holds {meta.get('kind')!r} format {meta.get('format_version')}, expected {kind!r} format "
            f"{FORMAT_VERSION}. Recompute it."
        )
    return meta, arrays


class EdgeScores(EdgeScoreClaims):
    """One score per edge: the share of the clean-corrupted gap of m (logit difference, probability, -KL) that
    corrupting that edge alone in the clean run destroys, exact or estimated (``method``: "exact", "eap",
    "eap_ig"). Positive scores mark edges the behaviour needs.

    ``raw[prompt, edge]`` is the change of m itself, m(clean with the edge corrupted) - m(clean), per prompt kept;
    ``score`` normalises the batch means by ``m_clean - m_corrupted`` (as sweeps do) and ``per_prompt`` each
    prompt by its own gap.
    """

    def __init__(
        self, labels: Sequence[str], raw: np.ndarray, m_clean: np.ndarray, m_corrupted: np.ndarray, *, method: str,
        metric: str, settings: dict[str, Any],
    ) -> None:
        self.labels = list(labels)
        self.raw = np.asarray(raw, dtype=np.float64)
        self.m_clean, self.m_corrupted = np.asarray(m_clean, np.float64), np.asarray(m_corrupted, np.float64)
        self.method, self.metric, self.settings = method, metric, dict(settings)
        self._index = {label: i for i, label in enumerate(self.labels)}
        gap = float(self.m_clean.mean() - self.m_corrupted.mean())
        self.scores = -self.raw.mean(0) / gap if gap else np.full(len(self.labels), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.per_prompt = -self.raw / (self.m_clean - self.m_corrupted)[:, None]

    @property
    def n_prompts(self) -> int:
        return self.raw.shape[0]

    def _position(self, edge: str) -> int:
        if edge not in self._index:
            raise ComponentError(f"{edge!r} is not an edge of these scores.{did_you_mean(edge, self.labels)}")
        return self._index[edge]

    def score(self, edge: str) -> float:
        return float(self.scores[self._position(edge)])

    def order(self, by: str = "abs") -> np.ndarray:
        """Edge indices from the highest-ranked down: by |score| ("abs") or by score ("signed")."""
        if by not in RANKINGS:
            raise SettingsError(f"by={by!r}: rank edges by 'abs' or 'signed' score.{did_you_mean(by, RANKINGS)}")
        key = np.abs(self.scores) if by == "abs" else self.scores
        return np.argsort(-key, kind="stable")

    def rank(self, edge: str, by: str = "abs") -> int:
        """1 for the highest-ranked edge."""
        position = self._position(edge)
        return int(np.nonzero(self.order(by) == position)[0][0]) + 1

    def top(self, k: int, by: str = "abs") -> list[str]:
        return [self.labels[i] for i in self.order(by)[:k]]

    def circuit(self, top: int | None = None, fraction: float | None = None, by: str = "abs") -> TopCircuit:
        """The circuit of the ``top`` highest-ranked edges, or of the top ``fraction`` of all edges (at least one)."""
        if (top is None) == (fraction is None):
            raise SettingsError("Give top= (a number of edges) or fraction= (a share of all edges), not both.")
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise SettingsError(f"fraction={fraction!r} must be in (0, 1].")
            top = edges_at(fraction, len(self.labels))
        if not isinstance(top, int) or not 1 <= top <= len(self.labels):
            raise SettingsError(f"top={top!r}: choose between 1 and {len(self.labels)} edges.")
        return TopCircuit(self.top(top, by))

    def table(self, k: int = 10, by: str = "abs") -> str:
        lines = [f"{self.method} edge scores ({self.metric}, {self.n_prompts} prompts, {len(self.labels)} edges):"]
        lines += [f"  {r + 1:>4} {self.labels[i]:<22} {self.scores[i]:+.4f}" for r, i in enumerate(self.order(by)[:k])]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"EdgeScores({self.method}, {len(self.labels)} edges, {self.n_prompts} prompts)"

    def to_bytes(self) -> bytes:
        meta = {"labels": self.labels, "method": self.method, "metric": self.metric, "settings": self.settings}
        return _to_bytes("EdgeScores", meta, {"raw": self.raw, "m_clean": self.m_clean, "m_corrupted": self.m_corrupted})

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> EdgeScores:
        meta, a = _from_bytes("EdgeScores", data, ("raw", "m_clean", "m_corrupted"), source)
        return cls(meta["labels"], a["raw"], a["m_clean"], a["m_corrupted"], method=meta["method"],
                   metric=meta["metric"], settings=meta["settings"])


def edges_at(fraction: float, n_edges: int) -> int:
    """How many edges the top ``fraction`` holds: rounded, at least one."""
    return max(1, min(n_edges, int(round(fraction * n_edges))))


class FaithfulnessCurve(CurveClaims):
    """Faithfulness of the circuits of the top fractions of edges, under two rankings (MIB, Mueller et al. 2025):
    ``signed[i]`` ranks by score, ``abs[i]`` by |score|. Faithfulness is ``(m(C) - m(empty)) / (m(full) -
    m(empty))`` with every edge outside C ablated. CPR is the trapezoid area under ``signed`` over the fractions
    (higher is better), CMD the area under ``|1 - abs|`` (lower is better)."""

    def __init__(
        self, fractions: Sequence[float], sizes: Sequence[int], signed: np.ndarray, absolute: np.ndarray,
        settings: dict[str, Any],
    ) -> None:
        self.fractions = [float(f) for f in fractions]
        self.sizes = list(sizes)
        self.signed, self.abs = np.asarray(signed, np.float64), np.asarray(absolute, np.float64)
        self.settings = dict(settings)
        x = np.asarray(self.fractions)
        self.cpr = float(np.trapezoid(self.signed, x))
        self.cmd = float(np.trapezoid(np.abs(1 - self.abs), x))

    def to_bytes(self) -> bytes:
        meta = {"fractions": self.fractions, "sizes": self.sizes, "settings": self.settings}
        return _to_bytes("FaithfulnessCurve", meta, {"signed": self.signed, "abs": self.abs})

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> FaithfulnessCurve:
        meta, a = _from_bytes("FaithfulnessCurve", data, ("signed", "abs"), source)
        return cls(meta["fractions"], meta["sizes"], a["signed"], a["abs"], meta["settings"])

    def at(self, fraction: float, ranking: str = "signed") -> float:
        if ranking not in RANKINGS:
            raise SettingsError(f"ranking={ranking!r}: choose 'signed' or 'abs'.")
        matches = [i for i, f in enumerate(self.fractions) if abs(f - fraction) < 1e-12]
        if not matches:
            raise SettingsError(f"The curve has no point at fraction {fraction:g}; its fractions are {self.fractions}.")
        return float((self.signed if ranking == "signed" else self.abs)[matches[0]])

    def __str__(self) -> str:
        lines = [f"faithfulness curve: CPR={self.cpr:.3f}, CMD={self.cmd:.3f}",
                 f"  {'fraction':>9} {'edges':>7} {'signed':>8} {'abs':>8}"]
        lines += [f"  {f:>9g} {n:>7} {s:>8.3f} {a:>8.3f}" for f, n, s, a in zip(self.fractions, self.sizes, self.signed, self.abs)]
        return "\n".join(lines)

    def figure(self, path: str | Path) -> Path:
        """Write ``plot()`` as a PNG at ``path``, atomically; returns the path."""
        from .reports import png_bytes

        return atomic_write(path, png_bytes(self.plot(), dpi=120))

    def plot(self) -> Any:
        """A matplotlib Figure of both curves against the fraction of edges (log x); needs matplotlib (the plots
        extra), as every result's ``plot()`` does."""
        from .reports import require_matplotlib

        require_matplotlib()
        from matplotlib.figure import Figure  # the object API: no pyplot, no global backend change

        figure = Figure(figsize=(5, 3.5), layout="constrained")
        ax = figure.subplots()
        ax.plot(self.fractions, self.signed, marker="o", label=f"signed ranking (CPR {self.cpr:.3f})")
        ax.plot(self.fractions, self.abs, marker="s", label=f"|score| ranking (CMD {self.cmd:.3f})")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of edges kept")
        ax.set_ylabel("faithfulness")
        ax.legend(fontsize=8)
        return figure


class EdgeVerification:
    """Estimated against exact scores of the top-``k`` edges of an estimate."""

    def __init__(self, labels: list[str], estimate: np.ndarray, exact: np.ndarray) -> None:
        self.labels, self.estimate, self.exact = labels, estimate, exact

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.estimate - self.exact).max())

    def assert_within(self, tolerance: float) -> None:
        """ClaimError when an estimate misses its exact score by more than ``tolerance`` (shares of the gap)."""
        __tracebackhide__ = True
        if self.max_abs_error <= tolerance:
            return
        missed = [label for label, e, x in zip(self.labels, self.estimate, self.exact) if abs(e - x) > tolerance]
        raise ClaimError(f"Edge estimates miss exact patching by up to {self.max_abs_error:.4g} (> {tolerance:g}) "
                         f"for {missed}:\n{self}", claim="verified", labels=missed, threshold=tolerance)

    def __str__(self) -> str:
        lines = [f"  {'edge':<22} {'estimate':>9} {'exact':>9}"]
        lines += [f"  {label:<22} {e:>+9.4f} {x:>+9.4f}" for label, e, x in zip(self.labels, self.estimate, self.exact)]
        return "\n".join(lines)

    def to_bytes(self) -> bytes:
        return _to_bytes("EdgeVerification", {"labels": self.labels}, {"estimate": self.estimate, "exact": self.exact})

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> EdgeVerification:
        meta, a = _from_bytes("EdgeVerification", data, ("estimate", "exact"), source)
        return cls(meta["labels"], a["estimate"], a["exact"])
