"""The circuit graph component and its side panel: the component's files stay offline and set no text as
HTML; the spec it draws (layout, short labels, strongest edges, supernodes); the edits a click makes, with
bad input refused; and the Circuits page in AppTest: a node's card, grouping, save and reload, undo."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import networkx as nx
import pytest
from streamlit.testing.v1 import AppTest
from test_graph_view import PROBE, small_graph

from core import store
from core.circuits import saved as C
from core.circuits.supernodes import Supernode
from core.tracing.nodes import LogitTarget
from ui import circuit_panel as P
from ui import graph_view

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Circuits.py")
TARGET = "logit@3:')'"
A, B, EARLY = "attn.1/9@3", "transcoder.1/7@3", "attn.0/2@1"


# ------------------------------------------------------------------------------------------------- the component


def test_component_files_are_local_and_set_no_text_as_html():
    folder = graph_view.COMPONENT_DIR
    index = (folder / "index.html").read_text()
    js = (folder / "graph.js").read_text()
    scripts = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", index)
    assert scripts == ["vis-network.min.js", "graph.js"] and all((folder / s).exists() for s in scripts)
    assert graph_view.external_urls(index) == [] and graph_view.external_urls(js) == []
    bundle = (folder / "vis-network.min.js").read_text()
    assert graph_view.external_urls(bundle) == [] and graph_view.TOOLTIP_AS_TEXT in bundle
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert unsafe not in js, unsafe
    assert "textContent" in js and "streamlit:setComponentValue" in js and "streamlit:componentReady" in js


def crowded_graph(n: int = 9) -> nx.DiGraph:
    """small_graph plus `n` transcoder latents in one (position, layer) cell, explained at length."""
    G = small_graph()
    G.graph["prompt_tokens"] = ["<bos>", " (", " b", " vote"]
    for i in range(n):
        v = f"transcoder.0/{100 + i}@3"
        G.add_node(v, kind="transcoder", layer=0, position=3, latent=100 + i, dictionary="transcoder:x", activation=1.0)
        G.add_edge(v, B, weight=(-1) ** i * (i + 1) / 10)
    return G


def test_spec_layout_labels_and_columns():
    G = crowded_graph()
    labels = {"transcoder.0/100@3": "closing brackets after a long clause " + PROBE}
    spec = graph_view.graph_spec(G, labels, {}, C.graph_influence(G), edges_per_node=None)
    nodes = {n["id"]: n for n in spec["nodes"]}
    assert set(nodes) == set(G.nodes)
    # Nodes in one cell never overlap: any two are at least a node gap apart in x or a line gap in y.
    for a, b in itertools.combinations(spec["nodes"], 2):
        assert abs(a["x"] - b["x"]) >= graph_view.NODE_GAP - 1e-6 or abs(a["y"] - b["y"]) >= graph_view.LINE_GAP - 1e-6
    # Short labels: the explanation's first words, else kind.layer/latent.
    assert nodes["transcoder.0/100@3"]["label"] == "closing brackets…"
    assert nodes["transcoder.0/101@3"]["label"] == "transcoder.0/101"
    assert all(len(n["label"]) <= graph_view.SHORT_LABEL_CHARS for n in spec["nodes"])
    # One column per prompt token (position 2 has no node), token text as the reader sees it.
    assert [c["text"] for c in spec["columns"]] == ["<bos>", "␣(", "␣b", "␣vote"]
    assert [r["text"] for r in spec["rows"]] == ["embeddings", "L0 attn", "L0 MLP", "L1 attn", "L1 MLP", "target"]
    # Target on top (smallest y), embeddings at the bottom.
    assert nodes[TARGET]["y"] < nodes[B]["y"] < nodes["embed@1"]["y"]
    # Edge colour by sign, width by |weight|.
    by_pair = {(e["from"], e["to"]): e for e in spec["edges"]}
    assert by_pair[(B, TARGET)]["color"]["color"] == graph_view.POSITIVE
    assert by_pair[(A, TARGET)]["color"]["color"] == graph_view.NEGATIVE
    assert by_pair[(B, TARGET)]["width"] > by_pair[(A, TARGET)]["width"]
    assert json.loads(json.dumps(spec)) == spec


def test_default_view_draws_each_nodes_strongest_edges():
    G = crowded_graph()
    for i in range(9):  # weaker second out-edges: only the target's strongest in-edges draw them
        G.add_edge(f"transcoder.0/{100 + i}@3", TARGET, weight=0.01 * (i + 1))
    shown = graph_view.strongest_edges(G, 2)
    into_b = [e for e in shown if e[1] == B]
    # B's two strongest in-edges by |weight| (0.9 and -0.8), plus edges that are some source's strongest out-edge.
    assert ("transcoder.0/108@3", B) in into_b and ("transcoder.0/107@3", B) in into_b
    assert set(graph_view.strongest_edges(G, None)) == set(G.edges)
    spec = graph_view.graph_spec(G, edges_per_node=1)
    assert spec["n_shown_edges"] < spec["n_edges"] == G.number_of_edges()
    every_node_has_a_way_up = {e["from"] for e in spec["edges"]}
    assert every_node_has_a_way_up == {v for v in G if G.out_degree(v)}
    assert ("transcoder.0/100@3", TARGET) not in {(e["from"], e["to"]) for e in spec["edges"]}


def test_spec_draws_a_supernode_as_one_node_with_summed_edges():
    G = small_graph()
    s = Supernode("bracket pair", (A, B))
    spec = graph_view.graph_spec(G, supernodes=[s], edges_per_node=None)
    ids = {n["id"] for n in spec["nodes"]}
    assert s.id in ids and A not in ids and B not in ids
    edge = next(e for e in spec["edges"] if e["from"] == s.id and e["to"] == TARGET)
    assert edge["weight"] == pytest.approx(1.5) and "sum of 2 edges" in edge["title"]
    assert {n["id"] for n in graph_view.graph_spec(G, supernodes=[s], expanded=[s.id])["nodes"]} == set(G.nodes)


def test_spec_version_changes_with_what_is_drawn():
    G = small_graph()
    assert graph_view.graph_spec(G)["version"] == graph_view.graph_spec(G)["version"]
    assert graph_view.graph_spec(G)["version"] != graph_view.graph_spec(G, pinned=[A])["version"]


# ------------------------------------------------------------------------------------------------- edits


def fresh_state() -> dict:
    return {"circ.remove_nodes": [], "circ.remove_edges": [], "circ.pinned": [], "circ.supernodes": []}


def test_click_focuses_and_selection_is_kept():
    G, state = small_graph(), fresh_state()
    assert P.apply_event(state, {"type": "click", "node": A, "nodes": [A], "seq": 1}, G) == []
    assert state["circ.focus"] == A and state["circ.selected"] == [A]
    P.apply_event(state, {"type": "select", "node": B, "nodes": [A, B], "seq": 2}, G)
    assert state["circ.selected"] == [A, B] and state["circ.focus"] == B


def test_stale_or_unknown_events_change_nothing():
    G, state = small_graph(), fresh_state()
    P.apply_event(state, {"type": "click", "node": A, "nodes": [A], "seq": 1}, G)
    before = dict(state)
    for event in (
        {"type": "click", "node": "attn.3/1@9", "nodes": ["attn.3/1@9"], "seq": 2},
        {"type": "remove", "node": "attn.3/1@9", "nodes": ["attn.3/1@9"], "seq": 3},
        {"type": "explode", "node": A, "nodes": [A], "seq": 4},
    ):
        messages = P.apply_event(state, event, G)
        assert [k for k, _ in messages] == ["error"] and "nothing was changed" in messages[0][1]
        assert state == before
    assert P.apply_event(state, None, G) == [] and state == before


def test_remove_restore_pin_and_undo():
    G, state = small_graph(), fresh_state()
    assert P.apply_event(state, {"type": "remove", "node": A, "nodes": [A], "seq": 1}, G)[0][0] == "success"
    assert state["circ.remove_nodes"] == [A]
    assert P.remove(state, [TARGET], G)[0][0] == "error" and state["circ.remove_nodes"] == [A]
    P.toggle_pin(state, B, G)
    assert state["circ.pinned"] == [B]
    P.restore(state, [A], G)
    assert state["circ.remove_nodes"] == []
    P.undo(state)
    assert state["circ.remove_nodes"] == [A] and state["circ.pinned"] == [B]
    P.undo(state)
    P.undo(state)
    assert state["circ.remove_nodes"] == [] and state["circ.pinned"] == []
    assert P.undo(state)[0][0] == "warning"


def test_grouping_bad_selections_are_refused_and_a_good_one_undone():
    G, state = small_graph(), fresh_state()
    state["circ.selected"] = [A]
    messages = P.group_selected(state, "alone", G)
    assert messages[0][0] == "error" and "at least two" in messages[0][1] and state["circ.supernodes"] == []
    state["circ.selected"] = [A, B]
    assert P.group_selected(state, "pair", G)[0][0] == "success"
    (s,) = state["circ.supernodes"]
    assert s.members == tuple(sorted([A, B])) and state["circ.focus"] == s.id
    state["circ.selected"] = [A, EARLY]
    messages = P.group_selected(state, "again", G)
    assert messages[0][0] == "error" and "already in supernode 'pair'" in messages[0][1]
    assert state["circ.supernodes"] == [s]
    P.remove(state, [s.id], G)  # removing a supernode removes its members
    assert state["circ.remove_nodes"] == sorted([A, B])
    P.undo(state)
    P.undo(state)
    assert state["circ.supernodes"] == [] and state["circ.remove_nodes"] == []


def test_latents_link_is_what_the_latents_page_reads():
    assert P.latents_link("transcoder:blocks.1.ln2.hook_normalized", 7) == (
        "/Latents?dictionary=transcoder%3Ablocks.1.ln2.hook_normalized&latent=7"
    )


# ------------------------------------------------------------------------------------------------- the page (AppTest)


@pytest.fixture
def saved_ws(tmp_path) -> Path:
    ws = tmp_path / "w.duckdb"
    G = small_graph()
    G.graph["prompt_tokens"] = ["<bos>", " (", " b", " vote"]
    C.save_circuit(ws, "small", G, LogitTarget(3, 3, None, ")"))
    a = G.nodes[B]
    store.write_explanations(
        ws,
        [
            store.ExplanationRecord(
                "e1",
                a["dictionary"],
                a["latent"],
                "openai/gpt-4o-mini",
                False,
                None,
                "top",
                "closes " + PROBE,
                "v1",
                {},
            )
        ],
    )
    return ws


def load(ws: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    at.run()
    next(b for b in at.button if b.label == "Load").click()
    return at.run()


def spec_of(at: AppTest) -> dict:
    return json.loads(at.get("component_instance")[0].proto.json_args)["spec"]


def test_page_card_group_save_reload_and_undo(saved_ws):
    at = load(saved_ws)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {n["id"] for n in spec_of(at)["nodes"]} == set(small_graph().nodes)
    # The card of a node (the keyboard path of a click): its id, provenance of its explanation, a Latents link.
    at.selectbox(key="circ.focus").set_value(B)
    at = at.run()
    shown = " ".join(m.value for m in at.markdown)
    assert B in shown and "/Latents?dictionary=" in shown
    html = " ".join(str(h.proto.body) for h in at.get("html"))
    assert "closes &lt;img" in html and "openai/gpt-4o-mini" in html
    assert any(m.label == "activation here" and m.value == "1.5" for m in at.metric)

    # Group two nodes as a supernode, then save and reload: the supernode is back.
    at.multiselect(key="circ.selected").set_value([A, B])
    at.text_input(key="circ.group_label").input("bracket pair")
    at = at.run()
    next(b for b in at.button if b.label == "Group as supernode").click()
    at = at.run()
    assert not at.error, [e.value for e in at.error]
    (s,) = at.session_state["circ.supernodes"]
    assert s.id in {n["id"] for n in spec_of(at)["nodes"]}
    next(b for b in at.button if b.label == "Save").click()
    at = at.run()
    assert any("version 2" in m.value for m in at.success), [e.value for e in at.error]
    assert C.load_circuit(saved_ws, "small").pruning.supernodes == (s,)

    at2 = AppTest.from_file(PAGE, default_timeout=120)
    at2.session_state["workspace"] = str(saved_ws)
    at2.run()
    next(b for b in at2.button if b.label == "Load").click()
    at2 = at2.run()
    assert at2.session_state["circ.supernodes"] == [s]
    ids = {n["id"] for n in spec_of(at2)["nodes"]}
    assert s.id in ids and A not in ids

    # Undo the grouping (in the first session): drawn as its members again.
    next(b for b in at.button if b.label == "Undo").click()
    at = at.run()
    assert at.session_state["circ.supernodes"] == [] and {A, B} <= {n["id"] for n in spec_of(at)["nodes"]}


def test_group_button_needs_two_nodes(saved_ws):
    at = load(saved_ws)
    at.multiselect(key="circ.selected").set_value([A])
    at = at.run()
    assert next(b for b in at.button if b.label == "Group as supernode").disabled
    assert math.isfinite(len(at.session_state["circ.supernodes"]))
