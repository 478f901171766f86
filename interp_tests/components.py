"""Patch targets: which activation, at which layer, head and position, and their field-standard labels.

Heads are ``"L.H"`` (``"9.9"``), layers ``"attn.L"``, ``"mlp.L"``, ``"resid.L"``, with ``"@P"`` for a
position when a sweep patches each position separately. Grids follow TransformerLens' result shapes:
``[layer, head]``, ``[layer, pos, head]``, ``[layer]`` and ``[layer, pos]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

from .errors import ComponentError, SettingsError, did_you_mean

KINDS = ("attn_head", "attn", "mlp", "resid")
# Activation sites in the order the forward pass reaches them within one layer; "out" is the layer's output.
SITE_ORDER = ("resid", "head", "attn", "mlp", "out")
SITE_OF_KIND = {"attn_head": "head", "attn": "attn", "mlp": "mlp", "resid": "resid"}

Position = int | str | None  # None: all positions at once; int: one position; str: a named per-prompt position


@dataclass(frozen=True)
class Site:
    """One activation to overwrite: a layer's site, optionally one head's slice, at a position."""

    layer: int
    site: str
    head: int | None
    position: Position


@dataclass(frozen=True)
class ComponentGrid:
    """The components one sweep patches, in grid order, with their labels."""

    kind: str
    positions: str | int
    n_layers: int
    n_heads: int
    seq_len: int
    window: int = 1

    @property
    def axes(self) -> tuple[str, ...]:
        head = ("head",) if self.kind == "attn_head" else ()
        pos = ("pos",) if self.positions == "each" else ()
        return ("layer", *pos, *head)

    @property
    def shape(self) -> tuple[int, ...]:
        sizes = {"layer": self.n_layers, "pos": self.seq_len, "head": self.n_heads}
        return tuple(sizes[a] for a in self.axes)

    def cells(self) -> list[tuple[int, ...]]:
        return list(product(*(range(s) for s in self.shape)))

    def _cell(self, cell: tuple[int, ...]) -> dict[str, int]:
        return dict(zip(self.axes, cell))

    def label(self, cell: tuple[int, ...]) -> str:
        c = self._cell(cell)
        base = f"{c['layer']}.{c['head']}" if self.kind == "attn_head" else f"{self.kind}.{c['layer']}"
        return f"{base}@{c['pos']}" if "pos" in c else base

    @property
    def labels(self) -> list[str]:
        return [self.label(cell) for cell in self.cells()]

    def window_layers(self, layer: int) -> range:
        """Layers restored together for ``layer``: a window centred on it, clipped at the ends."""
        return range(max(0, layer - self.window // 2), min(self.n_layers, layer - (-self.window // 2)))

    def sites(self, cell: tuple[int, ...]) -> list[Site]:
        c = self._cell(cell)
        if self.positions == "each":
            position: Position = c["pos"]
        elif self.positions == "all":
            position = None
        else:
            position = self.positions
        site = SITE_OF_KIND[self.kind]
        return [Site(layer, site, c.get("head"), position) for layer in self.window_layers(c["layer"])]

    def index(self, label: str) -> tuple[int, ...]:
        """The grid cell of ``label``, or a ComponentError that says which labels exist."""
        cells = {self.label(cell): cell for cell in self.cells()}
        if label in cells:
            return cells[label]
        raise ComponentError(f"{label!r} is not a component of this sweep.{did_you_mean(label, cells)} {self.describe()}")

    def describe(self) -> str:
        L, H = self.n_layers - 1, self.n_heads - 1
        pos = f"@0..@{self.seq_len - 1}" if self.positions == "each" else ""
        if self.kind == "attn_head":
            return f"Valid labels are 'L.H{'@P' if pos else ''}' with L in 0..{L} and H in 0..{H}{' and P in 0..' + str(self.seq_len - 1) if pos else ''} (e.g. '{L}.{H}{'@0' if pos else ''}')."
        return f"Valid labels are '{self.kind}.L{'@P' if pos else ''}' with L in 0..{L}{' and P in 0..' + str(self.seq_len - 1) if pos else ''}."


_LABEL = re.compile(r"^(?:(?P<layer_h>\d+)\.(?P<head>\d+)|(?P<kind>attn|mlp|resid)\.(?P<layer>\d+))(?:@(?P<pos>\d+))?$")


def parse_label(label: str) -> tuple[str, int, int | None, int | None]:
    """``"9.9@3"`` -> ``("attn_head", 9, 9, 3)``; ``"mlp.4"`` -> ``("mlp", 4, None, None)``."""
    match = _LABEL.match(str(label))
    if not match:
        raise ComponentError(
            f"{label!r} is not a component label. Heads are 'L.H' (e.g. '9.9'), layers 'attn.L', 'mlp.L' "
            "or 'resid.L', with '@P' appended for a position (e.g. 'mlp.3@5')."
        )
    pos = None if match["pos"] is None else int(match["pos"])
    if match["kind"]:
        return match["kind"], int(match["layer"]), None, pos
    return "attn_head", int(match["layer_h"]), int(match["head"]), pos


def make_grid(
    kind: str, positions: str | int, *, n_layers: int, n_heads: int, seq_len: int, window: int = 1
) -> ComponentGrid:
    if kind not in KINDS:
        raise SettingsError(f"Unknown component kind {kind!r}.{did_you_mean(kind, KINDS)} Choose from {list(KINDS)}.")
    if isinstance(positions, bool) or not isinstance(positions, (int, str)):
        raise SettingsError(
            f"positions={positions!r}: use 'all' (patch every position at once), 'each' (one position at a "
            "time), an integer position, or a named position such as 'last' or a span name."
        )
    if isinstance(positions, int) and not 0 <= positions < seq_len:
        raise SettingsError(f"positions={positions} is outside the prompts (token positions 0..{seq_len - 1}).")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise SettingsError(f"window={window!r} must be a positive integer (1 = single-layer patching).")
    if window > 1:
        if kind not in ("attn", "mlp"):
            raise SettingsError(
                f"Sliding-window patching restores adjacent layers together, which is defined for 'mlp' and "
                f"'attn' components, not {kind!r}. Use window=1."
            )
        if window > n_layers:
            raise SettingsError(f"window={window} is larger than the model's {n_layers} layers; use 1..{n_layers}.")
    return ComponentGrid(kind, positions, n_layers, n_heads, seq_len, window)
