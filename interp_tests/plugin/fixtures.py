"""The pytest fixtures of interp-tests, and the per-session state behind them.

One ``InterpSession`` per pytest process (each xdist worker has its own) loads every model once, builds
every prompt set once and computes every sweep once: a repeated sweep comes from an in-session memo,
then from the on-disk cache (``cache.py``), and only then from forward passes. Robustness grids are
built from such sweeps, so a re-run grid costs no forward pass either. A Gaussian-noise sweep comes with
the paper's off-distribution check (``robustness.off_distribution``, cached the same way), which warns
with ``InterpWarning`` when the noise pushes the residual stream off its clean distribution. Nothing here
imports torch until a fixture is used, so the plugin costs nothing to suites that never patch a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pytest

from ..choices import METRICS
from ..errors import (
    InterpError,
    InterpWarning,
    ModelLoadError,
    PlotsUnavailableError,
    SettingsError,
    WeightsUnavailableError,
)
from ..specs import TaskSpec, resolve_model_spec

if TYPE_CHECKING:
    from ..attribution import AttributionComparison
    from ..circuit_results import CircuitResult, Completeness, Minimality
    from ..corruptions import Corruption
    from ..models import PatchableModel
    from ..pairs import PromptPairs, TokenizedPairs
    from ..engine import Pairs
    from ..metrics import Metric
    from ..results import PatchResult
    from ..robustness import Grid, OffDistribution, PairsSource

# verify_top's default: how far (in the metric's units; for the logit difference, a tenth of the
# clean-corrupted gap) an attribution estimate may miss its exact effect.
DEFAULT_VERIFY_TOLERANCE = 0.1
# The sweep settings that determine the off-distribution check of a Gaussian-noise corruption.
OFF_DISTRIBUTION_KEYS = ("version", "model_fingerprint", "dataset", "device", "seed", "noise_scale")


@dataclass(frozen=True)
class InterpOptions:
    """The plugin's settings, command line merged over ini (see ``pytest --help``, group "interp")."""

    model: str | None = None
    device: str = "auto"
    n_prompts: int | None = None
    seed: int | None = None
    report_dir: Path | None = None
    cache: bool = True
    cache_dir: Path = Path(".interp_cache")
    update_baselines: bool = False
    remote: bool = False
    ndif_host: str | None = None


@dataclass
class ItemRecord:
    """What one interp test did, for the terminal summary (sent to the xdist controller as a user property)."""

    sweeps: list[str] = field(default_factory=list)
    claims: list[tuple[str, str, bool]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # shown whatever the outcome, e.g. a window's peak ratio
    notes: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)


RECORD_KEY = pytest.StashKey[ItemRecord]()
SESSION_KEY = pytest.StashKey["InterpSession"]()


def record_of(item: pytest.Item) -> ItemRecord:
    return item.stash.setdefault(RECORD_KEY, ItemRecord())


def session_of(config: pytest.Config) -> InterpSession:
    try:
        return config.stash[SESSION_KEY]
    except KeyError:
        raise InterpError(
            "The interp-tests pytest plugin is not active in this run (was it disabled with -p no:interp_tests?)."
        ) from None


class InterpSession:
    """Models, prompt pairs and sweeps of one pytest process, each made once."""

    def __init__(self, options: InterpOptions, write_line: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._write_line = write_line  # where progress lines go (pytest -v's terminal), or None for silence
        self._models: dict[str, PatchableModel | InterpError] = {}
        self._pairs: dict[str, PromptPairs] = {}
        self._distributions: dict[str, OffDistribution] = {}
        self._verifications: dict[tuple[str, int], AttributionComparison] = {}
        self._results: dict[str, Any] = {}  # sweeps, circuit scores, subset searches, path patching, by cache key

    def progress(self, what: str) -> Callable[[int, int], None] | None:
        """A ``progress(done, total)`` that writes ``what`` and its count at each quarter of a computation."""
        write = self._write_line
        if write is None:
            return None
        shown = [0]

        def report(done: int, total: int) -> None:
            quarter = 4 * done // max(total, 1)
            if quarter > shown[0]:
                shown[0] = quarter
                write(f"interp: {what}: {done}/{total} patched runs")

        return report

    def model(self, spec: str | None, *, base_dir: Path | None = None, remote: bool = False) -> PatchableModel:
        """The model ``spec`` (``--interp-model`` wins); skips the test when its weights are unavailable. ``remote``
        (or ``--interp-remote``) runs it on NDIF, named by its repo id (``spec``)."""
        spec = self.options.model or spec
        if not spec:
            raise InterpError(
                "No model to run on: mark the test with @pytest.mark.interp_model('organism'), pass a name to "
                "interp_model(...), give `model:` in the YAML claims, or set --interp-model."
            )
        remote = remote or self.options.remote
        key = str(spec) if remote else resolve_model_spec(str(spec), base_dir)
        memo = f"remote:{key}" if remote else key
        if memo not in self._models:
            from ..models import load_model
            from ..remote import configure

            try:
                if remote:
                    configure(host=self.options.ndif_host)
                    self._models[memo] = load_model(key, remote=True)
                else:
                    self._models[memo] = load_model(key, device=self.options.device)
            except ModelLoadError as error:
                self._models[memo] = error
        model = self._models[memo]
        if isinstance(model, WeightsUnavailableError):
            # Reported at the test (or YAML claim) that needs the model, like a skip marker, not at this line.
            raise pytest.skip.Exception(str(model), _use_item_location=True)
        if isinstance(model, InterpError):
            raise model
        return model

    def pairs(self, task: TaskSpec, model: PatchableModel | None) -> PromptPairs:
        """The task's prompt pairs, filtered for the model's tokenizer when there is a model."""
        task = task.with_overrides(self.options.n_prompts, self.options.seed)
        key = json.dumps([task.key(), None if model is None else model.name])
        if key not in self._pairs:
            self._pairs[key] = task.pairs(None if model is None else model.tokenizer)
        return self._pairs[key]

    def sweep(
        self,
        model: PatchableModel,
        pairs: Pairs,
        record: ItemRecord,
        *,
        component: str = "attn_head",
        corruption: Corruption = "str",
        metric: Metric = "logit_diff",
        positions: str | int = "all",
        window: int = 1,
        direction: str = "denoise",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
        method: str = "exact",
        grad_drop: bool = False,
        verify_top: int | None = None,
        verify_tolerance: float = DEFAULT_VERIFY_TOLERANCE,
    ) -> PatchResult:
        """``patch()`` through the in-session memo and the disk cache; notes in ``record`` where it came from.

        An attribution estimate with ``verify_top=k`` has its ``k`` largest components re-measured exactly
        (``attribution.verify_top``): a miss beyond ``verify_tolerance`` fails the claim (``ClaimError``),
        otherwise the result carries the exact effects for those components.
        """
        from .. import __version__, engine, patching
        from ..corruptions import DEFAULT_NOISE_SCALE, corruption_name
        from ..metrics import BUILTIN_METRICS, resolve_metric
        from .cache import sweep_key

        if verify_top is not None and method != "attribution":
            raise SettingsError(
                f"verify_top={verify_top!r} re-measures an attribution estimate's top components, but this sweep "
                f"is method={method!r}, whose effects are all exact: drop verify_top, or use method='attribution'."
            )
        if self.options.seed is not None:
            seed = self.options.seed
        noise_scale = DEFAULT_NOISE_SCALE if noise_scale is None else noise_scale
        tokens = engine.tokenize(model, pairs)

        def compute() -> PatchResult:
            what = f"{method} sweep of {component} ({corruption_name(corruption)}) on {model.name}"
            return patching.patch(
                model, tokens, component, corruption, metric, positions=positions, window=window,
                direction=direction, seed=seed, noise_scale=noise_scale, batch_size=batch_size, method=method,
                grad_drop=grad_drop, progress=self.progress(what),
            )

        if not isinstance(corruption, str):
            record.sweeps.append("computed")
            record.notes.append("a custom corruption function cannot be cached; its sweeps always run")
            return compute()
        settings: dict[str, Any] = {
            "version": __version__,
            "model_fingerprint": model.fingerprint(),
            "dataset": tokens.fingerprint(),
            "device": model.placement,
            "component": component,
            "corruption": corruption,
            "positions": positions,
            "window": window,
            "direction": direction,
            "seed": seed,
            "method": method,
        }
        name, custom = resolve_metric(metric)
        if method == "attribution":  # an estimate holds one metric
            settings.update(metric=name, grad_drop=grad_drop)
        else:  # an exact sweep holds the built-in metrics and the user metric it was asked for, keyed by name
            settings["metrics"] = [*BUILTIN_METRICS, *(m.name for m in custom)]
        if corruption == "gn":
            settings["noise_scale"] = noise_scale
        swept = self._cached(settings, compute, None, record)
        if corruption == "gn":
            _warn_off_distribution(self._off_distribution(model, tokens, settings))
        result = swept.with_metric(name)
        result.settings["model"] = model.name
        if verify_top is not None:
            key = sweep_key(settings)
            result = self._verified(model, tokens, result, key, verify_top, verify_tolerance, batch_size, record)
        return result

    def _cached(
        self, settings: dict[str, Any], compute: Callable[[], Any], load: Callable[[bytes], Any] | None,
        record: ItemRecord,
    ) -> Any:
        """A sweep, circuit score, subset search or path-patching sweep through the in-session memo and the disk
        cache, keyed by ``settings`` (``load`` reads a cache entry; None: a ``PatchResult``); notes in ``record``
        where it came from, and repeats the clean run's warnings when it did not compute."""
        from .cache import SweepCache, sweep_key

        key = sweep_key(settings)
        if key in self._results:
            status = "reused"
        elif not self.options.cache:
            self._results[key], status = compute(), "computed"
        else:
            cache = SweepCache(self.options.cache_dir)
            with cache.locked(key):
                cached, problem = cache.read(key, settings, load)
                if cached is None:
                    cached, status = compute(), "computed"
                    cache.write(key, settings, cached)
                    if problem:
                        record.notes.append(f"cache entry {cache.entry_path(key)} was rejected ({problem}) and recomputed")
                else:
                    status = "cached"
            self._results[key] = cached
        record.sweeps.append(status)
        if status != "computed":
            _replay_clean_run(self._results[key].settings)
        return self._results[key]

    def _key_settings(self, model: PatchableModel, tokens: TokenizedPairs, kind: str, **settings: Any) -> dict[str, Any]:
        from .. import __version__

        if self.options.seed is not None and "seed" in settings:
            settings["seed"] = self.options.seed
        return {
            "version": __version__, "kind": kind, "model_fingerprint": model.fingerprint(),
            "dataset": tokens.fingerprint(), "device": model.placement, **settings,
        }

    def circuit(
        self,
        model: PatchableModel,
        pairs: Pairs,
        record: ItemRecord,
        nodes: Sequence[str],
        *,
        test: str = "sufficiency",
        ablation: str = "resample",
        metric: Metric = "logit_diff",
        corruption: str = "str",
        universe: Sequence[str] | None = None,
        groups: dict[str, Sequence[str]] | None = None,
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> CircuitResult:
        """``circuit_patch()`` through the memo and the disk cache."""
        from .. import engine
        from ..circuit_patching import circuit_patch
        from ..circuit_results import CircuitResult
        from ..circuits import Circuit
        from ..corruptions import DEFAULT_NOISE_SCALE
        from ..metrics import check_metric

        noise_scale = DEFAULT_NOISE_SCALE if noise_scale is None else noise_scale
        tokens = engine.tokenize(model, pairs)
        circuit = Circuit(nodes, groups=groups)
        settings = self._key_settings(
            model, tokens, "circuit", circuit=circuit.labels, groups={k: v.labels for k, v in circuit.groups.items()},
            test=test, ablation=ablation, metric=check_metric(metric), corruption=corruption,
            universe=None if universe is None else Circuit(universe).labels, seed=seed, noise_scale=noise_scale,
        )

        def compute() -> CircuitResult:
            return circuit_patch(
                model, tokens, circuit, test=test, ablation=ablation, metric=metric, corruption=corruption,
                universe=universe, seed=settings["seed"], noise_scale=noise_scale, batch_size=batch_size,
                progress=self.progress(f"{test} of circuit {circuit} on {model.name}"),
            )

        result = self._cached(settings, compute, CircuitResult.from_bytes, record)
        result.settings["model"] = model.name
        return result

    def subsets(
        self,
        search: str,
        model: PatchableModel,
        pairs: Pairs,
        record: ItemRecord,
        nodes: Sequence[str],
        *,
        groups: dict[str, Sequence[str]] | None = None,
        **settings: Any,
    ) -> Completeness | Minimality:
        """``completeness()`` or ``minimality()`` (``search``) through the memo and the disk cache."""
        from .. import circuit_patching, engine
        from ..circuit_results import Completeness, Minimality
        from ..circuits import Circuit
        from ..metrics import check_metric

        tokens = engine.tokenize(model, pairs)
        circuit = Circuit(nodes, groups=groups)
        batch_size = settings.pop("batch_size", None)
        key = self._key_settings(
            model, tokens, search, circuit=circuit.labels, groups={k: v.labels for k, v in circuit.groups.items()},
            **{"seed": 0, **settings, "metric": check_metric(settings.get("metric", "logit_diff"))},
        )
        settings["seed"] = key["seed"]
        function = getattr(circuit_patching, search)
        result_type = Completeness if search == "completeness" else Minimality

        def compute() -> Any:
            progress = self.progress(f"{search} of circuit {circuit} on {model.name}")
            return function(model, tokens, circuit, batch_size=batch_size, progress=progress, **settings)

        return self._cached(key, compute, result_type.from_bytes, record)

    def path(
        self,
        model: PatchableModel,
        pairs: Pairs,
        record: ItemRecord,
        receivers: Sequence[str],
        *,
        corruption: str = "str",
        metric: Metric = "logit_diff",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> PatchResult:
        """``path_patch()`` (every head a sender) through the memo and the disk cache."""
        from .. import engine
        from ..corruptions import DEFAULT_NOISE_SCALE
        from ..metrics import BUILTIN_METRICS, resolve_metric
        from ..paths import path_patch

        noise_scale = DEFAULT_NOISE_SCALE if noise_scale is None else noise_scale
        tokens = engine.tokenize(model, pairs)
        name, custom = resolve_metric(metric)
        settings = self._key_settings(
            model, tokens, "path", receivers=list(receivers), corruption=corruption, seed=seed, noise_scale=noise_scale,
            metrics=[*BUILTIN_METRICS, *(m.name for m in custom)],
        )

        def compute() -> PatchResult:
            return path_patch(
                model, tokens, receivers, corruption=corruption, metric=metric, seed=settings["seed"],
                noise_scale=noise_scale, batch_size=batch_size,
                progress=self.progress(f"path patching into {', '.join(receivers)} on {model.name}"),
            )

        result = self._cached(settings, compute, None, record)
        result = result.with_metric(name)
        result.settings["model"] = model.name
        return result

    def _verified(
        self, model: PatchableModel, tokens: TokenizedPairs, estimate: PatchResult, key: str, k: int, tolerance: float,
        batch_size: int | None, record: ItemRecord,
    ) -> PatchResult:
        """The estimate with its top ``k`` components measured exactly (memoised per sweep and ``k``)."""
        from ..attribution import verify_top

        memo = (key, k)
        if memo not in self._verifications:
            self._verifications[memo] = verify_top(model, tokens, estimate, k, batch_size=batch_size)
        comparison = self._verifications[memo]
        record.notes.append(
            f"attribution estimate: its {k} largest effects re-measured exactly (max |error| "
            f"{comparison.max_abs_error:.3g}, tolerance {tolerance:g})"
        )
        comparison.assert_within(tolerance)
        assert comparison.verified is not None
        return comparison.verified

    def _off_distribution(
        self, model: PatchableModel, tokens: TokenizedPairs, sweep_settings: dict[str, Any]
    ) -> OffDistribution:
        """``robustness.off_distribution`` of a GN sweep's corrupted run: memoised, and cached on disk as JSON
        next to the sweeps, so a cached sweep's check costs no forward pass either."""
        import numpy as np

        from ..files import atomic_write
        from ..robustness import OffDistribution, off_distribution
        from .cache import canonical, sweep_key

        settings = {"check": "off_distribution", **{key: sweep_settings[key] for key in OFF_DISTRIBUTION_KEYS}}
        key = sweep_key(settings)
        if key in self._distributions:
            return self._distributions[key]
        path = self.options.cache_dir / "checks" / f"{key}.json"
        check = None
        if self.options.cache and path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if canonical(stored["settings"]) == canonical(settings):
                    values = {k: np.asarray(v) if isinstance(v, list) else v for k, v in stored["check"].items()}
                    check = OffDistribution(**values)
            except (OSError, ValueError, KeyError, TypeError):
                check = None  # a damaged entry is recomputed, never trusted
        if check is None:
            check = off_distribution(model, tokens, seed=settings["seed"], noise_scale=settings["noise_scale"])
            if self.options.cache:
                values = {f.name: getattr(check, f.name) for f in dataclasses.fields(check)}
                values = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in values.items()}
                atomic_write(path, json.dumps({"settings": settings, "check": values}))
        self._distributions[key] = check
        return check

    def grid(
        self,
        model: PatchableModel,
        source: TaskSpec | PairsSource,
        record: ItemRecord,
        component: str = "attn_head",
        *,
        corruptions: Sequence[Corruption] = ("str", "gn"),
        metrics: Sequence[str] = METRICS,
        corrupt_tokens: Sequence[str] | str | None = None,
        sd: float = 2.0,
        **sweep_kwargs: Any,
    ) -> Grid:
        """``robustness.grid`` with every sweep through ``sweep`` (memo, disk cache, off-distribution check).

        ``source`` is a ``TaskSpec`` (each ``corrupt_tokens`` choice becomes the task's ``corrupt`` option,
        replacing the one it names) or whatever ``robustness.grid`` takes.
        """
        from ..robustness import grid

        pairs = self._task_source(source, model, corrupt_tokens) if isinstance(source, TaskSpec) else source

        def sweep(
            model: PatchableModel, tokens: Pairs, component: str, corruption: Corruption, metric: str, **kwargs: Any
        ) -> PatchResult:
            return self.sweep(model, tokens, record, component=component, corruption=corruption, metric=metric, **kwargs)

        return grid(
            model, pairs, component, corruptions=corruptions, metrics=metrics, corrupt_tokens=corrupt_tokens, sd=sd,
            sweep=sweep, **sweep_kwargs,
        )

    def _task_source(
        self, task: TaskSpec, model: PatchableModel, corrupt_tokens: Sequence[str] | str | None
    ) -> Callable[[str | None], PromptPairs]:
        """The task's pairs for each corrupted-token choice (its ``corrupt`` option), through ``pairs``."""
        if task.file is not None and corrupt_tokens is not None:
            raise SettingsError(
                f"corrupt_tokens regenerates the prompt pairs once per choice, which the pairs file {task.file} "
                "cannot do. Use a registered task (e.g. ioi) or leave corrupt_tokens out."
            )

        def make(choice: str | None) -> PromptPairs:
            return self.pairs(task.corrupting(choice), model)

        return make

    def write_report(self, result: PatchResult, name: str, record: ItemRecord) -> None:
        """Write the sweep's report when ``--interp-report-dir`` is set."""
        if self.options.report_dir is None:
            return
        from ..reports import write_sweep_report

        paths = write_sweep_report(result, self.options.report_dir, name)
        record.reports.extend(str(path) for path in paths)

    def write_grid_report(self, grid: Grid, name: str, record: ItemRecord) -> None:
        """Write the grid's ``grid.csv``, ``grid.json`` and ``grid.png`` into ``<report dir>/<name>.grid/``."""
        if self.options.report_dir is None:
            return
        from ..reports import slugify

        directory = self.options.report_dir / f"{slugify(name)}.grid"
        paths = list(grid.save(directory))
        try:
            paths.append(grid.figure(directory / "grid.png"))
        except PlotsUnavailableError as error:  # no matplotlib: the tables are still written
            warnings.warn(f"interp-tests reports: grid figure skipped, CSV and JSON still written. {error}", stacklevel=2)
        record.reports.extend(str(path) for path in paths)


def _replay_clean_run(settings: dict[str, Any]) -> None:
    """The at-chance and never-predicted warnings of the clean run recorded in a result's settings."""
    from ..metrics import CleanRun

    CleanRun.replay(settings, stacklevel=4)


def _warn_off_distribution(check: OffDistribution) -> None:
    if not check.is_off_distribution:
        return
    warnings.warn(
        InterpWarning(
            f"Gaussian noise (noise_scale={check.noise_scale:g}) puts the model off distribution at layers "
            f"{check.flagged_layers}: the corrupted residual stream lies up to {check.max_z:.1f} SDs from the clean "
            "one, so this sweep's effects may measure behaviour on inputs the model never sees rather than its "
            "mechanism (Zhang & Nanda 2024, section 3.2). Check the claim with corruption 'str' (or a smaller "
            f"noise_scale) too.\n{check.table()}"
        ),
        stacklevel=3,
    )


# -- markers -------------------------------------------------------------------------------------


def marker_model(node: pytest.Item) -> str | None:
    marker = node.get_closest_marker("interp_model")
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
        raise InterpError(
            f"{node.nodeid}: the interp_model marker takes one model name, e.g. @pytest.mark.interp_model('organism')."
        )
    return marker.args[0]


def marker_task(node: pytest.Item) -> TaskSpec | None:
    marker = node.get_closest_marker("interp_task")
    if marker is None:
        return None
    kwargs = dict(marker.kwargs)
    file = kwargs.pop("file", None)
    if len(marker.args) > 1 or (marker.args and file) or not (marker.args or file):
        raise InterpError(
            f"{node.nodeid}: the interp_task marker takes a task name or file=, e.g. "
            "@pytest.mark.interp_task('ioi', n=64, seed=0, corrupt='S2') or "
            "@pytest.mark.interp_task(file='pairs.jsonl')."
        )
    return TaskSpec(
        name=marker.args[0] if marker.args else None,
        file=None if file is None else Path(node.path).parent / file,
        n=kwargs.pop("n", None),
        seed=kwargs.pop("seed", None),
        variant=kwargs,
    )


# -- fixtures ------------------------------------------------------------------------------------


ModelArg = Union[str, os.PathLike, "PatchableModel", None]


def _model_for(request: pytest.FixtureRequest, model: ModelArg) -> PatchableModel:
    if model is None or isinstance(model, (str, os.PathLike)):
        spec = None if model is None else os.fspath(model)
        session = session_of(request.config)
        return session.model(spec or marker_model(request.node), base_dir=Path(request.node.path).parent)
    return model


def _default_model(request: pytest.FixtureRequest) -> PatchableModel | None:
    """The test's model when it names one (marker or --interp-model), else None."""
    if session_of(request.config).options.model or marker_model(request.node):
        return _model_for(request, None)
    return None


def _marker_task(request: pytest.FixtureRequest, fixture: str) -> TaskSpec:
    task = marker_task(request.node)
    if task is None:
        raise InterpError(
            f"No prompt pairs: pass pairs= to {fixture}, or mark the test with "
            "@pytest.mark.interp_task('ioi', n=64) (or interp_task(file='pairs.jsonl'))."
        )
    return task


def _report_name(node: pytest.Item, count: int) -> str:
    """``<test file stem>.<test name>``, with ``-2``, ``-3``... for a test's second, third... report."""
    return f"{Path(node.path).stem}.{node.name}" + (f"-{count}" if count > 1 else "")


@pytest.fixture
def interp_model(request: pytest.FixtureRequest) -> Callable[..., PatchableModel]:
    """``get(name=None) -> PatchableModel``: ``name``, else the test's ``interp_model`` marker.

    ``--interp-model`` overrides both. Each model loads once per session (per xdist worker); a model whose
    weights are not available offline skips the test with the reason.
    """
    record_of(request.node)

    def get(name: str | os.PathLike | None = None) -> PatchableModel:
        return _model_for(request, name)

    return get


@pytest.fixture
def interp_pairs(request: pytest.FixtureRequest) -> Callable[..., PromptPairs]:
    """``get(task=None, n=None, seed=None, *, file=None, model=None, **variant) -> PromptPairs``.

    With no ``task`` or ``file``, starts from the test's ``interp_task`` marker and applies the given
    arguments. The tokenizer that filters the task's vocabulary is the model's (``model=``, else the
    marker's or ``--interp-model``). ``--interp-n-prompts`` and ``--interp-seed`` override n and seed.
    """
    record_of(request.node)

    def get(
        task: str | None = None,
        n: int | None = None,
        seed: int | None = None,
        *,
        file: str | os.PathLike | None = None,
        model: ModelArg = None,
        **variant: Any,
    ) -> PromptPairs:
        base = marker_task(request.node) if task is None and file is None else None
        if base is None:
            if task is None and file is None:
                raise InterpError(
                    "interp_pairs(): name a task, give file=, or mark the test with @pytest.mark.interp_task(...)."
                )
            path = None if file is None else Path(request.node.path).parent / file
            spec = TaskSpec(name=task, file=path, n=n, seed=seed, variant=variant)
        else:
            spec = replace(
                base,
                n=base.n if n is None else n,
                seed=base.seed if seed is None else seed,
                variant={**base.variant, **variant},
            )
        chosen = _default_model(request) if model is None else _model_for(request, model)
        return session_of(request.config).pairs(spec, chosen)

    return get


@pytest.fixture
def interp_sweep(request: pytest.FixtureRequest) -> Callable[..., PatchResult]:
    """``sweep(model=None, pairs=None, component="attn_head", corruption="str", metric="logit_diff", *,
    positions="all", window=1, direction="denoise", seed=0, noise_scale=None, batch_size=None, method="exact",
    grad_drop=False, verify_top=None, verify_tolerance=0.1) -> PatchResult``.

    ``patch()``, with the model and pairs defaulting to the test's markers, through the result cache: an
    unchanged sweep costs no forward pass, and a changed model, dataset, setting or library version
    recomputes. ``--interp-seed`` overrides ``seed``; ``noise_scale=None`` is the engine's default. A
    Gaussian-noise sweep that pushes the model off distribution warns (``InterpWarning``) with the table.
    ``method="attribution"`` gives an AtP estimate (``grad_drop`` for AtP*'s GradDrop); ``verify_top=k`` then
    re-measures its ``k`` largest components exactly and fails the test (``ClaimError``) when one misses by
    more than ``verify_tolerance`` (in the metric's units), else returns the estimate with their exact effects.
    """
    session = session_of(request.config)
    record = record_of(request.node)
    count = 0

    def sweep(
        model: ModelArg = None,
        pairs: Pairs | None = None,
        component: str = "attn_head",
        corruption: Corruption = "str",
        metric: Metric = "logit_diff",
        *,
        positions: str | int = "all",
        window: int = 1,
        direction: str = "denoise",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
        method: str = "exact",
        grad_drop: bool = False,
        verify_top: int | None = None,
        verify_tolerance: float = DEFAULT_VERIFY_TOLERANCE,
    ) -> PatchResult:
        nonlocal count
        chosen = _model_for(request, model)
        if pairs is None:
            pairs = session.pairs(_marker_task(request, "interp_sweep"), chosen)
        result = session.sweep(
            chosen, pairs, record, component=component, corruption=corruption, metric=metric, positions=positions,
            window=window, direction=direction, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
            method=method, grad_drop=grad_drop, verify_top=verify_top, verify_tolerance=verify_tolerance,
        )
        count += 1
        session.write_report(result, _report_name(request.node, count), record)
        return result

    return sweep


@pytest.fixture
def interp_grid(request: pytest.FixtureRequest) -> Callable[..., Grid]:
    """``grid(model=None, pairs=None, component="attn_head", *, corruptions=("str", "gn"),
    metrics=("logit_diff", "prob", "kl"), corrupt_tokens=None, sd=2.0, **patch_kwargs) -> Grid``.

    ``robustness.grid`` with each (corruption, corrupted tokens) sweep served like ``interp_sweep``'s, so a
    re-run grid costs no forward pass. The model and pairs default to the test's markers; each
    ``corrupt_tokens`` choice then becomes the marker task's ``corrupt`` option. ``pairs`` may also be
    PromptPairs, a task spec mapping or a callable, as for ``robustness.grid``. ``patch_kwargs``: positions,
    window, direction, seed, noise_scale, batch_size. Claim with ``grid.assert_robust(label, at_least=m)``.
    With ``--interp-report-dir`` the grid's CSV, JSON and figure go to ``<report dir>/<test>.grid/``.
    """
    session = session_of(request.config)
    record = record_of(request.node)
    count = 0

    def grid(
        model: ModelArg = None,
        pairs: PairsSource | None = None,
        component: str = "attn_head",
        *,
        corruptions: Sequence[Corruption] = ("str", "gn"),
        metrics: Sequence[str] = METRICS,
        corrupt_tokens: Sequence[str] | str | None = None,
        sd: float = 2.0,
        **patch_kwargs: Any,
    ) -> Grid:
        nonlocal count
        chosen = _model_for(request, model)
        result = session.grid(
            chosen, _marker_task(request, "interp_grid") if pairs is None else pairs, record, component,
            corruptions=corruptions, metrics=metrics, corrupt_tokens=corrupt_tokens, sd=sd, **patch_kwargs,
        )
        count += 1
        session.write_grid_report(result, _report_name(request.node, count), record)
        return result

    return grid


class CircuitFixture:
    """What ``interp_circuit`` gives a test: circuit scores and subset searches through the result cache."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._session = session_of(request.config)
        self._record = record_of(request.node)

    def _model_and_pairs(self, model: ModelArg, pairs: Pairs | None) -> tuple[PatchableModel, Pairs]:
        chosen = _model_for(self._request, model)
        if pairs is None:
            pairs = self._session.pairs(_marker_task(self._request, "interp_circuit"), chosen)
        return chosen, pairs

    def __call__(
        self,
        nodes: Sequence[str],
        model: ModelArg = None,
        pairs: Pairs | None = None,
        *,
        test: str = "sufficiency",
        ablation: str = "resample",
        metric: Metric = "logit_diff",
        corruption: str = "str",
        universe: Sequence[str] | None = None,
        groups: dict[str, Sequence[str]] | None = None,
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> CircuitResult:
        """``circuit_patch()`` of ``nodes`` on the test's model and pairs (by default its markers'), cached."""
        chosen, pairs = self._model_and_pairs(model, pairs)
        return self._session.circuit(
            chosen, pairs, self._record, nodes, test=test, ablation=ablation, metric=metric, corruption=corruption,
            universe=universe, groups=groups, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
        )

    def completeness(
        self, nodes: Sequence[str], model: ModelArg = None, pairs: Pairs | None = None, **settings: Any
    ) -> Completeness:
        """``circuit_patching.completeness()`` (settings: groups, ablation, metric, corruption, universe,
        samples, greedy_steps, seed, noise_scale, batch_size), cached."""
        chosen, pairs = self._model_and_pairs(model, pairs)
        return self._session.subsets("completeness", chosen, pairs, self._record, nodes, **settings)

    def minimality(
        self, nodes: Sequence[str], model: ModelArg = None, pairs: Pairs | None = None, **settings: Any
    ) -> Minimality:
        """``circuit_patching.minimality()`` (settings: groups, ablation, metric, corruption, universe, samples,
        seed, noise_scale, batch_size), cached."""
        chosen, pairs = self._model_and_pairs(model, pairs)
        return self._session.subsets("minimality", chosen, pairs, self._record, nodes, **settings)


@pytest.fixture
def interp_circuit(request: pytest.FixtureRequest) -> CircuitFixture:
    """``interp_circuit(nodes, model=None, pairs=None, *, test="sufficiency", ablation="resample",
    metric="logit_diff", corruption="str", universe=None, groups=None, seed=0, ...) -> CircuitResult``, and
    ``interp_circuit.completeness(nodes, ...)`` / ``.minimality(nodes, ...)``: circuit claims on the test's
    model and pairs (by default its markers'), through the result cache like ``interp_sweep``'s sweeps.
    Claim with ``result.assert_score(at_least=0.8)``, ``assert_complete(...)``, ``assert_minimal(...)``."""
    return CircuitFixture(request)


@pytest.fixture
def interp_path(request: pytest.FixtureRequest) -> Callable[..., PatchResult]:
    """``path(receivers, model=None, pairs=None, *, corruption="str", metric="logit_diff", seed=0,
    noise_scale=None, batch_size=None) -> PatchResult``: path patching from every head through ``receivers``
    (``"9.9.q"``, ``"9.9"``, ``"logits"``), cached; claim on it as on a sweep (``assert_detected`` ...)."""
    session = session_of(request.config)
    record = record_of(request.node)

    def path(
        receivers: Sequence[str],
        model: ModelArg = None,
        pairs: Pairs | None = None,
        *,
        corruption: str = "str",
        metric: Metric = "logit_diff",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> PatchResult:
        chosen = _model_for(request, model)
        if pairs is None:
            pairs = session.pairs(_marker_task(request, "interp_path"), chosen)
        return session.path(
            chosen, pairs, record, receivers, corruption=corruption, metric=metric, seed=seed,
            noise_scale=noise_scale, batch_size=batch_size,
        )

    return path
