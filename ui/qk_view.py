"""QK edges on the Circuits page's graph: a second edge kind, drawn dashed in amber on demand.

Direct edges are drawn by `ui.graph_view.graph_spec` from the graph without its QK edges
(`direct_view`), so showing or hiding QK edges never changes which direct edges are drawn;
`with_qk_edges` then adds the QK effects (`core.tracing.qk.qk_edges`) above their own threshold
between the nodes drawn (a collapsed supernode stands for its members). Tooltips are plain text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import networkx as nx

from core.tracing.influence import is_qk_edge
from core.tracing.qk import qk_edges

QK_POSITIVE = "#d97706"  # amber: QK effects that raise the attention latent
QK_NEGATIVE = "#7c3aed"  # violet: that lower it
QK_DASHES = [6, 4]
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
