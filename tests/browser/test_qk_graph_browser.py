"""QK edges on the Circuits page in headless Chromium with real clicks: a trace with "Expand along QK edges"
draws no QK edge until "Show QK edges" is switched on, then draws them dashed; clicks and hover on the
graph still work; a click on an attention latent shows what steers its attention on its card (QK edges drawn or
not); a dense graph (node threshold 0, QK edges shown) fills its frame, centred, with no node or label over
another until zoomed in. Nothing is requested outside localhost. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections import Counter

import pytest

from core.circuits import saved as C
from core.tracing.qk import qk_edges
from tests.browser.serve import wait_rendered
from tests.browser.test_circuit_graph_browser import (
    CARD_JS,
    TIMEOUT_S,
    click_node,
    frame_of,
    load_saved_circuit,
    main_text,
    node_point,
)
from ui import qk_view

IOI = ("When Mary and John went to the store, John gave a drink to", " Mary", " John")
QK_EDGES_JS = "edges.get().filter(e => e.kind === 'qk')"


@pytest.mark.browser
def test_qk_edges_appear_only_when_toggled_and_the_graph_still_answers(browser_page):
    page = browser_page.page
    browser_page.open("/Circuits")
    page.get_by_role("textbox", name="Prompt", exact=True).fill(IOI[0])
    page.get_by_role("textbox", name="Target token", exact=True).fill(IOI[1])
    page.get_by_role("textbox", name="Contrast token (optional)", exact=True).fill(IOI[2])
    page.get_by_text("zero", exact=True).click()
    page.get_by_text("Trace settings").click()
    page.get_by_text("Expand along QK edges").click()
    page.get_by_role("button", name="Trace").click()
    wait_rendered(page, TIMEOUT_S)
    page.get_by_text("Show QK edges").wait_for(timeout=TIMEOUT_S * 1000)  # only a graph with QK edges offers it
    assert "Traced" in main_text(page) and "Mary" in main_text(page)
    frame = frame_of(page)
    assert frame.evaluate(QK_EDGES_JS + ".length") == 0  # off by default
    assert frame.evaluate("edges.get().every(e => !e.dashes)")

    page.get_by_text("Show QK edges").click()
    wait_rendered(page, TIMEOUT_S)
    frame = frame_of(page, ready=QK_EDGES_JS + ".length > 0")
    qk = frame.evaluate(QK_EDGES_JS)
    assert qk and all(e["dashes"] and "QK effect" in e["title"] for e in qk)
    assert "QK edges drawn" in main_text(page)
    browser_page.screenshot("circuit-graph-qk-edges")

    # A real click on a node the QK edges reach still shows its card; hovering still highlights its paths.
    node = qk[0]["to"]
    click_node(browser_page, node)
    page.wait_for_function(CARD_JS, arg=node, timeout=60_000)
    frame = frame_of(page)
    x, y = node_point(page, frame, qk[0]["from"])
    for dx in (0, 1, 2):
        page.mouse.move(x + dx, y)
        page.wait_for_timeout(250)
    assert frame.evaluate("highlighted") is True

    page.get_by_text("Show QK edges").click()
    wait_rendered(page, TIMEOUT_S)
    frame = frame_of(page, ready=QK_EDGES_JS + ".length === 0")
    assert frame.evaluate(QK_EDGES_JS + ".length") == 0
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []


QK_NAME = "qk instrument ioi"
QK_NOTE = "names **repeated** <b>earlier</b> $x$"  # shown as typed wherever a contributor's label is


@pytest.fixture(scope="module")
def ioi_qk_circuit(browser_workspace):
    """The IOI prompt traced with QK expansion (core.tracing.qk.expand_qk) in this process and saved in the browser
    workspace as version 1; version 2 annotates every latent with a sentence (long labels, as explanations give).
    Returns (graph, the attention latent with the most incoming QK edges)."""
    import torch

    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import trace_prompt
    from core.tracing.loading import tracing_dictionaries
    from core.tracing.qk import QKParams

    torch.set_num_threads(1)
    model = load_default_model(device="cpu")
    dicts = tracing_dictionaries(load_default_dictionaries().values())
    result = trace_prompt(model, dicts, IOI[0], target=IOI[1], contrast=IOI[2], ablation="zero", qk=QKParams())
    G = C.with_target(result.graph, result.target)
    C.save_circuit(browser_workspace, QK_NAME, G, result.target)
    notes = {v: C.Annotation(f"moves names to the end, {i}") for i, v in enumerate(C.latent_nodes(G))}
    steered = Counter(e.target for e in qk_edges(G))
    latent = max((v for v in steered if G.nodes[v].get("kind") == "attn"), key=lambda v: (steered[v], v))
    notes[next(e.source for e in qk_edges(G) if e.target == latent)] = C.Annotation(QK_NOTE)
    C.save_version(browser_workspace, QK_NAME, C.Pruning(), node_annotations=notes)
    return G, latent


def load_qk_circuit(browser_page, show_qk: bool = True) -> None:
    """Open the Circuits page, load the latest version of the QK circuit and (`show_qk`) switch "Show QK edges" on."""
    page = browser_page.page
    load_saved_circuit(browser_page, QK_NAME)
    if show_qk:
        page.get_by_text("Show QK edges").click()
        wait_rendered(page, TIMEOUT_S)
        frame_of(page, ready=QK_EDGES_JS + ".length > 0")


@pytest.mark.browser
def test_clicking_an_attention_latent_lists_what_steers_its_attention(ioi_qk_circuit, browser_page):
    G, latent = ioi_qk_circuit
    page = browser_page.page
    load_qk_circuit(browser_page, show_qk=False)  # the card lists QK effects whether or not they are drawn
    assert frame_of(page).evaluate(QK_EDGES_JS + ".length") == 0
    click_node(browser_page, latent)
    page.wait_for_function(CARD_JS, arg=latent, timeout=60_000)
    page.get_by_text("What steers its attention (QK)").wait_for(timeout=60_000)
    text = main_text(page)
    steerers = [e for e in qk_edges(G) if e.target == latent]
    assert f"{len(steerers)} nodes move where its heads attend" in text
    top = steerers[0]
    assert f"{top.weight:+.3g} · " in text and qk_view.link_label(top.source, G.nodes[top.source]) in text
    assert QK_NOTE in text  # a contributor's annotation, as typed: its ** and <b> are text
    assert all(el.inner_text() != "earlier" for el in page.query_selector_all('[data-testid="stMain"] b'))
    browser_page.screenshot("circuit-graph-qk-card")
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []


# Every node's box (its dot and its label, vis-network's getBoundingBox) in the canvas's own pixels, its dot's
# diameter, its label as drawn and whether its centre is in view, and the canvas size. vis-network places a label
# when it draws it, so the box of a node out of view is not meaningful.
BOXES_JS = """() => {
  const r = document.getElementById('mynetwork').getBoundingClientRect();
  const s = network.getScale();
  const boxes = nodes.get().map(n => {
    const b = network.getBoundingBox(n.id);
    const a = network.canvasToDOM({x: b.left, y: b.top}), z = network.canvasToDOM({x: b.right, y: b.bottom});
    const c = network.canvasToDOM(network.getPositions([n.id])[n.id]);
    const inside = c.x >= 0 && c.x <= r.width && c.y >= 0 && c.y <= r.height;
    return {id: n.id, left: a.x, top: a.y, right: z.x, bottom: z.y, dot: 2 * n.size * s, label: n.label || "",
            inside: inside};
  });
  return {boxes: boxes, width: r.width, height: r.height};
}"""
FULL_LABELS_JS = "Object.fromEntries(spec.nodes.map(n => [n.id, n.label]))"


def overlaps(boxes: list[dict], slack: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of boxes that overlap by more than `slack` pixels both ways."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            w = min(a["right"], b["right"]) - max(a["left"], b["left"])
            h = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
            if w > slack and h > slack:
                out.append((a["id"], b["id"]))
    return out


def shortened_from(label: str, full: str) -> bool:
    """True if `label` is `full`, `full` cut short with an ellipsis, or hidden ("")."""
    return label in ("", full) or (label.endswith("\u2026") and full.startswith(label[:-1].rstrip()))


@pytest.mark.browser
def test_a_dense_graph_fits_its_frame_without_overlaps(ioi_qk_circuit, browser_page):
    G, latent = ioi_qk_circuit
    page = browser_page.page
    load_qk_circuit(browser_page)  # node threshold 0 (the saved pruning), QK edges shown: every node drawn
    frame = frame_of(page)
    got = frame.evaluate(BOXES_JS)
    boxes, width, height = got["boxes"], got["width"], got["height"]
    assert all(b["inside"] for b in boxes)
    cell = [b for b in boxes if G.nodes[b["id"]].get("position") == G.nodes[latent]["position"]]
    assert len(boxes) > 40 and len(cell) > 20, len(boxes)  # a dense graph: 25 attention latents share one cell
    browser_page.screenshot("circuit-graph-dense-qk")
    # (a) No node's box (dot and label) overlaps another's; (b) the graph fills its frame, centred; every dot
    # is big enough to see and click.
    assert overlaps(boxes) == []
    left, right = min(b["left"] for b in boxes), max(b["right"] for b in boxes)
    top, bottom = min(b["top"] for b in boxes), max(b["bottom"] for b in boxes)
    assert 0 <= left and right <= width and 0 <= top and bottom <= height
    assert right - left > 0.5 * width and bottom - top > 0.5 * height
    assert abs(left - (width - right)) < 0.15 * width  # centred (the row names take the left margin)
    assert min(b["dot"] for b in boxes) >= 6
    # Labels that would overlap are shortened or hidden; the full one stays in the tooltip.
    full = frame.evaluate(FULL_LABELS_JS)
    assert all(shortened_from(b["label"], full[b["id"]]) for b in boxes)
    assert "annotation: moves names to the end" in frame.evaluate("(id) => nodes.get(id).title", latent)

    # Zoomed in with the mouse wheel over the busy cell, its labels show (still without overlaps).
    x, y = node_point(page, frame, latent)  # centres the view on it
    frame.evaluate("network.moveTo({scale: 1, animation: false})")
    box = frame.frame_element().bounding_box()
    corner = frame.evaluate(
        "(() => { const r = document.getElementById('mynetwork').getBoundingClientRect();"
        " return {x: r.left + 4, y: r.bottom - 4}; })()"
    )
    away = (box["x"] + corner["x"], box["y"] + corner["y"])  # off every node: no hover label
    for _ in range(30):  # wheel steps until the label shows (each zooms in by a step)
        page.mouse.move(x, y)
        page.mouse.wheel(0, -120)
        page.mouse.move(*away)
        page.wait_for_timeout(150)
        if frame.evaluate("(id) => nodes.get(id).label.length > 0", latent):
            break
    assert frame.evaluate("(id) => nodes.get(id).label", latent) != ""
    zoomed = [b for b in frame.evaluate(BOXES_JS)["boxes"] if b["inside"]]
    assert len(zoomed) > 4 and overlaps(zoomed) == [] and all(shortened_from(b["label"], full[b["id"]]) for b in zoomed)
    browser_page.screenshot("circuit-graph-dense-qk-zoomed")
    # Hovering a node shows its full label.
    x, y = node_point(page, frame, latent)
    for dx in (0, 1, 2):
        page.mouse.move(x + dx, y)
        page.wait_for_timeout(250)
    assert frame.evaluate("(id) => nodes.get(id).label", latent) == full[latent]
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []
