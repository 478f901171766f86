"""Reading the outcome of a pytester run beyond what ``assert_outcomes`` counts."""

from __future__ import annotations

import warnings

import pytest

from interp_tests.errors import InterpWarning


def interp_warnings(result: pytest.RunResult) -> list[warnings.WarningMessage]:
    """The project's own warnings (``InterpWarning`` and its subclasses) that an in-process pytester run
    recorded: what claims warn about, without whatever a dependency emits (deprecations, ...)."""
    recorded = result.reprec.getcalls("pytest_warning_recorded")  # type: ignore[attr-defined]
    return [call.warning_message for call in recorded if issubclass(call.warning_message.category, InterpWarning)]
