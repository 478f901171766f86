"""The score of a circuit test as plain data: the raw per-prompt metrics it came from, the score, a bootstrap
interval over prompts, and the settings (test, ablation, universe) that the score depends on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import display
from .circuit_claims import CircuitClaims, CompletenessClaims, MinimalityClaims
from .circuits import Circuit
from .errors import MetricError, ResultFileError
from .files import atomic_write

FORMAT_VERSION = 1
RUNS = ("clean", "corrupted", "patched", "empty")
# Below this |m(full) - m(empty)| the score divides by ~0 (in the metric's units: logits, probability, nats).
MIN_GAP = 1e-6


def _score(metrics: dict[str, np.ndarray], test: str) -> np.ndarray | float:
    """The score from (means or per-prompt) metric values: see circuit_patching for the definitions."""
    full, empty, patched = metrics["clean"], metrics["empty"], metrics["patched"]
    gap = full - empty
    with np.errstate(divide="ignore", invalid="ignore"):
        if test == "necessity":
            return (full - patched) / gap
        return (patched - empty) / gap


class CircuitResult(CircuitClaims):
    """How well a circuit passes one test on a set of prompts.

    ``score`` normalises the batch means (as sweeps do); ``per_prompt`` normalises each prompt by its own gap
    (NaN where that gap is ~0); ``interval`` is the percentile bootstrap interval of ``score`` over prompts.
    ``metrics`` holds the raw per-prompt values m(run) of the clean, corrupted, patched and empty runs;
    ``without[label]`` the patched run's values with that node left out of the circuit, so
    ``contributions`` says how much of the score each node carries.
    """

    def __init__(
        self,
        circuit: Circuit,
        metrics: dict[str, np.ndarray],
        *,
        test: str,
        ablation: str,
        metric: str,
        settings: dict[str, Any],
        interval: tuple[float, float],
        confidence: float,
        without: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.circuit = circuit
        self.without = {k: np.asarray(v, dtype=np.float64) for k, v in (without or {}).items()}
        self.metrics = {k: np.asarray(metrics[k], dtype=np.float64) for k in RUNS}
        self.test, self.ablation, self.metric = test, ablation, metric
        self.settings = dict(settings)
        self.interval = (float(interval[0]), float(interval[1]))
        self.confidence = confidence
        means = {k: float(v.mean()) for k, v in self.metrics.items()}
        if not abs(means["clean"] - means["empty"]) > MIN_GAP:
            raise MetricError(
                f"The {test} score divides by m(clean) - m(empty) = {means['clean'] - means['empty']:.3g} ({metric}), "
                "which is ~0: the reference runs behave the same, so no circuit score is meaningful. Check the "
                "corruption (does it change the answer?) and the ablation."
            )
        self.score = float(_score(means, test))
        self.per_prompt = np.asarray(_score(self.metrics, test), dtype=np.float64)
        gaps = np.abs(self.metrics["clean"] - self.metrics["empty"])
        self.per_prompt[gaps <= MIN_GAP] = np.nan

    @property
    def n_prompts(self) -> int:
        return self.metrics["clean"].shape[0]

    @property
    def contributions(self) -> dict[str, float]:
        """Per node, the score lost when that node alone is left out of the circuit: score(C) - score(C - v)."""
        means = {k: float(v.mean()) for k, v in self.metrics.items()}
        return {
            label: self.score - float(_score({**means, "patched": float(values.mean())}, self.test))
            for label, values in self.without.items()
        }

    def baseline_values(self) -> dict[str, float]:
        """What a regression baseline stores: the score and what each node contributes to it."""
        return {"score": self.score, **{f"contribution {label}": value for label, value in self.contributions.items()}}

    @property
    def faithfulness_ratio(self) -> float:
        """Wang et al.'s F(C) / F(M): the patched run's mean metric over the clean run's."""
        return float(self.metrics["patched"].mean() / self.metrics["clean"].mean())

    def describe(self) -> str:
        low, high = self.interval
        means = ", ".join(f"{k} {self.metrics[k].mean():+.4f}" for k in RUNS)
        lines = [
            f"{self.test} of circuit {self.circuit} ({len(self.circuit)} nodes): score {self.score:.3f} "
            f"[{low:.3f}, {high:.3f}] ({self.confidence:.0%} bootstrap over {self.n_prompts} prompts)",
            f"  ablation={self.ablation}, metric={self.metric}, corruption={self.settings.get('corruption')}"
            + (f", universe of {self.settings['universe_size']} nodes" if self.settings.get("universe_size") else ""),
            f"  mean m(run): {means}",
        ]
        if self.test == "faithfulness":
            lines.append(f"  F(C)/F(M) = {self.faithfulness_ratio:.3f}")
        if self.without:
            lines.append("  per node, score lost when it alone is left out: " + ", ".join(
                f"{label} {value:+.3f}" for label, value in sorted(self.contributions.items(), key=lambda kv: -abs(kv[1]))
            ))
        return "\n".join(lines)

    # -- notebooks ---------------------------------------------------------------------------------
    def to_dataframe(self) -> Any:
        """One row per node: ``node``, ``kind``, ``layer``, ``head``, ``position`` and ``contribution`` (the score
        lost when that node alone is left out; NaN for a one-node circuit, which has no such run). Needs pandas."""
        contributions = self.contributions
        rows = [
            {"node": node.label, "kind": node.kind, "layer": node.layer, "head": node.head, "position": node.position,
             "contribution": contributions.get(node.label, float("nan"))}
            for node in self.circuit
        ]
        return display.dataframe(rows, ["node", "kind", "layer", "head", "position", "contribution"])

    def plot(self) -> Any:
        """Per-node contributions as a bar chart (a matplotlib Figure; needs the plots extra)."""
        from .reports import bar_figure

        contributions = self.contributions
        labels = [node.label for node in self.circuit]
        return bar_figure(
            labels, [contributions.get(label, float("nan")) for label in labels],
            ylabel=f"{self.test} score lost without the node",
            title=self.describe().splitlines()[0],
        )

    def _repr_html_(self) -> str:
        rows = [(node, value) for node, value in sorted(self.contributions.items(), key=lambda kv: -abs(kv[1]))]
        parts = [display.table(["node", "contribution"], rows)] if rows else []
        if rows:
            parts.append(display.inline_figure(self.plot))
        return display.block("CircuitResult", self.describe().splitlines()[:3], *parts)

    def __repr__(self) -> str:
        return f"<CircuitResult {self.test} {self.circuit}: {self.score:.3f} [{self.interval[0]:.3f}, {self.interval[1]:.3f}]>"

    __str__ = describe

    # -- persistence ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        meta = {
            "format_version": FORMAT_VERSION,
            "circuit": self.circuit.labels,
            "groups": {k: v.labels for k, v in self.circuit.groups.items()},
            "test": self.test,
            "ablation": self.ablation,
            "metric": self.metric,
            "settings": self.settings,
            "interval": self.interval,
            "confidence": self.confidence,
        }
        meta["without"] = list(self.without)
        buffer = io.BytesIO()
        arrays = {f"metric_{k}": v for k, v in self.metrics.items()}
        arrays.update({f"without_{i}": v for i, v in enumerate(self.without.values())})
        np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
        return buffer.getvalue()

    def save(self, path: str | Path) -> None:
        """Save losslessly as ``.npz``, atomically."""
        atomic_write(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> CircuitResult:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                meta = json.loads(str(archive["meta"]))
                metrics = {k: archive[f"metric_{k}"] for k in RUNS}
                without = {label: archive[f"without_{i}"] for i, label in enumerate(meta.get("without", []))}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
            raise ResultFileError(f"{source} is not a readable CircuitResult file ({error}). Recompute it.") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ResultFileError(
                f"{source} has circuit result format {meta.get('format_version')}, expected {FORMAT_VERSION}. Recompute it."
            )
        return cls(
            Circuit(meta["circuit"], groups=meta["groups"]), metrics, test=meta["test"], ablation=meta["ablation"],
            metric=meta["metric"], settings=meta["settings"], interval=tuple(meta["interval"]),
            confidence=meta["confidence"], without=without,
        )

    @classmethod
    def load(cls, path: str | Path) -> CircuitResult:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ResultFileError(f"{path} cannot be read ({error.strerror}). Recompute it.") from None
        return cls.from_bytes(data, str(path))


def bootstrap_interval(
    metrics: dict[str, np.ndarray], test: str, *, n_bootstrap: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of the batch-mean score over prompts resampled with replacement."""
    n = metrics["clean"].shape[0]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(n_bootstrap, n))
    means = {k: v[picks].mean(axis=1) for k, v in metrics.items()}
    scores = np.asarray(_score(means, test))
    scores = scores[np.isfinite(scores)]
    if not scores.size:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)


def circuit_scores(
    circuit: Circuit,
    metrics: dict[str, np.ndarray],
    *,
    test: str,
    ablation: str,
    metric: str,
    settings: dict[str, Any],
    n_bootstrap: int,
    confidence: float,
    seed: int,
    without: dict[str, np.ndarray] | None = None,
) -> CircuitResult:
    interval = bootstrap_interval(metrics, test, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return CircuitResult(
        circuit, metrics, test=test, ablation=ablation, metric=metric, settings=settings, interval=interval,
        confidence=confidence, without=without,
    )


class SubsetScores:
    """A search over subsets K of a circuit (completeness or minimality): each candidate K with the two mean
    metrics compared and their difference, normalised by the full-vs-empty gap ``|F(M) - F(empty)|``."""

    KIND = ""  # "completeness" or "minimality"

    def __init__(
        self,
        circuit: Circuit,
        rows: list[tuple[str, Circuit, float, float]],
        *,
        gap: float,
        n_runs: int,
        settings: dict[str, Any],
    ) -> None:
        self.circuit = circuit
        self.rows = rows  # (what the row is for: a search step or a node, K, first metric, second metric)
        self.gap = gap
        self.n_runs = n_runs
        self.settings = dict(settings)

    def to_bytes(self) -> bytes:
        rows = [[label, k.labels, a, b] for label, k, a, b in self.rows]
        data = {
            "format_version": FORMAT_VERSION, "kind": self.KIND, "circuit": self.circuit.labels,
            "groups": {k: v.labels for k, v in self.circuit.groups.items()}, "rows": rows, "gap": self.gap,
            "n_runs": self.n_runs, "settings": self.settings,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> SubsetScores:
        try:
            meta = json.loads(data)
            rows = [(label, Circuit(k), float(a), float(b)) for label, k, a, b in meta["rows"]]
            circuit = Circuit(meta["circuit"], groups=meta["groups"])
        except (ValueError, KeyError, TypeError) as error:
            raise ResultFileError(f"{source} is not a readable {cls.__name__} result ({error}). Recompute it.") from None
        if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != cls.KIND:
            raise ResultFileError(f"{source} is not a {cls.__name__} result of format {FORMAT_VERSION}. Recompute it.")
        return cls(circuit, rows, gap=meta["gap"], n_runs=meta["n_runs"], settings=meta["settings"])

    def normalised(self, row: tuple[str, Circuit, float, float]) -> float:
        return abs(row[2] - row[3]) / abs(self.gap)

    # -- notebooks ---------------------------------------------------------------------------------
    def to_dataframe(self) -> Any:
        """One row per searched subset: ``for`` (the search step, or the node for minimality), ``K``, the two mean
        metrics compared (``first``, ``second``: see ``table``) and ``normalised`` = |first - second| / |gap|."""
        rows = [
            {"for": row[0], "K": str(row[1]), "first": row[2], "second": row[3], "normalised": self.normalised(row)}
            for row in self.rows
        ]
        return display.dataframe(rows, ["for", "K", "first", "second", "normalised"])

    def plot(self) -> Any:
        """The largest normalised difference per search step (completeness) or node (minimality), as bars."""
        from .reports import bar_figure

        best: dict[str, float] = {}
        for row in self.rows:
            best[row[0]] = max(best.get(row[0], 0.0), self.normalised(row))
        return bar_figure(list(best), list(best.values()), ylabel="|difference| / gap", title=str(self).splitlines()[0])

    def _repr_html_(self) -> str:
        lines = str(self).splitlines()
        rows = [(r[0], str(r[1]), r[2], r[3], self.normalised(r)) for r in sorted(self.rows, key=self.normalised, reverse=True)[:10]]
        return display.block(
            self.KIND, lines[:1], display.table(["for", "K", "first", "second", "|diff|/gap"], rows),
            display.inline_figure(self.plot),
        )

    def table(self, k: int = 10) -> str:
        first, second = ("F(C\\K)", "F(M\\K)") if self.KIND == "completeness" else ("F(C\\K)", "F(C\\(K+v))")
        lines = [f"  {'for':<14} {first:>10} {second:>12} {'|diff|/gap':>11}  K"]
        for row in sorted(self.rows, key=self.normalised, reverse=True)[:k]:
            lines.append(f"  {row[0]:<14} {row[2]:>10.4f} {row[3]:>12.4f} {self.normalised(row):>11.3f}  {row[1]}")
        return "\n".join(lines)


class Completeness(SubsetScores, CompletenessClaims):
    """Wang et al. (2023, section 4): incompleteness ``|F(C\\K) - F(M\\K)|`` over the searched subsets K of C.
    A complete circuit loses as much as the whole model when any part K is knocked out of both."""

    KIND = "completeness"

    @property
    def worst(self) -> tuple[str, Circuit, float, float]:
        return max(self.rows, key=self.normalised)

    @property
    def incompleteness(self) -> float:
        """The largest normalised incompleteness found."""
        return self.normalised(self.worst)

    def __str__(self) -> str:
        _, worst_k, _, _ = self.worst
        return (
            f"completeness of circuit {self.circuit}: max incompleteness {self.incompleteness:.3f} of the full-vs-empty "
            f"gap ({self.gap:.4f}), at K = {worst_k}; {len(self.rows)} subsets searched, {self.n_runs} runs\n"
            + self.table()
        )


class Minimality(SubsetScores, MinimalityClaims):
    """Wang et al. (2023, section 4): for each node v, the subset K of C\\{v} where removing v too changes the
    faithfulness metric most, ``|F(C\\(K+v)) - F(C\\K)|``. Every node of a minimal circuit matters somewhere."""

    KIND = "minimality"

    def by_node(self) -> dict[str, tuple[Circuit, float]]:
        best: dict[str, tuple[Circuit, float]] = {}
        for row in self.rows:
            node, value = row[0], self.normalised(row)
            if node not in best or value > best[node][1]:
                best[node] = (row[1], value)
        return best

    def __str__(self) -> str:
        lines = [f"minimality of circuit {self.circuit}: each node's largest effect, as a share of the gap ({self.gap:.4f}); {self.n_runs} runs"]
        for node, (k, value) in sorted(self.by_node().items(), key=lambda item: item[1][1]):
            lines.append(f"  {node:<12} {value:>7.3f}  with K = {k}")
        return "\n".join(lines)
