"""First start in headless Chromium with the Home and Circuits pages opened at the same moment (two tabs, as a
researcher restoring a browser session would): one session copies the shipped seed into place while the other
waits for it, and the Circuits page draws the example circuit: no error, no command to run, nothing requested
outside localhost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.serve import serve_app, wait_rendered

from .conftest import RENDER_TIMEOUT_S, BrowserPage

COMMAND_HINTS = ("python -m core", "run `", "Run `")
GRAPH_JS = "typeof network !== 'undefined' && network.body.data.nodes.length > 0"


@pytest.fixture(scope="module")
def clean_data_app(chromium, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app served on a data folder holding the default's artifacts and the shipped seed, no workspace; yields
    (URL, default workspace path)."""
    from core import store
    from core.build.seed import SEED_DIR, seed_problem
    from core.paths import DEFAULT_DIR

    assert seed_problem(SEED_DIR) is None, "the shipped seed does not fit the default artifacts"
    d = tmp_path_factory.mktemp("browser-circuits-first-start")
    data = d / "data"
    for name in ("model", "dictionaries", "corpus", "seed"):
        shutil.copytree(DEFAULT_DIR / name, data / "default" / name)
    for name in ("manifest.json", "evaluation.json", "learning_curves.json"):
        if (DEFAULT_DIR / name).exists():
            shutil.copy2(DEFAULT_DIR / name, data / "default" / name)
    default = data / "default" / "workspace.duckdb"
    try:
        with serve_app(d / "server.log", env={"SAE_EXPLORER_DATA": str(data)}) as served:
            yield served.url, default
    finally:
        status = store.data_dir(default) / "default-explanations.json"
        if status.exists():  # the background job the home page started: stop it
            pid = json.loads(status.read_text()).get("pid")
            if pid:
                try:
                    os.killpg(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


def graph_drawn(page) -> bool:
    for frame in page.frames:
        try:
            if frame.evaluate(GRAPH_JS):
                return True
        except Exception:  # a frame being replaced by a rerun
            pass
    return False


def test_circuits_opened_with_home_on_the_first_start_draws_the_example(chromium, clean_data_app):
    url, default = clean_data_app
    assert not default.exists()
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    home, circuits = context.new_page(), context.new_page()
    pages = {"home": BrowserPage(home, url), "circuits": BrowserPage(circuits, url)}
    for bp in pages.values():
        bp.page.on("request", lambda req, bp=bp: bp.requests.append(req.url))
    home.goto(url + "/", wait_until="commit")
    circuits.goto(url + "/Circuits", wait_until="commit")  # at once: no waiting for the home page
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while not graph_drawn(circuits):
        assert time.monotonic() < deadline, "the Circuits page drew no graph"
        time.sleep(0.2)
    wait_rendered(circuits, RENDER_TIMEOUT_S)
    wait_rendered(home, RENDER_TIMEOUT_S)
    assert default.exists()
    shown = circuits.locator('[data-testid="stMain"]').inner_text()
    assert "Opened the example circuit" in shown, shown
    for name, bp in pages.items():
        text = bp.page.locator('[data-testid="stMain"]').inner_text()
        assert not any(h in text for h in COMMAND_HINTS), (name, text)
        assert not bp.page.query_selector('[data-testid="stAlertContentError"]'), (name, text)
        assert not bp.page.query_selector('[data-testid="stException"]'), (name, text)
        assert not bp.foreign_requests(), (name, bp.foreign_requests())
    context.close()
