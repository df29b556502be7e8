"""The Scores, Deciles and Overlap pages in headless Chromium, served on a workspace with stored analyses.

The workspace is tests/analysis_workspace.py's synthetic one (known scores, overlaps and embeddings;
no model needed); a second app is served on it. Each page must draw its charts (SVG images by default, plotly after
the sidebar's "Interactive charts" toggle) without an exception, request nothing outside localhost, and leave a
screenshot in test-artifacts/.
"""

from __future__ import annotations

import pytest

from browser.conftest import recorded_page

PAGES = {
    "/Scores": ("scores-page", "Scorer agreement"),
    "/Deciles": ("deciles-page", "activation decile"),
    "/Overlap": ("overlap-page", "Matched latents"),
}


@pytest.mark.parametrize("path", list(PAGES))
def test_analysis_pages_draw_their_charts(chromium, analysis_app, path):
    shot, phrase = PAGES[path]
    with recorded_page(chromium, analysis_app) as bp:
        bp.open(path)
        page = bp.page
        page.wait_for_selector(".analysischart img", timeout=60_000)
        page.wait_for_function(DRAWN_JS, timeout=30_000)  # every image decoded and laid out at a readable size
        bp.screenshot(shot)
        assert page.query_selector('[data-testid="stException"]') is None
        assert page.query_selector(".js-plotly-plot") is None  # no plotly bundle until asked for
        # on white whatever the theme, so the charts' dark labels stay readable in the dark theme
        backgrounds = page.eval_on_selector_all(
            ".analysischart img", "imgs => imgs.map(i => getComputedStyle(i).backgroundColor)"
        )
        assert backgrounds and set(backgrounds) == {"rgb(255, 255, 255)"}
        assert page.get_by_text(phrase, exact=False).count() >= 1
        assert bp.foreign_requests() == []


DRAWN_JS = """() => { const imgs = [...document.querySelectorAll('.analysischart img')];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 300); }"""


def test_interactive_charts_toggle_draws_plotly_on_every_page_of_the_session(chromium, analysis_app):
    with recorded_page(chromium, analysis_app) as bp:
        bp.open("/Scores")
        page = bp.page
        page.wait_for_function(DRAWN_JS, timeout=60_000)
        images = page.locator(".analysischart img").count()
        page.get_by_text("Interactive charts").click()
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length === {images}", timeout=60_000)
        assert page.locator(".analysischart img").count() == 0
        # the choice holds when the researcher moves on to another page of the app
        page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Deciles").click()
        # (the Scores page's plots can still be in the DOM right after the click: wait for the Deciles page's text)
        page.get_by_text("activation decile", exact=False).first.wait_for(timeout=60_000)
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        assert page.get_by_text("activation decile", exact=False).count() >= 1
        assert page.locator(".analysischart img").count() == 0
        bp.screenshot("deciles-page-interactive")
        assert page.query_selector('[data-testid="stException"]') is None
        assert bp.foreign_requests() == []
