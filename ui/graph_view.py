"""Attribution graphs drawn interactively in the Circuits page (`graph_spec` + `circuit_graph`: a bidirectional
Streamlit component in ui/graph_component/, whose clicks reach Python), as standalone HTML for export
(pyvis / vis-network, fully offline) and as PNG.

Layout: x = token position (one column per prompt token, as wide as its busiest row), y = depth in
the model: embeddings at the bottom, then per layer an attention row (attention latents and
errors) and an MLP row (transcoder latents and errors), the target on top. Nodes sharing a cell
sit side by side. Physics is off, so the layout stays put and nodes can be dragged. The interactive component
(ui/graph_component/graph.js) lays the same cells out again for the size of its frame, so a dense graph fills
it without overlaps, and shortens or hides labels that would overlap until the reader zooms in or hovers.
Colour by node kind; edge width by |direct effect| relative to the strongest edge; colour by sign.

Safety: every text is plain text. Labels are drawn on the canvas; tooltips (titles) are set with
`innerText` by the vis-network 9.1.2 that pyvis inlines; the graph data is embedded as JSON with
<, >, & and ' escaped (Jinja's tojson); text this module writes into HTML goes through
html.escape. pyvis switches to an innerHTML popup when a title contains "href", so titles never do,
and `graph_html` refuses a bundle whose tooltip does not set its text with innerText. In the PNG,
matplotlib would read `$...$` as math (and fail on an unknown command), so `$` is escaped there.
Offline: vis-network's JS and CSS are inlined and pyvis's CDN <script>/<link> tags are removed.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

KIND_COLOURS = {
    "embed": "#9e9e9e",
    "pos_embed": "#c7c7c7",
    "attn": "#4e79a7",
    "transcoder": "#59a14f",
    "resid": "#b07aa1",
    "neurons": "#edc948",
    "attn_error": "#f1a7a9",
    "mlp_error": "#e8888b",
    "logit": "#f28e2b",
    "supernode": "#8c62c9",
}
KIND_NAMES = {
    "embed": "token embedding",
    "pos_embed": "position embedding",
    "attn": "attention SAE latent",
    "transcoder": "transcoder latent",
    "attn_error": "attention SAE error",
    "mlp_error": "transcoder error",
    "logit": "target",
    "supernode": "supernode (a group)",
}
POSITIVE, NEGATIVE = "#3b6fb6", "#d1495b"
# A cell's nodes sit NODE_GAP apart: wider than a SHORT_LABEL_CHARS label at 11 px, so labels in a cell never overlap.
NODE_GAP, LINE_GAP, COLUMN_PAD, ROW_PAD, EMPTY_COLUMN = 110, 58, 30, 56, 90
CELL_COLUMNS = 4  # nodes side by side in one (position, row) cell before wrapping to another line
LABEL_CHARS = 22
SHORT_LABEL_CHARS, SHORT_LABEL_WORDS = 18, 3

# Strings in the inlined vis-network bundle that are not fetched: an XML namespace and licence
# notices inside comments. Everything else starting with http(s):// would be a request.
INERT_URLS = frozenset(
    {
        "http://www.w3.org/2000/svg",
        "http://almende.com",
        "http://opensource.org/licenses/MIT",
        "http://www.apache.org/licenses/LICENSE-2.0",
        "https://github.com/uuidjs/uuid#getrandomvalues-not-supported",
        "https://github.com/visjs",
        "https://github.com/zloirock/core-js",
        "https://github.com/zloirock/core-js/blob/v3.21.1/LICENSE",
        "https://visjs.github.io/vis-network/",
    }
)
# How the inlined vis-network 9.1.2 (pyvis 0.3.2) shows a string title: as text. Older builds used innerHTML.
TOOLTIP_AS_TEXT = "this.frame.innerText=t"
_URL = re.compile(r"https?://[^\s\"'<>)\\]+")


def external_urls(page: str) -> list[str]:
    """Every http(s) URL in `page` that is not one of the inert strings of the vis-network bundle."""
    return [u for u in _URL.findall(page) if u not in INERT_URLS]


def strip_external(page: str) -> str:
    """`page` without <script src=http...>, <link href=http...> tags and pyvis's empty headings."""
    page = re.sub(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", "", page, flags=re.I | re.S)
    page = re.sub(r"<link[^>]*\bhref=[\"']https?://[^>]*/?>", "", page, flags=re.I | re.S)
    page = re.sub(r"<center>\s*<h1>\s*</h1>\s*</center>", "", page, flags=re.I)
    return page


def short_id(node: str, attrs: Mapping) -> str:
    """A compact name for a node: `attn.1/417`, `mlp err L2`, `emb ' vote'`, or the target's label."""
    kind = attrs.get("kind")
    if kind in ("attn", "transcoder", "resid", "neurons"):
        return f"{kind}.{attrs.get('layer')}/{attrs.get('latent')}"
    if kind == "attn_error":
        return f"attn err L{attrs.get('layer')}"
    if kind == "mlp_error":
        return f"mlp err L{attrs.get('layer')}"
    if kind == "embed":
        return f"emb {attrs.get('token', '')!r}"
    if kind == "pos_embed":
        return f"pos {attrs.get('position')}"
    if kind == "logit":
        return f"logit {attrs.get('token', '')}"
    return node


def node_text(
    node: str, attrs: Mapping, labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None
) -> str:
    """The text shown for a node: its annotation, else its explanation, else `short_id` (untruncated)."""
    for source in (annotations, labels):
        text = (source or {}).get(node)
        if text and text.strip():
            return text.strip()
    return short_id(node, attrs)


def _clip(text: str, n: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _mpl_text(text: str) -> str:
    """`text` for matplotlib, shown as typed: an unescaped `$` would start mathtext."""
    return text.replace("$", r"\$")


def _no_href(text: str) -> str:
    # pyvis renders tooltips with innerHTML when any title contains "href"; a word joiner defuses that.
    return re.sub("href", "hr\u2060ef", text, flags=re.I)


def node_title(
    node: str,
    attrs: Mapping,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    influence: Mapping[str, float] | None = None,
) -> str:
    """The plain-text tooltip of a node: id, kind, dictionary, token, activation, influence, explanation, annotation."""
    lines = [node, KIND_NAMES.get(attrs.get("kind"), str(attrs.get("kind")))]
    if attrs.get("dictionary"):
        lines.append(f"dictionary {attrs['dictionary']}, latent {attrs.get('latent')}")
    pos = attrs.get("position")
    if pos is not None:
        lines.append(
            f"position {pos}, token {attrs.get('token', '')!r}" if attrs.get("kind") != "logit" else f"position {pos}"
        )
    if attrs.get("activation") is not None:
        lines.append(f"{'value' if attrs.get('kind') == 'logit' else 'activation'} {float(attrs['activation']):.4g}")
    if influence is not None and node in influence:
        lines.append(f"influence on target {influence[node]:.3f}")
    if labels and labels.get(node):
        lines.append(f"explanation: {labels[node]}")
    if annotations and annotations.get(node):
        lines.append(f"annotation: {annotations[node]}")
    return _no_href("\n".join(lines))


def _row(attrs: Mapping, n_layers: int) -> int:
    kind, layer = attrs.get("kind"), attrs.get("layer")
    if kind in ("embed", "pos_embed"):
        return 0
    if kind == "logit" or attrs.get("is_target") and kind not in ("attn", "transcoder"):
        return 2 * n_layers + 1
    layer = int(layer if layer is not None else 0)
    return 1 + 2 * layer + (0 if kind in ("attn", "attn_error") else 1)


def _cell(attrs: Mapping, n_layers: int) -> list[int]:
    """A node's (position, row) cell of `layout_frame`, as [p, r]."""
    return [int(attrs.get("position") or 0), _row(attrs, n_layers)]


def _n_layers(G: nx.DiGraph) -> int:
    return int(G.graph.get("n_layers") or 1 + max([int(a.get("layer") or 0) for _, a in G.nodes(data=True)] or [0]))


@dataclass
class Frame:
    """Where `layout_frame` put things: node positions, the x of every token column, the y of every row
    (0 = embeddings, 1 + 2 * layer = attention, 2 + 2 * layer = MLP, 2 * n_layers + 1 = target)."""

    pos: dict[str, tuple[float, float]]
    columns: dict[int, float]
    widths: dict[int, float]
    rows: dict[int, float]
    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0


def layout_frame(G: nx.DiGraph) -> Frame:
    """The layout (see `layout`) with a column for every prompt token (`G.graph["prompt_tokens"]`, even one
    without nodes) and a band for every row."""
    n_layers = _n_layers(G)
    cells: dict[tuple[int, int], list[str]] = defaultdict(list)
    for v, a in G.nodes(data=True):
        cells[(int(a.get("position") or 0), _row(a, n_layers))].append(v)
    width: dict[int, float] = {p: EMPTY_COLUMN for p in range(len(G.graph.get("prompt_tokens") or []))}
    height: dict[int, float] = {r: ROW_PAD for r in range(2 * n_layers + 2)}
    for (p, r), vs in cells.items():
        width[p] = max(width.get(p, 0.0), min(len(vs), CELL_COLUMNS) * NODE_GAP + COLUMN_PAD)
        height[r] = max(height.get(r, 0.0), math.ceil(len(vs) / CELL_COLUMNS) * LINE_GAP + ROW_PAD)
    x_mid, left = {}, 0.0
    for p in sorted(width):
        x_mid[p] = left + width[p] / 2
        left += width[p]
    y_mid, bottom = {}, 0.0
    for r in sorted(height):
        y_mid[r] = bottom - height[r] / 2
        bottom -= height[r]
    out = {}
    for (p, r), vs in cells.items():
        vs = sorted(vs, key=lambda v: (G.nodes[v].get("kind", ""), G.nodes[v].get("latent") or 0, v))
        cols, lines = min(len(vs), CELL_COLUMNS), math.ceil(len(vs) / CELL_COLUMNS)
        for i, v in enumerate(vs):
            col, line = i % CELL_COLUMNS, i // CELL_COLUMNS
            out[v] = (x_mid[p] + (col - (cols - 1) / 2) * NODE_GAP, y_mid[r] + (line - (lines - 1) / 2) * LINE_GAP)
    return Frame(out, x_mid, dict(width), y_mid, top=bottom, bottom=8.0, left=-12.0)


def layout(G: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Screen positions {node: (x, y)}; y grows downwards, so later layers get smaller y.

    Each (position, row) cell lays its nodes out in a grid of at most CELL_COLUMNS per line; a
    column is as wide, and a row band as tall, as its largest cell.
    """
    return layout_frame(G).pos


def graph_html(
    G: nx.DiGraph,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    influence: Mapping[str, float] | None = None,
    pinned: set[str] | frozenset[str] = frozenset(),
    height: int = 620,
    header_html: str = "",
) -> str:
    """A self-contained HTML page drawing `G` with vis-network (no external URL; see the module docstring).

    `labels` = {node id: explanation}, `annotations` = {node id: text} (shown instead of the
    explanation), `influence` = {node id: share} (node size and tooltip), `pinned` nodes get a
    thick border. `header_html` goes above the graph and must already be escaped (see `header`).
    """
    from pyvis.network import Network

    net = Network(height=f"{int(height)}px", width="100%", directed=True, cdn_resources="in_line", bgcolor="#ffffff")
    pos = layout(G)
    for v, a in G.nodes(data=True):
        x, y = pos[v]
        infl = (influence or {}).get(v)
        size = 9 + (12 * min(1.0, infl) ** 0.5 if infl is not None else 3)
        colour = KIND_COLOURS.get(a.get("kind"), "#888888")
        net.add_node(
            v,
            label=_clip(node_text(v, a, labels, annotations)),
            title=node_title(v, a, labels, annotations, influence),
            x=x,
            y=y,
            color={"background": colour, "border": "#222222" if v in pinned else colour},
            borderWidth=4 if v in pinned else 1,
            size=size,
            shape="dot",
            physics=False,
            font={"size": 12, "face": "sans-serif"},
        )
    weights = [abs(float(d.get("weight") or 0.0)) for _, _, d in G.edges(data=True)]
    top = max([w for w in weights if w == w] or [1.0]) or 1.0
    for u, v, d in G.edges(data=True):
        w = float(d.get("weight") or 0.0)
        w = 0.0 if w != w else w
        net.add_edge(
            u,
            v,
            width=0.5 + 6 * abs(w) / top,
            color={"color": POSITIVE if w >= 0 else NEGATIVE, "opacity": 0.55},
            title=_no_href(f"{u} → {v}\ndirect effect {w:+.4g}"),
            arrows="to",
        )
    net.set_options(
        json.dumps(
            {
                "physics": {"enabled": False},
                "interaction": {
                    "dragNodes": True,
                    "dragView": True,
                    "zoomView": True,
                    "hover": True,
                    "tooltipDelay": 80,
                },
                "edges": {"smooth": False, "arrows": {"to": {"scaleFactor": 0.5}}},
                "nodes": {"font": {"strokeWidth": 3, "strokeColor": "#ffffff"}},
            }
        )
    )
    page = strip_external(net.generate_html(notebook=False))
    if "popup.innerHTML" in page:  # pyvis's link template: would render titles as HTML
        raise RuntimeError("pyvis chose its innerHTML tooltip template; refusing to render")
    if TOOLTIP_AS_TEXT not in page:  # another vis-network build, which may set string titles as HTML
        raise RuntimeError("the inlined vis-network does not set tooltips with innerText; refusing to render")
    if header_html:
        page = page.replace("<body>", "<body>\n" + header_html, 1)
    return page


def legend_html() -> str:
    """A one-line colour legend of node kinds (static text)."""
    items = "".join(
        f'<span style="margin-right:14px"><span style="display:inline-block;width:10px;height:10px;border-radius:5px;'
        f'background:{KIND_COLOURS[k]};margin-right:4px"></span>{html.escape(name)}</span>'
        for k, name in KIND_NAMES.items()
    )
    return f'<div style="font:12px sans-serif;margin:4px 0">{items}<span>edges: blue positive, red negative; width by |effect|</span></div>'


def header(title: str, lines: list[str], notes: Mapping[str, str] | None = None) -> str:
    """An escaped HTML header for a standalone export: a title, text lines and a table of node annotations."""
    parts = [f'<div style="font:14px sans-serif;margin:8px"><h2 style="margin:4px 0">{html.escape(title)}</h2>']
    parts += [f'<div style="margin:2px 0">{html.escape(line)}</div>' for line in lines]
    if notes:
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(t)}</td></tr>"
            for k, t in sorted(notes.items())
        )
        parts.append(f'<table style="margin-top:6px;border-collapse:collapse">{rows}</table>')
    parts.append(legend_html() + "</div>")
    return "\n".join(parts)


def graph_png(
    G: nx.DiGraph,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    title: str = "",
    dpi: int = 110,
) -> bytes:
    """A static PNG of `G` in the same layout (networkx + matplotlib, Agg backend; no network)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {v: (x, -y) for v, (x, y) in layout(G).items()}
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    w = min(40.0, max(6.0, (max(xs) - min(xs)) / 70 + 2))
    h = min(30.0, max(4.0, (max(ys) - min(ys)) / 70 + 2))
    fig, ax = plt.subplots(figsize=(w, h), dpi=dpi)
    try:
        weights = [abs(float(d.get("weight") or 0.0)) for _, _, d in G.edges(data=True)]
        top = max(weights or [1.0]) or 1.0
        nx.draw_networkx_edges(
            G,
            pos,
            ax=ax,
            width=[0.3 + 4 * x / top for x in weights],
            alpha=0.5,
            arrows=True,
            arrowsize=6,
            edge_color=[POSITIVE if float(d.get("weight") or 0) >= 0 else NEGATIVE for _, _, d in G.edges(data=True)],
        )
        nx.draw_networkx_nodes(
            G,
            pos,
            ax=ax,
            node_size=90,
            node_color=[KIND_COLOURS.get(a.get("kind"), "#888888") for _, a in G.nodes(data=True)],
        )
        text = {v: _mpl_text(_clip(node_text(v, a, labels, annotations), 18)) for v, a in G.nodes(data=True)}
        nx.draw_networkx_labels(G, {v: (x, y + 14) for v, (x, y) in pos.items()}, labels=text, ax=ax, font_size=6)
        ax.set_title(_mpl_text(title), fontsize=9)
        ax.axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def render(page: str, height: int = 620) -> None:
    """Show an HTML page from `graph_html` in Streamlit, in an iframe where its scripts run.

    `st.iframe` where this Streamlit has it (it replaces the deprecated `st.components.v1.html`);
    the page is ours and every text in it is escaped (module docstring), as both APIs require.
    """
    import streamlit as st

    if hasattr(st, "iframe"):
        st.iframe(page, height=height + 30)
    else:
        import streamlit.components.v1 as components

        components.html(page, height=height + 30, scrolling=False)


# ---------------------------------------------------------------------------------------------------------
# The interactive graph: a bidirectional Streamlit component (ui/graph_component/: index.html, graph.js and the
# vis-network 9.1.2 bundle that pyvis ships, served by the Streamlit server from that folder: nothing external).

COMPONENT_DIR = Path(__file__).resolve().parent / "graph_component"
EDGES_PER_NODE = 2  # default view: each node's strongest incoming edges (plus its strongest outgoing one)
HINT = (
    "Click a node: its card · Shift-click or Shift-drag a box: select several · Alt-click: remove · "
    "hover: its upstream and downstream paths · drag nodes, scroll to zoom"
)
_component = None


def short_label(
    node: str, attrs: Mapping, labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None
) -> str:
    """A node's label on the graph: the first SHORT_LABEL_WORDS words of its annotation or explanation, else
    `short_id` (`kind.layer/latent`), at most SHORT_LABEL_CHARS characters (plain text)."""
    for source in (annotations, labels):
        text = " ".join(((source or {}).get(node) or "").split())
        if text:
            words, out = text.split(" "), ""
            for w in words[:SHORT_LABEL_WORDS]:  # whole words while they fit; a first word too long is clipped
                if out and len(out) + 1 + len(w) > SHORT_LABEL_CHARS - 1:
                    break
                out = f"{out} {w}".strip()
            return _clip(out, SHORT_LABEL_CHARS) if out == text else _clip(out, SHORT_LABEL_CHARS - 1) + "…"
    return _clip(short_id(node, attrs), SHORT_LABEL_CHARS)


def strongest_edges(G: nx.DiGraph, per_node: int | None) -> list[tuple[str, str]]:
    """The edges a default view draws: for every node its `per_node` strongest incoming edges by |weight|,
    and its strongest outgoing edge (so no drawn node hangs without a way up); all edges when `per_node` is
    None or 0. In `G.edges` order."""
    if not per_node:
        return list(G.edges)
    keep: set[tuple[str, str]] = set()
    for v in G.nodes:
        ins = sorted(G.in_edges(v, data=True), key=lambda e: -abs(_edge_weight(e[2])))
        keep.update((u, w) for u, w, _ in ins[:per_node])
        outs = sorted(G.out_edges(v, data=True), key=lambda e: -abs(_edge_weight(e[2])))
        keep.update((u, w) for u, w, _ in outs[:1])
    return [e for e in G.edges if e in keep]


def _edge_weight(d: Mapping) -> float:
    w = d.get("weight")
    return 0.0 if w is None or w != w else float(w)


def row_names(n_layers: int) -> dict[int, str]:
    """{row: name} for the rows of `layout_frame`: embeddings, L0 attn, L0 MLP, ..., target."""
    out = {0: "embeddings", 2 * n_layers + 1: "target"}
    for layer in range(n_layers):
        out[1 + 2 * layer], out[2 + 2 * layer] = f"L{layer} attn", f"L{layer} MLP"
    return out


def graph_spec(
    G: nx.DiGraph,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    influence: Mapping[str, float] | None = None,
    pinned: Iterable[str] = (),
    supernodes: Sequence = (),
    expanded: Iterable[str] = (),
    edges_per_node: int | None = EDGES_PER_NODE,
    height: int = 620,
) -> dict:
    """What the component draws for `G` (JSON-able): {"nodes", "edges", "columns", "rows", "top", "bottom", "left",
    "options", "height", "hint", "version", "n_edges", "n_shown_edges"}.

    Nodes: id, label (`short_label`), title (`node_title`, plain text), x, y (`layout_frame`), cell ([position, row]
    of `layout_frame`: graph.js lays the cells out again to fit its frame), colour by kind, size by influence, a
    thick border when pinned. Columns carry their position `p`, rows their index `r`. `supernodes`
    (core.circuits.supernodes.Supernode) not in `expanded` are drawn as one node at their members' centroid (in
    the cell of the member nearest to it), with summed edges and summed influence.
    Edges: `strongest_edges(view, edges_per_node)`, colour by sign, width by |weight| over the strongest.
    `version` is a hash of the rest: the component redraws only when it changes."""
    from core.circuits.supernodes import collapse

    frame = layout_frame(G)
    n_layers = _n_layers(G)
    pinned = set(pinned)
    influence = dict(influence or {})
    H = collapse(G, list(supernodes), expanded) if supernodes else G
    items = []
    for v, a in H.nodes(data=True):
        if a.get("kind") == "supernode":
            members = list(a.get("members") or [])
            xs = [frame.pos[m][0] for m in members if m in frame.pos] or [0.0]
            ys = [frame.pos[m][1] for m in members if m in frame.pos] or [0.0]
            x, y = sum(xs) / len(xs), sum(ys) / len(ys)
            # graph.js lays cells out again to fit its frame: a supernode joins its most central member's cell.
            near = min((m for m in members if m in G), key=lambda m: math.dist(frame.pos[m], (x, y)), default=None)
            cell = _cell(G.nodes[near], n_layers) if near is not None else [0, 0]
            infl = sum(influence.get(m, 0.0) for m in members)
            title = _no_href(
                "\n".join(
                    [
                        f"supernode: {a.get('label', '')}",
                        f"{len(members)} nodes (summed edges)",
                        f"influence {infl:.3f}",
                    ]
                    + [f"  {m}" for m in members[:20]]
                )
            )
            label = _clip(str(a.get("label", "")), SHORT_LABEL_CHARS)
            items.append(
                {
                    "id": v,
                    "label": label,
                    "title": title,
                    "x": x,
                    "y": y,
                    "shape": "diamond",
                    "size": 10 + 12 * min(1.0, infl) ** 0.5,
                    "color": {"background": KIND_COLOURS["supernode"], "border": "#3d2270"},
                    "borderWidth": 2,
                    "kind": "supernode",
                    "cell": cell,
                }
            )
            continue
        x, y = (round(c, 1) for c in frame.pos[v])
        infl = influence.get(v)
        colour = KIND_COLOURS.get(a.get("kind"), "#888888")
        items.append(
            {
                "id": v,
                "label": short_label(v, a, labels, annotations),
                "title": node_title(v, a, labels, annotations, influence),
                "x": x,
                "y": y,
                "shape": "dot",
                "size": 6 + (10 * min(1.0, infl) ** 0.5 if infl is not None else 2),
                "color": {"background": colour, "border": "#222222" if v in pinned else colour},
                "borderWidth": 4 if v in pinned else 1,
                "kind": a.get("kind"),
                "cell": _cell(a, n_layers),
            }
        )
    shown = strongest_edges(H, edges_per_node)
    top = max([abs(_edge_weight(H.edges[e])) for e in shown] or [1.0]) or 1.0
    edge_items = []
    for i, (u, v) in enumerate(shown):
        w = _edge_weight(H.edges[u, v])
        n = H.edges[u, v].get("n_edges")
        colour = POSITIVE if w >= 0 else NEGATIVE  # also when hovered or selected: the sign stays visible
        item = {
            "id": f"e{i}",
            "from": u,
            "to": v,
            "weight": float(f"{w:.4g}"),
            "width": round(0.5 + 6 * abs(w) / top, 2),
            "color": {"color": colour, "highlight": colour, "hover": colour, "opacity": 0.6},
        }
        if n and n > 1:  # graph.js writes the other edges' tooltips from `from`, `to` and `weight`
            item["title"] = _no_href(f"{u} → {v}\ndirect effect {w:+.4g} (sum of {n} edges)")
        edge_items.append(item)
    tokens = list(G.graph.get("prompt_tokens") or [])
    from ui.tokens import token_display

    spec = {
        "nodes": items,
        "edges": edge_items,
        "columns": [
            {
                "p": p,
                "x": x,
                "width": frame.widths[p],
                "text": _clip(token_display(tokens[p]) if p < len(tokens) else f"pos {p}", 24),
            }
            for p, x in sorted(frame.columns.items())
        ],
        "rows": [
            {"r": r, "y": frame.rows[r], "text": t} for r, t in sorted(row_names(n_layers).items()) if r in frame.rows
        ],
        "top": frame.top,
        "bottom": frame.bottom,
        "left": min([x for x, _ in frame.pos.values()] or [0.0]) - 40,
        "options": {
            "physics": {"enabled": False},
            "layout": {"improvedLayout": False},
            "interaction": {
                "dragNodes": True,
                "dragView": True,
                "zoomView": True,
                "hover": True,
                "tooltipDelay": 120,
                "multiselect": False,
                "hideEdgesOnDrag": len(edge_items) > 2000,
            },
            "edges": {"smooth": False, "arrows": {"to": {"enabled": True, "scaleFactor": 0.4}}},
            "nodes": {"font": {"size": 11, "face": "sans-serif", "strokeWidth": 3, "strokeColor": "#ffffff"}},
        },
        "height": int(height),
        "hint": HINT,
        "n_edges": H.number_of_edges(),
        "n_shown_edges": len(edge_items),
    }
    spec["version"] = hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    return spec


def _declared():
    global _component
    if _component is None:
        import streamlit.components.v1 as components

        _component = components.declare_component("circuit_graph", path=str(COMPONENT_DIR))
    return _component


def circuit_graph(spec: dict, selected: Sequence[str] = (), key: str = "graph", on_change=None, args=()) -> dict | None:
    """Draw `spec` (`graph_spec`) in the bidirectional component; returns its last event
    {"type": "click" | "select" | "remove", "node": id, "nodes": [ids], "seq": n, "version": spec version} or None.

    `on_change(*args)` runs before the next script run when the graph sends an event (the event is then in
    st.session_state[key]); `selected` node ids are shown selected."""
    return _declared()(spec=spec, selected=list(selected), key=key, default=None, on_change=on_change, args=args)
