"""Every user-facing failure is an ``InterpError``: it names the problem and says how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InterpError(Exception):
    """Base class of all interp-tests errors; catch this to handle any of them."""


class ModelLoadError(InterpError):
    """A model could not be loaded (missing weights, corrupt files, unsupported architecture)."""


class WeightsUnavailableError(ModelLoadError):
    """The weights are not on this machine and the hub cannot be reached; claims on them are skipped."""


class UnsupportedArchitectureError(ModelLoadError):
    """No adapter knows where this architecture keeps its heads, MLPs and residual stream."""


class PromptError(InterpError):
    """Prompt pairs that would give a wrong number: misaligned tokens, multi-token answers, bad positions."""


class ComponentError(InterpError):
    """A component label or kind that the model does not have."""


class SettingsError(InterpError):
    """An unknown corruption, metric, direction or window, or settings that contradict each other."""


class MetricError(InterpError):
    """A metric that cannot be computed honestly, e.g. a normalising denominator of ~0."""


class ResultFileError(InterpError):
    """A saved result that is missing, corrupt or from an incompatible version."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint for a mistyped name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
