"""QK edges on the Circuits page's graph: a second edge kind, drawn dashed in amber on demand.

Direct edges are drawn by `ui.graph_view.graph_spec` from the graph without its QK edges
(`direct_view`), so showing or hiding QK edges never changes which direct edges are drawn;
`with_qk_edges` then adds the QK effects (`core.tracing.qk.qk_edges`) above their own threshold
between the nodes drawn (a collapsed supernode stands for its members). Tooltips are plain text.

A node's card lists its QK effects whatever is drawn (`node_qk`, `qk_lines`): for an attention latent the nodes
that steer where its heads attend (through the query or the key), for any node the attention latents it steers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx

from core.tracing.influence import is_qk_edge
from core.tracing.qk import qk_edges

QK_POSITIVE = "#d97706"  # amber: QK effects that raise the attention latent
QK_NEGATIVE = "#7c3aed"  # violet: that lower it
QK_DASHES = [6, 4]
QK_CARD_ROWS = 10  # QK effects listed on a node's card before "… and N more"
LEGEND = "dashed amber/violet: QK edges (effects through where a head attends; + amber, − violet)"


def has_qk(G: nx.DiGraph) -> bool:
    """True if `G` has any QK effect (an edge of kind 'qk' or a `qk_weight` on a direct edge)."""
    return any(is_qk_edge(d) or d.get("qk_weight") is not None for *_, d in G.edges(data=True))


def direct_view(G: nx.DiGraph) -> nx.DiGraph:
    """A read-only view of `G` without its QK edges (every node kept)."""
    return nx.subgraph_view(G, filter_edge=lambda u, v: not is_qk_edge(G.edges[u, v]))


def with_qk_edges(
    spec: dict, G: nx.DiGraph, threshold: float, supernodes: Sequence = (), expanded: Iterable[str] = ()
) -> dict:
    """`spec` (a `graph_spec` of `direct_view(G)`) plus `G`'s QK effects whose share is at least `threshold`,
    as dashed edges between drawn nodes (ids "qk0", "qk1", ...; `kind: "qk"`); a new dict with
    `n_qk_edges` and a new `version`."""
    expanded = set(expanded)
    drawn = {n["id"] for n in spec["nodes"]}
    owner = {m: sn.id for sn in supernodes if sn.id not in expanded for m in sn.members}
    summed: dict[tuple[str, str], list] = {}
    for e in qk_edges(G, threshold):
        u, v = owner.get(e.source, e.source), owner.get(e.target, e.target)
        if u == v or u not in drawn or v not in drawn:
            continue
        item = summed.setdefault((u, v), [0.0, set(), 0])
        item[0] += e.weight
        item[1].update(e.heads)
        item[2] += 1
    top = max([abs(float(e.get("weight") or 0.0)) for e in spec["edges"]] + [abs(w) for w, *_ in summed.values()])
    items = []
    for i, ((u, v), (w, heads, n)) in enumerate(summed.items()):
        colour = QK_POSITIVE if w >= 0 else QK_NEGATIVE
        via = f" through head{'s' if len(heads) > 1 else ''} {', '.join(map(str, sorted(heads)))}" if heads else ""
        items.append(
            {
                "id": f"qk{i}",
                "from": u,
                "to": v,
                "weight": float(f"{w:.4g}"),
                "width": round(0.5 + 6 * abs(w) / (top or 1.0), 2),
                "dashes": QK_DASHES,
                "kind": "qk",
                "color": {"color": colour, "highlight": colour, "hover": colour, "opacity": 0.8},
                "title": f"{u} → {v}\nQK effect {w:+.4g}{via}"
                + (f" (sum of {n} edges)" if n > 1 else "")
                + "\n(moves where the head attends; not a direct effect)",
            }
        )
    out = {k: v for k, v in spec.items() if k != "version"}
    out["edges"] = [*spec["edges"], *items]
    out["n_qk_edges"] = len(items)
    out["version"] = hashlib.blake2b(json.dumps(out, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    return out


@dataclass(frozen=True)
class QKLink:
    """One QK effect seen from a node's card: `node`, the node at the other end, and its `label` (plain text);
    `side`: through the query, the key(s), both, or "" when the graph did not record it; `weight`: the signed
    first-order effect on the attention latent's pre-activation (`core.tracing.qk.QKEdge.weight`); `heads`."""

    node: str
    label: str
    side: str
    weight: float
    heads: tuple[int, ...]

    def line(self) -> str:
        """One plain-text line: "+0.4 · key · emb ' Mary' at 2 · heads 1, 4"."""
        parts = [f"{self.weight:+.3g}", self.side or "side not recorded", self.label]
        if self.heads:
            parts.append(f"head{'s' if len(self.heads) > 1 else ''} {', '.join(map(str, self.heads))}")
        return " · ".join(parts)


@dataclass(frozen=True)
class NodeQK:
    """A node's QK effects, strongest (|weight|) first: `steered_by`, the nodes that steer the attention this
    attention latent reads; `steers`, the attention latents whose attention this node steers."""

    steered_by: tuple[QKLink, ...]
    steers: tuple[QKLink, ...]


def qk_side(sides: Sequence[float] | None) -> str:
    """The side an edge's `qk_sides` [through the query, through the keys] names: "query", "key", "query + key"
    (with the split), or "" when absent."""
    if not sides or len(sides) != 2:
        return ""
    q, k = (float(x) for x in sides)
    if q and k:
        return f"query + key ({q:+.3g}, {k:+.3g})"
    return "key" if k else "query" if q else ""


def link_label(node: str, attrs: Mapping, texts: Mapping[str, str] | None = None) -> str:
    """A contributor as the card names it (plain text): `short_id` (dictionary kind.layer/latent, or the token),
    its position and token, then its annotation or explanation from `texts` if any: "attn.0/2 at 1 ' (': text"."""
    from ui.graph_view import short_id

    out, kind, pos = short_id(node, attrs), attrs.get("kind"), attrs.get("position")
    if kind == "pos_embed":  # short_id names the position already
        out += f" {attrs.get('token', '')!r}"
    elif pos is not None:
        out += f" at {pos}" + (f" {attrs.get('token', '')!r}" if kind not in ("embed", "logit") else "")
    text = " ".join(((texts or {}).get(node) or "").split())
    return f"{out}: {text}" if text else out


def node_qk(G: nx.DiGraph, node: str, texts: Mapping[str, str] | None = None) -> NodeQK:
    """The QK effects of `G` (`core.tracing.qk.qk_edges`, any threshold) into and out of `node`, strongest first;
    `texts` = {node id: annotation or explanation} for the labels."""
    by, steers = [], []
    for e in qk_edges(G, 0.0):
        if node not in (e.source, e.target) or e.source == e.target:
            continue
        other = e.source if e.target == node else e.target
        link = QKLink(
            other,
            link_label(other, G.nodes[other], texts),
            qk_side(G.edges[e.source, e.target].get("qk_sides")),
            e.weight,
            e.heads,
        )
        (by if e.target == node else steers).append(link)
    return NodeQK(tuple(by), tuple(steers))


def qk_lines(links: Sequence[QKLink], top: int = QK_CARD_ROWS) -> list[str]:
    """The card's lines for `links` (strongest first): the first `top`, then "… and N more" if any are left."""
    lines = [link.line() for link in links[:top]]
    if len(links) > top:
        lines.append(f"… and {len(links) - top} more")
    return lines
