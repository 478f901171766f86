"""The pytest fixtures of interp-tests, and the per-session state behind them.

One ``InterpSession`` per pytest process (each xdist worker has its own) loads every model once, builds
every prompt set once and computes every sweep once: a repeated sweep comes from an in-session memo,
then from the on-disk cache (``cache.py``), and only then from forward passes. Nothing here imports
torch until a fixture is used, so the plugin costs nothing to suites that never patch a model.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import pytest

from .errors import InterpError, ModelLoadError, SettingsError, WeightsUnavailableError, did_you_mean

if TYPE_CHECKING:
    from .corruptions import Corruption
    from .models import PatchableModel
    from .pairs import PromptPairs, TokenizedPairs
    from .results import PatchResult

    Pairs = Union[PromptPairs, TokenizedPairs]

ORGANISM = "organism"
NO_REPORTS = (
    "--interp-report-dir: this installation of interp-tests has no sweep reports (interp_tests.reports is "
    "missing), so none were written. Upgrade interp-tests to get them."
)


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


@dataclass(frozen=True)
class TaskSpec:
    """Which prompt pairs a claim runs on: a registered task generator (``name``) or a pairs ``file``."""

    name: str | None = None
    file: Path | None = None
    n: int | None = None
    seed: int | None = None
    variant: dict[str, Any] = field(default_factory=dict)

    def overridden(self, options: InterpOptions) -> TaskSpec:
        """``--interp-n-prompts`` and ``--interp-seed`` win over what the claim says."""
        return replace(
            self,
            n=self.n if options.n_prompts is None else options.n_prompts,
            seed=self.seed if options.seed is None or self.file else options.seed,
        )

    def key(self) -> str:
        return json.dumps([self.name, str(self.file), self.n, self.seed, self.variant], sort_keys=True, default=repr)

    def describe(self) -> str:
        if self.file is not None:
            return f"pairs file {self.file}" + (f" (first {self.n})" if self.n is not None else "")
        args = {"n": self.n, "seed": self.seed, **self.variant}
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in args.items() if v is not None)})"


@dataclass
class ItemRecord:
    """What one interp test did, for the terminal summary (sent to the xdist controller as a user property)."""

    sweeps: list[str] = field(default_factory=list)
    claims: list[tuple[str, str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)

    def as_property(self) -> dict[str, Any]:
        return {"sweeps": self.sweeps, "claims": [list(c) for c in self.claims], "notes": self.notes, "reports": self.reports}


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


def resolve_model_spec(spec: str, base_dir: Path | None) -> str:
    """A model path relative to the claim's file when one exists there; otherwise the spec as given."""
    if base_dir is not None and spec != ORGANISM and not Path(spec).is_absolute() and (base_dir / spec).exists():
        return str((base_dir / spec).resolve())
    return spec


def remote_message() -> str:
    key = "is set" if os.environ.get("NDIF_API_KEY") else "is not set"
    return (
        "--interp-remote asks for nnsight remote execution on NDIF, which the interp-tests patching engine does "
        "not support yet. Run without --interp-remote to load the models on this machine. (Remote runs will need "
        f"an NDIF API key, from NDIF_API_KEY, which {key}, or nnsight's config, and network access to NDIF.)"
    )


def _generate(task: TaskSpec, tokenizer: Any) -> PromptPairs:
    from . import tasks

    registry = tasks.TASKS
    if task.name not in registry:
        raise SettingsError(
            f"Unknown task {task.name!r}.{did_you_mean(str(task.name), registry)} Known tasks: {sorted(registry)}; "
            "or give a pairs file with {file: pairs.jsonl}."
        )
    generator = registry[task.name]
    params = inspect.signature(generator).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    options = [p for p in params if p not in ("n", "seed", "tokenizer")]
    for key in task.variant:
        if key not in params and not open_ended:
            raise SettingsError(
                f"Task {task.name!r} has no option {key!r}.{did_you_mean(key, options)} Its options: {options or 'none'}."
            )
    kwargs: dict[str, Any] = dict(task.variant)
    if task.n is not None:
        kwargs["n"] = task.n
    elif "n" in params and params["n"].default is inspect.Parameter.empty:
        raise SettingsError(f"Task {task.name!r} needs n, the number of prompt pairs (e.g. n: 64).")
    if task.seed is not None:
        kwargs["seed"] = task.seed
    if "tokenizer" in params or open_ended:
        kwargs["tokenizer"] = tokenizer
    return generator(**kwargs)


class InterpSession:
    """Models, prompt pairs and sweeps of one pytest process, each made once."""

    def __init__(self, options: InterpOptions) -> None:
        self.options = options
        self._models: dict[str, PatchableModel | InterpError] = {}
        self._pairs: dict[str, PromptPairs] = {}
        self._sweeps: dict[str, PatchResult] = {}

    def model(self, spec: str | None, *, base_dir: Path | None = None) -> PatchableModel:
        """The model ``spec`` (``--interp-model`` wins); skips the test when its weights are unavailable."""
        spec = self.options.model or spec
        if not spec:
            raise InterpError(
                "No model to run on: mark the test with @pytest.mark.interp_model('organism'), pass a name to "
                "interp_model(...), give `model:` in the YAML claims, or set --interp-model."
            )
        if self.options.remote:
            raise InterpError(remote_message())
        key = resolve_model_spec(str(spec), base_dir)
        if key not in self._models:
            from .models import load_model

            try:
                self._models[key] = load_model(key, device=self.options.device)
            except ModelLoadError as error:
                self._models[key] = error
        model = self._models[key]
        if isinstance(model, WeightsUnavailableError):
            pytest.skip(str(model))
        if isinstance(model, InterpError):
            raise model
        return model

    def pairs(self, task: TaskSpec, model: PatchableModel | None) -> PromptPairs:
        """The task's prompt pairs, filtered for the model's tokenizer when there is a model."""
        task = task.overridden(self.options)
        key = json.dumps([task.key(), None if model is None else model.name])
        if key not in self._pairs:
            if task.file is not None:
                from .pairs import PromptPairs

                pairs = PromptPairs.load(task.file)
                if task.n is not None:
                    if task.n > len(pairs):
                        raise SettingsError(f"{task.file} holds {len(pairs)} prompt pairs, fewer than n={task.n}.")
                    pairs = pairs[: task.n]
            else:
                pairs = _generate(task, None if model is None else model.tokenizer)
            self._pairs[key] = pairs
        return self._pairs[key]

    def sweep(
        self,
        model: PatchableModel,
        pairs: Pairs,
        record: ItemRecord,
        *,
        component: str = "attn_head",
        corruption: Corruption = "str",
        metric: str = "logit_diff",
        positions: str | int = "all",
        window: int = 1,
        direction: str = "denoise",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> PatchResult:
        """``patch()`` through the in-session memo and the disk cache; notes in ``record`` where it came from."""
        from . import __version__, patching
        from .cache import SweepCache, sweep_key
        from .corruptions import DEFAULT_NOISE_SCALE

        if self.options.seed is not None:
            seed = self.options.seed
        noise_scale = DEFAULT_NOISE_SCALE if noise_scale is None else noise_scale
        tokens = patching.tokenize(model, pairs)

        def compute() -> PatchResult:
            return patching.patch(
                model, tokens, component, corruption, metric, positions=positions, window=window,
                direction=direction, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
            )

        if not isinstance(corruption, str):
            record.sweeps.append("computed")
            record.notes.append("a custom corruption function cannot be cached; its sweeps always run")
            return compute()
        settings: dict[str, Any] = {
            "version": __version__,
            "model_fingerprint": model.fingerprint(),
            "dataset": tokens.fingerprint(),
            "device": model.device.type,
            "component": component,
            "corruption": corruption,
            "positions": positions,
            "window": window,
            "direction": direction,
            "seed": seed,
        }
        if corruption == "gn":
            settings["noise_scale"] = noise_scale
        key = sweep_key(settings)
        if key in self._sweeps:
            status = "reused"
        elif not self.options.cache:
            self._sweeps[key], status = compute(), "computed"
        else:
            cache = SweepCache(self.options.cache_dir)
            with cache.locked(key):
                cached, problem = cache.read(key, settings)
                if cached is None:
                    cached, status = compute(), "computed"
                    cache.write(key, settings, cached)
                    if problem:
                        record.notes.append(f"cache entry {cache.entry_path(key)} was rejected ({problem}) and recomputed")
                else:
                    status = "cached"
            self._sweeps[key] = cached
        record.sweeps.append(status)
        result = self._sweeps[key].with_metric(metric)
        result.settings["model"] = model.name
        return result

    def write_report(self, result: PatchResult, name: str, record: ItemRecord) -> None:
        """Write the sweep's report when ``--interp-report-dir`` is set."""
        if self.options.report_dir is None:
            return
        try:
            from .reports import write_sweep_report
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.reports":
                raise
            record.notes.append(NO_REPORTS)
            return
        paths = write_sweep_report(result, self.options.report_dir, name)
        record.reports.extend(str(path) for path in paths)


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
            "@pytest.mark.interp_task('ioi', n=64, seed=0, corrupt='S2') or @pytest.mark.interp_task(file='pairs.jsonl')."
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
        return session_of(request.config).model(spec or marker_model(request.node), base_dir=Path(request.node.path).parent)
    return model


def _default_model(request: pytest.FixtureRequest) -> PatchableModel | None:
    """The test's model when it names one (marker or --interp-model), else None."""
    if session_of(request.config).options.model or marker_model(request.node):
        return _model_for(request, None)
    return None


def _pairs_for(request: pytest.FixtureRequest, model: PatchableModel | None) -> PromptPairs:
    task = marker_task(request.node)
    if task is None:
        raise InterpError(
            "No prompt pairs: pass pairs= to interp_sweep, or mark the test with "
            "@pytest.mark.interp_task('ioi', n=64) (or interp_task(file='pairs.jsonl'))."
        )
    return session_of(request.config).pairs(task, model)


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
                raise InterpError("interp_pairs(): name a task, give file=, or mark the test with @pytest.mark.interp_task(...).")
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
    positions="all", window=1, direction="denoise", seed=0, noise_scale=None, batch_size=None) -> PatchResult``.

    ``patch()``, with the model and pairs defaulting to the test's markers, through the result cache: an
    unchanged sweep costs no forward pass, and a changed model, dataset, setting or library version
    recomputes. ``--interp-seed`` overrides ``seed``; ``noise_scale=None`` is the engine's default.
    """
    session = session_of(request.config)
    record = record_of(request.node)
    node = request.node
    count = 0

    def sweep(
        model: ModelArg = None,
        pairs: Pairs | None = None,
        component: str = "attn_head",
        corruption: Corruption = "str",
        metric: str = "logit_diff",
        *,
        positions: str | int = "all",
        window: int = 1,
        direction: str = "denoise",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> PatchResult:
        nonlocal count
        chosen = _model_for(request, model)
        result = session.sweep(
            chosen, _pairs_for(request, chosen) if pairs is None else pairs, record, component=component,
            corruption=corruption, metric=metric, positions=positions, window=window, direction=direction,
            seed=seed, noise_scale=noise_scale, batch_size=batch_size,
        )
        count += 1
        session.write_report(result, f"{Path(node.path).stem}.{node.name}" + (f"-{count}" if count > 1 else ""), record)
        return result

    return sweep


@pytest.fixture
def interp_baseline(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``check(result, name=None, atol=0.01) -> str``: compare the effect map with its stored baseline.

    The baseline is ``__baselines__/<test file stem>/<name or test name>.json`` next to the test;
    ``--interp-update-baselines`` writes it. Returns "matched", "written" or "unchanged".
    """
    from .baselines import check_for_request

    record_of(request.node)

    def check(result: PatchResult, name: str | None = None, atol: float = 0.01) -> str:
        return check_for_request(result, request, name=name, atol=atol)

    return check
