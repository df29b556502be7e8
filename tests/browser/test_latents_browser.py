"""The served app in headless Chromium: the latents page highlights tokens, shows an HTML probe as text,
and the page requests nothing outside localhost."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from app_workspace import PROBE


@pytest.mark.browser
def test_latents_page_highlights_tokens_and_escapes_html(probe_latent, browser_page):
    dictionary, latent = probe_latent  # its top activations are on the probe token; an explanation quotes it
    browser_page.open(f"/Latents?dictionary={quote(dictionary)}&latent={latent}")
    page = browser_page.page
    browser_page.screenshot("latents-page")

    assert page.query_selector('[data-testid="stException"]') is None
    assert page.get_by_text(f"{dictionary} · latent {latent}").count() == 1
    lit = page.query_selector_all("span.tok.act")
    assert len(lit) >= 10  # top examples and deciles, each with at least its chosen token lit
    titles = [s.get_attribute("title") for s in lit[:20]]
    assert all(t and float(t) > 0 for t in titles)  # the activation on hover
    shaded = page.evaluate("getComputedStyle(document.querySelector('span.tok.act')).backgroundColor")
    assert shaded.startswith("rgba(255, 140, 0")

    # The probe token is in the examples as text: no <img> element was injected and no script ran.
    probes = [s for s in page.query_selector_all("span.tok") if s.inner_text() == PROBE]
    assert probes, "the probe token should appear in this latent's examples"
    explanations = [e.inner_text() for e in page.query_selector_all("div.explanation")]
    assert len(explanations) == 2 and any(f"the token {PROBE} in quotes" in e for e in explanations)
    assert sum("BASELINE" in e for e in explanations) == 1
    assert page.query_selector("img[src='x']") is None
    # the histograms are SVG images, drawn and sized (no plotly bundle loaded for the card), summarised on hover
    charts = page.query_selector_all(".svgcharts img")
    assert len(charts) == 2 and all(c.bounding_box()["width"] > 200 for c in charts)
    assert all(c.evaluate("i => i.complete && i.naturalWidth > 0") for c in charts)  # the SVG decoded
    # on white whatever the theme: the charts' dark labels stay readable in the dark theme
    assert all(c.evaluate("i => getComputedStyle(i).backgroundColor") == "rgb(255, 255, 255)" for c in charts)
    assert charts[0].get_attribute("title").startswith("Activation histogram:")
    assert "this latent" in charts[1].get_attribute("title")
    assert page.query_selector(".js-plotly-plot") is None
    assert browser_page.dialogs == []
    assert browser_page.foreign_requests() == []
    assert any(
        "/_stcore/" in url or "/static/" in url for url in browser_page.requests
    )  # the recorder saw the app's own requests


@pytest.mark.browser
def test_home_page_shows_the_workspace_overview(browser_workspace, browser_page):
    browser_page.open("/")
    page = browser_page.page
    browser_page.screenshot("home-page")
    assert page.query_selector('[data-testid="stException"]') is None
    assert page.get_by_text(str(browser_workspace)).count() >= 1
    assert page.get_by_text("tiny-test").count() >= 1  # the model the workspace was built from
    # the learning curves are the build's drawing, shown as an image, not a plotly chart
    page.get_by_text("Learning curves").first.scroll_into_view_if_needed()
    assert page.query_selector('[data-testid="stImage"] img') is not None
    assert page.query_selector(".js-plotly-plot") is None
    # every table shows all its columns at this width: none scrolls sideways, hiding its last columns
    widths = page.eval_on_selector_all(
        '[data-testid="stDataFrame"] .dvn-scroller',
        "els => els.map(e => [e.scrollWidth, e.clientWidth])",
    )
    assert len(widths) >= 4 and all(scroll <= client + 1 for scroll, client in widths), widths
    assert browser_page.foreign_requests() == []
