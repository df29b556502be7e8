"""Graph JSON export/import round trip and aggregation over prompts."""

from __future__ import annotations

import json

import pytest
import torch
from tracing_helpers import exact_dictionaries, relu_model


@pytest.fixture(scope="module")
def graphs():
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    model = relu_model(d_vocab=64, seed=5)
    rm = ReplacementModel(model, exact_dictionaries(model, seed=5))
    out = []
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        tokens = torch.tensor([0] + torch.randint(1, 64, (8,), generator=g).tolist())
        state = rm.prepare(tokens)
        out.append(
            hierarchical_trace(
                rm, state, LogitTarget(3, 8, 5, " a", " b"), TraceParams(node_threshold=0.05, max_parents=4)
            )
        )
    return out


def test_json_round_trip(graphs, tmp_path):
    from core.tracing.graph import graph_from_json, graph_to_json, load_graph, save_graph

    G = graphs[0]
    obj = json.loads(json.dumps(graph_to_json(G)))
    assert obj["format"] == "sae-circuit-explorer/attribution-graph"
    assert {"nodes", "links", "metadata", "qParams"} <= set(obj)
    node = next(n for n in obj["nodes"] if n["kind"] == "transcoder")
    assert {"node_id", "feature", "layer", "ctx_idx", "feature_type", "activation"} <= set(node)
    assert node["feature_type"] == "cross layer transcoder" and node["layer"] == str(node["layer_index"])
    assert all(n["layer"] == "E" for n in obj["nodes"] if n["kind"] in ("embed", "pos_embed"))
    assert next(n for n in obj["nodes"] if n["kind"] == "logit")["layer"] == "3"  # n_layers + 1
    H = graph_from_json(obj)
    assert set(H.nodes) == set(G.nodes) and set(H.edges) == set(G.edges)
    for v, a in G.nodes(data=True):
        for k in ("kind", "layer", "position", "latent", "activation", "dictionary", "level"):
            assert H.nodes[v][k] == a[k], (v, k)
    for u, v, d in G.edges(data=True):
        assert H.edges[u, v]["weight"] == pytest.approx(d["weight"])
    assert H.graph["params"] == G.graph["params"] and H.graph["target"] == G.graph["target"]
    save_graph(G, tmp_path / "g.json")
    assert set(load_graph(tmp_path / "g.json").edges) == set(G.edges)
    with pytest.raises(ValueError, match="format"):
        graph_from_json({"format": "neuronpedia", "nodes": [], "links": []})


def test_summary_names_the_strongest_parents(graphs):
    from core.tracing.graph import graph_summary

    s = graph_summary(graphs[0])
    assert s["target_node"] == "logit@8:' a'-' b'"
    weights = [abs(e["weight"]) for e in s["top_edges_into_target"]]
    assert weights == sorted(weights, reverse=True) and weights
    json.dumps(s)


def test_aggregate_is_the_mean_over_prompts(graphs):
    from core.tracing.dataset import aggregate_graphs

    A = aggregate_graphs(graphs)
    assert A.graph["n_prompts"] == 3
    # Recompute one edge by hand: sum over positions within a prompt, mean over prompts.
    u, v, d = max(A.edges(data=True), key=lambda e: abs(e[2]["weight"]))
    total = 0.0
    for g in graphs:
        key = {n: ("logit" if a.get("is_target") else a["feature_key"]) for n, a in g.nodes(data=True)}
        total += sum(e["weight"] for a, b, e in g.edges(data=True) if key[a] == u and key[b] == v)
    assert d["weight"] == pytest.approx(total / 3)
    assert A.nodes["logit"]["n_prompts"] == 3
