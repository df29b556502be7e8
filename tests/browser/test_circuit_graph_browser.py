"""The circuit graph as an instrument, in headless Chromium with real mouse clicks on the canvas: a click on
a node shows its card (id and explanation); Shift-clicks select two nodes that become a supernode, which
survives a save and a reload; an Alt-click removes a node and the faithfulness section follows the pruned
set. Nothing is requested outside localhost; screenshots go to test-artifacts/."""

from __future__ import annotations

import time

import pytest

from core import store
from core.circuits import saved as C
from tests.browser.serve import wait_rendered
from ui import graph_view

IOI = ("When Mary and John went to the store, John gave a drink to", " Mary", " John")
NAME = "graph instrument ioi"
EXPLANATION = "names <b>repeated</b> earlier in the sentence"
TIMEOUT_S = 600.0
CARD_JS = """(id) => [...document.querySelectorAll('[data-testid="stMain"] code')].some(c => c.textContent === id)"""


@pytest.fixture(scope="module")
def ioi_circuit(browser_workspace):
    """The IOI prompt traced in this process and saved in the browser workspace, with an explanation of its
    most influential latent; returns (graph, that latent's node id)."""
    import torch

    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import trace_prompt
    from core.tracing.loading import tracing_dictionaries

    torch.set_num_threads(1)
    model = load_default_model(device="cpu")
    dicts = tracing_dictionaries(load_default_dictionaries().values())
    result = trace_prompt(model, dicts, IOI[0], target=IOI[1], contrast=IOI[2], ablation="zero")
    G = C.with_target(result.graph, result.target)
    C.save_circuit(browser_workspace, NAME, G, result.target)
    influence = C.graph_influence(G)
    latent = max(C.latent_nodes(G), key=lambda v: influence[v])
    a = G.nodes[latent]
    rec = store.ExplanationRecord(
        "e-graph", a["dictionary"], int(a["latent"]), "openai/gpt-4o-mini", False, None, "top", EXPLANATION, "v1", {}
    )
    store.write_explanations(browser_workspace, [rec])
    return G, latent


def frame_of(page, without: str | None = None, timeout: float = TIMEOUT_S, ready: str | None = None):
    """The graph component's frame once it has drawn nodes (without node `without`; with JS `ready` true)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                ok = frame.evaluate(
                    "typeof network !== 'undefined' && network !== null && document.body.hasAttribute('data-drawn')"
                )
                if ok and without is not None:
                    ok = without not in frame.evaluate("nodes.getIds()")
                if ok and ready is not None:
                    ok = frame.evaluate(ready)
                if ok:
                    return frame
            except Exception:  # a frame being replaced by the rerun
                pass
        time.sleep(0.2)
    raise AssertionError(
        "the graph component drew no graph: " + page.locator('[data-testid="stMain"]').inner_text()[:800]
    )


def load_ioi(browser_page) -> None:
    """Open the Circuits page and load the latest version of the IOI circuit from the sidebar."""
    load_saved_circuit(browser_page, NAME)


def load_saved_circuit(browser_page, name: str) -> None:
    """Open the Circuits page and load the latest version of the saved circuit `name` from the sidebar."""
    page = browser_page.page
    browser_page.open("/Circuits")
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=name).first.click()
    wait_rendered(page, TIMEOUT_S)
    sidebar.get_by_role("button", name="Load").click()
    wait_rendered(page, TIMEOUT_S)
    frame_of(page)


def node_point(page, frame, node: str) -> tuple[float, float]:
    """Page coordinates of `node`'s centre in the canvas, after zooming the view onto it."""
    element = frame.frame_element()
    element.scroll_into_view_if_needed()
    frame.evaluate("(id) => network.focus(id, {scale: 1.4, animation: false})", node)
    page.wait_for_timeout(150)
    box = element.bounding_box()
    inner = frame.evaluate(
        "(id) => { const p = network.canvasToDOM(network.getPositions([id])[id]);"
        " const r = document.getElementById('mynetwork').getBoundingClientRect(); return {x: p.x + r.left, y: p.y + r.top}; }",
        node,
    )
    return box["x"] + inner["x"], box["y"] + inner["y"]


def click_node(browser_page, node: str, modifier: str | None = None) -> None:
    """A real mouse click on `node` (holding `modifier`, e.g. 'Shift' or 'Alt'), then wait for the page."""
    page = browser_page.page
    x, y = node_point(page, frame_of(page), node)
    if modifier:
        page.keyboard.down(modifier)
    page.mouse.click(x, y)
    if modifier:
        page.keyboard.up(modifier)
    page.wait_for_timeout(300)
    wait_rendered(page, TIMEOUT_S)


def main_text(page) -> str:
    """The main area's text as read, without the invisible word joiners of ui.text.literal."""
    return page.locator('[data-testid="stMain"]').inner_text().replace("\u2060", "")


@pytest.mark.browser
def test_click_a_node_shows_its_card(ioi_circuit, browser_page):
    G, latent = ioi_circuit
    page = browser_page.page
    load_ioi(browser_page)
    click_node(browser_page, latent)
    page.wait_for_function(CARD_JS, arg=latent, timeout=60_000)
    text = main_text(page)
    a = G.nodes[latent]
    assert EXPLANATION in text  # the explanation, as typed (its <b> is text, not bold)
    assert "openai/gpt-4o-mini" in text  # who made it
    assert f"{a['dictionary']} · latent {a['latent']}" in text
    link = page.get_by_role("link", name=f"Open latent {a['latent']} on the Latents page")
    assert "dictionary=" in link.get_attribute("href") and f"latent={a['latent']}" in link.get_attribute("href")
    assert page.query_selector('[data-testid="stMain"] b') is None or all(
        el.inner_text() != "repeated" for el in page.query_selector_all('[data-testid="stMain"] b')
    )
    browser_page.screenshot("circuit-graph-card")

    # Shift-drag a box around the node: it is selected (in the graph and in the page's selection).
    x, y = node_point(page, frame_of(page), latent)
    page.keyboard.down("Shift")
    page.mouse.move(x - 45, y - 35)
    page.mouse.down()
    page.mouse.move(x, y, steps=4)
    page.mouse.move(x + 45, y + 35, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_timeout(300)
    wait_rendered(page, TIMEOUT_S)
    assert latent in frame_of(page).evaluate("selection")
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Selected nodes")
    assert graph_view.short_id(latent, a) in box.inner_text()
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []


@pytest.mark.browser
def test_group_two_nodes_and_the_supernode_survives_a_reload(ioi_circuit, browser_workspace, browser_page):
    G, latent = ioi_circuit
    page = browser_page.page
    load_ioi(browser_page)
    influence = C.graph_influence(G)
    a, b = sorted(C.latent_nodes(G), key=lambda v: -influence[v])[1:3]
    click_node(browser_page, a, "Shift")
    click_node(browser_page, b, "Shift")
    assert sorted(frame_of(page).evaluate("selection")) == sorted([a, b])
    page.get_by_role("textbox", name="Supernode label", exact=True).fill("mover pair")
    page.keyboard.press("Enter")
    wait_rendered(page, TIMEOUT_S)
    page.get_by_role("button", name="Group as supernode").click()
    wait_rendered(page, TIMEOUT_S)
    ready = "nodes.getIds().some(id => id.startsWith('supernode:'))"
    frame = frame_of(page, without=a, ready=ready)
    (sid,) = [v for v in frame.evaluate("nodes.getIds()") if v.startswith("supernode:")]
    assert frame.evaluate("(id) => nodes.get(id).label", sid) == "mover pair"
    browser_page.screenshot("circuit-graph-supernode")

    page.get_by_role("textbox", name="Circuit name", exact=True).fill(NAME)
    page.keyboard.press("Enter")
    wait_rendered(page, TIMEOUT_S)
    page.get_by_role("button", name="Save", exact=True).click()
    wait_rendered(page, TIMEOUT_S)
    assert "Saved 'graph instrument ioi' version" in main_text(page)
    saved = C.load_circuit(browser_workspace, NAME)
    assert [s.members for s in saved.pruning.supernodes] == [tuple(sorted([a, b]))]

    page.reload()
    wait_rendered(page, TIMEOUT_S)
    load_ioi(browser_page)
    frame = frame_of(page, ready=ready)
    assert sid in frame.evaluate("nodes.getIds()") and a not in frame.evaluate("nodes.getIds()")
    browser_page.screenshot("circuit-graph-supernode-reloaded")
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []


@pytest.mark.browser
def test_alt_click_removes_a_node_and_faithfulness_follows(ioi_circuit, browser_page):
    G, latent = ioi_circuit
    page = browser_page.page
    load_ioi(browser_page)
    drawn = frame_of(page).evaluate(
        "nodes.get().filter(n => n.kind === 'attn' || n.kind === 'transcoder').map(n => n.id)"
    )
    victim = next(v for v in drawn if not v.startswith("supernode:"))
    before = page.get_by_role("button", name="Recompute faithfulness")
    assert before.count() == 1
    click_node(browser_page, victim, "Alt")
    frame_of(page, without=victim)
    text = main_text(page)
    assert "Removed" in text and victim in text
    assert "Not measured for this pruning yet" in text  # the measurement shown was of another set
    kept = C.prune_graph(G, C.Pruning(removed_nodes=(victim,)))
    n_kept = len(C.latent_nodes(kept))
    page.get_by_role("button", name="Recompute faithfulness").click()
    wait_rendered(page, TIMEOUT_S)
    page.get_by_text(f"ablation of {n_kept} latents", exact=False).first.wait_for(timeout=TIMEOUT_S * 1000)
    browser_page.screenshot("circuit-graph-removed-faithfulness")
    # Undo brings the node back.
    page.get_by_role("button", name="Undo").click()
    wait_rendered(page, TIMEOUT_S)
    frame = frame_of(page, ready=f"nodes.getIds().includes({victim!r})")
    assert victim in frame.evaluate("nodes.getIds()")
    assert browser_page.dialogs == [] and browser_page.foreign_requests() == []
