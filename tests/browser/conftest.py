"""Browser tests: the app served by `streamlit run` on a free port, driven by headless Debian Chromium.

`served_app` serves app.py on the tiny workspace of tests/app_workspace.py; `browser_page` is a fresh
Chromium page that records every request it makes and every JavaScript dialog it opens, so a test can
assert that nothing left localhost and that no injected script ran. `analysis_app` serves the synthetic
workspace of tests/analysis_workspace.py (scores and analyses stored), opened with `recorded_page`.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.browser.serve import CHROMIUM, ROOT, launch_chromium, serve_app, wait_rendered

ARTIFACTS = ROOT / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
RENDER_TIMEOUT_S = 120.0


def pytest_collection_modifyitems(items):
    """Every test under tests/browser/ is a browser test (selectable with -m browser / -m 'not browser')."""
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


# Package scope: the server and the browser stop before the rest of the suite runs. Playwright's sync API
# keeps an asyncio loop running in the main thread while it is open, which code under test must not see.
@pytest.fixture(scope="package")
def probe_latent(app_workspace) -> tuple[str, int]:
    """A latent whose highest activations are on the HTML probe token (dictionary, latent)."""
    from app_workspace import PROBE

    from core.latents.cards import find_latents_by_token

    match = find_latents_by_token(app_workspace, PROBE)[0]
    return match.dictionary, match.latent


@pytest.fixture(scope="package")
def browser_workspace(app_workspace, probe_latent, tmp_path_factory) -> Path:
    """A copy of the tiny workspace with explanations of the probe latent (one of them quotes the probe)."""
    from app_workspace import copy_workspace, store_explanations

    workspace = copy_workspace(app_workspace, tmp_path_factory.mktemp("browser-workspace"))
    store_explanations(workspace, *probe_latent)
    return workspace


@pytest.fixture(scope="package")
def served_app(browser_workspace, tmp_path_factory):
    """The app served by `streamlit run app.py` on a free localhost port with `browser_workspace`; yields its URL."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (`apt-get install -y chromium`; ./dev test does it as root)")
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    with serve_app(log, env={"SAE_EXPLORER_WORKSPACE": str(browser_workspace)}) as served:
        yield served.url


@pytest.fixture(scope="package")
def chromium(served_app):
    """One headless Chromium for the session (Debian's binary; `playwright install` is not used)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@dataclass
class BrowserPage:
    """A Chromium page with the URLs it requested and the JavaScript dialogs it opened."""

    page: object  # playwright.sync_api.Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str = "/", timeout: float = RENDER_TIMEOUT_S) -> None:
        """Navigate to `path` of the served app and wait until the script has finished and the page is drawn."""
        self.page.goto(self.base_url + path, timeout=timeout * 1000)
        wait_rendered(self.page, timeout)

    def foreign_requests(self) -> list[str]:
        """Requested URLs whose host is not localhost (data:, blob: and about: URLs stay in the page)."""
        return [
            u
            for u in self.requests
            if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname not in LOCAL_HOSTS
        ]

    def screenshot(self, name: str) -> Path:
        """Save a screenshot of the whole page to test-artifacts/NAME.png (Streamlit scrolls inside its main
        area, so the viewport is stretched to the content's height for the shot)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        size = self.page.viewport_size
        height = self.page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 0")
        self.page.set_viewport_size(
            {"width": size["width"], "height": max(size["height"], min(int(height) + 50, 12000))}
        )
        self.page.wait_for_timeout(300)
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size(size)
        return path


@pytest.fixture
def browser_page(chromium, served_app):
    """A fresh page (own session) on the served app, recording requests and dialogs."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    bp = BrowserPage(page, served_app)
    page.on("request", lambda req: bp.requests.append(req.url))

    def on_dialog(dialog):
        bp.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield bp
    context.close()


@pytest.fixture(scope="package")
def analysis_app(chromium, tmp_path_factory):
    """The app served on tests/analysis_workspace.py's synthetic workspace (24 latents; scores, analyses and
    overlaps stored; no model needed); yields its URL."""
    import analysis_workspace

    from core.analysis import analyses as analysis

    root = tmp_path_factory.mktemp("analysis-browser")
    ws = analysis_workspace.build(root / "ws.duckdb", n_latents=24)
    analysis.analyze_workspace(ws)
    with serve_app(root / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(Path(ws))}) as served:
        yield served.url


@contextmanager
def recorded_page(chromium, base_url: str) -> Iterator[BrowserPage]:
    """A fresh 1400 x 1000 page (its own session) on the app at `base_url`, recording its requests; closed after."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    bp = BrowserPage(context.new_page(), base_url)
    bp.page.on("request", lambda req: bp.requests.append(req.url))
    try:
        yield bp
    finally:
        context.close()
