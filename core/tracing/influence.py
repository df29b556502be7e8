"""Influence on the target: the one definition, used by full-graph pruning, saved-circuit pruning,
the Circuits page (sliders, node sizes, tooltips), LLM pruning prompts and the pruning comparison.

Method (circuit-tracer's `compute_node_influence = compute_influence(normalize_matrix(A), w)`):
1. `A: [n, n]` holds direct effects, `A[t, s]` = effect of source s on target t (rows are targets).
2. Normalise: `Â = |A|` with each row divided by its sum (the sum clamped at 1e-10), so a row holds
   each source's share of its target's total |direct effect|.
3. Propagate: `influence = w Â + w Â² + ... = w ((I - Â)^-1 - I)` for the target weights `w: [n]`
   (one-hot on the target here). The graph is a DAG, so `Â` is nilpotent and the series ends with
   an exactly zero term; a cycle never ends it and raises ValueError.

A networkx graph (`graph_influence`) keeps only some of each node's parents; its untraced remainder
(`total_abs_effect` as the trace recorded it, minus the graph's in-edges) goes to one extra sink
column, so a kept edge's share is its share of the node's whole |direct effect|, as in the trace.

Edge kinds: QK edges (`edge_kind="qk"`, and `qk_weight` on a direct edge; `core.tracing.qk.expand_qk`)
are effects through attention patterns, which the direct effects above hold frozen. By default they
are left out, so adding them to a graph changes no influence of its direct (OV, MLP) edges. With
`qk=True` they join `A` beside the direct effects (a QK edge's |weight|, a direct edge's |qk_weight|
added to its |weight|); the untraced remainder stays the direct one, so a node's row then sums to its
whole |direct effect| plus its |QK effects|.
"""

from __future__ import annotations

import math

import networkx as nx
import torch

from core.tracing.graph import target_node

ROW_SUM_MIN = 1e-10  # circuit-tracer's clamp on a row's |A| sum


def normalize_matrix(adjacency: torch.Tensor) -> torch.Tensor:
    """`|A|` with each row divided by its sum (clamped at 1e-10): `[n, n]` -> `[n, n]`."""
    a = adjacency.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=ROW_SUM_MIN)


def compute_influence(normalized: torch.Tensor, weights: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
    """`w Â + w Â² + ...` for a row-normalised `Â: [n, n]` and target weights `w: [n]`: `[n]`.

    Stops at the first all-zero term (a DAG's `Â` is nilpotent); ValueError after `max_iter` terms.
    """
    term = weights @ normalized
    total = term.clone()
    for _ in range(max_iter):
        if not bool(term.any()):
            return total
        term = term @ normalized
        total += term
    raise ValueError(
        f"influence did not converge after {max_iter} steps: the graph has a cycle "
        "(direct effects run forward in the model, so a traced graph has none)"
    )


def node_influence(adjacency: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Every node's influence on the weighted targets: `compute_influence(normalize_matrix(A), w)`, `[n]`."""
    return compute_influence(normalize_matrix(adjacency), weights)


def one_hot(n: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """Target weights `[n]`: 1 at `index`, 0 elsewhere, with `like`'s dtype and device."""
    w = torch.zeros(n, dtype=like.dtype, device=like.device)
    w[index] = 1.0
    return w


def is_qk_edge(d: dict) -> bool:
    """True for an edge of kind 'qk' (an effect through an attention pattern, `core.tracing.qk`)."""
    return d.get("edge_kind") == "qk"


def graph_adjacency(G: nx.DiGraph, qk: bool = False) -> tuple[list[str], torch.Tensor]:
    """`G`'s nodes (in `G.nodes` order) and `A: [n+1, n+1]` float64 of their |direct effects|.

    `A[t, s] = |weight of edge s -> t|`; column n (the sink) holds each node's untraced remainder,
    `total_abs_effect - sum of its direct in-edges` (0 when the node has no `total_abs_effect`).
    QK edges count only with `qk` (see the module docstring).
    """
    nodes = list(G.nodes)
    index = {v: i for i, v in enumerate(nodes)}
    n = len(nodes)
    A = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    QK = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for u, v, d in G.edges(data=True):
        if is_qk_edge(d):
            QK[index[v], index[u]] = abs(_weight(d))
        else:
            A[index[v], index[u]] = abs(_weight(d))
            QK[index[v], index[u]] = abs(_weight({"weight": d.get("qk_weight")}))
    for v, a in G.nodes(data=True):
        total = a.get("total_abs_effect")
        if total is not None and not math.isnan(total) and total > 0:
            i = index[v]
            A[i, n] = max(0.0, float(total) - float(A[i, :n].sum()))
    return nodes, (A + QK if qk else A)


def graph_influence(G: nx.DiGraph, target: str | None = None, qk: bool = False) -> dict[str, float]:
    """Every node's influence on `target` (default: `G`'s target node) through `G`: {node id: [0, 1]}.

    `node_influence(graph_adjacency(G, qk))`, plus the target's own weight: the target has 1, a node
    with no path to it 0 (without `qk`, a node joined only by QK edges). ValueError if `G` has a cycle.
    """
    if not nx.is_directed_acyclic_graph(G):
        raise ValueError("the graph has a cycle; influence needs a DAG (direct effects run forward in the model)")
    target = target_node(G) if target is None else target
    nodes, A = graph_adjacency(G, qk)
    w = one_hot(len(nodes) + 1, nodes.index(target), A)
    influence = node_influence(A, w) + w
    return {v: float(influence[i]) for i, v in enumerate(nodes)}


def _weight(d: dict) -> float:
    w = d.get("weight", 0.0)
    return 0.0 if w is None or (isinstance(w, float) and math.isnan(w)) else float(w)
