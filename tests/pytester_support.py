"""Writing the claims files pytester runs check, and reading the outcome of a run beyond what
``assert_outcomes`` counts."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from interp_tests.errors import InterpWarning


def write_claims(pytester: pytest.Pytester, tiny_files: Path, claims: str, path: str = "hypotheses/claims.yaml") -> Path:
    """A claims file on the tiny model; ``claims`` is the YAML of the claims list (starting on line 4)."""
    text = f"model: {tiny_files / 'model'}\ntask: {{file: {tiny_files / 'pairs.jsonl'}}}\nclaims:\n"
    file = pytester.path / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text + textwrap.dedent(claims))
    return file


def interp_warnings(result: pytest.RunResult) -> list[warnings.WarningMessage]:
    """The project's own warnings (``InterpWarning`` and its subclasses) that an in-process pytester run
    recorded: what claims warn about, without whatever a dependency emits (deprecations, ...)."""
    recorded = result.reprec.getcalls("pytest_warning_recorded")  # type: ignore[attr-defined]
    return [call.warning_message for call in recorded if issubclass(call.warning_message.category, InterpWarning)]
