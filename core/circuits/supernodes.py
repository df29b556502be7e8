"""Supernodes: several nodes of a circuit grouped under one label, drawn as one node.

A supernode is a view of a circuit, not a change of it: its members stay in the graph, pruning and
faithfulness ignore the grouping, and a saved circuit version stores its supernodes beside its
pruning (`core.circuits.saved.Pruning.supernodes`), as Neuronpedia stores them in `qParams`.

Functions (pure; none changes its inputs):
    group(G, supernodes, members, label) -> Supernode     a new, validated supernode (SupernodeError if not)
    ungroup(supernodes, supernode_id) -> tuple           without that supernode
    check_supernodes(G, supernodes)                      SupernodeError unless every member is in G, once
    collapse(G, supernodes, expanded) -> DiGraph         G with each (not expanded) supernode as one node
Collapsing, step by step: every member of a supernode present in `G` maps to the supernode's node;
each edge u -> v becomes map(u) -> map(v); edges inside one supernode are dropped; edges that land on
the same pair are summed (their signed weights add). A supernode with no member left in `G` (all
pruned) is not drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from core.errors import UserError
from core.tracing.graph import target_node

MAX_LABEL_CHARS = 80
KIND = "supernode"  # the `kind` attribute of a collapsed supernode's node


class SupernodeError(UserError):
    """A grouping that cannot be made as asked (shown as a message; nothing is changed)."""


@dataclass(frozen=True)
class Supernode:
    """A labelled group of at least two node ids (sorted, distinct). `id` is stable: derived from the members."""

    label: str
    members: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(sorted(set(map(str, self.members)))))
        object.__setattr__(self, "label", " ".join(str(self.label).split()))

    @property
    def id(self) -> str:
        """`supernode:<hash of the members>`: the id of its node in a collapsed graph."""
        digest = hashlib.blake2b("\n".join(self.members).encode(), digest_size=5).hexdigest()
        return f"{KIND}:{digest}"

    def to_json(self) -> dict[str, Any]:
        """{"label", "members"}."""
        return {"label": self.label, "members": list(self.members)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | Sequence[Any]) -> Supernode:
        """Inverse of `to_json`; also reads Neuronpedia's `[label, member, member, ...]` lists."""
        if isinstance(obj, Mapping):
            return cls(str(obj.get("label", "")), tuple(obj.get("members", ())))
        items = list(obj)
        return cls(str(items[0]) if items else "", tuple(items[1:]))


def check_supernodes(G: nx.DiGraph, supernodes: Iterable[Supernode]) -> None:
    """Raise SupernodeError unless each supernode has >= 2 members, a label, members that are all in `G`,
    and no member in two supernodes."""
    seen: dict[str, str] = {}
    for s in supernodes:
        if not s.label:
            raise SupernodeError("a supernode needs a label")
        if len(s.label) > MAX_LABEL_CHARS:
            raise SupernodeError(f"supernode labels are at most {MAX_LABEL_CHARS} characters (got {len(s.label)})")
        if len(s.members) < 2:
            raise SupernodeError(
                f"supernode {s.label!r} has {len(s.members)} node; a supernode groups at least two nodes"
            )
        missing = [m for m in s.members if m not in G]
        if missing:
            raise SupernodeError(
                f"supernode {s.label!r} names nodes that are not in the graph: {', '.join(missing[:5])}"
            )
        twice = [m for m in s.members if m in seen]
        if twice:
            raise SupernodeError(
                f"{', '.join(twice[:5])} already in supernode {seen[twice[0]]!r}; ungroup it first to regroup"
            )
        seen.update({m: s.label for m in s.members})


def group(G: nx.DiGraph, supernodes: Sequence[Supernode], members: Iterable[str], label: str) -> Supernode:
    """A new supernode of `members` named `label`, checked against `G` and the existing `supernodes`.

    SupernodeError (nothing changes) for: fewer than two distinct nodes, a node not in `G`, a node that
    is a supernode or already in one, the target node, an empty or too long label."""
    members = [str(m) for m in members]
    grouped = {s.id: s for s in supernodes}
    inside = [m for m in members if m in grouped]
    if inside:
        raise SupernodeError(f"{inside[0]} is a supernode ({grouped[inside[0]].label!r}); expand it first")
    new = Supernode(label, tuple(members))
    if new.members and G.number_of_nodes() and _target(G) in new.members:
        raise SupernodeError("the target node cannot be grouped into a supernode")
    check_supernodes(G, [*supernodes, new])
    return new


def ungroup(supernodes: Sequence[Supernode], supernode_id: str) -> tuple[Supernode, ...]:
    """`supernodes` without the one whose id is `supernode_id`; SupernodeError if there is none."""
    if supernode_id not in {s.id for s in supernodes}:
        raise SupernodeError(f"{supernode_id} is not a supernode of this circuit")
    return tuple(s for s in supernodes if s.id != supernode_id)


def member_map(supernodes: Iterable[Supernode], expanded: Iterable[str] = ()) -> dict[str, str]:
    """{member node id: supernode id} for every supernode not in `expanded` (ids)."""
    open_ = set(expanded)
    return {m: s.id for s in supernodes if s.id not in open_ for m in s.members}


def collapse(G: nx.DiGraph, supernodes: Sequence[Supernode], expanded: Iterable[str] = ()) -> nx.DiGraph:
    """A copy of `G` with each supernode not in `expanded` drawn as one node (see the module docstring).

    The supernode's node has kind 'supernode', `label`, `members` (those present in `G`), `position`
    and `layer` of its first member (for the layout) and the sum of its members' activations."""
    to = {m: s for m, s in member_map(supernodes, expanded).items() if m in G}
    H = nx.DiGraph()
    H.graph.update(G.graph)
    by_id = {s.id: s for s in supernodes}
    for v, a in G.nodes(data=True):
        if v not in to:
            H.add_node(v, **a)
    for sid in sorted(set(to.values())):
        present = [m for m in by_id[sid].members if m in G]
        first = G.nodes[present[0]]
        acts = [G.nodes[m].get("activation") for m in present if G.nodes[m].get("activation") is not None]
        H.add_node(
            sid,
            kind=KIND,
            label=by_id[sid].label,
            members=present,
            layer=first.get("layer"),
            position=first.get("position"),
            activation=float(sum(acts)) if acts else None,
        )
    for u, v, d in G.edges(data=True):
        su, sv = to.get(u, u), to.get(v, v)
        if su == sv:
            continue
        w = _weight(d)
        if H.has_edge(su, sv):
            H.edges[su, sv]["weight"] += w
            H.edges[su, sv]["n_edges"] += 1
        else:
            H.add_edge(su, sv, weight=w, n_edges=1)
    return H


def _weight(d: Mapping[str, Any]) -> float:
    w = d.get("weight", 0.0)
    return 0.0 if w is None or w != w else float(w)


def _target(G: nx.DiGraph) -> str | None:
    try:
        return target_node(G)
    except ValueError:
        return None
