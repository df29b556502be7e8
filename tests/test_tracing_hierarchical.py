"""Hierarchical tracing: recovers a planted path, agrees with the full graph, needs fewer backward passes."""

from __future__ import annotations

import pytest
import torch
from tracing_helpers import exact_dictionaries, planted_model, relu_model


@pytest.fixture(scope="module")
def planted():
    from core.tracing.replacement import ReplacementModel

    model, dicts, tokens, info = planted_model()
    rm = ReplacementModel(model, dicts)
    return rm, rm.prepare(tokens), info


def test_planted_two_step_path_is_recovered(planted):
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget

    rm, state, info = planted
    # The distractors are real: six latents fire, three of them on the signal token.
    assert sum(n.is_latent for n in state.nodes) == 6
    p = info["position"]
    G = hierarchical_trace(rm, state, LogitTarget(info["token"], p), TraceParams(node_threshold=0.1, max_parents=3))
    l0 = f"transcoder.0/{info['layer0_latent']}@{p}"
    l1 = f"transcoder.1/{info['layer1_latent']}@{p}"
    target = f"logit@{p}:{info['token']}"
    assert {v for v, a in G.nodes(data=True) if a["kind"] == "transcoder"} == {l0, l1}
    assert G.has_edge(l1, target) and G.has_edge(l0, l1) and G.has_edge(f"embed@{p}", l0)
    assert G.nodes[l0]["level"] == 2 and G.nodes[l1]["level"] == 1
    assert G.edges[l1, target]["weight"] > 0 and G.edges[l0, l1]["weight"] > 0
    assert G.graph["n_backward"] == 3  # one per level: logit, layer 1, layer 0


def test_planted_side_path_appears_only_below_its_share(planted):
    """The weak direct route (transcoder.1/1) joins the graph only when the threshold allows it."""
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget

    rm, state, info = planted
    p = info["position"]
    loose = hierarchical_trace(
        rm, state, LogitTarget(info["token"], p), TraceParams(node_threshold=0.001, max_parents=8)
    )
    strict = hierarchical_trace(
        rm, state, LogitTarget(info["token"], p), TraceParams(node_threshold=0.1, max_parents=8)
    )
    assert f"transcoder.1/1@{p}" in loose and f"transcoder.1/1@{p}" not in strict


@pytest.fixture(scope="module")
def random_setup():
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    model = relu_model(d_vocab=64, seed=2)
    rm = ReplacementModel(model, exact_dictionaries(model, seed=2))
    tokens = torch.tensor([0] + torch.randint(1, 64, (11,), generator=torch.Generator().manual_seed(2)).tolist())
    state = rm.prepare(tokens)
    return rm, state, LogitTarget(4, 11, 9)


def test_hierarchical_edges_equal_full_graph_entries(random_setup):
    from core.tracing.full_graph import full_attribution_graph
    from core.tracing.hierarchical import TraceParams, hierarchical_trace

    rm, state, target = random_setup
    G = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.02, max_parents=6, batch_size=8))
    full = full_attribution_graph(rm, state, target, batch_size=8)
    index = {n.node_id: i for i, n in enumerate(full.nodes)}
    assert G.number_of_edges() > 10
    assert sum(1 for v, a in G.nodes(data=True) if a["kind"] in ("attn", "transcoder")) >= 3
    for u, v, d in G.edges(data=True):
        assert abs(d["weight"] - full.effect(index[u], index[v])) < 1e-4, (u, v)
    assert full.n_backward >= 5 * G.graph["n_backward"]


def test_thresholds_shape_the_graph(random_setup):
    from core.tracing.hierarchical import TraceParams, hierarchical_trace, select_parents

    rm, state, target = random_setup
    small = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.2, max_parents=2))
    large = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.01, max_parents=10))
    assert small.number_of_nodes() < large.number_of_nodes()
    assert all(a["level"] <= 2 * rm.n_layers + 1 for _, a in large.nodes(data=True))
    row = torch.tensor([5.0, -3.0, 1.5, 0.25, 0.25])
    assert select_parents(row, 0.1, 5) == [0, 1, 2]
    assert select_parents(row, 0.1, 2) == [0, 1]
    assert select_parents(torch.zeros(3), 0.1, 2) == []
    with pytest.raises(ValueError, match="node_threshold"):
        TraceParams(node_threshold=1.5)
    with pytest.raises(ValueError, match="max_parents"):
        TraceParams(max_parents=0)


def test_latent_target_and_depth_limit(random_setup):
    from core.tracing.attribution import target_for_node
    from core.tracing.hierarchical import TraceParams, hierarchical_trace

    rm, state, _ = random_setup
    j = max(
        (i for i, n in enumerate(state.nodes) if n.is_latent and n.layer == 1), key=lambda i: state.nodes[i].activation
    )
    target = target_for_node(state, j)
    G = hierarchical_trace(rm, state, target, TraceParams(max_depth=1))
    assert G.graph["target"]["node_id"] == state.nodes[j].node_id
    assert G.graph["n_backward"] == 2
    assert max(a["level"] for _, a in G.nodes(data=True)) <= 2
    with pytest.raises(ValueError, match="only latents"):
        target_for_node(state, 0)


def test_influence_pruning(random_setup):
    from core.tracing.full_graph import (
        full_attribution_graph,
        full_graph_to_networkx,
        prune_by_influence,
        target_influence,
    )
    from core.tracing.influence import node_influence

    rm, state, target = random_setup
    full = full_attribution_graph(rm, state, target, batch_size=16)
    keep = prune_by_influence(full, n_latents=10)
    assert len(keep) == 10 and all(full.nodes[i].is_latent for i in keep)
    infl = target_influence(full)
    others = [i for i, n in enumerate(full.nodes[:-1]) if n.is_latent and i not in keep]
    assert min(infl[keep]) >= max(infl[others])
    G = full_graph_to_networkx(full, keep, edge_threshold=0.0)
    assert sum(1 for _, a in G.nodes(data=True) if a["kind"] in ("attn", "transcoder")) == 10
    # A hand-made chain: influence multiplies along paths.
    A = torch.zeros(3, 3)
    A[2, 1] = 2.0  # 1 -> target
    A[1, 0] = -1.0  # 0 -> 1
    assert torch.allclose(node_influence(A, torch.tensor([0.0, 0.0, 1.0])), torch.tensor([1.0, 1.0, 0.0]))


def test_pruned_full_graph_keeps_the_full_graphs_edge_shares(random_setup):
    """A networkx graph of some latents of a full graph gives each kept edge its share of its target's whole
    |direct effect| in the full graph (the untraced remainder is recorded as total_abs_effect), so pruning
    and influence on it start from the same shares as on the full graph."""
    from core.circuits.saved import edge_shares
    from core.tracing.full_graph import full_attribution_graph, full_graph_to_networkx, prune_by_influence

    rm, state, target = random_setup
    full = full_attribution_graph(rm, state, target, batch_size=16)
    G = full_graph_to_networkx(full, prune_by_influence(full, n_latents=10), edge_threshold=0.0)
    index = {nd.node_id: i for i, nd in enumerate(full.nodes)}
    index[G.graph["target"]["node_id"]] = full.target_index
    totals = full.adjacency.abs().sum(1)
    expected = {(u, v): abs(float(full.adjacency[index[v], index[u]])) / float(totals[index[v]]) for u, v in G.edges}
    assert edge_shares(G) == pytest.approx(expected, rel=1e-5)
