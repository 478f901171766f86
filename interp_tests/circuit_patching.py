"""Circuit tests: a set of components patched jointly, one run per prompt, through the batched engine.

Three tests, each comparing a patched run with two reference runs on the same prompts (m is the metric read at
the last token: the logit difference, the answer's probability, or -KL(clean || run)):

- ``sufficiency`` (denoising): with ``ablation="resample"``, the corrupted run with the circuit's clean
  activations restored; score ``(m(patched) - m(corrupted)) / (m(clean) - m(corrupted))``. With ``"mean"`` or
  ``"zero"`` ablation there is no corrupted run to restore into: the run is the clean prompt with everything of
  the universe outside the circuit ablated, scored against the run with the whole universe ablated (which is
  the faithfulness test under that ablation).
- ``necessity`` (noising): the clean run with the circuit's nodes ablated; score
  ``(m(clean) - m(patched)) / (m(clean) - m(empty))``, the share of the gap destroyed, where the empty run is the
  corrupted run (resample) or the clean run with the whole universe ablated (mean, zero).
- ``faithfulness`` (Wang et al. 2023; MIB's normalised form): the clean run with every universe node outside the
  circuit ablated; score ``(m(C) - m(empty)) / (m(full) - m(empty))`` with the empty run ablating the whole
  universe and the full run the clean one; Wang et al.'s ``F(C) / F(M)`` is ``faithfulness_ratio``.

Ablated values (Heimersheim & Nanda 2024 and Miller et al. 2024 show the score depends on this choice, so the
result records it): ``resample`` takes each activation from the corrupted prompt's run, ``mean`` the mean at
the same position over a reference set of prompts (by default the pairs' corrupted prompts; Wang et al. use
the ABC distribution), ``zero`` zeros. The universe defaults to every node of the circuit's kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .choices import ABLATIONS, CIRCUIT_TESTS
from .circuit_results import CircuitResult, Completeness, Minimality, circuit_scores
from .circuits import Circuit, Node, as_circuit, universe_of
from .corruptions import DEFAULT_NOISE_SCALE, Corruption, RunInput, check_corruption, corrupted_input, corruption_name
from .edge_runs import EdgeMasks, edge_pass
from .edges import EdgeGraph
from .errors import ComponentError, PromptError, RemoteUnsupportedError, SettingsError
from .metrics import AnswerReader, CleanRun, Metric, RunStats, check_clean_run, resolve_metric
from .models import PatchableModel
from .pairs import PromptPairs, TokenizedPairs
from .engine import (
    Progress,
    progress_reporter,
    NO_PREFIX,
    Pairs,
    SharedPrefix,
    check_choice,
    eval_mode,
    in_passes,
    model_identity,
    on_model,
    rows_per_pass,
    run,
    shared_prefix,
    tokenize,
)

Site = tuple[int, str]  # (layer, site name)


def _width(model: PatchableModel, site: str) -> int:
    s = model.shape
    return s.n_heads * s.d_head if site == "head" else s.d_model


def _features(model: PatchableModel, node: Node) -> slice:
    d = model.shape.d_head
    return slice(None) if node.head is None else slice(node.head * d, (node.head + 1) * d)


class Masks:
    """Which activations a run overwrites: per (layer, site), a boolean ``[prompts, positions, width]`` over the
    positions after the shared prefix."""

    def __init__(self, model: PatchableModel, tokens: TokenizedPairs, prefix: SharedPrefix) -> None:
        self.model, self.tokens, self.prefix = model, tokens, prefix
        self.by_site: dict[Site, torch.Tensor] = {}

    def _mask(self, key: Site) -> torch.Tensor:
        if key not in self.by_site:
            n, seq = self.tokens.n, self.tokens.seq_len - self.prefix.length
            self.by_site[key] = torch.zeros(n, seq, _width(self.model, key[1]), dtype=torch.bool)
        return self.by_site[key]

    def add(self, nodes: Circuit | Sequence[Node], value: bool = True) -> Masks:
        for node in nodes:
            mask = self._mask((node.layer, node.site))
            features = _features(self.model, node)
            if node.position is None:
                mask[:, :, features] = value
                continue
            absolute = (
                torch.full((self.tokens.n,), node.position) if isinstance(node.position, int)
                else self.tokens.position(node.position)
            )
            rows = torch.nonzero(absolute >= self.prefix.length).flatten()  # inside the prefix: nothing changes
            mask[rows, absolute[rows] - self.prefix.length, features] = value
        return self

    def without(self, nodes: Circuit) -> Masks:
        return self.add(nodes, value=False)


def _node_sites(circuit: Circuit) -> set[Site]:
    return {(n.layer, n.site) for n in circuit}


def _check_universe(circuit: Circuit, universe: Circuit) -> None:
    covered = {n.component for n in universe if n.position is None}
    outside = [n.label for n in circuit if n.component not in covered]
    if outside:
        raise ComponentError(
            f"Circuit nodes {outside} are not in the universe of ablated nodes {universe}: a faithfulness score "
            "ablates the universe outside the circuit, so the circuit must lie inside it. Widen universe= (or leave "
            "it out: by default it is every node of the circuit's kinds)."
        )


def _check_edge_universe(circuit: Circuit, universe: Circuit) -> None:
    outside = sorted(e.label for e in set(circuit) - set(universe))
    if outside:
        raise ComponentError(
            f"Circuit edges {outside[:5]}{' ...' if len(outside) > 5 else ''} are not in the universe of ablated edges: "
            "a faithfulness score ablates the universe outside the circuit, so the circuit must lie inside it. Widen "
            "universe= (or leave it out: by default it is every edge of the model)."
        )


def _mean_ablation(
    model: PatchableModel, tokens: TokenizedPairs, reference: TokenizedPairs, sites: set[Site]
) -> dict[Site, torch.Tensor]:
    """Per-position means ``[positions, width]`` of each site over the reference prompts that reach a position."""
    ids = reference.require_corrupted()
    _, cache = run(model, reference, RunInput(ids, None), list(range(reference.n)), cache_sites=tuple({s for _, s in sites}))
    real = reference.attention_mask.to(torch.float32)  # [n_ref, seq_ref]
    counts = real.sum(0)
    needed = int(tokens.lengths.max())
    if reference.seq_len < needed or (counts[:needed] == 0).any():
        raise PromptError(
            f"Mean ablation needs reference prompts at every position the pairs use (up to {needed} tokens), but the "
            f"longest reference prompt has {int(reference.lengths.max())}. Give longer reference prompts "
            "(reference=...), or use ablation='resample' or 'zero'."
        )
    means = {}
    for layer, site in sites:
        values = cache[(layer, site)].float()
        summed = (values * real[:, :, None].to(values.device)).sum(0)
        means[(layer, site)] = (summed / counts[:, None].clamp(min=1).to(values.device))[: tokens.seq_len]
    return means


def _ablated_values(
    model: PatchableModel,
    tokens: TokenizedPairs,
    ablation: str,
    sites: set[Site],
    corrupt_cache: dict[Any, Any],
    reference: TokenizedPairs,
) -> dict[Site, torch.Tensor]:
    """Each site's ablated activation ``[prompts, positions, width]`` (positions after the prefix)."""
    if ablation == "resample":
        return {key: corrupt_cache[key] for key in sites}
    if ablation == "zero":
        return {key: torch.zeros_like(corrupt_cache[key]) for key in sites}
    means = _mean_ablation(model, tokens, reference, sites)
    return {key: means[key].to(corrupt_cache[key]).expand_as(corrupt_cache[key]) for key in sites}


def masked_stats(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    target_cache: dict[Any, Any],
    prefix: SharedPrefix,
    reader: AnswerReader,
    runs: Sequence[tuple[Masks, dict[Site, torch.Tensor]]],
    batch_size: int | None = None,
    graph: EdgeGraph | None = None,
    on_pass: Callable[[int], None] | None = None,
) -> list[RunStats]:
    """Stats of each ``(masks, values)`` run over every prompt: the target run with the masked activations taken
    from ``values``. All runs' rows share batched forward passes; each pass resumes at its first written layer.
    With ``graph`` the masks are EdgeMasks and each pass patches edges (edge_runs.edge_pass). ``on_pass(rows)``
    is called after each pass with the rows it ran."""
    rows = [(r, p) for r, (masks, _) in enumerate(runs) for p in range(tokens.n)]
    per_pass = rows_per_pass(model, tokens.seq_len - prefix.length, tokens.seq_len, batch_size)
    if graph is not None and batch_size is None:
        per_pass = max(1, per_pass // graph.row_cost())
    out: dict[str, torch.Tensor] = {}

    def run_rows(chunk: Sequence[tuple[int, int]]) -> torch.Tensor:
        if graph is None:
            return _masked_pass(model, tokens, target, target_cache, prefix, runs, chunk)
        return edge_pass(model, graph, tokens, target, target_cache, prefix, runs, chunk)

    def take(chunk: Sequence[tuple[int, int]], logits: torch.Tensor) -> None:
        prompts = torch.tensor([p for _, p in chunk])
        stats = reader.stats(logits, prompts)
        run_index = torch.tensor([r for r, _ in chunk])
        for f, value in stats.values.items():
            out.setdefault(f, torch.full((len(runs), tokens.n), torch.nan))[run_index, prompts] = value
        if on_pass is not None:
            on_pass(len(chunk))

    in_passes(model, tokens, rows, per_pass, run_rows, take)
    return [RunStats({f: value[r] for f, value in out.items()}) for r in range(len(runs))]


def _masked_pass(
    model: PatchableModel,
    tokens: TokenizedPairs,
    target: RunInput,
    target_cache: dict[Any, Any],
    prefix: SharedPrefix,
    runs: Sequence[tuple[Masks, dict[Site, torch.Tensor]]],
    chunk: Sequence[tuple[int, int]],
) -> torch.Tensor:
    device = model.device
    sites = sorted({key for masks, _ in runs for key, mask in masks.by_site.items() if mask.any()})
    writes: dict[Site, Callable[[torch.Tensor], None]] = {}
    for key in sites:
        mask = torch.stack([_site_mask(runs[r][0], key, p) for r, p in chunk]).to(device)
        if not mask.any():
            continue
        values = torch.stack([runs[r][1][key][p] for r, p in chunk]).to(device)
        writes[key] = _overwrite(mask, values)
    prompts = [p for _, p in chunk]
    resume_at = min((layer for layer, _ in writes), default=model.n_layers)
    resume_at = min(resume_at, model.n_layers - 1)
    logits, _ = run(model, tokens, target, prompts, cache=target_cache, prefix=prefix, resume_at=resume_at, writes=writes)
    return logits


def _site_mask(masks: Masks, key: Site, prompt: int) -> torch.Tensor:
    mask = masks.by_site.get(key)
    if mask is None:
        seq = masks.tokens.seq_len - masks.prefix.length
        return torch.zeros(seq, _width(masks.model, key[1]), dtype=torch.bool)
    return mask[prompt]


def _overwrite(mask: torch.Tensor, values: torch.Tensor) -> Callable[[torch.Tensor], None]:
    def write(activation: torch.Tensor) -> None:
        activation[:] = torch.where(mask, values.to(activation.dtype), activation)

    return write


class CircuitRuns:
    """The clean and corrupted runs of a set of pairs, cached at every site a circuit search touches, and the
    ablated values: what every circuit test and search reads, computed once."""

    def __init__(
        self,
        model: PatchableModel,
        pairs: Pairs,
        circuit: Circuit,
        *,
        universe: Circuit | Sequence[str] | None,
        ablation: str,
        metric: Metric,
        corruption: Corruption,
        reference: PromptPairs | None,
        seed: int,
        noise_scale: float,
        batch_size: int | None,
        uses_universe: bool,
    ) -> None:
        """Checks the circuit and settings and tokenizes, here; ``start`` runs the model."""
        check_choice("ablation", ablation, ABLATIONS)
        self.progress, self.done, self.planned = None, 0, 0
        self.metric, custom = resolve_metric(metric)
        self.model, self.circuit, self.ablation, self.batch_size = model, circuit, ablation, batch_size
        self.tokens = tokens = tokenize(model, pairs)
        named = list(tokens.named_positions)
        universe = None if universe is None else as_circuit(universe)
        # An edge circuit (or an empty one inside an edge universe) patches edges: see edge_runs.
        self.graph = EdgeGraph.of(model) if circuit.is_edges or (universe is not None and universe.is_edges) else None
        if self.graph is not None and model.remote is not None:
            raise RemoteUnsupportedError(model.remote_refusal("Patching edges"))
        if self.graph is not None:
            self.graph.check(circuit)
            self.universe = self.graph.universe() if universe is None else universe
            self.graph.check(self.universe)
            if uses_universe:
                _check_edge_universe(circuit, self.universe)
            self.sites = self.graph.sites
        else:
            circuit.check(model.n_layers, model.n_heads, tokens.seq_len, named)
            if universe is None:
                if not len(circuit) and uses_universe:
                    raise SettingsError("An empty circuit has no kinds to build the default universe from: give universe=.")
                universe = universe_of(circuit.kinds or ["attn_head"], model.n_layers, model.n_heads)
            self.universe = universe
            self.universe.check(model.n_layers, model.n_heads, tokens.seq_len, named)
            if uses_universe:
                _check_universe(circuit, self.universe)
            self.sites = _node_sites(circuit) | (_node_sites(self.universe) if uses_universe else set())
        check_corruption(model, tokens, corruption, noise_scale)
        self.corruption, self.seed, self.noise_scale = corruption, seed, noise_scale
        self.custom = custom
        self.reference_tokens = tokens if reference is None else tokenize(model, reference)
        self.runs = 2 * tokens.n  # forward passes of one prompt each: clean and corrupted, then every patched one
        self.runs += self.reference_tokens.n if ablation == "mean" else 0
        self.reference = "the pairs' corrupted prompts" if reference is None else f"{len(reference)} reference pairs"
        self.clean_run: CleanRun | None = None  # set by check_clean_run() once the reference runs have run

    def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Where the model runs (inside ``engine.on_model``'s work): the clean and corrupted runs, cached, and the
        ablated values; ``progress(done, total)`` then counts the patched runs."""
        model, tokens = self.model, self.tokens
        self.progress = progress
        self.clean_input = RunInput(tokens.clean_ids, None)
        self.corrupt_input = corrupted_input(model, tokens, self.corruption, seed=self.seed, noise_scale=self.noise_scale)
        site_names = tuple(sorted({s for _, s in self.sites}))
        self.reader = AnswerReader(tokens, model.shape.vocab_size, self.custom)
        everyone = list(range(tokens.n))
        with torch.no_grad(), eval_mode(model):
            # Resampled values equal the clean ones wherever the prompts agree, so the shared prefix holds for
            # them; mean and zero ablation change the prefix's activations too.
            self.prefix = (
                shared_prefix(model, tokens, self.clean_input, self.corrupt_input) if self.ablation == "resample" else NO_PREFIX
            )
            clean_logits, self.clean_cache = run(
                model, tokens, self.clean_input, everyone, cache_sites=(*site_names, "out"), prefix=self.prefix
            )
            corrupt_logits, self.corrupt_cache = run(
                model, tokens, self.corrupt_input, everyone, cache_sites=(*site_names, "out"), prefix=self.prefix
            )
            self.reader.set_clean(clean_logits)
            self.clean_summary = self.reader.clean_summary(clean_logits)
            index = torch.arange(tokens.n)
            self.clean = _metric_values(self.reader.stats(clean_logits, index), self.metric)
            self.corrupted = _metric_values(self.reader.stats(corrupt_logits, index), self.metric)
            self.values = _ablated_values(model, tokens, self.ablation, self.sites, self.corrupt_cache, self.reference_tokens)

    def check_clean_run(self, summary: dict[str, Any]) -> None:
        """Here, after the work: the clean run's warnings, and its record in the settings."""
        self.clean_run = check_clean_run(summary, self.model.tokenizer)

    def _masks(self) -> Masks | EdgeMasks:
        return Masks(self.model, self.tokens, self.prefix) if self.graph is None else EdgeMasks(self.graph)

    def _measure(self, target: RunInput, cache: dict[Any, Any], runs: list[tuple[Masks, Any]]) -> list[np.ndarray]:
        self.runs += len(runs) * self.tokens.n
        self.planned += len(runs) * self.tokens.n
        with torch.no_grad(), eval_mode(self.model):
            stats = masked_stats(
                self.model, self.tokens, target, cache, self.prefix, self.reader, runs, self.batch_size, self.graph,
                None if self.progress is None else self._passed,
            )
        return [_metric_values(s, self.metric) for s in stats]

    def _passed(self, rows: int) -> None:
        """Progress over the patched runs asked for so far (a search's total grows as it picks subsets)."""
        self.done += rows
        assert self.progress is not None
        self.progress(self.done, self.planned)

    def restored(self, circuits: Sequence[Circuit]) -> list[np.ndarray]:
        """m per prompt of the corrupted run with each circuit's clean activations restored."""
        runs = [(self._masks().add(c), self.clean_cache) for c in circuits]
        return self._measure(self.corrupt_input, self.corrupt_cache, runs)

    def ablated(self, circuits: Sequence[Circuit]) -> list[np.ndarray]:
        """m per prompt of the clean run with each circuit's nodes ablated."""
        return self._measure(self.clean_input, self.clean_cache, [(self._masks().add(c), self.values) for c in circuits])

    def kept(self, circuits: Sequence[Circuit]) -> list[np.ndarray]:
        """m per prompt of the clean run with the universe outside each circuit ablated: F(circuit)."""
        runs = [(self._masks().add(self.universe).without(c), self.values) for c in circuits]
        return self._measure(self.clean_input, self.clean_cache, runs)

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "model_fingerprint": self.model.fingerprint(),
            "model_identity": model_identity(self.model),
            "dataset": self.tokens.fingerprint(),
            "n_prompts": self.tokens.n,
            "ablation": self.ablation,
            "metric": self.metric,
            "reference": self.reference,
            "clean_run": None if self.clean_run is None else self.clean_run.as_settings(),
            **extra,
        }


def circuit_patch(
    model: PatchableModel,
    pairs: Pairs,
    circuit: Circuit | Sequence[str],
    test: str = "sufficiency",
    ablation: str = "resample",
    metric: Metric = "logit_diff",
    corruption: Corruption = "str",
    *,
    universe: Circuit | Sequence[str] | None = None,
    reference: PromptPairs | None = None,
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    progress: Progress = None,
) -> CircuitResult:
    """Score ``circuit`` on the pairs by ``test`` (see the module docstring for the definitions), all its nodes
    patched jointly in one run per prompt. ``reference`` (mean ablation) defaults to the pairs themselves, whose
    corrupted prompts are averaged. The score's interval is a percentile bootstrap over prompts. ``progress=True``
    shows a bar of patched runs (or give a callable ``(done, total)``)."""
    check_choice("test", test, CIRCUIT_TESTS)
    circuit = as_circuit(circuit)
    uses_universe = test == "faithfulness" or ablation != "resample"
    runs = CircuitRuns(
        model, pairs, circuit, universe=universe, ablation=ablation, metric=metric, corruption=corruption,
        reference=reference, seed=seed, noise_scale=noise_scale, batch_size=batch_size, uses_universe=uses_universe,
    )
    with progress_reporter(progress, f"circuit {test}") as report:
        outcome = on_model(model, circuit_work, runs, test, progress=report, user_code=[m.fn for m in runs.custom])
    runs.check_clean_run(outcome["clean_run"])
    runs.runs = outcome["runs"]
    patched_runs = outcome["patched"]
    patched = patched_runs[0]
    without = {node.label: values for node, values in zip(circuit, patched_runs[1:])}
    metrics = {"clean": outcome["clean"], "corrupted": outcome["corrupted"], "patched": patched, "empty": outcome["empty"]}
    settings = runs.settings(
        circuit=str(circuit),
        test=test,
        universe=str(runs.universe) if uses_universe else None,
        universe_size=len(runs.universe) if uses_universe else None,
        corruption=corruption_name(corruption),
        seed=seed,
        runs=runs.runs,
    )
    if corruption == "gn":
        settings["noise_scale"] = noise_scale
    return circuit_scores(
        circuit, metrics, test=test, ablation=ablation, metric=runs.metric, settings=settings,
        n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, without=without,
    )


def circuit_work(
    model: PatchableModel, runs: CircuitRuns, test: str, *, progress: Callable[[int, int], None] | None
) -> dict[str, Any]:
    """Where the model runs (``engine.on_model``): the reference runs, then the circuit and the circuit without each
    node (for per-node contributions), in the same passes; m per prompt of each."""
    runs.start(progress)
    circuit = runs.circuit
    variants = [circuit, *(circuit - [node] for node in circuit)] if len(circuit) > 1 else [circuit]
    if test == "sufficiency" and runs.ablation == "resample":
        patched_runs, empty = runs.restored(variants), runs.corrupted
    elif test == "necessity" and runs.ablation == "resample":
        patched_runs, empty = runs.ablated(variants), runs.corrupted
    elif test == "necessity":
        *patched_runs, empty = runs.ablated([*variants, runs.universe])
    else:
        *patched_runs, empty = runs.kept([*variants, Circuit()])
    return {"clean": runs.clean, "corrupted": runs.corrupted, "patched": patched_runs, "empty": empty,
            "runs": runs.runs, "clean_run": runs.clean_summary}


def _search_runs(
    model, pairs, circuit, *, universe, ablation, metric, corruption, reference, seed, noise_scale, batch_size
) -> CircuitRuns:
    return CircuitRuns(
        model, pairs, circuit, universe=universe, ablation=ablation, metric=metric, corruption=corruption,
        reference=reference, seed=seed, noise_scale=noise_scale, batch_size=batch_size, uses_universe=True,
    )


def search_work(
    model: PatchableModel, runs: CircuitRuns, search: Callable[..., tuple[list[tuple[str, Circuit, float, float]], float]],
    *, progress: Callable[[int, int], None] | None, **options: Any,
) -> dict[str, Any]:
    """Where the model runs (``engine.on_model``): the reference runs and a subset search (``_completeness`` or
    ``_minimality``); its rows with each subset as its labels."""
    runs.start(progress)
    rows, gap = search(runs, runs.circuit, **options)
    return {"rows": [(label, k.labels, a, b) for label, k, a, b in rows], "gap": gap, "runs": runs.runs,
            "clean_run": runs.clean_summary}


def _searched(
    model: PatchableModel, runs: CircuitRuns, search: Callable[..., Any], progress: Progress, what: str, **options: Any
) -> tuple[list[tuple[str, Circuit, float, float]], float]:
    """A subset search run on the model; its rows and gap here, with the clean run checked."""
    with progress_reporter(progress, what) as report:
        outcome = on_model(model, search_work, runs, search, progress=report, user_code=[m.fn for m in runs.custom], **options)
    runs.check_clean_run(outcome["clean_run"])
    runs.runs = outcome["runs"]
    return [(label, Circuit(k), a, b) for label, k, a, b in outcome["rows"]], outcome["gap"]


def _random_subsets(circuit: Circuit, count: int, rng: np.random.Generator) -> list[Circuit]:
    nodes = list(circuit)
    subsets = []
    for _ in range(count):
        keep = rng.random(len(nodes)) < 0.5
        subsets.append(Circuit([n for n, k in zip(nodes, keep) if k]))
    return subsets


def completeness(
    model: PatchableModel,
    pairs: Pairs,
    circuit: Circuit | Sequence[str],
    *,
    ablation: str = "resample",
    metric: Metric = "logit_diff",
    corruption: Corruption = "str",
    universe: Circuit | Sequence[str] | None = None,
    reference: PromptPairs | None = None,
    samples: int = 20,
    greedy_steps: int = 3,
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    progress: Progress = None,
) -> Completeness:
    """Wang et al.'s completeness check: the incompleteness ``|F(C\\K) - F(M\\K)|`` (M the universe) over subsets
    K of the circuit: each named group, ``samples`` random subsets (each node kept with probability 1/2), and a
    greedy search that grows K one node at a time for ``greedy_steps`` steps, adding the node that makes the
    incompleteness largest. Each K costs two runs per prompt; ``n_runs`` reports the total. ``progress`` as for
    ``circuit_patch`` (its total grows as the greedy search picks its next subsets)."""
    circuit = as_circuit(circuit)
    runs = _search_runs(
        model, pairs, circuit, universe=universe, ablation=ablation, metric=metric, corruption=corruption,
        reference=reference, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
    )
    rows, gap = _searched(model, runs, _completeness, progress, "completeness", samples=samples,
                          greedy_steps=greedy_steps, seed=seed)
    return Completeness(
        circuit, rows, gap=gap, n_runs=runs.runs,
        settings=runs.settings(circuit=str(circuit), universe=str(runs.universe), corruption=corruption_name(corruption)),
    )


def _completeness(
    runs: CircuitRuns, circuit: Circuit, *, samples: int, greedy_steps: int, seed: int
) -> tuple[list[tuple[str, Circuit, float, float]], float]:
    universe_c = runs.universe
    full, empty = (float(v.mean()) for v in runs.kept([universe_c, Circuit()]))
    rows: list[tuple[str, Circuit, float, float]] = []
    seen: set[Circuit] = set()

    def measure(label: str, subsets: list[Circuit]) -> list[tuple[str, Circuit, float, float]]:
        fresh = [k for k in dict.fromkeys(subsets) if k not in seen and len(k)]
        if not fresh:
            return []
        seen.update(fresh)
        values = runs.kept([circuit - k for k in fresh] + [universe_c - k for k in fresh])
        new = [(label, k, float(values[i].mean()), float(values[len(fresh) + i].mean())) for i, k in enumerate(fresh)]
        rows.extend(new)
        return new

    for name, group in circuit.groups.items():
        measure(f"group {name}", [group])
    measure("random", _random_subsets(circuit, samples, np.random.default_rng(seed)))
    current = Circuit()
    for step in range(min(greedy_steps, len(circuit))):
        candidates = [current | [node] for node in circuit if node not in current]
        measure(f"greedy {step + 1}", candidates)
        scored = [r for r in rows if r[1] in set(candidates)]
        if not scored:
            break
        current = max(scored, key=lambda r: abs(r[2] - r[3]))[1]
    return rows, full - empty


def minimality(
    model: PatchableModel,
    pairs: Pairs,
    circuit: Circuit | Sequence[str],
    *,
    ablation: str = "resample",
    metric: Metric = "logit_diff",
    corruption: Corruption = "str",
    universe: Circuit | Sequence[str] | None = None,
    reference: PromptPairs | None = None,
    samples: int = 5,
    seed: int = 0,
    noise_scale: float = DEFAULT_NOISE_SCALE,
    batch_size: int | None = None,
    progress: Progress = None,
) -> Minimality:
    """Wang et al.'s minimality check: for each node v, ``|F(C\\(K+v)) - F(C\\K)|`` over K in the empty set, v's
    named groups minus v, and ``samples`` random subsets of C\\{v}; the largest is v's effect. Two runs per K
    and node per prompt; ``n_runs`` reports the total. ``progress`` as for ``circuit_patch``."""
    circuit = as_circuit(circuit)
    runs = _search_runs(
        model, pairs, circuit, universe=universe, ablation=ablation, metric=metric, corruption=corruption,
        reference=reference, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
    )
    rows, gap = _searched(model, runs, _minimality, progress, "minimality", samples=samples, seed=seed)
    return Minimality(
        circuit, rows, gap=gap, n_runs=runs.runs,
        settings=runs.settings(circuit=str(circuit), universe=str(runs.universe), corruption=corruption_name(corruption)),
    )


def _minimality(
    runs: CircuitRuns, circuit: Circuit, *, samples: int, seed: int
) -> tuple[list[tuple[str, Circuit, float, float]], float]:
    full, empty = (float(v.mean()) for v in runs.kept([runs.universe, Circuit()]))
    rng = np.random.default_rng(seed)
    pairs_to_run: list[tuple[str, Circuit]] = []
    for node in circuit:
        rest = circuit - [node]
        subsets = [Circuit(), *(g - [node] for g in circuit.groups.values() if node in g), *_random_subsets(rest, samples, rng)]
        pairs_to_run.extend((node.label, k) for k in dict.fromkeys(subsets))
    kept = [circuit - k for _, k in pairs_to_run] + [circuit - k - [label] for label, k in pairs_to_run]
    values = runs.kept(kept)
    n = len(pairs_to_run)
    rows = [(label, k, float(values[i].mean()), float(values[n + i].mean())) for i, (label, k) in enumerate(pairs_to_run)]
    return rows, full - empty


def _metric_values(stats: RunStats, metric: str) -> np.ndarray:
    """m(run) per prompt: the metric's value, and for KL its negative, so that higher is closer to the clean
    behaviour for every built-in metric (a user metric may fall instead: the scores divide by its gap)."""
    value = -stats.kl if metric == "kl" else stats[metric]
    return value.double().numpy()
