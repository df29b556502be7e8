"""First start in headless Chromium: the app served on a data folder without a workspace (the embedded default's
artifacts and a small seed of them) copies the seed into place; every page shows its content with real clicks'
worth of waiting only, names no command to run, calls the home page "Home" in the navigation, and requests
nothing outside localhost. A direct latent URL opens that latent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.serve import CHARTS_DRAWN_JS, serve_app, wait_rendered

from .conftest import RENDER_TIMEOUT_S, BrowserPage

DICTS = ["resid:blocks.1.hook_resid_pre", "resid:blocks.2.hook_resid_pre"]
UNITS = ["neurons:blocks.1.mlp.hook_post", "neurons_topk32:blocks.1.mlp.hook_post"]  # for the latents-vs-neurons chart
COMMAND_HINTS = ("python -m core", "run `", "Run `")
HAS = "document.querySelectorAll('[data-testid=\"{}\"]').length"
READY_JS = {
    "/": f"{HAS.format('stDataFrame')} >= 2",
    "/Scores": CHARTS_DRAWN_JS,
    "/Deciles": CHARTS_DRAWN_JS,
    "/Overlap": CHARTS_DRAWN_JS,
}


@pytest.fixture(scope="module")
def first_start_app(chromium, tmp_path_factory) -> Iterator[tuple[str, Path, tuple[str, int]]]:
    """The app served on a data folder holding the default's artifacts and a seed, no workspace; yields
    (URL, default workspace path, a scored latent)."""
    from core import store
    from core.build.seed import write_seed
    from core.cli import main as core_main
    from core.paths import DEFAULT_DIR

    d = tmp_path_factory.mktemp("browser-first-start")
    ws = d / "build" / "workspace.duckdb"

    def run(*argv: str) -> None:
        assert core_main(list(argv)) == 0, argv

    run("cache", "--model", "default", "--tokens", "4096", "--workspace", str(ws), "--dictionaries", *DICTS)
    common = ["--workspace", str(ws), "--sample", "12", "--dictionary", *DICTS, *UNITS]
    run("explain", *common)
    run("score", *common, "--scorers", "detection,fuzzing,embedding", "--model", "judge")
    run("report", "--workspace", str(ws), "--out", str(d / "report"), "--images", "html")
    from dataclasses import asdict

    from core.build.seed import SEED_PARAMS
    from core.cache.workspace import default_source_fingerprint

    with store.session(ws, write=True) as con:
        store.set_info(
            con, "default_workspace", {"source": default_source_fingerprint(), "params": asdict(SEED_PARAMS)}
        )
    scored = store.scores_frame(ws)
    row = scored[scored["baseline"].isna() & (scored["status"] == "ok")].iloc[0]
    data = d / "data"
    for name in ("model", "dictionaries", "corpus"):
        shutil.copytree(DEFAULT_DIR / name, data / "default" / name)
    for name in ("manifest.json", "evaluation.json", "learning_curves.json"):
        if (DEFAULT_DIR / name).exists():
            shutil.copy2(DEFAULT_DIR / name, data / "default" / name)
    write_seed(ws, data / "default" / "seed", steps=["cache", "explain:fast", "analyze"])
    default = data / "default" / "workspace.duckdb"
    try:
        with serve_app(d / "server.log", env={"SAE_EXPLORER_DATA": str(data)}) as served:
            yield served.url, default, (str(row["dictionary"]), int(row["latent"]))
    finally:
        status = store.data_dir(default) / "default-explanations.json"
        if status.exists():  # the background job the home page started: stop it
            pid = json.loads(status.read_text()).get("pid")
            if pid:
                try:
                    os.killpg(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass


def open_page(chromium, url: str, path: str, ready_js: str | None = None) -> BrowserPage:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    bp = BrowserPage(page, url)
    page.on("request", lambda req: bp.requests.append(req.url))
    page.goto(url + path, timeout=RENDER_TIMEOUT_S * 1000)
    wait_rendered(page, RENDER_TIMEOUT_S, ready_js=ready_js)
    return bp


def main_text(bp: BrowserPage) -> str:
    return bp.page.locator('[data-testid="stMain"]').inner_text()


def test_every_page_shows_content_on_the_first_start(chromium, first_start_app):
    url, default, (dictionary, latent) = first_start_app
    assert not default.exists()
    home = open_page(chromium, url, "/", READY_JS["/"])
    assert default.exists()
    shown = main_text(home)
    assert "Default workspace ready" in shown or "schema v" in shown  # (its tables are canvases: counted above)
    assert not any(h in shown for h in COMMAND_HINTS), shown
    label = home.page.evaluate(
        """(() => { const a = document.querySelector('[data-testid="stSidebarNavItems"] > li:first-child a span');
           return a ? getComputedStyle(a, '::after').content : null; })()"""
    )
    assert label == '"Home"', label
    assert not home.foreign_requests()
    home.page.context.close()
    for path in ("/Scores", "/Deciles", "/Overlap"):
        bp = open_page(chromium, url, path, READY_JS[path])
        shown = main_text(bp)
        assert not any(h in shown for h in COMMAND_HINTS), (path, shown)
        assert not bp.page.query_selector('[data-testid="stAlertContentError"]'), (path, shown)
        assert not bp.foreign_requests()
        bp.page.context.close()
    query = urllib.parse.urlencode({"dictionary": dictionary, "latent": latent})
    bp = open_page(
        chromium,
        url,
        f"/Latents?{query}",
        "document.querySelector('span.tok.act') !== null && document.querySelector('div.explanation') !== null",
    )
    shown = main_text(bp)
    assert f"latent {latent}" in shown.lower() or str(latent) in shown
    assert "baseline:token-stats" in shown and not any(h in shown for h in COMMAND_HINTS)
    assert not bp.foreign_requests()
    bp.page.context.close()
