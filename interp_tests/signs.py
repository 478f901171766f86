"""Which side of the mean a claim or statistic looks at: shared by results, statistics and claims, so it
sits below all three."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SettingsError

SIGNS = ("positive", "negative", "both")


def check_sign(sign: str) -> str:
    """Refuse a misspelt sign at once: it would otherwise fail as a KeyError deep inside a claim."""
    if sign not in SIGNS:
        raise SettingsError(f"sign={sign!r}: use 'positive', 'negative' or 'both'.")
    return sign


def signed(values: Any, sign: str) -> Any:
    """``values`` turned so that larger means further out on ``sign``'s side: as they are, negated, or absolute."""
    check_sign(sign)
    if sign == "negative":
        return -values
    return np.abs(values) if sign == "both" else values
