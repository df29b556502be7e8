"""The served app in headless Chromium on a damaged workspace and on one that another process holds: every
page shows one message naming the file (or the process) and what to do, no traceback, within seconds; a
workspace path outside the allowed folders is refused; no request leaves localhost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workspace_helpers import HOLD_WRITE_SESSION, fingerprint, plain, python_holding, stop, truncated_copy

from tests.browser.serve import serve_app

from .conftest import RENDER_TIMEOUT_S, BrowserPage

PAGES = ["/", "/Latents", "/Scores", "/Deciles", "/Overlap", "/Circuits"]
ERROR = '[data-testid="stAlertContentError"]'
ANSWER_S = 5.0


@pytest.fixture(scope="module")
def damaged_app(chromium, app_workspace, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app served on a copy of the tiny workspace cut to 4 MiB; yields (URL, workspace)."""
    ws = truncated_copy(app_workspace, tmp_path_factory.mktemp("browser-damaged"))
    with serve_app(
        tmp_path_factory.mktemp("damaged-server") / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(ws)}
    ) as s:
        yield s.url, ws


@pytest.fixture(scope="module")
def locked_app(chromium, app_workspace, tmp_path_factory) -> Iterator[tuple[str, Path, int]]:
    """The app served on a copy of the tiny workspace that another process holds open for writing;
    yields (URL, workspace, pid of the holder)."""
    from app_workspace import copy_workspace

    ws = copy_workspace(app_workspace, tmp_path_factory.mktemp("browser-locked"))
    holder = python_holding(HOLD_WRITE_SESSION, ws)
    try:
        log = tmp_path_factory.mktemp("locked-server") / "server.log"
        with serve_app(log, env={"SAE_EXPLORER_WORKSPACE": str(ws)}) as s:
            yield s.url, ws, holder.pid
    finally:
        stop(holder)


def new_page(chromium, url: str) -> BrowserPage:
    """A fresh Chromium page (own session) on the app at `url`, recording its requests and dialogs."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    bp = BrowserPage(page, url)
    page.on("request", lambda req: bp.requests.append(req.url))
    page.on("dialog", lambda dialog: (bp.dialogs.append(dialog.message), dialog.dismiss()))
    return bp


def errors(bp: BrowserPage) -> list[str]:
    return [plain(e.inner_text()) for e in bp.page.query_selector_all(ERROR)]


@pytest.mark.browser
def test_every_page_shows_one_message_on_a_damaged_workspace(chromium, damaged_app):
    url, ws = damaged_app
    before = fingerprint(ws)
    bp = new_page(chromium, url)
    try:
        for path in PAGES:
            bp.open(path)
            name = path.strip("/") or "home"
            bp.screenshot(f"damaged-workspace-{name}")
            assert bp.page.query_selector('[data-testid="stException"]') is None, path
            shown = errors(bp)
            assert len(shown) == 1, (path, shown)
            assert str(ws) in shown[0] and "cut short" in shown[0] and "Way out" in shown[0], shown[0]
            body = bp.page.locator('[data-testid="stMain"]').inner_text()
            assert "No overlap stored" not in body and "No scored explanations" not in body, path
        assert bp.foreign_requests() == [] and bp.dialogs == []
    finally:
        bp.page.context.close()
    assert fingerprint(ws) == before


@pytest.mark.browser
def test_pages_name_the_process_holding_the_workspace_within_seconds(chromium, locked_app):
    url, ws, pid = locked_app
    bp = new_page(chromium, url)
    try:
        for path in ("/", "/Latents", "/Overlap"):
            t0 = time.monotonic()
            bp.open(path)
            seconds = time.monotonic() - t0
            bp.screenshot(f"locked-workspace-{path.strip('/') or 'home'}")
            assert bp.page.query_selector('[data-testid="stException"]') is None, path
            shown = errors(bp)
            assert len(shown) == 1, (path, shown)
            assert f"process {pid} (`python -c" in shown[0] and f"kill {pid}" in shown[0] and str(ws) in shown[0]
            assert seconds < ANSWER_S + 3, (path, seconds)  # the page's answer plus loading it in the browser
        assert bp.foreign_requests() == [] and bp.dialogs == []
    finally:
        bp.page.context.close()


@pytest.mark.browser
def test_a_workspace_outside_the_allowed_folders_is_refused(chromium, damaged_app, app_workspace, tmp_path_factory):
    """Typed into the home page's box: a workspace in another folder, and the same reached through a link and
    through '..' from the allowed folder (the startup workspace's), are refused; the pages keep theirs."""
    from app_workspace import copy_workspace

    url, ws = damaged_app
    outside = copy_workspace(app_workspace, tmp_path_factory.mktemp("browser-outside"))
    link = ws.parent / "link.duckdb"
    link.symlink_to(outside)
    bp = new_page(chromium, url)
    try:
        bp.open("/")
        box = bp.page.get_by_label("Path to a workspace (.duckdb file made by `python -m core cache`)")
        for typed in (str(outside), str(link), f"{ws.parent}/../{outside.parent.name}/{outside.name}"):
            box.fill(typed)
            box.press("Enter")
            deadline = time.monotonic() + RENDER_TIMEOUT_S
            while not any("outside the folders" in e for e in errors(bp)):
                assert time.monotonic() < deadline, errors(bp)
                time.sleep(0.2)
            shown = errors(bp)
            assert len(shown) == 1 and str(ws.parent.resolve()) in shown[0]
            assert "SAE_EXPLORER_WORKSPACE_DIRS=" in shown[0]
            assert bp.page.query_selector('[data-testid="stException"]') is None
        bp.screenshot("workspace-path-refused")
        bp.open("/Latents")  # still the startup workspace: its own message, not the refused file's
        assert len(errors(bp)) == 1 and str(ws) in errors(bp)[0]
        assert bp.foreign_requests() == [] and bp.dialogs == []
    finally:
        bp.page.context.close()
