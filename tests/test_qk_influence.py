"""Influence by edge kind: QK edges (`core.tracing.qk.expand_qk`) leave the influence of direct edges
unchanged unless asked for (`graph_influence(G, qk=True)`), and pruning follows the same numbers."""

from __future__ import annotations

import networkx as nx
import pytest

from core.circuits import saved as C
from core.tracing.influence import graph_influence

TARGET = "logit@4:')'-'.'"
QK_NODE = "transcoder.0/9@2"


def direct_graph() -> nx.DiGraph:
    """T <- A (+4) of T's 10; A <- E (+3) of 6; B: attention latent, T <- B (-2); B <- E (+2) of 2."""
    G = nx.DiGraph()
    G.graph.update({"prompt": "He left (because", "target": {"node_id": TARGET, "label": "')' - '.'"}})
    G.add_node(TARGET, kind="logit", layer=3, position=4, latent=None, is_target=True, total_abs_effect=10.0)
    G.add_node("transcoder.2/7@4", kind="transcoder", layer=2, position=4, latent=7, total_abs_effect=6.0)
    G.add_node("attn.1/5@4", kind="attn", layer=1, position=4, latent=5, total_abs_effect=2.0)
    G.add_node("embed@2", kind="embed", layer=-1, position=2, latent=None)
    for u, v, w in [
        ("transcoder.2/7@4", TARGET, 4.0),
        ("attn.1/5@4", TARGET, -2.0),
        ("embed@2", "transcoder.2/7@4", 3.0),
        ("embed@2", "attn.1/5@4", 2.0),
    ]:
        G.add_edge(u, v, weight=w)
    return G


def with_qk(G: nx.DiGraph) -> nx.DiGraph:
    """`G` plus what expand_qk adds: a QK-only latent steering attn.1/5@4 (+4), and a QK weight on E -> B."""
    H = G.copy()
    H.add_node(QK_NODE, kind="transcoder", layer=0, position=2, latent=9, qk_only=True, total_abs_effect=1.0)
    H.add_edge("embed@2", QK_NODE, weight=1.0)
    H.add_edge(QK_NODE, "attn.1/5@4", weight=4.0, edge_kind="qk", heads=[0])
    H.edges["embed@2", "attn.1/5@4"]["qk_weight"] = -4.0
    return H


def test_qk_edges_leave_direct_influence_unchanged_by_default():
    before = graph_influence(direct_graph())
    after = graph_influence(with_qk(direct_graph()))
    assert {v: after[v] for v in before} == pytest.approx(before)
    assert after[QK_NODE] == 0.0  # joined only by a QK edge: no path of direct effects to the target


def test_influence_with_qk_counts_them_beside_the_direct_effects():
    infl = graph_influence(with_qk(direct_graph()), qk=True)
    # B's row: E 2 (direct) + 4 (qk_weight), the QK node 4, no untraced remainder: B's 0.2 splits 6/10, 4/10.
    assert infl["attn.1/5@4"] == pytest.approx(0.2)
    assert infl[QK_NODE] == pytest.approx(0.2 * 0.4)
    assert infl["embed@2"] == pytest.approx(0.4 * 0.5 + 0.2 * 0.6 + 0.2 * 0.4 * 1.0)


def test_pruning_by_node_threshold_uses_direct_influence_unless_given_qk_influence():
    G = with_qk(direct_graph())
    pruning = C.Pruning(node_threshold=0.05)
    assert QK_NODE not in C.prune_graph(G, pruning)
    assert QK_NODE in C.prune_graph(G, pruning, graph_influence(G, qk=True))
