"""Circuits as data: a set of model components (nodes), written with the labels sweeps already use.

A node is a head ``"9.9"``, a layer's attention output ``"attn.2"``, MLP output ``"mlp.3"`` or residual stream
``"resid.4"`` (the input of layer 4), optionally at one position: a token index (``"mlp.3@12"``) or a named
position of the pairs (``"9.9@S2"``: the last token of span S2 in each prompt, ``"@last"``). A node without a
position covers every position. Circuits are immutable sets with a stable text form, so a report, a cache key
and a baseline name the same circuit the same way.

A circuit may instead hold edges (``"5.5->9.9.q"``: sender -> receiver input, see interp_tests.edges for the
graph); one circuit holds nodes or edges, not both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Union

from .components import KINDS, SITE_OF_KIND
from .errors import ComponentError, did_you_mean

# Within a layer, the order the forward pass reaches each kind's activation (components.SITE_ORDER).
_KIND_ORDER = {"resid": 0, "attn_head": 1, "attn": 2, "mlp": 3}
_NODE = re.compile(
    r"^(?:(?P<layer_h>\d+)\.(?P<head>\d+)|(?P<kind>attn|mlp|resid)\.(?P<layer>\d+))(?:@(?P<pos>[A-Za-z_][\w-]*|\d+))?$"
)


@dataclass(frozen=True, order=False)
class Node:
    """One component of a circuit: ``kind`` is a sweep kind (``"attn_head"``, ``"attn"``, ``"mlp"``,
    ``"resid"``), ``position`` None (all positions), a token index, or a named position."""

    kind: str
    layer: int
    head: int | None = None
    position: int | str | None = None

    @classmethod
    def parse(cls, label: str) -> Node:
        match = _NODE.match(str(label).strip())
        if not match:
            raise ComponentError(
                f"{label!r} is not a circuit node. Heads are 'L.H' (e.g. '9.9'), layers 'attn.L', 'mlp.L' or "
                "'resid.L'; append '@P' for one position: a token index ('mlp.3@12') or a named position of the "
                "pairs ('9.9@S2', '9.9@last'). Edges are 'sender->receiver' (e.g. '5.5->9.9.q')."
            )
        pos_text = match["pos"]
        position: int | str | None = None if pos_text is None else (int(pos_text) if pos_text.isdigit() else pos_text)
        if match["kind"]:
            return cls(match["kind"], int(match["layer"]), None, position)
        return cls("attn_head", int(match["layer_h"]), int(match["head"]), position)

    @property
    def site(self) -> str:
        return SITE_OF_KIND[self.kind]

    @property
    def component(self) -> str:
        """The label without its position: the sweep component this node restricts."""
        return f"{self.layer}.{self.head}" if self.kind == "attn_head" else f"{self.kind}.{self.layer}"

    @property
    def label(self) -> str:
        return self.component if self.position is None else f"{self.component}@{self.position}"

    def sort_key(self) -> tuple:
        position = (0, -1, "") if self.position is None else (1, self.position, "") if isinstance(self.position, int) else (2, 0, self.position)
        return (self.layer, _KIND_ORDER[self.kind], -1 if self.head is None else self.head, position)

    def __str__(self) -> str:
        return self.label


_SENDER = re.compile(r"^(?:embed|(?P<layer>\d+)\.(?P<head>\d+)|mlp\.(?P<mlp>\d+))$")
_RECEIVER = re.compile(r"^(?:logits|(?P<layer>\d+)\.(?P<head>\d+)\.(?P<input>[qkv])|mlp\.(?P<mlp>\d+))$")
_INPUT_ORDER = {"q": 0, "k": 1, "v": 2}
_LAST = 10**9  # sorts the logits after every layer


@dataclass(frozen=True)
class Edge:
    """One edge of the computational graph: ``sender`` ("embed", "L.H", "mlp.L") -> ``receiver`` input
    ("L.H.q", "L.H.k", "L.H.v", "mlp.L", "logits"). Patching it replaces that sender's contribution to that
    receiver's input only. Whether the model has the edge is checked against its graph (edges.EdgeGraph)."""

    sender: str
    receiver: str

    @classmethod
    def parse(cls, label: str) -> Edge:
        text = str(label).strip()
        sender, _, receiver = (part.strip() for part in text.partition("->"))
        if "->" not in text or not _SENDER.match(sender) or not _RECEIVER.match(receiver):
            raise ComponentError(
                f"{label!r} is not an edge. Edges are 'sender->receiver': senders 'embed', 'L.H' (a head), 'mlp.L'; "
                "receivers 'L.H.q', 'L.H.k', 'L.H.v' (a head's query, key or value input), 'mlp.L' and 'logits' "
                "(e.g. '5.5->9.9.q', 'mlp.3->9.9.v', '9.9->logits', 'embed->mlp.0')."
            )
        return cls(sender, receiver)

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"

    def sort_key(self) -> tuple:
        """Receivers in forward order, then senders in forward order: a stable order for the text form."""
        r = _RECEIVER.match(self.receiver)
        s = _SENDER.match(self.sender)
        assert r is not None and s is not None  # parse() checked both
        if r["input"]:
            receiver = (int(r["layer"]), 0, _INPUT_ORDER[r["input"]], int(r["head"]))
        else:
            receiver = (int(r["mlp"]), 1, 0, 0) if r["mlp"] else (_LAST, 0, 0, 0)
        if s["head"]:
            sender = (int(s["layer"]), 0, int(s["head"]))
        else:
            sender = (int(s["mlp"]), 1, 0) if s["mlp"] else (-1, 0, 0)
        return (1, receiver, sender)

    def __str__(self) -> str:
        return self.label


NodeLike = Union[str, Node, Edge]


def parse_node(value: NodeLike) -> Node | Edge:
    """A circuit's node ("9.9", "mlp.3@S2") or edge ("5.5->9.9.q"); ComponentError says how to write one."""
    if isinstance(value, (Node, Edge)):
        return value
    return Edge.parse(value) if "->" in str(value) else Node.parse(value)


class Circuit:
    """An immutable set of nodes, optionally with named groups of them (e.g. Wang et al.'s "name movers").

    ``Circuit(["9.9", "9.6", "10.0"], groups={"name movers": ["9.9", "9.6", "10.0"]})``. Set operations
    (``|``, ``-``, ``&``) return circuits; groups survive where all their nodes do.
    """

    def __init__(self, nodes: Iterable[NodeLike] = (), *, groups: Mapping[str, Iterable[NodeLike]] | None = None) -> None:
        if isinstance(nodes, str):
            raise ComponentError(f"Circuit() takes a list of node labels, not one string: Circuit([{nodes!r}]).")
        parsed = {parse_node(n) for n in nodes}
        if len({type(n) for n in parsed}) > 1:
            raise ComponentError(
                "A circuit holds nodes or edges, not both: write the nodes' edges instead (every edge out of a node "
                "patches the same as the node)."
            )
        self._nodes: tuple[Node | Edge, ...] = tuple(sorted(parsed, key=lambda n: n.sort_key()))
        self._groups: dict[str, tuple[Node, ...]] = {}
        for name, members in (groups or {}).items():
            group = {parse_node(n) for n in members}
            missing = group - parsed
            if missing:
                raise ComponentError(
                    f"Group {name!r} names {sorted(n.label for n in missing)}, which are not nodes of the circuit. "
                    "Add them to the circuit's nodes, or remove them from the group."
                )
            self._groups[name] = tuple(sorted(group, key=lambda n: n.sort_key()))

    @property
    def nodes(self) -> tuple[Node | Edge, ...]:
        return self._nodes

    @property
    def is_edges(self) -> bool:
        """True for a circuit of edges (an empty circuit is neither)."""
        return bool(self._nodes) and isinstance(self._nodes[0], Edge)

    @property
    def labels(self) -> list[str]:
        return [n.label for n in self._nodes]

    @property
    def groups(self) -> dict[str, Circuit]:
        return {name: Circuit(members) for name, members in self._groups.items()}

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(getattr(n, "kind", None) == k for n in self._nodes)]

    def __iter__(self) -> Iterator[Node | Edge]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return isinstance(node, (str, Node, Edge)) and parse_node(node) in set(self._nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Circuit) and self._nodes == other._nodes

    def __hash__(self) -> int:
        return hash(self._nodes)

    def _with(self, nodes: Iterable[Node], other: Circuit | None = None) -> Circuit:
        kept = set(nodes)
        groups = {**self._groups, **(other._groups if other is not None else {})}
        return Circuit(kept, groups={k: v for k, v in groups.items() if set(v) <= kept})

    def __or__(self, other: Circuit | Iterable[NodeLike]) -> Circuit:
        other = as_circuit(other)
        return self._with(set(self._nodes) | set(other._nodes), other)

    def __sub__(self, other: Circuit | Iterable[NodeLike]) -> Circuit:
        return self._with(set(self._nodes) - set(as_circuit(other)._nodes))

    def __and__(self, other: Circuit | Iterable[NodeLike]) -> Circuit:
        return self._with(set(self._nodes) & set(as_circuit(other)._nodes))

    def __str__(self) -> str:
        return "{" + ", ".join(self.labels) + "}"

    def __repr__(self) -> str:
        groups = f", groups={ {k: [n.label for n in v] for k, v in self._groups.items()} }" if self._groups else ""
        return f"Circuit({self.labels}{groups})"

    def check(self, n_layers: int, n_heads: int, seq_len: int | None = None, named: Iterable[str] = ()) -> None:
        """Raise ComponentError for a node the model (or the pairs' positions) does not have."""
        if self.is_edges:
            raise ComponentError("An edge circuit is checked against the model's edge graph (edges.EdgeGraph.check).")
        named = ["last", *named]
        for node in self._nodes:
            if node.layer >= n_layers or (node.head is not None and node.head >= n_heads):
                valid = [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)] + [
                    f"{kind}.{layer}" for kind in ("attn", "mlp", "resid") for layer in range(n_layers)
                ]
                raise ComponentError(
                    f"Circuit node {node.label!r} is not in this model ({n_layers} layers x {n_heads} heads: layers "
                    f"0..{n_layers - 1}, heads 0..{n_heads - 1}).{did_you_mean(node.component, valid)}"
                )
            if isinstance(node.position, int) and seq_len is not None and node.position >= seq_len:
                raise ComponentError(
                    f"Circuit node {node.label!r}: position {node.position} is past the prompts' {seq_len} tokens."
                )
            if isinstance(node.position, str) and node.position not in named:
                raise ComponentError(
                    f"Circuit node {node.label!r}: the pairs name no position {node.position!r}.{did_you_mean(node.position, named)} "
                    f"Named positions: {named} (add spans to the pairs with spans=)."
                )


def as_circuit(value: Circuit | Iterable[NodeLike]) -> Circuit:
    return value if isinstance(value, Circuit) else Circuit(value)


def universe_of(kinds: Iterable[str], n_layers: int, n_heads: int) -> Circuit:
    """Every node of ``kinds``, at all positions: the default set a faithfulness test ablates outside the circuit."""
    nodes: list[Node] = []
    for kind in kinds:
        for layer in range(n_layers):
            if kind == "attn_head":
                nodes.extend(Node(kind, layer, head) for head in range(n_heads))
            else:
                nodes.append(Node(kind, layer))
    return Circuit(nodes)
