"""core.circuits.saved: pruning math on hand-built graphs, influence against the full-graph formula, versioned
save/load in a workspace (the original never changes), annotations that survive, faithfulness recomputed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from tracing_helpers import exact_dictionaries, relu_model

from core import store
from core.circuits import saved as C
from core.tracing.graph import circuit_features, graph_from_json

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "When Mary and John went to the store, John gave a drink to"


def hand_graph() -> nx.DiGraph:
    """target T <- A (+4), T <- B (-2); A <- C (+3), B <- C (+1), A <- E (+1); D isolated. Totals: T 10, A 6, B 4."""
    G = nx.DiGraph()
    G.graph["target"] = {"node_id": "T"}
    G.add_node("T", kind="logit", is_target=True, total_abs_effect=10.0)
    G.add_node("A", kind="transcoder", total_abs_effect=6.0)
    G.add_node("B", kind="attn", total_abs_effect=4.0)
    G.add_node("C", kind="transcoder")
    G.add_node("E", kind="embed")
    G.add_node("D", kind="attn")
    G.add_edge("A", "T", weight=4.0)
    G.add_edge("B", "T", weight=-2.0)
    G.add_edge("C", "A", weight=3.0)
    G.add_edge("C", "B", weight=1.0)
    G.add_edge("E", "A", weight=1.0)
    return G


def test_edge_shares_and_influence_by_hand():
    G = hand_graph()
    shares = C.edge_shares(G)
    assert shares == pytest.approx(
        {("A", "T"): 0.4, ("B", "T"): 0.2, ("C", "A"): 0.5, ("C", "B"): 0.25, ("E", "A"): 1 / 6}
    )
    infl = C.graph_influence(G)
    assert infl["T"] == 1.0 and infl["D"] == 0.0
    assert infl["A"] == pytest.approx(0.4) and infl["B"] == pytest.approx(0.2)
    assert infl["C"] == pytest.approx(0.5 * 0.4 + 0.25 * 0.2)
    assert infl["E"] == pytest.approx(0.4 / 6)
    # Without recorded totals, shares are taken over the graph's own in-edges.
    for v in G.nodes:
        G.nodes[v].pop("total_abs_effect", None)
    assert C.edge_shares(G)[("A", "T")] == pytest.approx(4 / 6)


def test_prune_graph_thresholds_removals_pins_and_orphans():
    G = hand_graph()
    before = nx.node_link_data(G, edges="links")
    # Nothing pruned: only the node that never reached the target goes.
    H = C.prune_graph(G, C.Pruning())
    assert set(H.nodes) == {"T", "A", "B", "C", "E"} and H.number_of_edges() == 5
    # Removing A leaves C reaching T through B; E is an orphan then.
    H = C.prune_graph(G, C.Pruning(removed_nodes=("A",)))
    assert set(H.nodes) == {"T", "B", "C"}
    # Removing A and B orphans C unless it is pinned.
    assert set(C.prune_graph(G, C.Pruning(removed_nodes=("A", "B"))).nodes) == {"T"}
    assert set(C.prune_graph(G, C.Pruning(removed_nodes=("A", "B"), pinned=("C",))).nodes) == {"T", "C"}
    # Edge threshold 0.3 drops B->T (0.2), C->B (0.25), E->A (0.17): B is orphaned.
    H = C.prune_graph(G, C.Pruning(edge_threshold=0.3))
    assert set(H.edges) == {("A", "T"), ("C", "A")} and set(H.nodes) == {"T", "A", "C"}
    # Node threshold 0.22 drops B (0.2) and E (0.067), keeps C (0.25).
    H = C.prune_graph(G, C.Pruning(node_threshold=0.22))
    assert set(H.nodes) == {"T", "A", "C"}
    assert set(C.prune_graph(G, C.Pruning(node_threshold=0.22, pinned=("B",))).nodes) == {"T", "A", "B", "C"}
    # Removing an edge: C->A gone, C still reaches T through B.
    H = C.prune_graph(G, C.Pruning(removed_edges=(("C", "A"),)))
    assert not H.has_edge("C", "A") and "C" in H
    assert H.graph["pruning"]["removed_edges"] == [["C", "A"]] and "faithfulness" not in H.graph
    # The input graph is never changed.
    assert nx.node_link_data(G, edges="links") == before
    with pytest.raises(ValueError, match="target node cannot be removed"):
        C.prune_graph(G, C.Pruning(removed_nodes=("T",)))
    with pytest.raises(ValueError, match="not in the graph: Z"):
        C.prune_graph(G, C.Pruning(pinned=("Z",)))
    with pytest.raises(ValueError, match="edges that are not in the graph"):
        C.prune_graph(G, C.Pruning(removed_edges=(("T", "A"),)))


def test_pruning_json_is_canonical():
    p = C.Pruning(removed_nodes=("b", "a", "a"), removed_edges=(("x", "y"),), node_threshold=0.01, pinned=("c",))
    q = C.Pruning.from_json(json.loads(json.dumps(p.to_json())))
    assert q == p and q.key() == p.key()
    assert C.Pruning(removed_nodes=("a", "b")).key() == C.Pruning(removed_nodes=("b", "a")).key()
    assert C.Pruning().is_empty and not p.is_empty
    with pytest.raises(ValueError, match="node_threshold must be a share"):
        C.Pruning(node_threshold=1.5)


@pytest.fixture(scope="module")
def traced(tiny_tokenizer):
    from core.tracing.api import trace_prompt
    from core.tracing.hierarchical import TraceParams

    model = relu_model(tiny_tokenizer, n_ctx=96, seed=7)
    dicts = exact_dictionaries(model, seed=7)
    res = trace_prompt(
        model, dicts, PROMPT, target=" Mary", contrast=" John", params=TraceParams(node_threshold=0.02), ablation="zero"
    )
    return model, dicts, res


def test_influence_matches_the_full_graph_formula(traced):
    """graph_influence on a graph = core.tracing.influence.node_influence on its adjacency, with each row's
    untraced remainder (total_abs_effect minus the graph's edges) sent to a sink column."""
    from core.tracing.influence import node_influence as matrix_influence

    _, _, res = traced
    G = res.graph
    nodes = list(G.nodes)
    idx = {v: i for i, v in enumerate(nodes)}
    n = len(nodes)
    A = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for u, v, d in G.edges(data=True):
        A[idx[v], idx[u]] = abs(d["weight"])
    for v in nodes:
        total = G.nodes[v].get("total_abs_effect")
        if total:
            A[idx[v], n] = total - A[idx[v], :n].sum()
    w = torch.zeros(n + 1, dtype=torch.float64)
    w[idx[C.target_node(G)]] = 1.0
    expected = matrix_influence(A, w)
    got = C.graph_influence(G)
    tgt = C.target_node(G)
    for v in nodes:
        if v != tgt:
            # float32 edge weights summed in another order: agreement to float32 precision
            assert got[v] == pytest.approx(float(expected[idx[v]]), rel=1e-6, abs=1e-9)
    assert sum(got[v] > 0 for v in nodes) > 3


def test_faithfulness_recomputed_from_the_stored_graph_matches_the_trace(traced):
    model, dicts, res = traced
    G = C.with_target(res.graph.copy(), res.target)
    again = C.measure_faithfulness(model, dicts, G, None, "zero")
    assert again.faithfulness == pytest.approx(res.faithfulness.faithfulness, abs=1e-5)
    assert again.complement_faithfulness == pytest.approx(res.faithfulness.complement_faithfulness, abs=1e-5)
    # Reusing the reference runs gives the same numbers for a pruned circuit.
    infl = C.graph_influence(G)
    top = sorted((v for v in G if G.nodes[v].get("kind") in ("attn", "transcoder")), key=lambda v: -infl[v])
    H = C.prune_graph(G, C.Pruning(removed_nodes=tuple(top[:2])))
    ref = C.reference_of(res.faithfulness.to_json(), "zero")
    with_ref = C.measure_faithfulness(model, dicts, H, None, "zero", reference=ref)
    without = C.measure_faithfulness(model, dicts, H, None, "zero")
    for k in ("faithfulness", "complement_faithfulness", "metric_circuit", "metric_complement"):
        assert getattr(with_ref, k) == pytest.approx(getattr(without, k), abs=1e-5)
    assert without.n_latents == len(circuit_features(H)) <= len(circuit_features(G)) - 2
    assert without.metric_full == pytest.approx(ref[0], abs=1e-5) and without.metric_empty == pytest.approx(
        ref[1], abs=1e-5
    )


def test_versions_keep_the_original_and_round_trip(traced, tmp_path):
    model, dicts, res = traced
    ws = tmp_path / "w.duckdb"
    assert C.list_circuits(ws) == []
    v1 = C.save_circuit(ws, "  ioi  ", res.graph, res.target)
    assert v1.name == "ioi" and v1.version == 1 and v1.faithfulness == res.faithfulness.to_json()
    with pytest.raises(C.CircuitError, match="already exists"):
        C.save_circuit(ws, "ioi", res.graph, res.target)
    with pytest.raises(C.CircuitError, match="needs a name"):
        C.save_circuit(ws, "   ", res.graph, res.target)

    loaded = C.load_circuit(ws, "ioi")
    assert set(loaded.graph.nodes) == set(res.graph.nodes) and set(loaded.graph.edges) == set(res.graph.edges)
    for u, v, d in res.graph.edges(data=True):
        assert loaded.graph.edges[u, v]["weight"] == pytest.approx(d["weight"])
    assert C.graph_target(loaded.graph) == res.target

    infl = C.graph_influence(loaded.graph)
    latents = sorted(
        (v for v in loaded.graph if loaded.graph.nodes[v].get("kind") in ("attn", "transcoder")), key=lambda v: -infl[v]
    )
    pruning = C.Pruning(removed_nodes=(latents[-1],), node_threshold=0.001, pinned=(latents[0],))
    pruned = C.prune_graph(loaded.graph, pruning)
    faith = C.measure_faithfulness(model, dicts, pruned, None, "zero")
    probe = "<img src=x onerror=alert(1)>"
    notes = {latents[0]: C.Annotation(probe), latents[1]: C.Annotation("copies the name", "openai/gpt-4o-mini")}
    v2 = C.save_version(ws, "ioi", pruning, notes, C.Annotation("name mover circuit"), faith, note="by hand")
    assert v2.version == 2 and v2.parent_version == 1 and v2.n_latents == len(circuit_features(pruned))
    v3 = C.save_version(ws, "ioi", C.Pruning(edge_threshold=0.05), created_by="openai/gpt-4o-mini", parent_version=1)
    assert v3.version == 3 and v3.created_by == "openai/gpt-4o-mini"

    # Version 1 is still exactly the traced graph, with no annotations.
    again1 = C.load_circuit(ws, "ioi", 1)
    assert set(again1.graph.nodes) == set(res.graph.nodes) and again1.node_annotations == {} and again1.pruning.is_empty
    again2 = C.load_circuit(ws, "ioi", 2)
    assert set(again2.graph.nodes) == set(pruned.nodes) and again2.pruning == pruning
    assert again2.node_annotations == notes and again2.annotation == C.Annotation("name mover circuit", "hand")
    assert again2.faithfulness == pytest.approx(faith.to_json()) and again2.note == "by hand"
    assert C.load_circuit(ws, "ioi").version == 3

    infos = C.list_circuits(ws)
    assert [(i.name, i.n_versions, i.latest_version, i.target_label) for i in infos] == [
        ("ioi", 3, 3, C.target_node(res.graph))
    ]
    versions = C.list_versions(ws, "ioi")
    assert [v.version for v in versions] == [1, 2, 3] and all(v.graph is None for v in versions)
    assert versions[1].node_annotations == notes

    removed = latents[-1]
    if removed not in pruned:
        with pytest.raises(C.CircuitError, match="not in this version's graph"):
            C.save_version(ws, "ioi", pruning, {removed: C.Annotation("gone")})
    with pytest.raises(C.CircuitError, match="not in the graph"):
        C.save_version(ws, "ioi", C.Pruning(removed_nodes=("attn.9/9@9",)))
    assert C.load_circuit(ws, "ioi").version == 3  # failed saves stored nothing

    # Export: a graph JSON that graph_from_json reads, with the annotations as labels.
    out = C.export_json(again2)
    back = graph_from_json(json.loads(json.dumps(out)))
    assert set(back.nodes) == set(pruned.nodes)
    assert back.nodes[latents[0]]["label"] == probe and out["metadata"]["circuit"]["version"] == 2

    assert C.delete_circuit(ws, "ioi") == 3
    assert C.list_circuits(ws) == []
    with pytest.raises(C.CircuitError, match="not in workspace"):
        C.load_circuit(ws, "ioi")
    with pytest.raises(C.CircuitError, match="not in workspace"):
        C.delete_circuit(ws, "ioi")


def test_annotations_survive_in_another_process(traced, tmp_path):
    _, _, res = traced
    ws = tmp_path / "w.duckdb"
    C.save_circuit(ws, "c", res.graph, res.target)
    node = next(v for v in res.graph if res.graph.nodes[v].get("kind") in ("attn", "transcoder"))
    C.save_version(ws, "c", C.Pruning(), {node: C.Annotation("fires on names")}, C.Annotation("summary", "hand"))
    code = (
        "import json, sys; from pathlib import Path; from core.circuits import saved as C; "
        f"v = C.load_circuit(Path({str(ws)!r}), 'c'); "
        "print(json.dumps({'v': v.version, 'notes': {k: a.text for k, a in v.node_annotations.items()}, 'summary': v.annotation.text}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"v": 2, "notes": {node: "fires on names"}, "summary": "summary"}


def test_a_workspace_from_before_circuits_is_migrated_on_read(tmp_path, monkeypatch):
    ws = tmp_path / "old.duckdb"
    old = tuple(m for m in store.MIGRATIONS if m.version != 3)
    monkeypatch.setattr(store.schema, "MIGRATIONS", old)
    with store.session(ws, write=True) as con:
        store.set_info(con, "model", {"name": "default"})
    monkeypatch.undo()
    assert C.list_circuits(ws) == []
    with store.session(ws) as con:
        assert store.get_info(con, "model") == {"name": "default"}


def test_target_json_round_trip():
    from core.tracing.nodes import LatentTarget, LogitTarget

    for t in (
        LogitTarget(5, 3, 7, " Mary", " John"),
        LogitTarget(5, 3),
        LatentTarget("transcoder:blocks.1.ln2.hook_normalized", 4, 17),
    ):
        assert C.target_from_json(json.loads(json.dumps(C.target_to_json(t)))) == t
    with pytest.raises(ValueError, match="not a trace target"):
        C.target_from_json({"type": "x"})


def test_node_labels_come_from_stored_explanations(traced, tmp_path):
    _, _, res = traced
    G = res.graph
    ws = tmp_path / "w.duckdb"
    assert C.node_explanations(ws, G) == {}  # no workspace yet
    nodes = [v for v in G if G.nodes[v].get("kind") in ("attn", "transcoder")][:2]
    a, b = (G.nodes[v] for v in nodes)

    def expl(i: str, attrs, explainer: str, text: str, is_baseline: bool = False, baseline: str | None = None):
        return store.ExplanationRecord(
            i, attrs["dictionary"], int(attrs["latent"]), explainer, is_baseline, baseline, "top", text, "v1", {}
        )

    store.write_explanations(ws, [expl("e1", a, "baseline:token-stats", "tokens: Mary", is_baseline=True)])
    store.write_explanations(ws, [expl("e2", a, "openai/gpt-4o-mini", "names of people")])
    store.write_explanations(ws, [expl("e3", a, "baseline:token-stats", "tokens: John", is_baseline=True)])
    store.write_explanations(ws, [expl("e4", b, "baseline:token-stats", "tokens: (", is_baseline=True)])
    store.write_explanations(ws, [expl("e5", b, "openai/x", "someone else's", baseline="random-explanation")])
    got = C.node_explanations(ws, G)
    same_latent = [
        v for v in G if (G.nodes[v].get("dictionary"), G.nodes[v].get("latent")) == (a["dictionary"], a["latent"])
    ]
    assert {v: got[v] for v in same_latent} == dict.fromkeys(
        same_latent, C.NodeExplanation("names of people", "openai/gpt-4o-mini")
    )
    assert got[nodes[1]] == C.NodeExplanation(
        "tokens: (", "baseline:token-stats"
    )  # a baseline explainer, named as such
    assert len(got) == len(same_latent) + len(
        [v for v in G if (G.nodes[v].get("dictionary"), G.nodes[v].get("latent")) == (b["dictionary"], b["latent"])]
    )


def test_save_edits_decides_new_circuit_next_version_and_refusals(traced, tmp_path):
    """The page's Save: a new name stores version 1 and the edits as version 2; the same name adds the
    next version; a circuit deleted since loading is refused with source None; a bad name changes nothing."""
    _, _, res = traced
    ws = tmp_path / "w.duckdb"
    G = C.with_target(res.graph.copy(), res.target)
    latents = [v for v in G if G.nodes[v].get("kind") in ("attn", "transcoder")]
    unchanged = C.save_edits(ws, "ioi", G, res.target, None, C.Pruning())
    assert unchanged.version.version == 1 and unchanged.source["version"] == 1
    assert [k for k, _ in unchanged.messages] == ["success"]

    pruning = C.Pruning(removed_nodes=(latents[0],))
    out = C.save_edits(ws, " edited ", G, res.target, None, pruning, note="first cut")
    assert out.version.version == 2 and out.version.parent_version == 1 and out.source["name"] == "edited"
    assert out.source["circuit_id"] == out.version.circuit_id is not None
    again = C.save_edits(ws, "edited", G, res.target, out.source, pruning)
    assert again.version.version == 3 and again.version.parent_version == 2

    # Everything pruned: saved, with the zero-latent warning.
    bare = C.save_edits(ws, "edited", G, res.target, again.source, C.Pruning(removed_nodes=tuple(latents)))
    assert [k for k, _ in bare.messages] == ["success", "warning"] and "keeps no latents" in bare.messages[1][1]

    C.delete_circuit(ws, "edited")
    refused = C.save_edits(ws, "edited", G, res.target, bare.source, pruning)
    assert refused.source is None and refused.version is None
    assert refused.messages[0][0] == "error" and "Press Save again" in refused.messages[0][1]

    bad = C.save_edits(ws, "   ", G, res.target, unchanged.source, pruning)
    assert bad.source == unchanged.source and bad.version is None
    assert bad.messages == [
        ("error", "Not saved: a circuit needs a name. Your edits are still on this page. Nothing stored was changed.")
    ]
    assert [v.version for v in C.list_versions(ws, "ioi")] == [1]
