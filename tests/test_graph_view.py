"""ui.graph_view: offline HTML (no external URL), every text escaped, layout by layer and position, PNG export."""

from __future__ import annotations

import json
import re

import networkx as nx

from ui import graph_view

PROBE = "<img src=x onerror=alert(1)>"


def small_graph(token: str = " vote") -> nx.DiGraph:
    G = nx.DiGraph()
    G.graph.update({"n_layers": 2, "target": {"node_id": "logit@3:')'"}, "prompt": "a (b c"})
    G.add_node(
        "logit@3:')'", kind="logit", layer=2, position=3, latent=None, token="')'", activation=2.5, is_target=True
    )
    G.add_node(
        "transcoder.1/7@3",
        kind="transcoder",
        layer=1,
        position=3,
        latent=7,
        dictionary="transcoder:blocks.1.ln2.hook_normalized",
        token=token,
        activation=1.5,
    )
    G.add_node(
        "attn.1/9@3",
        kind="attn",
        layer=1,
        position=3,
        latent=9,
        dictionary="attn:blocks.1.hook_attn_out",
        token=token,
        activation=0.5,
    )
    G.add_node(
        "attn.0/2@1",
        kind="attn",
        layer=0,
        position=1,
        latent=2,
        dictionary="attn:blocks.0.hook_attn_out",
        token=" (",
        activation=3.0,
    )
    G.add_node("mlp_error.0@3", kind="mlp_error", layer=0, position=3, latent=None, token=token, activation=0.1)
    G.add_node("embed@1", kind="embed", layer=-1, position=1, latent=None, token=" (", activation=1.0)
    G.add_edge("transcoder.1/7@3", "logit@3:')'", weight=2.0)
    G.add_edge("attn.1/9@3", "logit@3:')'", weight=-0.5)
    G.add_edge("attn.0/2@1", "attn.1/9@3", weight=1.0)
    G.add_edge("embed@1", "attn.0/2@1", weight=0.3)
    G.add_edge("mlp_error.0@3", "transcoder.1/7@3", weight=0.2)
    return G


def test_layout_puts_layers_bottom_to_top_and_positions_left_to_right():
    G = small_graph()
    pos = graph_view.layout(G)
    y = {v: p[1] for v, p in pos.items()}
    # Screen y grows downwards: embeddings lowest, then attention before MLP in each layer, the target on top.
    assert (
        y["embed@1"] > y["attn.0/2@1"] > y["mlp_error.0@3"] > y["attn.1/9@3"] > y["transcoder.1/7@3"] > y["logit@3:')'"]
    )
    assert pos["embed@1"][0] == pos["attn.0/2@1"][0] < pos["logit@3:')'"][0]
    assert len({p for p in pos.values()}) == G.number_of_nodes()


def test_html_is_offline():
    from pyvis.network import Network

    raw = Network(cdn_resources="in_line").generate_html()
    assert "cdn.jsdelivr.net" in raw  # what pyvis does by itself, and what we strip
    page = graph_view.graph_html(small_graph(), header_html=graph_view.header("t", ["x"]))
    assert graph_view.external_urls(page) == []
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?https?:", page, flags=re.I)
    assert "new vis.Network" in page and "vis-network" in page  # vis-network itself is inlined
    assert len(page) > 400_000


def test_every_text_is_escaped():
    G = small_graph(token=PROBE)
    notes = {"transcoder.1/7@3": PROBE, "attn.1/9@3": '<a href="javascript:alert(2)">x</a>'}
    labels = {"attn.0/2@1": PROBE + "</script><script>alert(3)</script>"}
    page = graph_view.graph_html(G, labels, notes, header_html=graph_view.header(PROBE, [f"prompt: {PROBE}"], notes))
    assert PROBE not in page and "<script>alert(3)" not in page and 'href="javascript' not in page
    assert "popup.innerHTML" not in page  # pyvis's HTML tooltip template was not chosen despite "href" in a note
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the header, escaped
    # The node data is JSON with <, > escaped; decoded, the tooltip carries the annotation as plain text.
    nodes = json.loads(re.search(r"nodes = new vis\.DataSet\((\[.*?\])\);", page, flags=re.S).group(1))
    by_id = {n["id"]: n for n in nodes}
    assert PROBE in by_id["transcoder.1/7@3"]["title"] and by_id["transcoder.1/7@3"]["label"].startswith("<img")
    assert "hr\u2060ef" in by_id["attn.1/9@3"]["title"]


def test_labels_prefer_annotations_then_explanations():
    G = small_graph()
    v = "transcoder.1/7@3"
    assert graph_view.node_text(v, G.nodes[v]) == "transcoder.1/7"
    assert graph_view.node_text(v, G.nodes[v], {v: "closing brackets"}) == "closing brackets"
    assert graph_view.node_text(v, G.nodes[v], {v: "closing brackets"}, {v: "mine"}) == "mine"
    title = graph_view.node_title(v, G.nodes[v], {v: "closing brackets"}, {v: "mine"}, {v: 0.25})
    assert (
        "explanation: closing brackets" in title
        and "annotation: mine" in title
        and "influence on target 0.250" in title
    )


def test_png_export():
    png = graph_view.graph_png(small_graph(token=PROBE), title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_empty_graph_renders():
    page = graph_view.graph_html(nx.DiGraph())
    assert graph_view.external_urls(page) == [] and "new vis.Network" in page


def test_png_shows_dollar_signs_as_typed():
    """matplotlib reads `$...$` as math: a prompt or label with an unknown command made the PNG export fail."""
    png = graph_view.graph_png(
        small_graph(), labels={"attn.0/2@1": r"costs $\notacommand$"}, title=r"price $\alsonot$ → ')'"
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_tooltips_are_set_as_text():
    """The inlined vis-network sets a string title with innerText (older builds used innerHTML)."""
    page = graph_view.graph_html(small_graph(token=PROBE))
    assert graph_view.TOOLTIP_AS_TEXT in page and "frame.innerHTML" not in page
