"""Importing graph JSON on the Circuits page, in headless Chromium with a real file upload: circuit-tracer's JSON
is drawn with a plain message that faithfulness and steering are off for it; a malformed file gets a clear
message and the circuit on screen stays. Nothing is requested outside localhost."""

from __future__ import annotations

import json
import time

from tests.browser.serve import wait_rendered
from tests.test_graph_interop import ct_graph

TIMEOUT_S = 600.0


def drawn_nodes(page, timeout: float = TIMEOUT_S) -> list[str]:
    """Node ids the graph component has drawn (waits for a drawn graph)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if frame.evaluate("typeof network !== 'undefined' && network !== null && nodes.length > 0"):
                    return frame.evaluate("nodes.getIds()")
            except Exception:  # a frame being replaced by a rerun
                pass
        time.sleep(0.2)
    raise AssertionError("no graph drawn: " + page.locator('[data-testid="stMain"]').inner_text()[:800])


def open_importer(page) -> None:
    """Open the import expander if a rerun closed it (its messages are inside it)."""
    expander = page.locator('[data-testid="stExpander"] details').filter(has_text="Import a graph").first
    if expander.get_attribute("open") is None:
        expander.locator("summary").click()
        page.wait_for_timeout(300)


def test_import_circuit_tracer_json_then_a_malformed_file(browser_page, tmp_path):
    page = browser_page.page
    good = tmp_path / "ct-graph.json"
    good.write_text(json.dumps(ct_graph()))
    browser_page.open("/Circuits")
    page.get_by_text("Import a graph (JSON from this app, circuit-tracer or Neuronpedia)").click()
    uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    uploader.set_input_files(str(good))
    wait_rendered(page, TIMEOUT_S)
    main = page.locator('[data-testid="stMain"]')
    deadline = time.monotonic() + TIMEOUT_S
    while "Imported the graph" not in main.inner_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    text = main.inner_text()
    assert "Imported the graph" in text, text[:1500]
    assert "Faithfulness needs the model this graph was traced on" in text, text[:2500]
    ids = drawn_nodes(page)
    assert len(ids) >= 4, ids
    assert main.get_by_role("button", name="Recompute faithfulness").is_disabled()
    browser_page.screenshot("circuit-import-ct")

    bad = tmp_path / "broken.json"
    bad.write_text('{"metadata": {"slug": "x"}, "nodes": [')
    uploader.set_input_files(str(bad))
    wait_rendered(page, TIMEOUT_S)
    open_importer(page)
    deadline = time.monotonic() + TIMEOUT_S
    while "Could not import broken.json" not in main.inner_text() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "Could not import broken.json" in main.inner_text(), main.inner_text()[:1500]
    assert sorted(drawn_nodes(page)) == sorted(ids)  # the imported graph stays on screen
    assert not page.locator('[data-testid="stException"]').count()
    assert browser_page.foreign_requests() == [], browser_page.foreign_requests()
    assert not browser_page.dialogs, browser_page.dialogs
