"""The Scores page's "ours vs delphi" section in headless Chromium: both conventions named, no exception, nothing
requested outside localhost (synthetic workspace of tests/analysis_workspace.py, served by its own app)."""

from __future__ import annotations

from pathlib import Path

import analysis_workspace
import pytest

from browser.conftest import BrowserPage
from core.autointerp.delphi_metrics import OURS, POOLED
from tests.browser.serve import serve_app


@pytest.fixture(scope="module")
def scores_app(chromium, tmp_path_factory):
    """The app served on a synthetic workspace with detection and fuzzing scores and stored analyses; yields its URL."""
    from core.analysis import analyses as analysis

    root = tmp_path_factory.mktemp("delphi-browser")
    ws = analysis_workspace.build(root / "ws.duckdb", n_latents=24)
    analysis.analyze_workspace(ws)
    with serve_app(root / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(Path(ws))}) as served:
        yield served.url


def test_scores_page_names_both_conventions(chromium, scores_app):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    bp = BrowserPage(context.new_page(), scores_app)
    bp.page.on("request", lambda req: bp.requests.append(req.url))
    try:
        bp.open("/Scores")
        page = bp.page
        heading = page.get_by_text("Accuracy conventions: ours vs delphi", exact=False)
        heading.first.wait_for(timeout=60_000)
        heading.first.scroll_into_view_if_needed()
        bp.screenshot("scores-delphi-conventions")
        assert page.query_selector('[data-testid="stException"]') is None
        caption = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        assert any(OURS in c and POOLED in c for c in caption)
        assert page.locator('[data-testid="stDataFrame"]').count() >= 3  # distributions, contrasts, ..., conventions
        assert bp.foreign_requests() == []
    finally:
        context.close()
