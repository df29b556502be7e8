"""core.circuits.supernodes: grouping nodes under a label, collapsing them with summed edges, bad groupings
refused, and supernodes saved with a circuit version (old rows without them still load)."""

from __future__ import annotations

import json

import pytest
from test_graph_view import small_graph

from core import store
from core.circuits import saved as C
from core.circuits.supernodes import Supernode, SupernodeError, collapse, group, member_map, ungroup
from core.tracing.nodes import LogitTarget

A, B = "attn.1/9@3", "transcoder.1/7@3"
TARGET = "logit@3:')'"


def test_group_and_collapse_sum_the_edges():
    G = small_graph()
    s = group(G, [], [A, B], "  bracket   closers ")
    assert s.label == "bracket closers" and s.members == tuple(sorted([A, B])) and s.id.startswith("supernode:")
    H = collapse(G, [s])
    assert A not in H and B not in H and H.nodes[s.id]["kind"] == "supernode"
    assert sorted(H.nodes[s.id]["members"]) == sorted([A, B])
    # transcoder -> logit (2.0) and attn -> logit (-0.5) become one edge of weight 1.5
    assert H.edges[s.id, TARGET]["weight"] == pytest.approx(1.5) and H.edges[s.id, TARGET]["n_edges"] == 2
    assert H.edges["attn.0/2@1", s.id]["weight"] == pytest.approx(1.0)
    assert H.edges["mlp_error.0@3", s.id]["weight"] == pytest.approx(0.2)
    assert H.number_of_nodes() == G.number_of_nodes() - 1
    assert set(G.nodes) >= {A, B}  # G untouched
    # expanded: drawn as its members again
    assert set(collapse(G, [s], expanded=[s.id]).nodes) == set(G.nodes)
    assert member_map([s]) == {A: s.id, B: s.id} and member_map([s], [s.id]) == {}


def test_a_supernode_whose_members_were_pruned_is_not_drawn():
    G = small_graph()
    s = group(G, [], [A, "attn.0/2@1"], "pair")
    G.remove_node(A)
    G.remove_node("attn.0/2@1")
    assert s.id not in collapse(G, [s])


@pytest.mark.parametrize(
    ("members", "label", "message"),
    [
        ([A], "one", "at least two"),
        ([A, A], "one twice", "at least two"),
        ([A, "attn.7/1@9"], "stale", "not in the graph"),
        ([A, TARGET], "with target", "target"),
        ([A, B], "   ", "needs a label"),
        ([A, B], "x" * 200, "at most"),
    ],
)
def test_bad_groupings_are_refused(members, label, message):
    with pytest.raises(SupernodeError, match=message):
        group(small_graph(), [], members, label)


def test_nodes_already_grouped_or_a_supernode_cannot_be_grouped_again():
    G = small_graph()
    s = group(G, [], [A, B], "pair")
    with pytest.raises(SupernodeError, match="already in supernode 'pair'"):
        group(G, [s], [A, "attn.0/2@1"], "other")
    with pytest.raises(SupernodeError, match="expand it first"):
        group(G, [s], [s.id, "attn.0/2@1"], "nested")
    assert ungroup([s], s.id) == ()
    with pytest.raises(SupernodeError, match="not a supernode"):
        ungroup([s], "supernode:nope")


def test_json_round_trip_and_neuronpedia_lists():
    s = Supernode("pair", (B, A))
    assert Supernode.from_json(s.to_json()) == s
    assert Supernode.from_json(["pair", A, B]) == s


def test_pruning_carries_supernodes_without_changing_its_key():
    s = Supernode("pair", (A, B))
    plain = C.Pruning(removed_nodes=("attn.0/2@1",))
    grouped = C.Pruning(removed_nodes=("attn.0/2@1",), supernodes=(s,))
    assert "supernodes" not in plain.to_json()  # the JSON of a pruning without supernodes is as before
    assert grouped.key() == plain.key()  # faithfulness measured on the pruning stays valid
    assert not C.Pruning(supernodes=(s,)).is_empty
    again = C.Pruning.from_json(json.loads(json.dumps(grouped.to_json())))
    assert again == grouped and again.supernodes == (s,)
    assert C.Pruning.from_json({"removed_nodes": []}).supernodes == ()  # a row saved before supernodes


def test_prune_graph_refuses_supernodes_with_unknown_nodes():
    bad = C.Pruning(supernodes=(Supernode("stale", (A, "attn.7/1@9")),))
    with pytest.raises(ValueError, match="not in the graph"):
        C.prune_graph(small_graph(), bad)


def test_supernodes_are_saved_with_the_version_and_bad_ones_change_nothing(tmp_path):
    ws = tmp_path / "w.duckdb"
    G = small_graph()
    v1 = C.save_circuit(ws, "c", G, LogitTarget(3, 3, None, ")"))
    s = group(G, [], [A, B], "pair")
    source = {"name": "c", "version": 1, "circuit_id": v1.circuit_id}
    out = C.save_edits(ws, "c", G, None, source, C.Pruning(supernodes=(s,)))
    assert out.version is not None, out.messages
    loaded = C.load_circuit(ws, "c")
    assert loaded.version == 2 and loaded.pruning.supernodes == (s,)
    assert C.export_json(loaded)["metadata"]["circuit"]["pruning"]["supernodes"] == [s.to_json()]

    stale = C.Pruning(supernodes=(Supernode("stale", (A, "attn.7/1@9")),))
    with pytest.raises(C.CircuitError, match="not in the graph: attn.7/1@9; nothing was saved"):
        C.save_version(ws, "c", stale)
    assert [v.version for v in C.list_versions(ws, "c")] == [1, 2]
    with store.session(ws) as con:  # a row saved before supernodes existed has no "supernodes" key
        assert "supernodes" not in store.circuit_version_record(con, "c", 1).pruning
