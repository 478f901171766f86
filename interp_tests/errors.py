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


class DeviceMemoryError(InterpError):
    """The device ran out of memory even with one patched run per forward pass: the model does not fit."""


class PlotsUnavailableError(InterpError):
    """matplotlib (the ``plots`` extra) is not installed, so no PNG can be drawn."""


class PandasUnavailableError(InterpError):
    """pandas (the ``pandas`` extra) is not installed, so no DataFrame can be built."""


class ResultFileError(InterpError):
    """A saved result that is missing, corrupt or from an incompatible version."""


class RemoteError(InterpError):
    """A remote run on NDIF (nnsight's server) failed; the subclass says where, the message how to fix it."""


class RemoteUnreachableError(RemoteError):
    """The NDIF host did not answer (wrong host, no network, server down), even after retrying."""


class RemoteAuthError(RemoteError):
    """The NDIF server refused the API key, or needs one and none was given."""


class ModelNotDeployedError(RemoteError):
    """The NDIF server does not serve this model (not deployed, or under another repo id or revision)."""


class RemoteRequestError(RemoteError):
    """The NDIF server rejected the request or failed while running it."""


class RemoteTimeoutError(RemoteRequestError):
    """The request ran past the NDIF server's execution timeout."""


class RemoteResultTooLargeError(RemoteRequestError):
    """The result is larger than the server returns inline, and it has no object store to stage it in."""


class RemoteUnsupportedError(RemoteError):
    """A computation that cannot run on a remote model (it needs the weights on this machine)."""


class InterpWarning(UserWarning):
    """A claim that holds but may not mean what it says: a probability metric blind to negative components,
    Gaussian noise that pushes the model off distribution, a model at chance on the task. pytest lists these
    in its warnings summary."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint for a mistyped name, or '' when nothing is close."""
    valid = list(valid)
    same_letters = [v for v in valid if v.lower() == str(name).lower()]  # 'STR' for 'str'
    close = same_letters or difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
