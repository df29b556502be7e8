"""QK edges on the Circuits page in headless Chromium with real clicks: a trace with "Expand along QK edges"
draws no QK edge until "Show QK edges" is switched on, then draws them dashed; clicks and hover on the
graph still work; nothing is requested outside localhost. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest

from tests.browser.serve import wait_rendered
from tests.browser.test_circuit_graph_browser import CARD_JS, TIMEOUT_S, click_node, frame_of, main_text, node_point

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
