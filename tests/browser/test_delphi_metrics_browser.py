"""The Scores page's "ours vs delphi" section in headless Chromium: both conventions named, no exception, nothing
requested outside localhost (synthetic workspace of tests/analysis_workspace.py, served by its own app)."""

from __future__ import annotations

from browser.conftest import recorded_page
from core.autointerp.delphi_metrics import OURS, POOLED


def test_scores_page_names_both_conventions(chromium, analysis_app):
    with recorded_page(chromium, analysis_app) as bp:
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
