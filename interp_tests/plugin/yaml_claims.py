"""YAML claims: localization claims written as data and collected by pytest.

pytest collects every YAML file under a directory named ``hypotheses`` and ``test_*.yaml`` files
elsewhere (the ini option ``interp_yaml_patterns`` changes this). Each claim becomes one test named
after it. Mistakes are found as pytest collects the file, before any model loads: the schema, and every
name that can be checked without a model (task and task option, component kind, corruption, metric,
direction, method, circuit test and ablation, the form of each label, a model path). A claim with mistakes
becomes one failed test that lists all of them, each with its line and fix; the session goes on. Claims map to library calls (no generated code): the sweep runs through the
same cached machinery as the ``interp_sweep`` fixture, so claims that share sweep settings share one
sweep, and an unchanged claim re-runs from the cache without a forward pass.

Schema::

    model: organism          # "organism", a model directory (relative to this file), a llama2.c
                             # checkpoint, or a hub id; required unless every claim has one.
                             # --interp-model overrides it.
    task: {name: ioi, n: 64, seed: 0, corrupt: S2}
                             # a registered task: name, n, seed, and the task's own options (here
                             # corrupt); or {file: pairs.jsonl, n: 32}: a .jsonl/.yaml pairs file
                             # relative to this file (n takes its first n pairs). Required unless every
                             # claim has one. --interp-n-prompts and --interp-seed override n and seed.
    claims:                  # required: a non-empty list
      - name: name mover 3.1 is detected    # required, unique in the file: the test's name
        marks: [slow]        # optional: pytest marks, as on a Python test (-m slow selects it): a name,
                             # or {name: arguments}, e.g. {xfail: {reason: "measured 0.45", strict: true}},
                             # {skip: {reason: ...}}, {skipif: {condition: "sys.platform == 'win32'", reason: ...}}
        model: ...           # optional: replaces the file's model for this claim
        task: {...}          # optional: replaces the file's task for this claim
        sweep:               # optional: patch() settings, defaults shown
          component: attn_head   # attn_head | attn | mlp | resid
          corruption: str        # str (symmetric token replacement) | gn (Gaussian noise)
          metric: logit_diff     # logit_diff | prob | kl | logprob | a name given to register_metric
                                 # (in a conftest.py: it must be registered when pytest collects the file)
          positions: all         # all | each | a token index | last | a span name of the task
          window: 1              # adjacent layers restored together (attn and mlp only)
          direction: denoise     # denoise | noise
          seed: 0                # Gaussian-noise seed
          noise_scale: 3.0       # Gaussian-noise scale, in SDs of the token embeddings
          batch_size: null       # rows per forward pass: memory only, never the numbers
          method: exact          # exact | attribution (AtP: a first-order estimate of every effect from
                                 # two forward passes and one backward pass)
          grad_drop: false       # attribution only: AtP*'s GradDrop (magnitudes, for ranking)
          verify_top: null       # attribution only: re-measure the k largest estimates exactly; the claim
          verify_tolerance: 0.1  # fails if one misses by more than this (metric units), else its checks
                                 # read the exact effects for those k
        robust:              # optional: the robustness grid that expect's `robust` checks, defaults
                             # shown; its other settings (component, positions, ...) are sweep's
          corruptions: [str, gn]
          metrics: [logit_diff, prob, kl]
          corrupt_tokens: null   # e.g. [S2, ABC]: one sweep per choice of the task's `corrupt`
                                 # option (registered tasks only)
        expect:              # required: at least one of detected, not_detected, negative, top_k,
                             # peak, baseline, stable, agree_with, robust
          detected: ["3.1"]      # each is at least sd SDs from the mean effect, on sign's side
          not_detected: ["3.2"]  # none is (under metric prob a passing claim warns: probability
                                 # cannot see negative components)
          negative: ["3.2"]      # each is at least sd SDs below the mean
          sign: positive         # positive | negative | both: the side for detected, not_detected,
                                 # stable, agree_with and robust
          sd: 2                  # the threshold in SDs over components (default 2)
          top_k: {labels: ["3.1"], k: 3}    # each is among the k largest mean effects
          peak: {layers: [2, 5]}            # the layer of the largest effect (max over positions
                                            # and heads) is in 2..4: half-open, like range
          baseline: {name: heads, atol: 0.01}   # every effect within atol of the baseline
                             # __baselines__/<file stem>/<name>.json (name defaults to the claim's);
                             # --interp-update-baselines writes it
          stable: ["3.1"]        # each is detected in at least min_detection_rate of 1000 bootstrap
          min_detection_rate: 0.9   # resamples of the prompts (default 0.9)
          agree_with: {metric: prob}   # another sweep: these sweep keys over this claim's sweep.
          min_spearman: 0.5      # The two effect maps' rank correlations and the Jaccard overlap of
          min_kendall: 0.4       # their detected sets are at least these (give one or more)
          min_jaccard: 0.5
          robust: ["3.1"]        # each is detected in at least at_least settings of the grid
          at_least: 4            # (default: all of them; a setting whose metric cannot be computed
                                 # counts as not detected)

A claim measures one of: a ``sweep`` (the default), a ``circuit`` or a ``path``::

      - name: heads 0.2 and 1.2 restore 80%
        circuit:             # circuit_patch() settings, defaults shown; nodes is required
          nodes: ["0.2", "1.2"]  # "L.H", "mlp.L", "attn.L", "resid.L", with "@P" for one position
          test: sufficiency      # sufficiency | necessity | faithfulness
          ablation: resample     # resample | mean | zero
          metric: logit_diff
          corruption: str
          universe: null         # what faithfulness ablates outside the circuit (default: every node
                                 # of the circuit's kinds)
          groups: {}             # named subsets of the nodes (completeness searches each)
          seed: 0
          noise_scale: 3.0
          batch_size: null
        expect:              # at least one of score, complete, minimal, baseline
          score: {at_least: 0.8}             # and/or at_most
          complete: {max_incompleteness: 0.1, samples: 20, greedy_steps: 3}
          minimal: {min_effect: 0.01, samples: 5}
          baseline: {name: ..., atol: 0.01}  # the score and each node's contribution
      - name: head 0.2 acts through 1.2's values
        path:                # path_patch() from every head; receivers is required
          receivers: ["1.2.v"]   # "L.H.q" | "L.H.k" | "L.H.v" | "L.H" | "logits"
          corruption: str
          metric: logit_diff
        expect: {detected: ["0.2"]}   # the sweep checks but robust and agree_with

      - name: EAP-IG finds the circuit's edges
        edges:               # edge_attribution() of every edge, defaults shown
          method: eap_ig         # eap | eap_ig
          steps: 5
          metric: logit_diff
          corruption: str
        expect:              # at least one of in_top, contains, faithful, cmd
          in_top: {edges: ["0.2->mlp.0"], k: 20}           # each among the k top-ranked (|score|)
          contains: {edges: ["0.2->mlp.0"], top: 50}       # the circuit of the top 50 contains these
          faithful: {at_fraction: 0.02, at_least: 0.8}     # MIB's faithfulness curve at that fraction
          cmd: {at_most: 0.1}                              # ... and its CMD

A Gaussian-noise sweep (``corruption: gn``, in ``sweep`` or ``robust``) that pushes the residual stream
off its clean distribution warns with the layers and norms (Zhang & Nanda 2024, section 3.2). A sweep
with ``window`` > 1 over mlp or attn also runs the single-layer sweep and reports its summed effects next
to the joint ones: the peak ratio is in the claims summary and in any failure (section 5).

Component labels are strings: quote them (``"3.1"``), since YAML reads ``9.10`` unquoted as the number
9.1. A collected YAML file holding prompt pairs (a list of records, or a mapping with ``pairs:`` and
no ``claims:``) is not a claims file and is skipped.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ..choices import (
    ABLATIONS,
    BUILTIN_METRICS,
    CIRCUIT_TESTS,
    CORRUPTIONS,
    DIRECTIONS,
    EDGE_METHODS,
    METHODS,
)
from ..circuits import Edge, parse_node
from ..claims import ClaimError, baseline_path, check_baseline, safe_name
from ..components import KINDS, parse_label
from ..errors import ComponentError, InterpError, SettingsError, did_you_mean
from ..signs import SIGNS
from ..specs import ORGANISM, TaskSpec, looks_like_path, resolve_model_spec
from .fixtures import ItemRecord, Subject, record_of, session_of

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from ..results import PatchResult
    from ..robustness import Grid

TOP_KEYS = ("model", "remote", "task", "claims")
CLAIM_KEYS = ("name", "model", "remote", "task", "sweep", "robust", "circuit", "path", "edges", "expect", "marks")
# What a claim measures: at most one of these blocks (none: a sweep with the defaults).
MEASURES = ("sweep", "circuit", "path", "edges")
TASK_FILE_KEYS = ("file", "n")
CHECK_KEYS = ("detected", "not_detected", "negative", "top_k", "peak", "baseline", "stable", "agree_with", "robust")
MINIMUMS = ("min_spearman", "min_kendall", "min_jaccard")
# Keys that qualify checks, and the checks they qualify.
APPLIES_TO = {
    "sign": ("detected", "not_detected", "stable", "agree_with", "robust"),
    "min_detection_rate": ("stable",),
    **{key: ("agree_with",) for key in MINIMUMS},
    "at_least": ("robust",),
}
EXPECT_KEYS = (*CHECK_KEYS, "sd", *APPLIES_TO)
# The checks of a `circuit:` claim, and the sweep checks a `path:` claim cannot make (it has no grid or twin).
CIRCUIT_CHECKS = ("score", "complete", "minimal", "baseline")
EDGE_CHECKS = ("in_top", "contains", "faithful", "cmd")
NOT_FOR_PATHS = ("robust", "agree_with", *MINIMUMS, "at_least")
WINDOWED_KINDS = ("mlp", "attn")
EXAMPLE = "model: organism\ntask: {name: ioi, n: 64}\nclaims:\n  - name: ...\n    expect: {detected: ['9.9']}"


# -- loading with line numbers -------------------------------------------------------------------


class _Map(dict):
    """A YAML mapping that remembers its line, each key's line and each scalar value's source text."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: dict[Any, int] = {}
        self.raw: dict[Any, str | None] = {}
        self.duplicates: list[tuple[Any, int, int]] = []


class _List(list):
    """A YAML sequence that remembers its line, each item's line and each scalar item's source text."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []
        self.raw: list[str | None] = []


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader whose mappings and sequences carry 1-based line numbers for error messages."""


def _raw(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    mapping = _Map(node.start_mark.line + 1)
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain word such as `name`, not a list or mapping", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in mapping:
            mapping.duplicates.append((key, line, mapping.lines[key]))
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
        mapping.raw[key] = _raw(value_node)
    return mapping


def _construct_list(loader: _LineLoader, node: yaml.SequenceNode) -> _List:
    sequence = _List(node.start_mark.line + 1)
    for item in node.value:
        sequence.append(loader.construct_object(item, deep=True))
        sequence.lines.append(item.start_mark.line + 1)
        sequence.raw.append(_raw(item))
    return sequence


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_list)


# -- schema --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One mistake in a claims file: where, what, and how to fix it."""

    line: int
    message: str
    claim: str | None = None
    claim_line: int | None = None  # the line of the claim it belongs to; None for the file's own problems


@dataclass(frozen=True)
class Expectation:
    """A claim's checks, each with the line it was written on."""

    detected: list[str] = field(default_factory=list)
    not_detected: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    sign: str = "positive"
    sd: float = 2.0
    top_k: tuple[list[str], int] | None = None
    peak: range | None = None
    baseline: tuple[str | None, float] | None = None
    stable: list[str] = field(default_factory=list)
    min_detection_rate: float = 0.9
    agree_with: dict[str, Any] | None = None
    min_spearman: float | None = None
    min_kendall: float | None = None
    min_jaccard: float | None = None
    robust: list[str] = field(default_factory=list)
    at_least: int | None = None
    score: dict[str, float] | None = None
    complete: dict[str, Any] | None = None
    minimal: dict[str, Any] | None = None
    in_top: dict[str, Any] | None = None
    contains: dict[str, Any] | None = None
    faithful: dict[str, Any] | None = None
    cmd: dict[str, Any] | None = None
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def needs_sweep(self) -> bool:
        """Whether a check reads the claim's own sweep (every check but ``robust``, which reads the grid)."""
        labels = self.detected or self.not_detected or self.negative or self.stable
        return bool(labels) or any(c is not None for c in (self.top_k, self.peak, self.baseline, self.agree_with))


@dataclass(frozen=True)
class MarkSpec:
    """A pytest mark written in a claim's ``marks:``: ``name``, or ``{name: args}`` with a mapping of keyword
    arguments, a list of positional ones or one value."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    line: int


@dataclass(frozen=True)
class Claim:
    """One validated claim: everything needed to run it, and the lines to blame when it cannot run."""

    name: str
    line: int
    model: str
    model_line: int
    task: TaskSpec
    task_line: int
    sweep: dict[str, Any]
    sweep_line: int
    robust: dict[str, Any]
    robust_line: int
    expect: Expectation
    circuit: dict[str, Any] | None = None
    path: dict[str, Any] | None = None
    edges: dict[str, Any] | None = None
    marks: tuple[MarkSpec, ...] = ()
    remote: bool = False  # `remote: true`: the model runs on NDIF, named by its repo id


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _is_non_negative(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_share(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_correlation(value: Any) -> bool:
    return _is_number(value) and -1 <= value <= 1


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_str(item) for item in value)


def _is_layer_range(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(x) for x in value) and 0 <= value[0] < value[1]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"the list {list(value)!r}"
    if value is None:
        return "nothing (null)"
    kind = {str: "the string", bool: "the boolean", int: "the number", float: "the number"}.get(type(value))
    return f"{kind or type(value).__name__} {value!r}"


# Per key: what a value must pass, and how to say what is expected.
FieldTypes = dict[str, tuple[Callable[[Any], bool], str]]
# What each sweep setting must be (its value is checked by patch() when the claim runs).
SWEEP_TYPES: FieldTypes = {
    "component": (_is_str, "a component kind: attn_head, attn, mlp or resid"),
    "corruption": (_is_str, "a corruption name: str or gn"),
    "metric": (_is_str, "a metric name: logit_diff, prob, kl, logprob, or one registered with register_metric"),
    "positions": (lambda v: _is_str(v) or _is_int(v), "all, each, a token index or a span name"),
    "window": (_is_positive_int, "a positive integer (e.g. window: 3)"),
    "direction": (_is_str, "denoise or noise"),
    "seed": (_is_int, "an integer (e.g. seed: 0)"),
    "noise_scale": (lambda v: _is_number(v) and v > 0, "a positive number (e.g. noise_scale: 3.0)"),
    "batch_size": (lambda v: v is None or _is_positive_int(v), "a positive integer, or null to size batches by memory"),
    "method": (_is_str, "exact or attribution"),
    "grad_drop": (lambda v: isinstance(v, bool), "true or false"),
    "verify_top": (lambda v: v is None or _is_positive_int(v), "a positive integer (e.g. verify_top: 5), or null"),
    "verify_tolerance": (_is_non_negative, "a number >= 0 (e.g. verify_tolerance: 0.1)"),
}
ROBUST_TYPES: FieldTypes = {
    "corruptions": (_is_names, "a non-empty list of corruption names (e.g. [str, gn])"),
    "metrics": (_is_names, "a non-empty list of metric names (e.g. [logit_diff, prob, kl])"),
    "corrupt_tokens": (lambda v: v is None or _is_names(v), "a non-empty list of the task's corrupt options (e.g. [S2, ABC])"),
}
SWEEP_KEYS = tuple(SWEEP_TYPES)
CIRCUIT_TYPES: FieldTypes = {
    "nodes": (_is_names, 'a non-empty list of node labels (e.g. ["9.9", "mlp.3@S2"])'),
    "test": (_is_str, "sufficiency, necessity or faithfulness"),
    "ablation": (_is_str, "resample, mean or zero"),
    "metric": (_is_str, "a metric name: logit_diff, prob or kl"),
    "corruption": (_is_str, "a corruption name: str or gn"),
    "universe": (_is_names, "a non-empty list of node labels: what faithfulness ablates outside the circuit"),
    "groups": (lambda v: isinstance(v, dict) and all(_is_str(k) and _is_names(g) for k, g in v.items()),
               'a mapping of group names to lists of the circuit\'s nodes (e.g. {movers: ["9.9", "9.6"]})'),
    "seed": (_is_int, "an integer (e.g. seed: 0)"),
    "noise_scale": (lambda v: _is_number(v) and v > 0, "a positive number (e.g. noise_scale: 3.0)"),
    "batch_size": (lambda v: v is None or _is_positive_int(v), "a positive integer, or null to size batches by memory"),
}
PATH_TYPES: FieldTypes = {
    "receivers": (_is_names, 'a non-empty list of receiver inputs (e.g. ["9.9.q", "logits"])'),
    **{key: SWEEP_TYPES[key] for key in ("corruption", "metric", "seed", "noise_scale", "batch_size")},
}
SCORE_TYPES: FieldTypes = {
    "at_least": (_is_number, "a number (e.g. at_least: 0.8)"),
    "at_most": (_is_number, "a number (e.g. at_most: 0.1)"),
}
COMPLETE_TYPES: FieldTypes = {
    "max_incompleteness": (_is_non_negative, "a number >= 0, a share of the full-vs-empty gap (e.g. 0.1)"),
    "samples": (lambda v: _is_int(v) and v >= 0, "a number of random subsets >= 0 (e.g. samples: 20)"),
    "greedy_steps": (lambda v: _is_int(v) and v >= 0, "a number of greedy steps >= 0 (e.g. greedy_steps: 3)"),
}
EDGES_TYPES: FieldTypes = {
    "method": (_is_str, "eap or eap_ig"),
    "steps": (_is_positive_int, "a positive integer: EAP-IG's interpolation steps (e.g. steps: 5)"),
    **{key: SWEEP_TYPES[key] for key in ("corruption", "metric", "seed", "noise_scale", "batch_size")},
}
IN_TOP_TYPES: FieldTypes = {
    "edges": (_is_names, 'a non-empty list of edge labels (e.g. ["5.5->9.9.q"])'),
    "k": (_is_positive_int, "a positive integer (e.g. k: 20)"),
}
CONTAINS_TYPES: FieldTypes = {
    "edges": IN_TOP_TYPES["edges"],
    "top": (_is_positive_int, "a positive integer: the circuit of that many top-ranked edges (e.g. top: 50)"),
}
FAITHFUL_TYPES: FieldTypes = {
    "at_fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a share of the edges in (0, 1], one of the curve's (e.g. 0.02)"),
    "at_least": (_is_number, "a number (e.g. at_least: 0.8)"),
}
CMD_TYPES: FieldTypes = {"at_most": (_is_non_negative, "a number >= 0 (e.g. at_most: 0.1)")}
MINIMAL_TYPES: FieldTypes = {
    "min_effect": (_is_non_negative, "a number >= 0, a share of the full-vs-empty gap (e.g. 0.01)"),
    "samples": (lambda v: _is_int(v) and v >= 0, "a number of random subsets >= 0 (e.g. samples: 5)"),
}
# Per measure, its checks: (key, what the check's mapping takes, the keys it needs, an example).
MEASURE_CHECKS: dict[str, list[tuple[str, FieldTypes, tuple[str, ...], str]]] = dict(
    circuit=[
        ("score", SCORE_TYPES, (), "{at_least: 0.8}"),
        ("complete", COMPLETE_TYPES, (), "{max_incompleteness: 0.1}"),
        ("minimal", MINIMAL_TYPES, (), "{min_effect: 0.01}"),
    ],
    edges=[
        ("in_top", IN_TOP_TYPES, ("edges", "k"), '{edges: ["5.5->9.9.q"], k: 20}'),
        ("contains", CONTAINS_TYPES, ("edges", "top"), '{edges: ["5.5->9.9.q"], top: 50}'),
        ("faithful", FAITHFUL_TYPES, ("at_fraction", "at_least"), "{at_fraction: 0.02, at_least: 0.8}"),
        ("cmd", CMD_TYPES, ("at_most",), "{at_most: 0.1}"),
    ],
)
ATTRIBUTION_KEYS = ("grad_drop", "verify_top", "verify_tolerance")
# What each qualifying key of `expect` must be.
EXPECT_TYPES: FieldTypes = {
    "sign": (lambda v: v in SIGNS, "positive, negative or both"),
    "sd": (_is_non_negative, "a number >= 0 (e.g. sd: 2)"),
    "min_detection_rate": (_is_share, "a share in 0..1 (e.g. min_detection_rate: 0.9)"),
    "min_spearman": (_is_correlation, "a number in -1..1 (e.g. min_spearman: 0.5)"),
    "min_kendall": (_is_correlation, "a number in -1..1 (e.g. min_kendall: 0.4)"),
    "min_jaccard": (_is_share, "a number in 0..1 (e.g. min_jaccard: 0.5)"),
    "at_least": (_is_positive_int, "a positive integer: in how many of the grid's settings (e.g. at_least: 4)"),
}


def _metric_names() -> tuple[str, ...]:
    """The built-in metrics and those registered so far. A user metric is registered through
    ``interp_tests.metrics`` (``register_metric``), in a conftest.py that pytest imports before it collects the
    claims; when nothing has imported that module, no metric is registered, and it is not imported here (it
    loads torch)."""
    metrics = sys.modules.get("interp_tests.metrics")
    return (*BUILTIN_METRICS, *(metrics.registered_metrics() if metrics is not None else ()))


# Per block of settings: the settings that name one of a fixed set of choices, with what they name.
Choices = dict[str, tuple[Sequence[str], str]]


def _choices(block: str) -> Choices:
    common: Choices = {"corruption": (CORRUPTIONS, "a corruption"), "metric": (_metric_names(), "a metric")}
    return {
        "sweep": {"component": (KINDS, "a component kind"), **common, "direction": (DIRECTIONS, "a direction"),
                  "method": (METHODS, "a patching method")},
        "circuit": {"test": (CIRCUIT_TESTS, "a circuit test"), "ablation": (ABLATIONS, "an ablation"), **common},
        "path": common,
        "edges": {"method": (EDGE_METHODS, "an edge-attribution method"), **common},
        "robust": {"corruptions": common["corruption"], "metrics": common["metric"]},
    }[block]


METRIC_ADVICE = (" A user metric must be registered (interp_tests.register_metric) by the time pytest collects this "
                 "file, e.g. at the top of a conftest.py.")
# The sweep labels that `expect` lists, and the checks whose mapping lists them under `labels`.
LABEL_KEYS = ("detected", "not_detected", "negative", "stable", "robust")


def _label_example(kind: str, each: bool) -> str:
    """How labels of ``kind`` are written, e.g. "'L.H' such as '0.1'" ('@P' appended under positions: each)."""
    form, example = ("L.H", "0.1") if kind == "attn_head" else (f"{kind}.L", f"{kind}.0")
    return f"'{form}@P' such as '{example}@3'" if each else f"'{form}' such as '{example}'"


def _plain(value: Any) -> Any:
    """A loaded YAML value without the line bookkeeping: plain dicts and lists, for pytest's marks."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# Marks that configure a Python test function, which a YAML claim is not.
FUNCTION_MARKS = {
    "parametrize": "a claim has no parameters: write one claim per setting",
    "usefixtures": "a claim uses no fixtures: it runs through the same cached session as the interp fixtures",
}
MARKS_EXAMPLE = '[slow] or [{xfail: {reason: "measured 0.45", strict: true}}]'


class _Checker:
    """Validates one claims file, collecting every problem instead of stopping at the first.

    Each method returns the validated value, or None when it found a problem (already recorded).
    ``where`` strings name the place in the file, e.g. "`expect` of claim 'x'".
    """

    def __init__(self, path: Path, n_prompts: int | None = None) -> None:
        self.path = path
        self.n_prompts = n_prompts  # --interp-n-prompts, which gives every task its n
        self.problems: list[Problem] = []
        self.claim: str | None = None
        self.claim_line: int | None = None

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(line, message, self.claim, self.claim_line))

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[bool]]:
        """Yields a one-item list that holds True at exit when no problem was added inside the block."""
        before, clean = len(self.problems), [False]
        yield clean
        clean[0] = len(self.problems) == before

    def keys(self, mapping: _Map, where: str, allowed: Sequence[str] | None, required: Sequence[str] = ()) -> None:
        """Report duplicate, unknown (unless ``allowed`` is None) and missing keys."""
        for key, line, first in mapping.duplicates:
            message = f"{where} gives `{key}` twice (first on line {first}); YAML keeps only the last. Remove one."
            self.problem(line, message)
        for key in mapping if allowed is not None else ():
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                message = f"unknown key `{key}` in {where}.{hint} Allowed keys: {', '.join(allowed)}."
                self.problem(mapping.lines[key], message)
        for key in required:
            if key not in mapping:
                self.problem(mapping.line, f"{where} lacks the required key `{key}`.")

    def mapping(self, value: Any, line: int, where: str, example: str) -> bool:
        if isinstance(value, _Map):
            return True
        self.problem(line, f"{where} must be a mapping (e.g. {example}), not {_shown(value)}.")
        return False

    def field(self, mapping: _Map, key: str, where: str, accepts: Callable[[Any], bool], expected: str) -> None:
        """Report ``mapping[key]``, when given, unless ``accepts`` takes it."""
        if key in mapping and not accepts(mapping[key]):
            self.problem(mapping.lines[key], f"`{key}` in {where} must be {expected}, not {_shown(mapping[key])}.")

    def settings(self, mapping: _Map, where: str, types: FieldTypes) -> None:
        """Report keys that ``types`` does not list and values it does not accept."""
        self.keys(mapping, where, tuple(types))
        for key, (accepts, expected) in types.items():
            self.field(mapping, key, where, accepts, expected)

    def choices(self, mapping: _Map, where: str, choices: Choices) -> None:
        """Report each value of ``mapping`` (a string, or a list of them) that is not one of its key's choices."""
        for key, (valid, what) in choices.items():
            value = mapping.get(key)
            items = zip(value, value.lines) if isinstance(value, _List) else [(value, mapping.lines.get(key))]
            for item, line in items:
                if _is_str(item) and item not in valid:
                    advice = METRIC_ADVICE if what == "a metric" else ""
                    self.problem(
                        line,
                        f"`{key}` in {where}: {item!r} is not {what}.{did_you_mean(item, valid)} Choose from "
                        f"{', '.join(valid)}.{advice}",
                    )

    def parsed(self, value: Any, line: int | None, key: str, where: str, parse: Callable[[str], Any]) -> None:
        """Report each label of ``value`` (a string on ``line``, or a list of them) that ``parse`` refuses."""
        items = zip(value, value.lines) if isinstance(value, _List) else [(value, line)]
        for item, item_line in items:
            if isinstance(item, str):
                try:
                    parse(item)
                except ComponentError as error:
                    self.problem(item_line, f"`{key}` in {where}: {error}")

    def component_labels(self, expect: Any, kind: str, positions: Any, where: str) -> None:
        """Report labels in ``expect`` that cannot name a component of the claim's sweep: not a label, another
        kind's (a head in an MLP sweep), or with a position where the sweep has none or without one where it
        does (the kind only when the sweep's is valid). Whether the layer and head exist is known once the model
        loads."""
        if not isinstance(expect, _Map):
            return
        each = positions == "each"
        places = [(expect, key) for key in LABEL_KEYS if key in expect]
        if isinstance(expect.get("top_k"), _Map) and "labels" in expect["top_k"]:
            places.append((expect["top_k"], "labels"))
        for mapping, key in places:
            value = mapping[key]
            items = zip(value, value.lines) if isinstance(value, _List) else [(value, mapping.lines[key])]
            for label, line in items:
                if not isinstance(label, str):
                    continue  # labels() said how to write it
                try:
                    label_kind, _, _, position = parse_label(label)
                except ComponentError as error:
                    self.problem(line, f"`{key}` in {where}: {error}")
                    continue
                if kind not in KINDS:
                    continue  # choices() reported the kind
                if label_kind != kind:
                    self.problem(
                        line,
                        f"`{key}` in {where} lists {label!r}, a label of {label_kind} components, but the claim measures "
                        f"{kind} components: name them as {_label_example(kind, each)}, or set the sweep's component.",
                    )
                elif each and position is None:
                    self.problem(
                        line,
                        f"`{key}` in {where} lists {label!r} without a position, but the sweep patches each position "
                        f"(positions: each): append '@P', the token index (e.g. '{label}@3').",
                    )
                elif not each and position is not None:
                    self.problem(
                        line,
                        f"`{key}` in {where} lists {label!r} with a position, which only a sweep with positions: each "
                        f"has: drop '@{position}', or give the sweep positions: each.",
                    )

    def model(self, mapping: _Map, where: str) -> None:
        """Report a model that cannot load: a path that does not exist, or a near miss of the organism's name.
        Any other name may be a hub id, known only when it loads."""
        spec = mapping.get("model")
        if not _is_str(spec) or spec == ORGANISM:
            return
        if Path(resolve_model_spec(spec, self.path.parent)).expanduser().exists():
            return
        line = mapping.lines["model"]
        if looks_like_path(spec):
            self.problem(line, f"`model` in {where}: no model at {self.path.parent / Path(spec).expanduser()}: the path "
                         "does not exist. Paths are relative to this YAML file.")
        elif "/" not in spec and did_you_mean(spec, [ORGANISM]):
            self.problem(line, f"`model` in {where}: {spec!r} is not a model directory next to this file, and a hub id "
                         f"so close to the organism's name is unlikely.{did_you_mean(spec, [ORGANISM])}")

    def marks(self, value: Any, line: int, where: str) -> tuple[MarkSpec, ...] | None:
        """``marks:`` as mark specs; whether each name is registered is pytest's to say, at collection."""
        if not isinstance(value, _List):
            self.problem(line, f"{where} must be a list of pytest marks (e.g. {MARKS_EXAMPLE}), not {_shown(value)}.")
            return None
        marks = []
        with self.counting() as clean:
            for item, item_line in zip(value, value.lines):
                if isinstance(item, str):
                    name, argument = item.strip(), None
                elif isinstance(item, _Map) and len(item) == 1:
                    name, argument = next(iter(item.items()))
                else:
                    self.problem(item_line, f"{where} lists {_shown(item)}: a mark is a name (slow) or a mapping of one "
                                 "name to its arguments ({xfail: {reason: ..., strict: true}}).")
                    continue
                if not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
                    self.problem(item_line, f"{where} lists the mark name {name!r}: a mark's name is a Python identifier "
                                 "(e.g. slow).")
                    continue
                if name in FUNCTION_MARKS:
                    self.problem(item_line, f"{where}: `{name}` configures a Python test function; {FUNCTION_MARKS[name]}.")
                    continue
                kwargs = _plain(argument) if isinstance(argument, _Map) else {}
                args = tuple(_plain(argument)) if isinstance(argument, _List) else () if argument is None or kwargs else (argument,)
                if "raises" in kwargs:
                    self.problem(item_line, f"{where}: `raises` of `{name}` takes exception classes, which a YAML file "
                                 "cannot name; give a `reason` instead.")
                    continue
                marks.append(MarkSpec(name, args, kwargs, item_line))
        return tuple(marks) if clean[0] else None

    def labels(self, mapping: _Map, key: str, where: str) -> list[str] | None:
        """``mapping[key]`` as a list of component labels; a bare string counts as a list of one."""
        value, line, what = mapping[key], mapping.lines[key], f"`{key}` in {where}"
        if isinstance(value, str):
            return [value]
        if not isinstance(value, _List) and not _is_number(value):
            example = '["9.9", "mlp.3"]'
            self.problem(line, f"{what} must be a list of component labels (e.g. {example}), not {_shown(value)}.")
            return None
        items = zip(value, value.raw, value.lines) if isinstance(value, _List) else [(value, mapping.raw[key], line)]
        with self.counting() as clean:
            for item, text, item_line in items:
                if _is_number(item):
                    self.problem(
                        item_line,
                        f"{what} lists {text} unquoted, which YAML reads as the number {item!r}; component labels "
                        f'are strings. Quote it: "{text}".',
                    )
                elif not isinstance(item, str):
                    self.problem(item_line, f'{what} must list component labels such as "9.9", not {_shown(item)}.')
            if not value:
                self.problem(line, f"{what} is empty: list at least one component label, or remove the key.")
        return list(value) if clean[0] else None

    def task(self, value: Any, line: int, where: str) -> TaskSpec | None:
        if not self.mapping(value, line, where, "{name: ioi, n: 64} or {file: pairs.jsonl}"):
            return None
        if ("name" in value) == ("file" in value):
            message = f"{where} needs exactly one of `name` (a registered task) or `file` (a pairs file)."
            self.problem(value.line, message)
            return None
        with self.counting() as clean:
            self.keys(value, where, TASK_FILE_KEYS if "file" in value else None)
            self.field(value, "n", where, _is_positive_int, "a positive integer")
            self.field(value, "seed", where, _is_int, "an integer")
            self.field(value, "name", where, _is_str, "a task name such as ioi")
            self.field(value, "file", where, _is_str, "a path")
            if _is_str(value.get("file")) and not _is_file(self.path.parent / value["file"]):
                self.problem(
                    value.lines["file"],
                    f"{where}: no pairs file at {self.path.parent / value['file']}. "
                    "Paths are relative to this YAML file.",
                )
        if not clean[0]:
            return None
        if "file" in value:
            return TaskSpec(file=self.path.parent / value["file"], n=value.get("n"))
        variant = {k: v for k, v in value.items() if k not in ("name", "n", "seed")}
        spec = TaskSpec(name=value["name"], n=value.get("n"), seed=value.get("seed"), variant=variant)
        return spec if self._task_values(spec, value, where) else None

    def _task_values(self, spec: TaskSpec, value: _Map, where: str) -> bool:
        """Report an unknown task, each option its generator does not take and a missing ``n``, each at its line
        (the generator's signature says; nothing is generated). True when there is none."""
        with self.counting() as clean:
            try:
                TaskSpec(name=spec.name, n=1).check()  # any n: the name alone
            except SettingsError as error:
                self.problem(value.lines["name"], f"{where}: {error}")
                return False
            for key, option in spec.variant.items():
                try:
                    TaskSpec(name=spec.name, n=1, variant={key: option}).check()
                except SettingsError as error:
                    self.problem(value.lines[key], f"{where}: {error}")
            try:
                TaskSpec(name=spec.name, n=spec.n if self.n_prompts is None else self.n_prompts).check()
            except SettingsError as error:
                self.problem(value.line, f"{where}: {error}")
        return clean[0]

    def sweep(self, value: Any, line: int, where: str) -> dict[str, Any] | None:
        if not self.mapping(value, line, where, "{component: attn_head, metric: logit_diff}"):
            return None
        with self.counting() as clean:
            self.settings(value, where, SWEEP_TYPES)
            self.choices(value, where, _choices("sweep"))
            kind = value.get("component", "attn_head")
            if _is_positive_int(value.get("window")) and value["window"] > 1 and kind in KINDS and kind not in WINDOWED_KINDS:
                self.problem(
                    value.lines["window"],
                    f"`window` in {where}: a sliding window restores adjacent layers together, which is defined for "
                    f"{' and '.join(WINDOWED_KINDS)} components, not {kind}. Use window: 1, or component: mlp or attn.",
                )
        return {k: v for k, v in value.items() if k in SWEEP_KEYS} if clean[0] else None

    def block(
        self, value: Any, line: int, where: str, measure: str, types: FieldTypes, required: str | None, example: str
    ) -> dict[str, Any] | None:
        """A `circuit:`, `path:` or `edges:` block (``measure``): known keys, checked values, the required one
        present, circuit nodes that parse."""
        if not self.mapping(value, line, where, example):
            return None
        labels = [key for key in ("nodes", "universe", "receivers") if key in types]
        with self.counting() as clean:
            self.keys(value, where, tuple(types), () if required is None else (required,))
            for key, (accepts, expected) in types.items():
                if key in labels and key in value and isinstance(value[key], list):
                    self.labels(value, key, where)  # says which item is wrong, and how
                else:
                    self.field(value, key, where, accepts, expected)
            self.choices(value, where, _choices(measure))
            if measure == "circuit":
                for key in ("nodes", "universe"):
                    self.parsed(value.get(key), value.lines.get(key), key, where, parse_node)
                groups = value.get("groups")
                for group in groups.values() if isinstance(groups, _Map) else ():
                    self.parsed(group, groups.line, "groups", where, parse_node)
        if not clean[0]:
            return None
        return {k: (list(v) if isinstance(v, list) else {n: list(g) for n, g in v.items()} if isinstance(v, dict) else v)
                for k, v in value.items()}

    def robust(self, value: Any, line: int, where: str) -> dict[str, Any] | None:
        value = _Map(line) if value is None else value
        if not self.mapping(value, line, where, "{corruptions: [str, gn], metrics: [logit_diff, prob]}"):
            return None
        with self.counting() as clean:
            self.settings(value, where, ROBUST_TYPES)
            self.choices(value, where, _choices("robust"))
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()} if clean[0] else None

    def measure_expect(self, value: Any, line: int, where: str, measure: str) -> Expectation | None:
        """The checks of a circuit claim (score, complete, minimal, baseline) or an edges claim (in_top,
        contains, faithful, cmd)."""
        checks = MEASURE_CHECKS[measure]
        allowed = [key for key, *_ in checks] + (["baseline"] if measure == "circuit" else [])
        if not self.mapping(value, line, where, f"{{{checks[0][0]}: {checks[0][3]}}}"):
            return None
        fields: dict[str, Any] = {"lines": dict(value.lines)}
        with self.counting() as clean:
            self.keys(value, where, allowed)
            if not any(key in value for key in allowed):
                self.problem(value.line, f"{where} checks nothing: give at least one of {', '.join(allowed)}.")
            for key, types, needs, example in checks:
                if key not in value:
                    continue
                what = f"`{key}` in {where}"
                entry = _Map(value.lines[key]) if value[key] is None else value[key]
                if self.mapping(entry, value.lines[key], what, example):
                    with self.counting() as entry_clean:
                        self.keys(entry, what, tuple(types), needs)
                        for name, (accepts, expected) in types.items():
                            if name == "edges" and isinstance(entry.get(name), list):
                                if self.labels(entry, name, what) is not None:
                                    self.parsed(entry[name], entry.lines[name], name, what, Edge.parse)
                            else:
                                self.field(entry, name, what, accepts, expected)
                    if key == "score" and not entry:
                        self.problem(value.lines[key], f"{what} needs at_least and/or at_most (e.g. {example}).")
                    if entry_clean[0]:
                        fields[key] = {k: list(v) if isinstance(v, list) else v for k, v in entry.items()}
            if "baseline" in value and measure == "circuit":
                fields["baseline"] = self._baseline(value["baseline"], value.lines["baseline"], f"`baseline` in {where}")
        return Expectation(**fields) if clean[0] else None

    def expect(self, value: Any, line: int, where: str, *, path: bool = False) -> Expectation | None:
        if not self.mapping(value, line, where, "{detected: ['9.9'], sd: 2}"):
            return None
        fields: dict[str, Any] = {"lines": dict(value.lines)}
        with self.counting() as clean:
            for key in CIRCUIT_CHECKS[:3]:
                if key in value:
                    self.problem(
                        value.lines[key],
                        f"`{key}` in {where} checks a circuit: give the claim a `circuit:` block (nodes, test, ...), "
                        "or check the sweep's components with detected, top_k, ...",
                    )
            for key in NOT_FOR_PATHS if path else ():
                if key in value:
                    self.problem(
                        value.lines[key],
                        f"`{key}` in {where} needs a robustness grid or a second sweep, which a path-patching claim "
                        "does not have: use detected, not_detected, negative, top_k, peak, stable or baseline.",
                    )
            self.keys(value, where, [*EXPECT_KEYS, *CIRCUIT_CHECKS[:3]])
            if not any(key in value for key in CHECK_KEYS) and all(key in EXPECT_KEYS for key in value):
                self.problem(value.line, f"{where} checks nothing: give at least one of {', '.join(CHECK_KEYS)}.")
            for key in ("detected", "not_detected", "negative", "stable", "robust"):
                if key in value:
                    fields[key] = self.labels(value, key, where)
            for key, (accepts, expected) in EXPECT_TYPES.items():
                self.field(value, key, where, accepts, expected)
            for key, checks in APPLIES_TO.items():
                if key in value and not any(check in value for check in checks):
                    fix = "use `negative:` for components below the mean" if key == "sign" else f"add `{checks[0]}:`"
                    names = " and ".join([", ".join(checks[:-1]), checks[-1]] if len(checks) > 1 else checks)
                    self.problem(
                        value.lines[key],
                        f"`{key}` in {where} applies to {names}, and there is none; {fix}, or remove `{key}`.",
                    )
            fields.update({key: value[key] for key in EXPECT_TYPES if key in value})
            for key, check in (("top_k", self._top_k), ("peak", self._peak), ("baseline", self._baseline)):
                if key in value:
                    fields[key] = check(value[key], value.lines[key], f"`{key}` in {where}")
            if "agree_with" in value:
                agree_line, what = value.lines["agree_with"], f"`agree_with` in {where}"
                fields["agree_with"] = self.sweep(value["agree_with"], agree_line, what)
                if not any(key in value for key in MINIMUMS):
                    minimums = ", ".join(MINIMUMS)
                    self.problem(agree_line, f"{what} needs a minimum to check: give {minimums} (e.g. min_spearman: 0.5).")
        return Expectation(**fields) if clean[0] else None

    def _top_k(self, value: Any, line: int, where: str) -> tuple[list[str], int] | None:
        if not self.mapping(value, line, where, "{labels: ['9.9'], k: 3}"):
            return None
        with self.counting() as clean:
            self.keys(value, where, ("labels", "k"), ("labels", "k"))
            labels = self.labels(value, "labels", where) if "labels" in value else None
            self.field(value, "k", where, _is_positive_int, "a positive integer")
        return (labels, value["k"]) if clean[0] and labels is not None else None

    def _peak(self, value: Any, line: int, where: str) -> range | None:
        if not self.mapping(value, line, where, "{layers: [2, 5]}"):
            return None
        with self.counting() as clean:
            self.keys(value, where, ("layers",), ("layers",))
            expected = "[first, end] with 0 <= first < end, half-open like range ([2, 5] means layers 2, 3 and 4)"
            self.field(value, "layers", where, _is_layer_range, expected)
        return range(*value["layers"]) if clean[0] else None

    def _baseline(self, value: Any, line: int, where: str) -> tuple[str | None, float] | None:
        value = _Map(line) if value is None else value
        if not self.mapping(value, line, where, "{atol: 0.01} or {name: heads, atol: 0.01}"):
            return None
        with self.counting() as clean:
            self.keys(value, where, ("name", "atol"))
            self.field(value, "name", where, _is_str, "a file name")
            self.field(value, "atol", where, _is_non_negative, "a number >= 0 (e.g. atol: 0.01)")
        return (value.get("name"), float(value.get("atol", 0.01))) if clean[0] else None


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a path the OS cannot even look up (a name too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _is_pairs_file(data: Any) -> bool:
    return isinstance(data, list) or (isinstance(data, dict) and "pairs" in data and "claims" not in data)


def parse_claims(text: str, path: Path, *, n_prompts: int | None = None) -> tuple[list[Claim], list[Problem]] | None:
    """The valid claims of a claims file and every problem found, or None for a prompt-pairs file.

    Everything that can be checked without a model is: the schema, and each name of a task, task option,
    component kind, corruption, metric, direction, method, circuit test or ablation, and the form of each label.
    ``n_prompts`` is ``--interp-n-prompts``, which gives every task its n.
    """
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        parts = (getattr(error, "context", None), getattr(error, "problem", None))
        what = " ".join(str(part) for part in parts if part) or str(error)
        return [], [Problem(mark.line + 1 if mark else 1, f"invalid YAML: {what}. Fix the syntax at this line.")]
    except RecursionError:
        message = "the YAML nests lists or mappings too deeply to read; a claims file needs only a few levels."
        return [], [Problem(1, message)]
    if _is_pairs_file(data):
        return None
    check = _Checker(path, n_prompts)
    if not isinstance(data, _Map):
        message = f"a claims file is a mapping with model, task and claims, not {_shown(data)}. For example:\n{EXAMPLE}"
        check.problem(1, message)
        return [], check.problems
    check.keys(data, "the file", TOP_KEYS, ("claims",))
    check.field(data, "model", "the file", _is_str, "a name or path such as organism")
    check.model(data, "the file")
    check.field(data, "remote", "the file", _is_bool, "true (run the model on NDIF, by its repo id) or false")
    task = check.task(data["task"], data.lines["task"], "`task`") if "task" in data else None
    claims_value = data.get("claims")
    if "claims" in data and not (isinstance(claims_value, _List) and claims_value):
        check.problem(
            data.lines["claims"],
            f"`claims` must be a non-empty list of claims, not {_shown(claims_value)}. For example:\n{EXAMPLE}",
        )
        return [], check.problems
    claims, seen = [], {}
    without: dict[str, list[str]] = {"model": [], "task": []}
    for index, (item, line) in enumerate(zip(claims_value or [], getattr(claims_value, "lines", []))):
        claim = _claim(check, item, line, f"claim #{index + 1}", seen, without, data, task)
        if claim is not None:
            claims.append(claim)
    check.claim, check.claim_line = None, None
    for key, example in (("model", "model: organism"), ("task", "task: {name: ioi, n: 64}")):
        if without[key] and key not in data:
            names = ", ".join(repr(name) for name in without[key])
            advice = f"give `{key}:` at the top of the file (e.g. {example}) or in each claim"
            check.problem(1, f"no `{key}` for the claims {names}: {advice}.")
    return claims, check.problems


def _claim(
    check: _Checker, item: Any, line: int, where: str, seen: dict[str, int],
    without: dict[str, list[str]], top: _Map, top_task: TaskSpec | None,
) -> Claim | None:
    """One claim, with the file's model and task unless it gives its own; names seen so far are in ``seen``."""
    check.claim, check.claim_line = None, line
    if not check.mapping(item, line, where, "{name: ..., sweep: {...}, expect: {...}}"):
        return None
    name = item.get("name")
    if _is_str(name):
        check.claim = name = name.strip()
        where = f"claim {name!r}"
    with check.counting() as clean:
        check.keys(item, where, CLAIM_KEYS, ("name", "expect"))
        check.field(item, "name", where, _is_str, "a sentence naming the claim")
        if check.claim in seen:
            first = seen[check.claim]
            message = f"two claims are named {name!r} (the first on line {first}); names must be unique in a file."
            check.problem(item.lines["name"], message)
        elif check.claim:
            seen[check.claim] = item.lines["name"]
        check.field(item, "model", where, _is_str, "a name or path such as organism")
        check.model(item, where)
        check.field(item, "remote", where, _is_bool, "true (run the model on NDIF, by its repo id) or false")
        task, sweep, robust, expect, circuit, path = top_task, {}, {}, None, None, None
        marks = check.marks(item["marks"], item.lines["marks"], f"`marks` of {where}") if "marks" in item else ()
        if "task" in item:
            task = check.task(item["task"], item.lines["task"], f"`task` of {where}")
        given = [key for key in MEASURES if key in item]
        if len(given) > 1:
            check.problem(
                item.lines[given[1]],
                f"{where} gives both `{given[0]}` and `{given[1]}`: a claim measures one thing. Split it into two claims.",
            )
        if "robust" in item and any(key in item for key in MEASURES[1:]):
            check.problem(item.lines["robust"], f"`robust` of {where} is a grid of sweeps; it does not apply to circuit, path or edges claims.")
        if "sweep" in item:
            sweep = check.sweep(item["sweep"], item.lines["sweep"], f"`sweep` of {where}")
        if "circuit" in item:
            circuit = check.block(
                item["circuit"], item.lines["circuit"], f"`circuit` of {where}", "circuit", CIRCUIT_TYPES, "nodes",
                '{nodes: ["9.9", "9.6"], test: sufficiency}',
            )
        if "path" in item:
            path = check.block(
                item["path"], item.lines["path"], f"`path` of {where}", "path", PATH_TYPES, "receivers",
                '{receivers: ["9.9.q"]}',
            )
        edges = None
        if "edges" in item:
            value = _Map(item.lines["edges"]) if item["edges"] is None else item["edges"]
            edges = check.block(
                value, item.lines["edges"], f"`edges` of {where}", "edges", EDGES_TYPES, None, "{method: eap_ig, steps: 5}"
            )
        if "robust" in item:
            robust = check.robust(item["robust"], item.lines["robust"], f"`robust` of {where}")
            if not (isinstance(item.get("expect"), _Map) and "robust" in item["expect"]):
                check.problem(
                    item.lines["robust"],
                    f"`robust` of {where} sets up a robustness grid, but `expect` has no `robust:` check of it. "
                    "Add one (e.g. robust: [\"9.9\"], at_least: 4) or remove this key.",
                )
        if "expect" in item:
            measure = next((key for key in ("circuit", "edges") if key in item), None)
            if measure is not None:
                expect = check.measure_expect(item["expect"], item.lines["expect"], f"`expect` of {where}", measure)
            else:
                expect = check.expect(item["expect"], item.lines["expect"], f"`expect` of {where}", path="path" in item)
                settings = item.get("sweep") if isinstance(item.get("sweep"), _Map) else {}
                kind, positions = ("attn_head", "all") if "path" in item else (
                    settings.get("component", "attn_head"), settings.get("positions", "all"))
                check.component_labels(item["expect"], kind, positions, f"`expect` of {where}")
    for key in ("model", "task"):
        if key not in item and key not in top:
            without[key].append(check.claim or where)
    model = item.get("model", top.get("model"))
    if not clean[0] or task is None or sweep is None or robust is None or expect is None or not _is_str(model):
        return None
    if ("circuit" in item and circuit is None) or ("path" in item and path is None) or ("edges" in item and edges is None):
        return None
    if marks is None:
        return None
    return Claim(
        name=name, line=line, model=model, model_line=item.lines.get("model", top.lines.get("model", line)),
        task=task, task_line=item.lines.get("task", top.lines.get("task", line)),
        sweep=sweep, sweep_line=next((item.lines[key] for key in MEASURES if key in item), line),
        robust=robust, robust_line=item.lines.get("robust", expect.lines.get("robust", line)), expect=expect,
        circuit=circuit, path=path, edges=edges, marks=marks,
        remote=bool(item.get("remote", top.get("remote", False))),
    )


# -- pytest nodes --------------------------------------------------------------------------------


class ClaimSetupError(InterpError):
    """A claim that cannot run (unknown task, bad sweep setting, missing component), with file and line."""


class ClaimFailures(AssertionError):
    """Every failed check of one claim, each report prefixed with the line that states the check, then
    ``context`` that bears on all of them (a sliding window's comparison with single layers)."""

    def __init__(self, failures: list[tuple[str, AssertionError]], context: Sequence[str] = ()) -> None:
        super().__init__("\n\n".join([*(f"{where}: {error}" for where, error in failures), *context]))
        self.failures = [error for _, error in failures]


@contextlib.contextmanager
def _blame(where: str) -> Iterator[None]:
    """Errors raised at ``where`` as claim reports: bad settings, and sweeps that verify their own estimates."""
    try:
        yield
    except ClaimSetupError:  # already blamed on its line (a model or pairs made lazily inside a sweep)
        raise
    except InterpError as error:
        raise ClaimSetupError(f"{where}: {error}") from error
    except ClaimError as error:  # an attribution estimate that failed its exact verification (verify_top)
        raise ClaimFailures([(where, error)]) from error


def _checks(
    claim: Claim,
    result: PatchResult | None,
    grid: Grid | None,
    sweep: Callable[..., PatchResult],
    baseline_file: Path,
    update: bool,
) -> list[tuple[str, Callable[[], Any]]]:
    """The claim's checks as (key, call) in a fixed order: detection, stability, top-k, peak, agreement,
    robustness, then the baseline. ``result`` is the claim's sweep (None when only ``robust`` needs none),
    ``grid`` its robustness grid and ``sweep(**settings)`` another sweep of the claim's model and pairs."""
    e = claim.expect
    checks: list[tuple[str, Callable[[], Any]]] = []
    if e.detected:
        checks.append(("detected", lambda: result.assert_detected(*e.detected, sd=e.sd, sign=e.sign)))
    if e.negative:
        checks.append(("negative", lambda: result.assert_negative(*e.negative, sd=e.sd)))
    if e.not_detected:
        checks.append(("not_detected", lambda: result.assert_not_detected(*e.not_detected, sd=e.sd, sign=e.sign)))
    if e.stable:
        rate = e.min_detection_rate
        checks.append(("stable", lambda: result.assert_stable(*e.stable, min_detection_rate=rate, sd=e.sd, sign=e.sign)))
    if e.top_k is not None:
        checks.append(("top_k", lambda: result.assert_top_k(e.top_k[0], e.top_k[1])))
    if e.peak is not None:
        checks.append(("peak", lambda: result.assert_peak(e.peak)))
    if e.agree_with is not None:
        minimums = {"min_spearman": e.min_spearman, "min_kendall": e.min_kendall, "min_jaccard": e.min_jaccard}
        other = {**claim.sweep, **e.agree_with}
        if other.get("method", "exact") == "exact":  # estimates' own settings do not carry over to an exact sweep
            other = {k: v for k, v in other.items() if k not in ATTRIBUTION_KEYS}
        checks.append(("agree_with", lambda: result.assert_agree(sweep(**other), **minimums, sd=e.sd, sign=e.sign)))
    if e.robust:
        checks.append(("robust", lambda: grid.assert_robust(*e.robust, at_least=e.at_least, sd=e.sd, sign=e.sign)))
    if e.baseline is not None:
        name, atol = e.baseline
        path = baseline_path(baseline_file, name or claim.name)
        checks.append(("baseline", lambda: check_baseline(result, path, atol=atol, update=update)))
    return checks


def _shown_path(item: pytest.Item) -> str:
    """The item's file relative to the rootdir, as pytest shows node ids."""
    try:
        return item.path.relative_to(item.config.rootpath).as_posix()
    except ValueError:
        return str(item.path)


class ClaimItem(pytest.Item):
    """One YAML claim: load the model and pairs, sweep (cached), check the expectations."""

    def __init__(self, *, claim: Claim, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claim = claim
        record_of(self)

    def _where(self, line: int) -> str:
        return f"{_shown_path(self)}:{line}"

    def runtest(self) -> None:
        session = session_of(self.config)
        record = record_of(self)
        claim = self.claim
        name = f"{self.path.stem}.{safe_name(claim.name)}"
        with _blame(self._where(claim.model_line)):
            model = session.model_ref(claim.model, base_dir=self.path.parent, remote=claim.remote)
        lines = {"model": claim.model_line, "pairs": claim.task_line}
        # The model loads, and the pairs are made, only when a result is not in the cache; their errors still
        # name the claim's model: and task: lines.
        subject = Subject(session, model, claim.task, lambda what: _blame(self._where(lines[what])))

        def sweep(**settings: Any) -> PatchResult:
            return session.sweep(subject, record, **settings)

        if claim.circuit is not None:
            self._run_circuit_claim(subject, record, name)
            return
        if claim.edges is not None:
            self._run_edges_claim(subject)
            return
        result = grid = None
        context = []
        if claim.path is not None:
            with _blame(self._where(claim.sweep_line)):
                result = session.path(subject, record, **claim.path)
            session.write_report(result, name, record)
        elif claim.expect.needs_sweep:
            with _blame(self._where(claim.sweep_line)):
                result = sweep(**claim.sweep)
                if result.grid.window > 1 and result.grid.kind in WINDOWED_KINDS:
                    context.append(self._window_context(result, sweep(**{**claim.sweep, "window": 1}), record))
            session.write_report(result, name, record)
        if claim.expect.robust:
            settings = {k: v for k, v in claim.sweep.items() if k not in ("corruption", "metric")}
            with _blame(self._where(claim.robust_line)):
                grid = session.grid(model, claim.task, record, **claim.robust, sd=claim.expect.sd, **settings)
            session.write_grid_report(grid, name, record)
        self._run_checks(_checks(claim, result, grid, sweep, self.path, session.options.update_baselines), context)

    def _run_checks(self, checks: list[tuple[str, Callable[[], Any]]], context: Sequence[str] = ()) -> None:
        """Run every check, each blamed on the line of its key in `expect`; raise all failures together."""
        failures = []
        for key, check in checks:
            where = self._where(self.claim.expect.lines[key])
            with _blame(where):
                try:
                    check()
                except AssertionError as error:
                    failures.append((where, error))
        if failures:
            raise ClaimFailures(failures, context)

    def _run_edges_claim(self, subject: Subject) -> None:
        """An `edges:` claim: every edge scored (EAP or EAP-IG) and the faithfulness curve when a check reads it,
        both cached, then each check of `expect` in order."""
        session, claim, e = session_of(self.config), self.claim, self.claim.expect
        record = record_of(self)
        settings = {"method": "eap_ig", **claim.edges}
        with _blame(self._where(claim.sweep_line)):
            scores = session.edges(subject, record, **settings)
        curves: list[Any] = []

        def curve() -> Any:
            if not curves:
                options = {k: v for k, v in settings.items() if k in ("batch_size", "noise_scale")}
                curves.append(session.faithfulness(subject, record, scores, **options))
            return curves[0]

        checks: list[tuple[str, Callable[[], Any]]] = []
        if e.in_top is not None:
            checks.append(("in_top", lambda: scores.assert_in_top(*e.in_top["edges"], k=e.in_top["k"])))
        if e.contains is not None:
            checks.append(("contains", lambda: scores.circuit(top=e.contains["top"]).contains(e.contains["edges"])))
        if e.faithful is not None:
            checks.append(("faithful", lambda: curve().assert_faithful(**e.faithful)))
        if e.cmd is not None:
            checks.append(("cmd", lambda: curve().assert_cmd(**e.cmd)))
        self._run_checks(checks)

    def _run_circuit_claim(self, subject: Subject, record: ItemRecord, name: str) -> None:
        """A `circuit:` claim: its score (cached), then each check of `expect` in order."""
        session, claim, e = session_of(self.config), self.claim, self.claim.expect
        settings = dict(claim.circuit)
        nodes, groups = settings.pop("nodes"), settings.pop("groups", None)
        with _blame(self._where(claim.sweep_line)):
            result = session.circuit(subject, record, nodes, groups=groups, **settings)
        search = {k: v for k, v in settings.items() if k != "test"}
        checks: list[tuple[str, Callable[[], Any]]] = []
        if e.score is not None:
            checks.append(("score", lambda: result.assert_score(**e.score)))
        if e.complete is not None:
            complete = dict(e.complete)
            limit = complete.pop("max_incompleteness", 0.1)
            checks.append(("complete", lambda: session.subsets(
                "completeness", subject, record, nodes, groups=groups, **search, **complete
            ).assert_complete(limit)))
        if e.minimal is not None:
            minimal = dict(e.minimal)
            limit_min = minimal.pop("min_effect", 0.01)
            checks.append(("minimal", lambda: session.subsets(
                "minimality", subject, record, nodes, groups=groups, **search, **minimal
            ).assert_minimal(limit_min)))
        if e.baseline is not None:
            baseline_name, atol = e.baseline
            path = baseline_path(self.path, baseline_name or claim.name)
            update = session.options.update_baselines
            checks.append(("baseline", lambda: check_baseline(result, path, atol=atol, update=update)))
        self._run_checks(checks)

    def _window_context(self, windowed: PatchResult, single: PatchResult, record: ItemRecord) -> str:
        """The sliding window next to the summed single-layer effects (Zhang & Nanda 2024, section 5)."""
        from ..robustness import window_comparison

        comparison = window_comparison(single, windowed)
        record.figures.append(f"window peak ratio {comparison.peak_ratio:.2f}")
        return (
            f"{self._where(self.claim.sweep_line)}: window {comparison.window} restores adjacent layers together, "
            "which can amplify weak single-layer effects; the single-layer effects summed over the same windows "
            f"for comparison:\n{comparison}"
        )

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, (ClaimFailures, ClaimSetupError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.claim.line - 1, f"claim: {self.claim.name}"


class ProblemItem(pytest.Item):
    """The mistakes of one claim (or one of the file's own), reported together as one failed test, each with its
    line, so that the rest of the session still runs."""

    def __init__(self, *, problems: Sequence[Problem], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problems = list(problems)

    def runtest(self) -> None:
        where = _shown_path(self)
        raise ClaimSetupError("\n".join(f"{where}:{p.line}: {p.message}" for p in self.problems))

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, (self.problems[0].claim_line or self.problems[0].line) - 1, self.name


def _registered_marks(config: pytest.Config) -> list[str]:
    """The names of the marks registered in the ini file and by plugins (``markers``), as pytest reads them."""
    return [line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")]


class ClaimsFile(pytest.File):
    """A YAML claims file: one item per claim, one failing item per claim with mistakes, and one for the file's
    mistakes outside any claim."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems: list[Problem] = [Problem(1, f"cannot read the file ({error}). Save it as UTF-8 text.")]
            claims: list[Claim] = []
        else:
            parsed = parse_claims(text, self.path, n_prompts=session_of(self.config).options.n_prompts)
            if parsed is None:
                return
            claims, problems = parsed
        marked = []
        for claim in claims:
            marks = self._marks(claim)
            if isinstance(marks, Problem):
                problems.append(marks)
            else:
                marked.append((claim, marks))
        # The mistakes of each claim, in the order of their lines, under one item named after the claim (and
        # those of the file outside any claim under one more).
        groups: dict[int | None, list[Problem]] = {}
        for problem in sorted(problems, key=lambda p: p.line):
            groups.setdefault(problem.claim_line, []).append(problem)
        for claim_line, group in sorted(groups.items(), key=lambda entry: entry[1][0].line):
            if claim_line is None:
                name = f"schema error (line {group[0].line})"
            else:
                name = f"{group[0].claim or 'claim'} (line {claim_line})"
            yield ProblemItem.from_parent(self, name=name, problems=group)
        for claim, marks in marked:
            item = ClaimItem.from_parent(self, name=claim.name, claim=claim)
            for mark in marks:
                item.add_marker(mark)
            yield item

    def _marks(self, claim: Claim) -> list[pytest.MarkDecorator] | Problem:
        """The claim's marks, or the problem with one. pytest judges each name as it judges a Python test's marks:
        an unregistered one warns (at the claim's line) or, under --strict-markers, is a mistake of the claim."""
        marks = []
        for spec in claim.marks:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    decorator = getattr(pytest.mark, spec.name)
                except pytest.fail.Exception as error:
                    hint = did_you_mean(spec.name, _registered_marks(self.config))
                    message = (f"`marks` of claim {claim.name!r}: {error.msg}.{hint} Register the mark (the ini "
                               "file's `markers`, or config.addinivalue_line('markers', ...) in a conftest.py).")
                    return Problem(spec.line, message, claim.name, claim.line)
            for warning in caught:
                hint = did_you_mean(spec.name, _registered_marks(self.config))
                warnings.warn_explicit(f"{warning.message}{hint}", warning.category, str(self.path), spec.line)
            marks.append(decorator.with_args(*spec.args, **spec.kwargs) if spec.args or spec.kwargs else decorator)
        return marks
