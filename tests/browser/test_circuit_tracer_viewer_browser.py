"""Our graph export opened in circuit-tracer's own local graph viewer, in headless Chromium.

The viewer ships in the PyPI package circuit-tracer (installed beside our stack with --no-deps into
.venv/peers by `./dev test`); it loads d3, d3-jetpack, dagre and pako from CDNs, so this test serves
local npm copies (.venv/peers/npm) instead, on 127.0.0.1, with circuit-tracer's own request handler
for the graph files. Its CDN d3-jetpack is a build whose `d3.conventions()` also returns a
`drawAxis(selection)` method; the npm d3-jetpack has `d3.drawAxis(c)`, so a one-line shim adds the
method. Skipped, with the reason, when the peer or the npm copies are absent (offline clone).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from tests.browser.conftest import ARTIFACTS, LOCAL_HOSTS
from tests.browser.serve import ROOT

PEERS = ROOT / ".venv" / "peers"
NPM = PEERS / "npm"
ASSETS = PEERS / "circuit_tracer" / "frontend" / "assets"
# The CDN scripts of the viewer's index.html -> local files ("" drops a script the graph page does not
# need: the CDN's live-reload client, and its .npy reader, used only for .npy data files).
VENDOR = {
    "hotserver-client-ws.js": [],
    "lib/d3.js": [NPM / "d3/package/dist/d3.min.js"],
    "jetpack_2024-07-20.js": [
        NPM / "d3-collection/package/dist/d3-collection.min.js",  # d3-jetpack's nestBy needs d3-collection's nest
        NPM / "d3-jetpack/package/build/d3-jetpack.cjs",
    ],
    "npy_v0.js": [],
    "dagre.min.js": [NPM / "dagre/package/dist/dagre.min.js"],
    "pako.min.js": [NPM / "pako/package/dist/pako.min.js"],
}
SHIM = (
    "(function(){var conv=d3.conventions;d3.conventions=function(o){var c=conv(o);"
    "c.drawAxis=function(sel){return d3.drawAxis(Object.assign({},c,{svg:sel||c.svg}))};return c}})();"
)
SLUG = "ioi-export"


def _missing_peer() -> str | None:
    files = [ASSETS / "index.html", *(f for fs in VENDOR.values() for f in fs)]
    missing = [str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f) for f in files if not f.exists()]
    if missing:
        return (
            f"circuit-tracer's viewer or its browser libraries are not installed beside the stack ({missing[0]} is "
            "missing): `./dev test` installs them into .venv/peers when PyPI and npm are reachable"
        )
    return None


# Skip before any fixture starts (the package's `chromium` fixture starts the app).
pytestmark = pytest.mark.skipif(_missing_peer() is not None, reason=str(_missing_peer()))


def _index_html() -> str:
    """The viewer's index.html with each CDN script replaced by local /vendor/ copies (and the shim)."""
    html = (ASSETS / "index.html").read_text()

    def local(m: re.Match) -> str:
        src = m.group(1)
        key = next((k for k in VENDOR if src.endswith(k)), None)
        if key is None:
            raise AssertionError(f"the viewer loads a script this test does not serve locally: {src}")
        return "".join(f"<script src='/vendor/{f.name}'></script>" for f in VENDOR[key])

    html = re.sub(r"<script src='(https?://[^']+)'></script>", local, html)
    assert "<script src='http" not in html
    return html.replace("<script src='./util.js'>", "<script src='/vendor/shim.js'></script><script src='./util.js'>")


def _handler_class():
    """circuit-tracer's CircuitGraphHandler, extended to serve the rewritten index.html and /vendor/ files."""
    sys.path.insert(0, str(PEERS))
    try:
        from circuit_tracer.frontend.local_server import CircuitGraphHandler
    finally:
        sys.path.remove(str(PEERS))
    vendor = {f.name: f for fs in VENDOR.values() for f in fs}

    class Handler(CircuitGraphHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            if path in ("/", "/index.html"):
                return self._send(_index_html().encode(), "text/html")
            if path == "/vendor/shim.js":
                return self._send(SHIM.encode(), "text/javascript")
            if path.startswith("/vendor/") and path[len("/vendor/") :] in vendor:
                body = vendor[path[len("/vendor/") :]].read_bytes()
                # d3-jetpack 2.3.0's browser build replaces the global d3 instead of extending it
                body = body.replace(b"factory(global.d3 = {},", b"factory(global.d3 = global.d3 || {},")
                return self._send(body, "text/javascript")
            return super().do_GET()

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="module")
def viewer_url(tmp_path_factory):
    """circuit-tracer's viewer on a free 127.0.0.1 port, its data folder holding our export of a graph
    traced on the default model; yields (url, exported JSON)."""
    from interop_helpers import traced_default_graph

    from core.circuits.interop import dumps, to_graph_json

    G, prob = traced_default_graph()
    data = to_graph_json(G, slug=SLUG, model_id="default", target_prob=prob)
    folder = tmp_path_factory.mktemp("ct-viewer-data")
    (folder / f"{SLUG}.json").write_text(dumps(data))
    # the viewer lists graphs from graph-metadata.json (circuit-tracer's add_graph_metadata writes the same)
    (folder / "graph-metadata.json").write_text(json.dumps({"graphs": [data["metadata"]]}))
    handler = functools.partial(_handler_class(), frontend_dir=ASSETS, data_dir=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html?slug={SLUG}", data
    server.shutdown()
    server.server_close()


def test_circuit_tracer_viewer_draws_our_export(chromium, viewer_url):
    url, data = viewer_url
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    requests: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    def guard(route):  # nothing may leave the machine: a foreign request is recorded and aborted
        host = urlparse(route.request.url).hostname
        if urlparse(route.request.url).scheme in ("http", "https") and host not in LOCAL_HOSTS:
            return route.abort()
        return route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url, timeout=60_000)
        page.wait_for_selector(".link-graph svg text.node", timeout=60_000)
        page.wait_for_timeout(500)
        drawn = page.evaluate("document.querySelectorAll('.link-graph svg text.node').length")
        tokens = page.evaluate(
            "Array.from(document.querySelectorAll('.link-graph g.prompt-token text')).map(t => t.textContent)"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "circuit_tracer_viewer_export.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors
    # Every node of the export is drawn (no node_threshold: the viewer prunes nothing).
    assert drawn == len(data["nodes"]) > 0
    assert " Mary" in "".join(tokens) or "Mary" in "".join(tokens)
    foreign = [
        u for u in requests if urlparse(u).scheme in ("http", "https") and urlparse(u).hostname not in LOCAL_HOSTS
    ]
    assert not foreign, foreign
    assert all(f.endswith("/favicon.ico") for f in failed), failed
