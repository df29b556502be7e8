"""QK edges on the Circuits page: drawn only when "Show QK edges" is on, dashed and in their own colours,
above their own threshold, without changing which direct edges are drawn or (unless asked) any influence;
the spec function, a supernode standing for its members, and the page in AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
from streamlit.testing.v1 import AppTest
from test_graph_view import small_graph

from core.circuits import saved as C
from core.circuits.supernodes import Supernode
from core.tracing.nodes import LogitTarget
from ui import graph_view, qk_view
from ui.text import literal

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Circuits.py")
TARGET = "logit@3:')'"
A, B, EARLY = "attn.1/9@3", "transcoder.1/7@3", "attn.0/2@1"
STEER = "transcoder.0/5@1"  # joined to A only through its key: a QK-only node


def qk_graph() -> nx.DiGraph:
    """small_graph plus what expand_qk adds: STEER -> A of kind 'qk' (+0.4: share 0.4 of A's |direct effect|
    1.0), STEER's parent embed@1, and a QK weight on the direct edge EARLY -> A (-0.05: share 0.05)."""
    G = small_graph()
    G.graph["prompt_tokens"] = ["<bos>", " (", " b", " vote"]
    G.add_node(STEER, kind="transcoder", layer=0, position=1, latent=5, dictionary="transcoder:blocks.0.ln2.hook_normalized",
               token=" (", activation=0.7, qk_only=True)  # fmt: skip
    G.add_edge("embed@1", STEER, weight=0.2)
    G.add_edge(STEER, A, weight=0.4, edge_kind="qk", heads=[1])
    G.edges[EARLY, A]["qk_weight"] = -0.05
    return G


def test_spec_adds_dashed_qk_edges_above_their_threshold_and_keeps_the_direct_ones():
    G = qk_graph()
    infl = C.graph_influence(G)
    direct = graph_view.graph_spec(qk_view.direct_view(G), influence=infl, edges_per_node=None)
    assert all(e.get("kind") != "qk" and "dashes" not in e for e in direct["edges"])
    assert (STEER, A) not in {(e["from"], e["to"]) for e in direct["edges"]}
    spec = qk_view.with_qk_edges(direct, G, 0.0)
    qk = [e for e in spec["edges"] if e.get("kind") == "qk"]
    assert {(e["from"], e["to"]) for e in qk} == {(STEER, A), (EARLY, A)} and spec["n_qk_edges"] == 2
    assert all(e["dashes"] == qk_view.QK_DASHES for e in qk)
    by = {(e["from"], e["to"]): e for e in qk}
    assert by[(STEER, A)]["color"]["color"] == qk_view.QK_POSITIVE and "through head 1" in by[(STEER, A)]["title"]
    assert by[(EARLY, A)]["color"]["color"] == qk_view.QK_NEGATIVE
    assert spec["edges"][: len(direct["edges"])] == direct["edges"] and spec["version"] != direct["version"]
    assert [(e["from"], e["to"]) for e in qk_view.with_qk_edges(direct, G, 0.1)["edges"] if e.get("kind") == "qk"] == [
        (STEER, A)
    ]
    assert json.loads(json.dumps(spec)) == spec


def test_a_collapsed_supernode_carries_its_members_qk_edges():
    G = qk_graph()
    s = Supernode("steer pair", (STEER, "embed@1"))
    spec = qk_view.with_qk_edges(graph_view.graph_spec(qk_view.direct_view(G), supernodes=[s]), G, 0.0, [s])
    assert (s.id, A) in {(e["from"], e["to"]) for e in spec["edges"] if e.get("kind") == "qk"}


@pytest.fixture
def saved_ws(tmp_path) -> Path:
    ws = tmp_path / "w.duckdb"
    C.save_circuit(ws, "with qk", qk_graph(), LogitTarget(3, 3, None, ")"))
    return ws


def load(ws: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    at.run()
    next(b for b in at.button if b.label == "Load").click()
    return at.run()


def spec_of(at: AppTest) -> dict:
    return json.loads(at.get("component_instance")[0].proto.json_args)["spec"]


def qk_pairs(at: AppTest) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in spec_of(at)["edges"] if e.get("kind") == "qk"}


def test_page_shows_qk_edges_only_when_toggled_with_their_own_threshold(saved_ws):
    at = load(saved_ws)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert qk_pairs(at) == set()  # off by default
    direct = [e for e in spec_of(at)["edges"]]
    sizes = {n["id"]: n["size"] for n in spec_of(at)["nodes"]}
    assert at.slider(key="circ.qk_thr").disabled
    at.toggle(key="circ.show_qk").set_value(True)
    at = at.run()
    assert not at.exception and not at.error
    assert qk_pairs(at) == {(STEER, A), (EARLY, A)}
    assert [e for e in spec_of(at)["edges"] if e.get("kind") != "qk"] == direct  # the direct edges as they were
    assert any("2 QK edges drawn" in c.value for c in at.caption)
    at.slider(key="circ.qk_thr").set_value(0.1)
    at = at.run()
    assert qk_pairs(at) == {(STEER, A)}
    # Influence counts QK edges only when asked: then the QK-only node has a path to the target.
    assert {n["id"]: n["size"] for n in spec_of(at)["nodes"]} == sizes
    at.checkbox(key="circ.qk_influence").check()
    at = at.run()
    after = {n["id"]: n["size"] for n in spec_of(at)["nodes"]}
    assert after[STEER] > sizes[STEER] and after[B] == sizes[B]
    at.toggle(key="circ.show_qk").set_value(False)
    at = at.run()
    assert qk_pairs(at) == set()


def test_page_without_qk_edges_has_no_qk_controls(tmp_path):
    ws = tmp_path / "w.duckdb"
    G = small_graph()
    G.graph["prompt_tokens"] = ["<bos>", " (", " b", " vote"]
    C.save_circuit(ws, "plain", G, LogitTarget(3, 3, None, ")"))
    at = load(ws)
    assert not at.exception and not at.error
    assert not [t for t in at.toggle if t.key == "circ.show_qk"]


def test_static_exports_draw_the_direct_view():
    view = qk_view.direct_view(qk_graph())
    assert set(view.nodes) == set(qk_graph().nodes) and not view.has_edge(STEER, A)
    page = graph_view.graph_html(view, {}, {}, C.graph_influence(qk_graph()))
    assert STEER in page and "QK effect" not in page
    assert graph_view.graph_png(view, {}, {}).startswith(b"\x89PNG")


HOSTILE = "**bold** <b>x</b> $y$ [link](http://example.com)"


def sided_qk_graph() -> nx.DiGraph:
    """qk_graph with each QK effect's side recorded as expand_qk records it, and 12 more key-side steerers of A
    (weights 0.01 … 0.12) so A has more QK contributors than a card lists."""
    G = qk_graph()
    G.edges[STEER, A]["qk_sides"] = [0.0, 0.4]
    G.edges[EARLY, A]["qk_sides"] = [-0.05, 0.0]
    for i in range(12):
        v = f"transcoder.0/{20 + i}@2"
        G.add_node(v, kind="transcoder", layer=0, position=2, latent=20 + i, token=" b", activation=0.1,
                   dictionary="transcoder:blocks.0.ln2.hook_normalized", qk_only=True)  # fmt: skip
        G.add_edge(v, A, weight=0.01 * (i + 1), edge_kind="qk", heads=[1, 3], qk_sides=[0.0, 0.01 * (i + 1)])
    return G


def test_node_qk_lists_a_latents_steerers_strongest_first_and_what_a_node_steers():
    G = sided_qk_graph()
    qk = qk_view.node_qk(G, A, {STEER: HOSTILE})
    assert [link.node for link in qk.steered_by][:3] == [STEER, "transcoder.0/31@2", "transcoder.0/30@2"]
    assert len(qk.steered_by) == 14 and qk.steers == ()
    top = qk.steered_by[0]
    assert (top.side, top.weight, top.heads) == ("key", 0.4, (1,))
    assert top.label == f"transcoder.0/5 at 1 ' (': {HOSTILE}"
    early = next(link for link in qk.steered_by if link.node == EARLY)
    assert early.side == "query" and early.weight == -0.05  # a QK weight on a direct edge counts too
    lines = qk_view.qk_lines(qk.steered_by)
    assert len(lines) == qk_view.QK_CARD_ROWS + 1 and lines[-1] == "… and 4 more"
    assert lines[0] == f"+0.4 · key · transcoder.0/5 at 1 ' (': {HOSTILE} · head 1"
    out = qk_view.node_qk(G, STEER)
    assert out.steered_by == () and [(x.node, x.side, x.weight) for x in out.steers] == [(A, "key", 0.4)]
    assert qk_view.node_qk(G, B) == qk_view.NodeQK((), ())
    # Without recorded sides (an older graph) the side is unknown, not guessed.
    assert qk_view.node_qk(qk_graph(), A).steered_by[0].side == ""
    assert qk_view.qk_side([0.2, -0.1]) == "query + key (+0.2, -0.1)"


def card_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_the_card_lists_qk_contributors_whether_or_not_qk_edges_are_shown(tmp_path):
    ws = tmp_path / "w.duckdb"
    C.save_circuit(ws, "sided", sided_qk_graph(), LogitTarget(3, 3, None, ")"))
    at = load(ws)
    at.session_state["circ.annotations"] = {STEER: HOSTILE}
    at.selectbox(key="circ.focus").set_value(A)
    at = at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not at.toggle(key="circ.show_qk").value  # QK edges not drawn: the card lists them anyway
    text = card_text(at)
    assert "What steers its attention (QK)" in text and "14 nodes move where its heads attend" in text
    (body,) = [m.value for m in at.markdown if "transcoder.0/5 at 1" in m.value]
    # Shown literally: the annotation's Markdown, HTML and link are escaped, the lines strongest first.
    assert body == literal(
        "\n".join(qk_view.qk_lines(qk_view.node_qk(sided_qk_graph(), A, {STEER: HOSTILE}).steered_by))
    )
    assert body.index("transcoder.0/5") < body.index("transcoder.0/31") and "… and 4 more" in body
    assert "Whose attention it steers (QK)" not in text
    at.toggle(key="circ.show_qk").set_value(True)
    at = at.run()
    assert not at.exception and "What steers its attention (QK)" in card_text(at)

    at.selectbox(key="circ.focus").set_value(STEER)
    at = at.run()
    text = card_text(at)
    assert "Whose attention it steers (QK)" in text and "What steers its attention (QK)" not in text
    assert any(m.value == literal("+0.4 · key · attn.1/9 at 3 ' vote' · head 1") for m in at.markdown)

    at.selectbox(key="circ.focus").set_value(B)  # no QK effect: no section
    at = at.run()
    assert "(QK)" not in card_text(at)
