"""Regression baselines: snapshots of a sweep's effect map, reviewed like code.

In the spirit of syrupy and pytest-regressions, a baseline is pretty JSON next to the claims that own
it, ``__baselines__/<file stem>/<name>.json``: the sweep's settings and every component's mean effect
rounded to 6 decimals, one per line, so a retrained model shows up in review as a diff of numbers.
``--interp-update-baselines`` (re)writes baselines atomically. Otherwise a missing baseline fails, and
so do effects that moved by more than the tolerance, listed largest move first.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .claims import ClaimError, record_claim
from .errors import SettingsError
from .files import atomic_write

if TYPE_CHECKING:
    from .results import PatchResult

BASELINE_DIR = "__baselines__"
DECIMALS = 6
# Settings that say what the numbers mean: effects recorded under other values cannot be compared.
IDENTITY = ("component", "positions", "corruption", "metric", "direction", "window", "noise_scale")
# Settings that depend on the machine, not the numbers: kept out of baselines so they do not churn in review.
MACHINE_ONLY = ("rows_per_pass",)
UPDATE_HINT = "run pytest with --interp-update-baselines"
SHOWN_MOVES = 20
_USED = pytest.StashKey[set]()


def safe_name(name: str) -> str:
    """A file name for a test or claim name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "baseline"


def baseline_path(owner: Path, name: str) -> Path:
    """Where baseline ``name`` of the test or claims file ``owner`` lives."""
    return owner.parent / BASELINE_DIR / owner.stem / f"{safe_name(name)}.json"


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return round(value, DECIMALS) if math.isfinite(value) else None
    return value


def snapshot(result: PatchResult) -> dict[str, Any]:
    """Settings and ``{label: mean effect}`` in grid order; NaN effects are written as null."""
    effects = {label: _rounded(float(value)) for label, value in zip(result.labels, result.mean.reshape(-1))}
    settings = {key: value for key, value in result.settings.items() if key not in MACHINE_ONLY}
    return {"settings": _rounded(json.loads(json.dumps(settings, default=str))), "effects": effects}


def render(snap: dict[str, Any]) -> str:
    return json.dumps(snap, indent=2, allow_nan=False) + "\n"


def _load(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ClaimError(
            f"The baseline {path} is unreadable ({error}). Fix the file, or delete it and {UPDATE_HINT}.",
            claim="baseline",
        ) from None
    if not isinstance(stored, dict) or not isinstance(stored.get("effects"), dict):
        raise ClaimError(
            f"The baseline {path} has no `effects` mapping; it was not written by interp-tests. "
            f"Delete it and {UPDATE_HINT}.",
            claim="baseline",
        )
    return stored


def _differences(old: dict[str, Any], new: dict[str, Any], keys: Any) -> list[str]:
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _move(base: float | None, now: float | None) -> float:
    if base is None or now is None:
        return 0.0 if base is now else math.inf
    return abs(now - base)


def check_baseline(result: PatchResult, path: Path, *, atol: float = 0.01, update: bool = False) -> str:
    """Compare the result's effects with the baseline at ``path`` (or rewrite it when ``update``).

    Returns ``"matched"``, ``"written"`` or ``"unchanged"``; raises ``ClaimError`` on a missing baseline,
    a different sweep, or effects that moved by more than ``atol``.
    """
    __tracebackhide__ = True  # pytest shows the failure at the claim, not in here
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
        raise SettingsError(f"atol={atol!r} must be a number >= 0 (the largest allowed change of an effect).")
    current = snapshot(result)
    text = render(current)
    if update:
        status = "unchanged" if path.is_file() and path.read_text(encoding="utf-8") == text else "written"
        if status == "written":
            atomic_write(path, text)
        record_claim("baseline", status, True)
        return status
    if not path.is_file():
        record_claim("baseline", "missing", False)
        raise ClaimError(
            f"No baseline at {path}. To create it, {UPDATE_HINT}, then review and commit the file.", claim="baseline"
        )
    stored = _load(path)
    old_settings, new_settings = stored.get("settings") or {}, current["settings"]
    identity = _differences(old_settings, new_settings, IDENTITY)
    if identity:
        record_claim("baseline", "different sweep", False)
        raise ClaimError(
            f"The baseline {path} was recorded for a different sweep, so its effects cannot be compared:\n  "
            + "\n  ".join(identity)
            + f"\nIf the new sweep is intended, {UPDATE_HINT} and review the diff.",
            claim="baseline",
            settings=result.settings,
        )
    old, new = stored["effects"], current["effects"]
    if old.keys() != new.keys():
        gone, added = [k for k in old if k not in new], [k for k in new if k not in old]
        record_claim("baseline", "different components", False)
        raise ClaimError(
            f"The components differ from the baseline {path} (a different model shape or position count?).\n"
            f"  only in the baseline: {', '.join(gone) or 'none'}\n  only now: {', '.join(added) or 'none'}\n"
            f"If the change is intended, {UPDATE_HINT} and review the diff.",
            claim="baseline",
            settings=result.settings,
        )
    moves = sorted(((_move(old[k], new[k]), k) for k in new), reverse=True)
    largest = moves[0][0] if moves else 0.0
    beyond = [(move, label) for move, label in moves if move > atol]
    record_claim("baseline", f"max |change| {largest:.2g}", not beyond)
    if not beyond:
        return "matched"
    rows = [f"  {'component':<12}{'baseline':>12}{'now':>12}{'change':>12}"]
    for _, label in beyond[:SHOWN_MOVES]:
        base, now = old[label], new[label]
        change = "n/a" if base is None or now is None else f"{now - base:+.6f}"
        rows.append(f"  {label:<12}{base!s:>12}{now!s:>12}{change:>12}")
    if len(beyond) > SHOWN_MOVES:
        rows.append(f"  ... and {len(beyond) - SHOWN_MOVES} more")
    context = _differences(old_settings, new_settings, sorted(set(old_settings) | set(new_settings)))
    raise ClaimError(
        "\n".join(
            [
                f"Effects moved from the baseline {path}: {len(beyond)} of {len(new)} components by more than "
                f"atol={atol:g} (largest first).",
                *rows,
                "settings that changed since the baseline:" if context else "settings: unchanged since the baseline",
                *(f"  {line}" for line in context),
                f"If the change is intended, {UPDATE_HINT} and review the diff.",
            ]
        ),
        claim="baseline",
        labels=[label for _, label in beyond],
        threshold=atol,
        settings=result.settings,
    )


def check_for_request(
    result: PatchResult, request: Any, *, name: str | None = None, atol: float = 0.01, update: bool | None = None
) -> str:
    """``check_baseline`` for a pytest test: the baseline sits next to the test file, named after the test.

    ``update`` defaults to ``--interp-update-baselines``. A test that checks several baselines must name them.
    """
    __tracebackhide__ = True
    from .fixtures import session_of

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
