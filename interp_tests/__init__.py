"""interp-tests: activation-patching localization claims as pytest tests.

Importing this package is cheap: torch, transformers and nnsight load on first use of a name below,
so the pytest plugin costs nothing for test suites that never patch a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "InterpError": "errors",
    "InterpWarning": "errors",
    "Adapter": "adapters",
    "register_adapter": "adapters",
    "load_model": "models",
    "PatchableModel": "models",
    "PromptPairs": "pairs",
    "patch": "patching",
    "path_patch": "paths",
    "PatchResult": "results",
    "evaluate": "evaluation",
    "Evaluation": "readings",
    "AttentionScores": "readings",
    "ClaimError": "claims",
    "grid": "robustness",
    "Circuit": "circuits",
    "Edge": "circuits",
    "edge_attribution": "edge_scoring",
    "exact_edge_scores": "edge_scoring",
    "faithfulness_curve": "edge_scoring",
    "EdgeScores": "edge_results",
    "circuit_patch": "circuit_patching",
    "CircuitResult": "circuit_results",
    "Grid": "robustness",
    "register_metric": "metrics",
    "attention_to": "attention",
}
_SUBMODULES = ("tasks", "errors", "stats", "robustness", "strategies", "reports")

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])

if TYPE_CHECKING:
    from . import errors, reports, robustness, stats, strategies, tasks
    from .adapters import Adapter, register_adapter
    from .circuit_patching import circuit_patch
    from .circuit_results import CircuitResult
    from .circuits import Circuit, Edge
    from .edge_scoring import edge_attribution, exact_edge_scores, faithfulness_curve
    from .edge_results import EdgeScores
    from .claims import ClaimError
    from .errors import InterpError, InterpWarning
    from .evaluation import evaluate
    from .metrics import register_metric
    from .models import PatchableModel, load_model
    from .pairs import PromptPairs
    from .readings import AttentionScores, Evaluation
    from .patching import patch
    from .paths import path_patch
    from .results import PatchResult
    from .robustness import Grid, grid


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'interp_tests' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
