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

import contextlib
import dataclasses
import functools
import hashlib
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
    from ..circuit_results import CircuitResult, Completeness, Minimality
    from ..corruptions import Corruption
    from ..edge_results import EdgeScores, EdgeVerification, FaithfulnessCurve
    from ..models import PatchableModel
    from ..pairs import PromptPairs, TokenizedPairs
    from ..readings import AttentionScores, Evaluation
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


class LazyModel:
    """A model named by its spec, loaded when something must run on it. Until then its cache identity comes from
    its files (``identities``): a cached result of a model loaded from files is found without torch."""

    def __init__(self, session: InterpSession, spec: str, *, remote: bool = False) -> None:
        from ..identities import model_files

        self.name = spec
        self.remote = remote
        # None for a hub id or a remote model: identified by its weights, or its repo id, once loaded
        self.files = None if remote else model_files(spec)
        self._session = session
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """``PatchableModel.fingerprint()`` of the loaded model, from the files alone (only when ``files``)."""
        from ..identities import files_fingerprint

        if self._fingerprint is None:
            assert self.files, "only a model loaded from files has an identity before it loads"
            self._fingerprint = files_fingerprint(self.files, self._session.options.cache_dir / "files")
        return self._fingerprint

    def device_type(self) -> str | None:
        """The device type it will load on, when that is known without torch."""
        return self._session.device_type

    def load(self) -> PatchableModel:
        return self._session.load(self.name, remote=self.remote)


ModelRef = Union[LazyModel, "PatchableModel"]
PairsRef = Union[TaskSpec, "Pairs"]


class Subject:
    """A claim's model and prompt pairs, loaded and tokenized only when a result must be computed. Until then the
    cache key comes from the model's files and the pairs' text (``key``), so a cached result costs no torch.
    ``context(what)`` wraps loading the model ("model") and making the pairs ("pairs"), e.g. to blame a YAML line."""

    def __init__(
        self, session: InterpSession, model: ModelRef, pairs: PairsRef,
        context: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self._session, self._model, self._pairs = session, model, pairs
        self._context = context or (lambda what: contextlib.nullcontext())
        self._tokens: TokenizedPairs | None = None
        self.name = model.name

    @property
    def model(self) -> PatchableModel:
        if isinstance(self._model, LazyModel):
            with self._context("model"):
                self._model = self._model.load()
        return self._model

    @property
    def tokens(self) -> TokenizedPairs:
        if self._tokens is None:
            from .. import engine

            model = self.model
            with self._context("pairs"):
                pairs = self._session.pairs(self._pairs, model) if isinstance(self._pairs, TaskSpec) else self._pairs
                self._tokens = engine.tokenize(model, pairs)
        return self._tokens

    def key(self) -> dict[str, Any]:
        """What identifies the model, the pairs and the device in cache keys. For a model loaded from files, its
        files (tokenizer included) and the pairs' text identify them, known without loading anything (unless only
        torch can tell the device); otherwise the loaded weights and the token ids do."""
        from ..pairs import TokenizedPairs

        model = self._model
        if model.files and not isinstance(self._pairs, TokenizedPairs):
            device = model.device_type() if isinstance(model, LazyModel) else model.placement
            with self._context("pairs"):
                dataset = self._session.text_identity(self._pairs)
            return {"model_fingerprint": model.fingerprint(), "dataset": dataset,
                    "device": device or self.model.placement}
        return {"model_fingerprint": self.model.fingerprint(), "dataset": self.tokens.fingerprint(),
                "device": self.model.placement}


class InterpSession:
    """Models, prompt pairs and sweeps of one pytest process, each made once."""

    def __init__(self, options: InterpOptions, write_line: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._write_line = write_line  # where progress lines go (pytest -v's terminal), or None for silence
        self._models: dict[str, PatchableModel | InterpError] = {}
        self._pairs: dict[str, PromptPairs] = {}
        self._distributions: dict[str, OffDistribution] = {}
        self._results: dict[str, Any] = {}  # sweeps, circuit scores, subset searches, path patching, by cache key

    @functools.cached_property
    def device_type(self) -> str | None:
        """The device type models load on, when that is known without torch (looked for once per session)."""
        from ..identities import certain_device

        return certain_device(self.options.device)

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

    def model_ref(self, spec: str | None, *, base_dir: Path | None = None, remote: bool = False) -> LazyModel:
        """The model ``spec`` (``--interp-model`` wins), not loaded yet; skips the test when its weights are
        certainly unavailable (a hub id offline and not in the local cache), which is known without torch.
        ``remote`` (or ``--interp-remote``) runs it on NDIF, named by its repo id (``spec``)."""
        from ..identities import hub_weights_missing, weights_unavailable

        spec = self.options.model or spec
        if not spec:
            raise InterpError(
                "No model to run on: mark the test with @pytest.mark.interp_model('organism'), pass a name to "
                "interp_model(...), give `model:` in the YAML claims, or set --interp-model."
            )
        remote = remote or self.options.remote
        key = str(spec) if remote else resolve_model_spec(str(spec), base_dir)
        memo = f"remote:{key}" if remote else key
        if not remote and memo not in self._models and hub_weights_missing(key):
            self._models[memo] = weights_unavailable(key)
        self._raise_load_error(memo)
        return LazyModel(self, key, remote=remote)

    def model(self, spec: str | None, *, base_dir: Path | None = None, remote: bool = False) -> PatchableModel:
        """The model ``spec`` (``--interp-model`` wins), loaded; skips the test when its weights are unavailable."""
        return self.model_ref(spec, base_dir=base_dir, remote=remote).load()

    def load(self, key: str, *, remote: bool = False) -> PatchableModel:
        """The model of the resolved spec ``key`` (on NDIF when ``remote``), loaded once per session."""
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
        self._raise_load_error(memo)
        return self._models[memo]

    def _raise_load_error(self, memo: str) -> None:
        model = self._models.get(memo)
        if isinstance(model, WeightsUnavailableError):
            # Reported at the test (or YAML claim) that needs the model, like a skip marker, not at this line.
            raise pytest.skip.Exception(str(model), _use_item_location=True)
        if isinstance(model, InterpError):
            raise model

    def pairs(self, task: TaskSpec, model: PatchableModel | None) -> PromptPairs:
        """The task's prompt pairs, filtered for the model's tokenizer when there is a model."""
        task = task.with_overrides(self.options.n_prompts, self.options.seed)
        key = json.dumps([task.key(), None if model is None else model.name])
        if key not in self._pairs:
            self._pairs[key] = task.pairs(None if model is None else model.tokenizer)
        return self._pairs[key]

    def text_identity(self, pairs: TaskSpec | PromptPairs) -> str:
        """What identifies prompt pairs for a model identified by its files, before any tokenizer loads: a pairs
        file or PromptPairs by their text, a generated task by its spec (with the library version in every key,
        and the tokenizer that filters its vocabulary among the model's files), with the tokenizer libraries'
        versions."""
        from importlib.metadata import version

        if isinstance(pairs, TaskSpec):
            task = pairs.with_overrides(self.options.n_prompts, self.options.seed)
            parts = ["task", task.key()] if task.file is None else ["pairs", self.pairs(task, None).fingerprint()]
        else:
            parts = ["pairs", pairs.fingerprint()]
        parts += [version("transformers"), version("tokenizers")]
        return "text:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def sweep(
        self,
        subject: Subject,
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
        (``attribution.verify_top``, cached the same way): a miss beyond ``verify_tolerance`` fails the claim
        (``ClaimError``), otherwise the result carries the exact effects for those components.
        """
        from .. import __version__
        from ..corruptions import corruption_name
        from ..metrics import BUILTIN_METRICS, resolve_metric

        if verify_top is not None and method != "attribution":
            raise SettingsError(
                f"verify_top={verify_top!r} re-measures an attribution estimate's top components, but this sweep "
                f"is method={method!r}, whose effects are all exact: drop verify_top, or use method='attribution'."
            )
        if self.options.seed is not None:
            seed = self.options.seed
        noise_scale = _noise_scale(noise_scale)

        def compute() -> PatchResult:
            from .. import patching

            what = f"{method} sweep of {component} ({corruption_name(corruption)}) on {subject.name}"
            return patching.patch(
                subject.model, subject.tokens, component, corruption, metric, positions=positions, window=window,
                direction=direction, seed=seed, noise_scale=noise_scale, batch_size=batch_size, method=method,
                grad_drop=grad_drop, progress=self.progress(what),
            )

        if not isinstance(corruption, str):
            record.sweeps.append("computed")
            record.notes.append("a custom corruption function cannot be cached; its sweeps always run")
            return compute()
        name, custom = resolve_metric(metric)
        settings: dict[str, Any] = {
            "version": __version__,
            **subject.key(),
            "component": component,
            "corruption": corruption,
            "positions": positions,
            "window": window,
            "direction": direction,
            "seed": seed,
            "method": method,
        }
        if method == "attribution":  # an estimate holds one metric
            settings.update(metric=name, grad_drop=grad_drop)
        else:  # an exact sweep holds the built-in metrics and the user metric it was asked for, keyed by name
            settings["metrics"] = [*BUILTIN_METRICS, *(m.name for m in custom)]
        if corruption == "gn":
            settings["noise_scale"] = noise_scale
        swept = self._cached(settings, compute, None, record)
        if corruption == "gn":
            _warn_off_distribution(self._off_distribution(subject, settings))
        result = swept.with_metric(name)
        result.settings["model"] = subject.name
        if verify_top is not None:
            result = self._verified(subject, result, settings, verify_top, verify_tolerance, batch_size, record)
        return result

    def _cached(
        self, settings: dict[str, Any], compute: Callable[[], Any], load: Callable[[bytes], Any] | None,
        record: ItemRecord, *, counted: bool = True,
    ) -> Any:
        """A sweep, circuit score, subset search, path-patching sweep, attention scores or evaluation through the
        in-session memo and the disk cache, keyed by ``settings`` (``load`` reads a cache entry; None: a ``PatchResult``); notes in ``record``
        where it came from, and repeats the clean run's warnings when it did not compute. A result that is not
        ``counted`` (an exact re-measurement of another) does neither."""
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
        if counted:
            record.sweeps.append(status)
            carried = getattr(self._results[key], "settings", None)  # attention scores and evaluations carry none
            if status != "computed" and carried is not None:
                _replay_clean_run(carried)
        return self._results[key]

    def _key_settings(self, subject: Subject, kind: str, **settings: Any) -> dict[str, Any]:
        from .. import __version__

        if self.options.seed is not None and "seed" in settings:
            settings["seed"] = self.options.seed
        return {"version": __version__, "kind": kind, **subject.key(), **settings}

    def circuit(
        self,
        subject: Subject,
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
        from ..circuit_results import CircuitResult
        from ..circuits import Circuit
        from ..metrics import check_metric

        noise_scale = _noise_scale(noise_scale)
        circuit = Circuit(nodes, groups=groups)
        settings = self._key_settings(
            subject, "circuit", circuit=circuit.labels, groups={k: v.labels for k, v in circuit.groups.items()},
            test=test, ablation=ablation, metric=check_metric(metric), corruption=corruption,
            universe=None if universe is None else Circuit(universe).labels, seed=seed, noise_scale=noise_scale,
        )

        def compute() -> CircuitResult:
            from ..circuit_patching import circuit_patch

            return circuit_patch(
                subject.model, subject.tokens, circuit, test=test, ablation=ablation, metric=metric,
                corruption=corruption, universe=universe, seed=settings["seed"], noise_scale=noise_scale,
                batch_size=batch_size, progress=self.progress(f"{test} of circuit {circuit} on {subject.name}"),
            )

        result = self._cached(settings, compute, CircuitResult.from_bytes, record)
        result.settings["model"] = subject.name
        return result

    def subsets(
        self,
        search: str,
        subject: Subject,
        record: ItemRecord,
        nodes: Sequence[str],
        *,
        groups: dict[str, Sequence[str]] | None = None,
        **settings: Any,
    ) -> Completeness | Minimality:
        """``completeness()`` or ``minimality()`` (``search``) through the memo and the disk cache."""
        from ..circuit_results import Completeness, Minimality
        from ..circuits import Circuit
        from ..metrics import check_metric

        circuit = Circuit(nodes, groups=groups)
        batch_size = settings.pop("batch_size", None)
        key = self._key_settings(
            subject, search, circuit=circuit.labels, groups={k: v.labels for k, v in circuit.groups.items()},
            **{"seed": 0, **settings, "metric": check_metric(settings.get("metric", "logit_diff"))},
        )
        settings["seed"] = key["seed"]
        result_type = Completeness if search == "completeness" else Minimality

        def compute() -> Any:
            from .. import circuit_patching

            progress = self.progress(f"{search} of circuit {circuit} on {subject.name}")
            function = getattr(circuit_patching, search)
            return function(subject.model, subject.tokens, circuit, batch_size=batch_size, progress=progress, **settings)

        return self._cached(key, compute, result_type.from_bytes, record)

    def path(
        self,
        subject: Subject,
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
        from ..metrics import BUILTIN_METRICS, resolve_metric

        noise_scale = _noise_scale(noise_scale)
        name, custom = resolve_metric(metric)
        settings = self._key_settings(
            subject, "path", receivers=list(receivers), corruption=corruption, seed=seed, noise_scale=noise_scale,
            metrics=[*BUILTIN_METRICS, *(m.name for m in custom)],
        )

        def compute() -> PatchResult:
            from ..paths import path_patch

            return path_patch(
                subject.model, subject.tokens, receivers, corruption=corruption, metric=metric, seed=settings["seed"],
                noise_scale=noise_scale, batch_size=batch_size,
                progress=self.progress(f"path patching into {', '.join(receivers)} on {subject.name}"),
            )

        result = self._cached(settings, compute, None, record)
        result = result.with_metric(name)
        result.settings["model"] = subject.name
        return result

    def attention(self, subject: Subject, record: ItemRecord, query: str, key: str) -> AttentionScores:
        """``attention_to()`` through the memo and the disk cache."""
        from ..readings import AttentionScores

        settings = self._key_settings(subject, "attention", query=query, key=key)

        def compute() -> AttentionScores:
            from ..attention import attention_to

            return attention_to(subject.model, subject.tokens, query, key)

        return self._cached(settings, compute, AttentionScores.from_bytes, record)

    def evaluation(
        self, subject: Subject, record: ItemRecord, *, corruption: str | None, seed: int, noise_scale: float | None
    ) -> Evaluation:
        """``evaluate()`` through the memo and the disk cache."""
        from ..readings import Evaluation

        noise_scale = _noise_scale(noise_scale)
        settings = self._key_settings(subject, "evaluation", corruption=corruption, seed=seed, noise_scale=noise_scale)

        def compute() -> Evaluation:
            from ..evaluation import evaluate

            return evaluate(subject.model, subject.tokens, corruption=corruption, seed=settings["seed"],
                            noise_scale=noise_scale)

        return self._cached(settings, compute, Evaluation.from_bytes, record)

    def off_distribution(self, subject: Subject, *, seed: int, noise_scale: float | None) -> OffDistribution:
        """The GN off-distribution check of ``subject``'s prompts, the one a GN sweep with these settings runs."""
        noise_scale = _noise_scale(noise_scale)
        return self._off_distribution(subject, self._key_settings(subject, "sweep", seed=seed, noise_scale=noise_scale))

    def edges(
        self,
        subject: Subject,
        record: ItemRecord,
        *,
        method: str = "eap",
        steps: int = 5,
        metric: str = "logit_diff",
        corruption: str = "str",
        seed: int = 0,
        noise_scale: float | None = None,
        batch_size: int | None = None,
    ) -> EdgeScores:
        """``edge_attribution()`` through the memo and the disk cache."""
        from ..edge_results import EdgeScores
        from ..metrics import check_metric

        noise_scale = _noise_scale(noise_scale)
        settings = self._key_settings(
            subject, "edges", method=method, steps=steps, metric=check_metric(metric), corruption=corruption,
            seed=seed, noise_scale=noise_scale,
        )

        def compute() -> EdgeScores:
            from ..edge_scoring import edge_attribution

            return edge_attribution(
                subject.model, subject.tokens, method, steps=steps, metric=metric, corruption=corruption,
                seed=settings["seed"], noise_scale=noise_scale, batch_size=batch_size,
            )

        return self._cached(settings, compute, EdgeScores.from_bytes, record)

    def faithfulness(
        self, subject: Subject, record: ItemRecord, scores: EdgeScores, fractions: Sequence[float] | None = None,
        *, batch_size: int | None = None, **options: Any,
    ) -> FaithfulnessCurve:
        """``faithfulness_curve()`` of ``scores`` (options: ablation, metric, corruption, seed, noise_scale) through
        the memo and the disk cache; the scores are keyed by their content."""
        from ..corruptions import DEFAULT_NOISE_SCALE
        from ..edge_results import FaithfulnessCurve

        options.setdefault("noise_scale", DEFAULT_NOISE_SCALE)
        settings = self._key_settings(
            subject, "faithfulness", scores=_edge_scores_digest(scores),
            fractions=None if fractions is None else [float(f) for f in fractions], **options,
        )

        def compute() -> FaithfulnessCurve:
            from ..edge_scoring import FRACTIONS, faithfulness_curve

            chosen = FRACTIONS if fractions is None else fractions
            return faithfulness_curve(subject.model, subject.tokens, scores, chosen, batch_size=batch_size, **options)

        return self._cached(settings, compute, FaithfulnessCurve.from_bytes, record)

    def verify_edges(
        self, subject: Subject, record: ItemRecord, scores: EdgeScores, k: int = 10, by: str = "abs", **options: Any
    ) -> EdgeVerification:
        """``verify_top_edges()`` of ``scores`` (options: metric, corruption, seed, noise_scale, batch_size) through
        the memo and the disk cache."""
        from ..edge_results import EdgeVerification

        batch_size = options.pop("batch_size", None)
        settings = self._key_settings(
            subject, "verify_edges", scores=_edge_scores_digest(scores), k=k, by=by, **options
        )

        def compute() -> EdgeVerification:
            from ..edge_scoring import verify_top_edges

            return verify_top_edges(subject.model, subject.tokens, scores, k, by, batch_size=batch_size, **options)

        return self._cached(settings, compute, EdgeVerification.from_bytes, record, counted=False)

    def _verified(
        self, subject: Subject, estimate: PatchResult, settings: dict[str, Any], k: int, tolerance: float,
        batch_size: int | None, record: ItemRecord,
    ) -> PatchResult:
        """The estimate with its top ``k`` components measured exactly, through the memo and the disk cache."""
        from ..attribution_results import verified_comparison

        def compute() -> PatchResult:
            from ..attribution import verify_top

            verified = verify_top(subject.model, subject.tokens, estimate, k, batch_size=batch_size).verified
            assert verified is not None
            return verified

        verified = self._cached({**settings, "verify_top": k}, compute, None, record, counted=False)
        comparison = verified_comparison(estimate, verified, k)
        record.notes.append(
            f"attribution estimate: its {k} largest effects re-measured exactly (max |error| "
            f"{comparison.max_abs_error:.3g}, tolerance {tolerance:g})"
        )
        comparison.assert_within(tolerance)
        assert comparison.verified is not None
        return comparison.verified

    def _off_distribution(self, subject: Subject, sweep_settings: dict[str, Any]) -> OffDistribution:
        """``robustness.off_distribution`` of a GN sweep's corrupted run: memoised, and cached on disk as JSON
        next to the sweeps, so a cached sweep's check costs no forward pass either."""
        import numpy as np

        from ..files import atomic_write
        from ..robustness import OffDistribution
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
            from ..robustness import off_distribution

            check = off_distribution(
                subject.model, subject.tokens, seed=settings["seed"], noise_scale=settings["noise_scale"]
            )
            if self.options.cache:
                values = {f.name: getattr(check, f.name) for f in dataclasses.fields(check)}
                values = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in values.items()}
                atomic_write(path, json.dumps({"settings": settings, "check": values}))
        self._distributions[key] = check
        return check

    def grid(
        self,
        model: ModelRef,
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
        replacing the one it names) or whatever ``robustness.grid`` takes (which needs the model loaded).
        """
        from ..robustness import grid

        if isinstance(source, TaskSpec):
            pairs: Any = self._task_source(source, corrupt_tokens)
        else:
            model, pairs = model.load() if isinstance(model, LazyModel) else model, source

        def sweep(model: ModelRef, pairs: PairsRef, component: str, corruption: Corruption, metric: str,
                  **kwargs: Any) -> PatchResult:
            subject = Subject(self, model, pairs)
            return self.sweep(subject, record, component=component, corruption=corruption, metric=metric, **kwargs)

        return grid(
            model, pairs, component, corruptions=corruptions, metrics=metrics, corrupt_tokens=corrupt_tokens, sd=sd,
            sweep=sweep, **sweep_kwargs,
        )

    def _task_source(self, task: TaskSpec, corrupt_tokens: Sequence[str] | str | None) -> Callable[[str | None], TaskSpec]:
        """The task of each corrupted-token choice (its ``corrupt`` option), made into pairs when a sweep needs them."""
        if task.file is not None and corrupt_tokens is not None:
            raise SettingsError(
                f"corrupt_tokens regenerates the prompt pairs once per choice, which the pairs file {task.file} "
                "cannot do. Use a registered task (e.g. ioi) or leave corrupt_tokens out."
            )
        return task.corrupting

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


def _edge_scores_digest(scores: EdgeScores) -> str:
    """What identifies edge scores in the key of a result computed from them: their content."""
    digest = hashlib.sha256(json.dumps([scores.labels, scores.method, scores.metric], default=str).encode())
    for array in (scores.raw, scores.m_clean, scores.m_corrupted):
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _noise_scale(noise_scale: float | None) -> float:
    """The Gaussian-noise scale a setting of None means: the engine's default."""
    from ..corruptions import DEFAULT_NOISE_SCALE

    return DEFAULT_NOISE_SCALE if noise_scale is None else noise_scale


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


def _model_ref(request: pytest.FixtureRequest, model: ModelArg) -> ModelRef:
    """The model a fixture call names (its spec, else the test's marker), not loaded yet; or the model given."""
    if model is None or isinstance(model, (str, os.PathLike)):
        spec = None if model is None else os.fspath(model)
        session = session_of(request.config)
        return session.model_ref(spec or marker_model(request.node), base_dir=Path(request.node.path).parent)
    return model


def _model_for(request: pytest.FixtureRequest, model: ModelArg) -> PatchableModel:
    chosen = _model_ref(request, model)
    return chosen.load() if isinstance(chosen, LazyModel) else chosen


def _subject(request: pytest.FixtureRequest, model: ModelArg, pairs: Pairs | None, fixture: str) -> Subject:
    """The fixture call's model and pairs (by default the test's markers'), loaded only if a result is computed."""
    chosen = _model_ref(request, model)
    return Subject(session_of(request.config), chosen, _marker_task(request, fixture) if pairs is None else pairs)


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
        result = session.sweep(
            _subject(request, model, pairs, "interp_sweep"), record, component=component, corruption=corruption, metric=metric, positions=positions,
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
        result = session.grid(
            _model_ref(request, model), _marker_task(request, "interp_grid") if pairs is None else pairs, record, component,
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

    def _subject(self, model: ModelArg, pairs: Pairs | None) -> Subject:
        return _subject(self._request, model, pairs, "interp_circuit")

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
        return self._session.circuit(
            self._subject(model, pairs), self._record, nodes, test=test, ablation=ablation, metric=metric, corruption=corruption,
            universe=universe, groups=groups, seed=seed, noise_scale=noise_scale, batch_size=batch_size,
        )

    def completeness(
        self, nodes: Sequence[str], model: ModelArg = None, pairs: Pairs | None = None, **settings: Any
    ) -> Completeness:
        """``circuit_patching.completeness()`` (settings: groups, ablation, metric, corruption, universe,
        samples, greedy_steps, seed, noise_scale, batch_size), cached."""
        return self._session.subsets("completeness", self._subject(model, pairs), self._record, nodes, **settings)

    def minimality(
        self, nodes: Sequence[str], model: ModelArg = None, pairs: Pairs | None = None, **settings: Any
    ) -> Minimality:
        """``circuit_patching.minimality()`` (settings: groups, ablation, metric, corruption, universe, samples,
        seed, noise_scale, batch_size), cached."""
        return self._session.subsets("minimality", self._subject(model, pairs), self._record, nodes, **settings)


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
        return session.path(
            _subject(request, model, pairs, "interp_path"), record, receivers, corruption=corruption, metric=metric, seed=seed,
            noise_scale=noise_scale, batch_size=batch_size,
        )

    return path


@pytest.fixture
def interp_attention(request: pytest.FixtureRequest) -> Callable[..., AttentionScores]:
    """``attention(query, key, model=None, pairs=None) -> AttentionScores``: ``attention_to()``, every head's mean
    attention weight from the named position ``query`` to ``key`` on the clean prompts, cached like sweeps."""
    session = session_of(request.config)
    record = record_of(request.node)

    def attention(query: str, key: str, model: ModelArg = None, pairs: Pairs | None = None) -> AttentionScores:
        return session.attention(_subject(request, model, pairs, "interp_attention"), record, query, key)

    return attention


@pytest.fixture
def interp_evaluate(request: pytest.FixtureRequest) -> Callable[..., Evaluation]:
    """``evaluate(model=None, pairs=None, *, corruption="str", seed=0, noise_scale=None) -> Evaluation``:
    ``evaluate()`` (top-1 accuracy, logit difference and P(answer), clean and corrupted), cached like sweeps;
    ``corruption=None`` skips the corrupted run."""
    session = session_of(request.config)
    record = record_of(request.node)

    def evaluation(
        model: ModelArg = None, pairs: Pairs | None = None, *, corruption: str | None = "str", seed: int = 0,
        noise_scale: float | None = None,
    ) -> Evaluation:
        subject = _subject(request, model, pairs, "interp_evaluate")
        return session.evaluation(subject, record, corruption=corruption, seed=seed, noise_scale=noise_scale)

    return evaluation


@pytest.fixture
def interp_off_distribution(request: pytest.FixtureRequest) -> Callable[..., OffDistribution]:
    """``check(model=None, pairs=None, *, seed=0, noise_scale=None) -> OffDistribution``: the Gaussian-noise
    off-distribution check (``robustness.off_distribution``, Zhang & Nanda 2024, section 3.2) that GN sweeps run,
    from the same cache."""
    session = session_of(request.config)
    record_of(request.node)

    def check(
        model: ModelArg = None, pairs: Pairs | None = None, *, seed: int = 0, noise_scale: float | None = None
    ) -> OffDistribution:
        subject = _subject(request, model, pairs, "interp_off_distribution")
        return session.off_distribution(subject, seed=seed, noise_scale=noise_scale)

    return check


class EdgesFixture:
    """What ``interp_edges`` gives a test: edge scores, faithfulness curves and exact checks through the cache."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._session = session_of(request.config)
        self._record = record_of(request.node)

    def _subject(self, model: ModelArg, pairs: Pairs | None) -> Subject:
        return _subject(self._request, model, pairs, "interp_edges")

    def __call__(self, model: ModelArg = None, pairs: Pairs | None = None, method: str = "eap", **settings: Any) -> EdgeScores:
        """``edge_attribution()`` (settings: steps, metric, corruption, seed, noise_scale, batch_size), cached."""
        return self._session.edges(self._subject(model, pairs), self._record, method=method, **settings)

    def faithfulness(
        self, scores: EdgeScores, model: ModelArg = None, pairs: Pairs | None = None,
        fractions: Sequence[float] | None = None, **options: Any,
    ) -> FaithfulnessCurve:
        """``faithfulness_curve()`` of ``scores`` (options: ablation, metric, corruption, seed, noise_scale,
        batch_size), cached."""
        return self._session.faithfulness(self._subject(model, pairs), self._record, scores, fractions, **options)

    def verify(
        self, scores: EdgeScores, model: ModelArg = None, pairs: Pairs | None = None, k: int = 10, by: str = "abs",
        **options: Any,
    ) -> EdgeVerification:
        """``verify_top_edges()`` of ``scores``' top ``k`` edges (options: metric, corruption, seed, noise_scale,
        batch_size), cached."""
        return self._session.verify_edges(self._subject(model, pairs), self._record, scores, k, by, **options)


@pytest.fixture
def interp_edges(request: pytest.FixtureRequest) -> EdgesFixture:
    """``interp_edges(model=None, pairs=None, method="eap", *, steps=5, metric="logit_diff", corruption="str",
    seed=0, ...) -> EdgeScores``, ``interp_edges.faithfulness(scores, ...) -> FaithfulnessCurve`` and
    ``interp_edges.verify(scores, k=10, ...) -> EdgeVerification``: edge claims on the test's model and pairs (by
    default its markers'), through the result cache like ``interp_sweep``'s sweeps."""
    return EdgesFixture(request)
