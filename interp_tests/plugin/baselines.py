"""Regression baselines inside pytest: the ``interp_baseline`` fixture, which also serves
``result.assert_matches_baseline(request)``.

The comparison itself (``claims.check_baseline``) knows nothing of pytest; this part finds the baseline a
test owns, ``__baselines__/<test file stem>/<name or test name>.json`` next to it, refuses a second check
of the same baseline in one test, and reads ``--interp-update-baselines``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..claims import baseline_path, check_baseline
from ..errors import SettingsError
from .fixtures import record_of, session_of

if TYPE_CHECKING:
    from ..circuit_results import CircuitResult
    from ..results import PatchResult

_USED = pytest.StashKey[set]()


def check_for_request(
    result: PatchResult | CircuitResult, request: Any, *, name: str | None = None, atol: float = 0.01,
    update: bool | None = None,
) -> str:
    """``check_baseline`` for a pytest test: the baseline sits next to the test file, named after the test.

    ``update`` defaults to ``--interp-update-baselines``. A test that checks several baselines must name them.
    """
    __tracebackhide__ = True
    path = baseline_path(Path(request.node.path), name or request.node.name)
    used = request.node.stash.setdefault(_USED, set())
    if path in used:
        raise SettingsError(
            f"This test already checked the baseline {path.name}. Give each baseline of a test its own name, "
            "e.g. interp_baseline(result, name='heads')."
        )
    used.add(path)
    if update is None:
        update = session_of(request.config).options.update_baselines
    return check_baseline(result, path, atol=atol, update=update)


@pytest.fixture
def interp_baseline(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``check(result, name=None, atol=0.01) -> str``: compare the effect map with its stored baseline.

    The baseline is ``__baselines__/<test file stem>/<name or test name>.json`` next to the test;
    ``--interp-update-baselines`` writes it (``update=`` overrides the option). Returns "matched",
    "written" or "unchanged". ``result.assert_matches_baseline(request)`` calls it.
    """
    record_of(request.node)

    def check(
        result: PatchResult | CircuitResult, name: str | None = None, atol: float = 0.01, *, update: bool | None = None
    ) -> str:
        __tracebackhide__ = True
        return check_for_request(result, request, name=name, atol=atol, update=update)

    return check
