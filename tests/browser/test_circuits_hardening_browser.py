"""The circuits page in headless Chromium, against hostile text and concurrent edits: a prompt and a circuit
name full of Markdown/HTML show as typed (no image fetched, nothing formatted); a save on a circuit that another
user replaced is refused with the edits kept; a failed trace is shown in the page and the old graph is marked."""

from __future__ import annotations

import pytest

from browser.test_circuits_browser import PROMPT, TRACE_TIMEOUT_S, graph_frame, see, wait
from core.circuits import saved as C

HOSTILE = "![x](http://evil.example/a.png) **c** _bold_ $x^2$ <b>b</b>"
WORD_JOINER = "\u2060"  # ui.text.literal breaks URL and shortcode patterns with it; invisible


def shown_text(scope) -> str:
    """The text a reader sees in `scope` (a locator), without the invisible word joiners."""
    return scope.inner_text().replace(WORD_JOINER, "")


def no_formatting(page) -> None:
    """Nothing in the page was turned into an image, bold text, math or HTML from the hostile text."""
    assert page.query_selector("img[src*='evil.example']") is None
    assert page.query_selector('[data-testid="stMain"] .katex, [data-testid="stSidebar"] .katex') is None
    for tag in ("strong", "em", "b"):
        for el in page.query_selector_all(f'[data-testid="stMain"] {tag}, [data-testid="stSidebar"] {tag}'):
            assert el.inner_text().strip() not in ("c", "bold", "b"), f"<{tag}> {el.inner_text()!r}"


def trace_in_browser(browser_page, prompt: str, target: str = "", contrast: str = "") -> None:
    page = browser_page.page
    page.get_by_role("textbox", name="Prompt", exact=True).fill(prompt)
    page.get_by_role("textbox", name="Target token", exact=True).fill(target)
    page.get_by_role("textbox", name="Contrast token (optional)", exact=True).fill(contrast)
    page.get_by_role("button", name="Trace").click()
    wait(browser_page, TRACE_TIMEOUT_S)


def save_as(browser_page, name: str | None) -> None:
    page = browser_page.page
    if name is not None:
        page.get_by_role("textbox", name="Circuit name", exact=True).fill(name)
        page.keyboard.press("Enter")
        wait(browser_page)
    page.get_by_role("button", name="Save", exact=True).click()
    wait(browser_page)


@pytest.mark.browser
def test_hostile_prompt_and_name_show_as_typed(browser_workspace, browser_page):
    page = browser_page.page
    browser_page.open("/Circuits")
    see(page, "Trace a prompt, or load a saved circuit")
    trace_in_browser(browser_page, HOSTILE)
    assert page.query_selector('[data-testid="stException"]') is None
    graph_frame(page)
    no_formatting(page)
    assert browser_page.foreign_requests() == []
    main = page.locator('[data-testid="stMain"]')
    assert f"Prompt: {HOSTILE}" in shown_text(main)
    save_as(browser_page, HOSTILE)
    see(page, "version 1")
    assert f"Saved '{HOSTILE}' version 1" in shown_text(main)
    no_formatting(page)

    # A new session: the name in the sidebar's list, then the loaded circuit, all as typed.
    page.reload()
    wait(browser_page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    box = sidebar.locator('[data-testid="stSelectbox"]').first
    box.click()
    option = page.get_by_role("option").filter(has_text="evil.example").first
    assert HOSTILE in option.inner_text().replace(WORD_JOINER, "")
    option.click()
    wait(browser_page)
    assert f"'{HOSTILE}' →" in shown_text(sidebar)  # the caption quoting the prompt
    sidebar.get_by_role("button", name="Load").click()
    wait(browser_page)
    see(page, "loaded from version 1")
    text = shown_text(main)
    assert f"Loaded '{HOSTILE}' version 1." in text and f"Prompt: {HOSTILE}" in text
    assert f"Saved circuit '{HOSTILE}', loaded from version 1." in text
    no_formatting(page)
    browser_page.screenshot("circuits-hostile-text")
    assert browser_page.dialogs == []
    assert browser_page.foreign_requests() == []


@pytest.mark.browser
def test_a_save_on_a_replaced_circuit_is_refused_and_the_edits_stay(browser_workspace, browser_page):
    page = browser_page.page
    name = "race browser"
    browser_page.open("/Circuits")
    see(page, "Trace a prompt, or load a saved circuit")
    trace_in_browser(browser_page, PROMPT, ")")
    graph_frame(page)
    save_as(browser_page, name)
    see(page, f"Saved '{name}' version 1")

    # Another user deletes the circuit and saves a different prompt under the same name.
    theirs = C.load_circuit(browser_workspace, name, 1).graph
    theirs.graph["prompt"] = "someone else's prompt"
    C.delete_circuit(browser_workspace, name)
    C.save_circuit(browser_workspace, name, theirs)

    note = page.get_by_role("textbox", name="Circuit annotation / summary", exact=True)
    note.fill("my summary")
    page.keyboard.press("Control+Enter")
    wait(browser_page)
    save_as(browser_page, None)
    see(page, "was replaced after these edits were loaded")
    error = page.locator('[data-testid="stAlert"]').filter(has_text="was replaced").first
    assert "Your edits are still on this page." in shown_text(error)
    assert note.input_value() == "my summary"
    assert [v.version for v in C.list_versions(browser_workspace, name)] == [1]
    assert C.load_circuit(browser_workspace, name).graph.graph["prompt"] == "someone else's prompt"
    browser_page.screenshot("circuits-stale-save-refused")
    assert browser_page.dialogs == []
    assert browser_page.foreign_requests() == []


@pytest.mark.browser
def test_a_failed_trace_is_shown_in_the_page_and_the_old_graph_is_marked(browser_page):
    page = browser_page.page
    browser_page.open("/Circuits")
    see(page, "Trace a prompt, or load a saved circuit")
    trace_in_browser(browser_page, PROMPT, ")")
    graph_frame(page)
    # An over-long prompt: the error is in the page (not in a collapsed box) and the old graph is marked.
    trace_in_browser(browser_page, "word " * 400, ")")
    see(page, "this model's context is 128 tokens: shorten it")  # visible: not inside a collapsed box
    see(page, "Previous circuit (the last trace failed)")
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="Trace failed").first
    assert alert.is_visible() and shown_text(alert).strip().endswith("tokens: shorten it.")
    graph_frame(page)  # the previous graph is still drawn, under its mark
    browser_page.screenshot("circuits-trace-failed")
    assert browser_page.dialogs == []
    assert browser_page.foreign_requests() == []
