"""The circuits page in headless Chromium: trace a prompt, see the vis-network graph drawn, prune and
annotate (with an HTML probe), save, reload and find the circuit again; the probe stays text (in the
graph's tooltip too), no script runs, and nothing is requested outside localhost."""

from __future__ import annotations

import time

import pytest

from core.circuits import saved as C
from tests.browser.serve import wait_rendered

PROMPT = "The old man said that the new plan (which the city council had approved last year"
PROBE = "<img src=x onerror=alert(1)>"
NOTE = "closes the bracket <b>not bold</b>"
NAME = "browser circuit"
TRACE_TIMEOUT_S = 600.0


def wait(browser_page, timeout: float = TRACE_TIMEOUT_S) -> None:
    """Wait until the script run has finished and the page is drawn."""
    wait_rendered(browser_page.page, timeout)


def see(scope, text: str, timeout: float = 120.0) -> None:
    """Wait until `text` is shown in `scope` (a page or locator): a rerun may start a moment after an action."""
    scope.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=timeout * 1000)


def graph_frame(page, timeout: float = TRACE_TIMEOUT_S, without: str | None = None):
    """The iframe holding the vis-network graph, once its network has nodes (and lacks node `without`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                ready = frame.evaluate("typeof network !== 'undefined' && network.body.data.nodes.length > 0")
                if ready and (without is None or without not in frame.evaluate("nodes.getIds()")):
                    return frame
            except Exception:  # a frame being replaced by the rerun
                pass
        time.sleep(0.2)
    shown = page.locator('[data-testid="stMain"]').inner_text()[:1500]
    raise AssertionError(f"no vis-network graph with nodes was drawn; the page shows:\n{shown}")


def titles(frame) -> dict[str, str]:
    """{node id: tooltip text} of the drawn graph."""
    return frame.evaluate("Object.fromEntries(nodes.get().map(n => [n.id, n.title]))")


def hover_node(page, frame, node: str) -> str:
    """Move the mouse onto `node` in the canvas; returns the text of vis-network's tooltip."""
    element = frame.frame_element()
    element.scroll_into_view_if_needed()
    frame.evaluate("(id) => { network.focus(id, {scale: 1.5}); network.selectNodes([id]); }", node)
    page.wait_for_timeout(300)
    box = element.bounding_box()
    inner = frame.evaluate(
        "(id) => { const p = network.canvasToDOM(network.getPositions([id])[id]);"
        " const r = document.getElementById('mynetwork').getBoundingClientRect(); return {x: p.x + r.left, y: p.y + r.top}; }",
        node,
    )
    x, y = box["x"] + inner["x"], box["y"] + inner["y"]
    for dx in (0, 1, 2):  # vis-network shows a tooltip after a mouse *move* that ends on the node
        page.mouse.move(x + dx, y)
        page.wait_for_timeout(250)
    frame.wait_for_selector(".vis-tooltip", state="visible", timeout=10_000)
    return frame.evaluate("document.querySelector('.vis-tooltip').innerText")


@pytest.mark.browser
def test_circuits_page_traces_prunes_annotates_saves_and_reloads(browser_workspace, browser_page):
    page = browser_page.page
    browser_page.open("/Circuits")
    see(page, "Trace a prompt, or load a saved circuit")

    page.get_by_role("textbox", name="Prompt", exact=True).fill(PROMPT)
    page.get_by_role("textbox", name="Target token", exact=True).fill(")")
    page.get_by_role("textbox", name="Contrast token (optional)", exact=True).fill(".")
    page.get_by_role("button", name="Trace").click()
    wait(browser_page)
    assert page.query_selector('[data-testid="stException"]') is None
    frame = graph_frame(page)
    assert frame.locator("canvas").count() >= 1
    first = titles(frame)
    latents = [v for v in first if v.startswith(("attn.", "transcoder."))]
    assert len(first) > 10 and latents
    browser_page.screenshot("circuits-traced")

    # Prune: remove a latent through the multiselect (typing filters the options; Enter picks the first).
    victim = latents[-1]
    box = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Remove nodes")
    box.locator("input").click()
    page.keyboard.type(victim.replace("@", " @"))
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    wait(browser_page)
    frame = graph_frame(page, without=victim)
    assert victim not in titles(frame)

    # Annotate the node the annotation box is on, and the circuit as a whole.
    page.get_by_role(
        "textbox", name="Annotation (prefilled from the explanation; Enter to set, empty to clear)", exact=True
    ).fill(PROBE)
    page.keyboard.press("Enter")
    wait(browser_page)
    page.get_by_role("textbox", name="Circuit annotation / summary", exact=True).fill(NOTE)
    page.keyboard.press("Control+Enter")
    wait(browser_page)
    frame = graph_frame(page)
    annotated = [v for v, t in titles(frame).items() if f"annotation: {PROBE}" in t]
    assert len(annotated) == 1
    tooltip = hover_node(page, frame, annotated[0])
    assert PROBE in tooltip  # shown as text, not parsed
    assert frame.query_selector("img[src='x']") is None and page.query_selector("img[src='x']") is None
    browser_page.screenshot("circuits-pruned-annotated")

    page.get_by_role("textbox", name="Circuit name", exact=True).fill(NAME)
    page.keyboard.press("Enter")
    wait(browser_page)
    page.get_by_role("button", name="Save", exact=True).click()
    wait(browser_page)
    see(page, f"Saved '{NAME}' version 2")
    saved = C.load_circuit(browser_workspace, NAME)
    assert saved.node_annotations[annotated[0]].text == PROBE and victim in saved.pruning.removed_nodes

    # A reload is a new session: the circuit is listed in the sidebar and comes back with its edits.
    page.reload()
    wait(browser_page)
    see(page, "Trace a prompt, or load a saved circuit")
    sidebar = page.locator('[data-testid="stSidebar"]')
    see(sidebar, "2 version(s)")
    sidebar.get_by_role("button", name="Load").click()
    wait(browser_page)
    see(page, f"Saved circuit '{NAME}', loaded from version 2.")
    frame = graph_frame(page)
    again = titles(frame)
    assert victim not in again and f"annotation: {PROBE}" in again[annotated[0]]
    assert page.get_by_role("textbox", name="Circuit annotation / summary", exact=True).input_value() == NOTE
    browser_page.screenshot("circuits-reloaded")

    assert browser_page.dialogs == []
    assert browser_page.foreign_requests() == []
    assert any("/_stcore/" in url or "/static/" in url for url in browser_page.requests)
