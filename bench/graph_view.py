"""The circuit graph as an instrument: first draw and click-to-card in headless Chromium.

    python bench/graph_view.py [--repeats 3]

In a scratch workspace: traces the IOI prompt "When Mary and John went to the store, John gave a drink
to" (target ' Mary', contrast ' John') on the embedded default model and saves it as a circuit, and
saves a synthetic graph of 1,000 nodes / 10,000 edges (random forward edges between 20 token columns
and 4 layers). Then serves the app (`streamlit run`, tests/browser/serve.py) and in headless Chromium,
on the Circuits page, for each circuit:
- first_draw_s: from the click on the sidebar's Load until the graph component has drawn the circuit
  (the script run, the websocket round trip, vis-network's first draw); median over `repeats` loads.
- click_card_s: from a real mouse click on a latent node in the canvas until the side panel shows that
  node's card (its id); median over `repeats` nodes.
Goals: IOI first draw < 1.5 s, click -> card < 0.5 s; synthetic first draw < 3 s, click -> card < 0.5 s.
Also steer_s (a steering run on the default, 10-token continuation before and after; goal < 2 s) and
export_path (the IOI circuit's graph JSON export, written to the screenshots folder).
The last line printed is one JSON object of `results` (more figures are added there: see main()).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IOI = ("When Mary and John went to the store, John gave a drink to", " Mary", " John")
SYNTHETIC = (1000, 10_000)  # nodes, edges
GOALS = {"first_draw_s": 1.5, "click_card_s": 0.5, "synthetic_first_draw_s": 3.0, "synthetic_click_card_s": 0.5}
# True once the graph component has drawn a graph of `want` nodes since `before` (its previous draw's mark).
READY_JS = """([want, before]) => { for (let i = 0; i < window.frames.length; i++) { try { const f = window.frames[i];
  const drawn = f.network && f.document.body.getAttribute('data-drawn');
  if (drawn && drawn !== before && f.nodes.length === want) return true;
} catch (e) {} } return false; }"""
DRAWN_JS = """() => { for (let i = 0; i < window.frames.length; i++) { try { const f = window.frames[i];
  if (f.network) return f.document.body.getAttribute('data-drawn'); } catch (e) {} } return null; }"""


def trace_ioi():
    """The IOI circuit traced on the default model (zero-ablation faithfulness): (graph, target)."""
    import torch

    from core.circuits import saved as C
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import trace_prompt
    from core.tracing.loading import tracing_dictionaries

    torch.set_num_threads(1)
    model = load_default_model(device="cpu")
    dicts = tracing_dictionaries(load_default_dictionaries().values())
    prompt, target, contrast = IOI
    result = trace_prompt(model, dicts, prompt, target=target, contrast=contrast, ablation="zero")
    return C.with_target(result.graph, result.target), result.target


def synthetic_graph(n_nodes: int = SYNTHETIC[0], n_edges: int = SYNTHETIC[1], seed: int = 0):
    """A random DAG shaped like a traced graph: 20 token columns, embeddings, attention and transcoder
    latents in 4 layers, one logit target at the last position; edges run from lower to higher rows."""
    import networkx as nx

    from core.tracing.nodes import LogitTarget

    rng = random.Random(seed)
    n_pos, n_layers = 20, 4
    G = nx.DiGraph()
    tokens = ["<bos>"] + [f" w{i}" for i in range(1, n_pos)]
    target = LogitTarget(n_pos - 1, 7, None, " x")
    G.graph.update(
        {"prompt": "".join(tokens[1:]), "prompt_tokens": tokens, "n_layers": n_layers, "method": "synthetic"}
    )
    G.graph["target"] = {"node_id": target.node_id, "kind": "logit", "position": n_pos - 1, "label": " x"}
    G.add_node(
        target.node_id, kind="logit", layer=n_layers, position=n_pos - 1, token=" x", activation=3.0, is_target=True
    )
    rank = {target.node_id: 2 * n_layers + 1}
    for p in range(n_pos):
        v = f"embed@{p}"
        G.add_node(v, kind="embed", layer=-1, position=p, token=tokens[p], activation=1.0)
        rank[v] = 0
    i = 0
    while G.number_of_nodes() < n_nodes:
        layer, kind, p = rng.randrange(n_layers), rng.choice(["attn", "transcoder"]), rng.randrange(n_pos)
        v = f"{kind}.{layer}/{i}@{p}"
        d = f"{kind}:blocks.{layer}.hook"
        G.add_node(
            v, kind=kind, layer=layer, position=p, latent=i, dictionary=d, token=tokens[p], activation=rng.random()
        )
        rank[v] = 1 + 2 * layer + (kind == "transcoder")
        i += 1
    nodes = list(G.nodes)
    while G.number_of_edges() < n_edges:
        u, v = rng.sample(nodes, 2)
        if rank[u] > rank[v]:
            u, v = v, u
        if rank[u] < rank[v]:
            G.add_edge(u, v, weight=rng.gauss(0.0, 1.0))
    for u in nodes:  # every node reaches the target, as in a traced graph
        if u != target.node_id and not G.has_edge(u, target.node_id) and G.out_degree(u) == 0:
            G.add_edge(u, target.node_id, weight=rng.gauss(0.0, 0.1))
    return G, target


def build_workspace(ws: Path) -> dict[str, int]:
    """Save the IOI circuit as 'ioi' and the synthetic graph as 'synthetic'; returns {name: number of nodes}."""
    from core.circuits import saved as C

    G, target = trace_ioi()
    C.save_circuit(ws, "ioi", G, target)
    S, starget = synthetic_graph()
    C.save_circuit(ws, "synthetic", S, starget)
    return {"ioi": G.number_of_nodes(), "synthetic": S.number_of_nodes()}


def load_circuit(page, name: str, n_nodes: int) -> float:
    """Pick circuit `name` in the sidebar, click Load, and time until the graph is drawn with its nodes."""
    from tests.browser.serve import wait_rendered

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name=name).first.click()
    wait_rendered(page, 600)
    before = page.evaluate(DRAWN_JS)
    t0 = time.perf_counter()
    sidebar.get_by_role("button", name="Load").click()
    page.wait_for_function(READY_JS, arg=[n_nodes, before], timeout=600_000, polling=10)
    return time.perf_counter() - t0


def graph_frame(page):
    """The frame of the graph component."""
    for f in page.frames:
        try:
            if f.evaluate("typeof network !== 'undefined' && network !== null"):
                return f
        except Exception:  # a frame being replaced
            continue
    raise SystemExit("no graph component on the page")


def node_point(page, frame, node: str) -> tuple[float, float]:
    """Page coordinates of `node`'s centre, after zooming the view onto it (so a click hits no neighbour)."""
    element = frame.frame_element()
    element.scroll_into_view_if_needed()
    frame.evaluate("(id) => network.focus(id, {scale: 1.6, animation: false})", node)
    page.wait_for_timeout(100)
    box = element.bounding_box()
    inner = frame.evaluate(
        "(id) => { const p = network.canvasToDOM(network.getPositions([id])[id]);"
        " const r = document.getElementById('mynetwork').getBoundingClientRect(); return {x: p.x + r.left, y: p.y + r.top}; }",
        node,
    )
    return box["x"] + inner["x"], box["y"] + inner["y"]


CARD_JS = """(id) => [...document.querySelectorAll('[data-testid="stMain"] code')].some(c => c.textContent === id)"""


def click_card(page, node: str) -> float:
    """Seconds from a real mouse click on `node` in the canvas until the side panel shows its card."""
    x, y = node_point(page, graph_frame(page), node)
    t0 = time.perf_counter()
    page.mouse.click(x, y)
    page.wait_for_function(CARD_JS, arg=node, timeout=120_000, polling=10)
    return time.perf_counter() - t0


def latents_drawn(page) -> list[str]:
    """Ids of drawn latent nodes, most influential (largest) first."""
    frame = graph_frame(page)
    return frame.evaluate(
        "nodes.get().filter(n => n.kind === 'attn' || n.kind === 'transcoder').sort((a, b) => b.size - a.size).map(n => n.id)"
    )


def measure_clicks(page, name: str, n_nodes: int, repeats: int) -> list[float]:
    """Click-to-card times of `repeats` latent nodes of circuit `name` (loaded first)."""
    from tests.browser.serve import wait_rendered

    load_circuit(page, name, n_nodes)
    wait_rendered(page, 600)
    clicks = []
    for node in latents_drawn(page)[:repeats]:
        clicks.append(click_card(page, node))
        wait_rendered(page, 600)
    print(f"{name}: click -> card {[round(t, 3) for t in clicks]} s")
    return clicks


def browser_figures(ws: Path, sizes: dict[str, int], repeats: int, shots: Path | None) -> dict[str, float]:
    """The four browser figures (see the module docstring), serving the app on `ws`."""
    from playwright.sync_api import sync_playwright

    from tests.browser.serve import launch_chromium, serve_app, wait_rendered

    out: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_app(Path(tmp) / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(ws)}) as served,
    ):
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served.url + "/Circuits", timeout=600_000)
            wait_rendered(page, 600)
            # A first load of each warms the server's caches (model-free: nothing here loads a model). Loads
            # alternate, so each one draws a graph other than the one on screen.
            draws: dict[str, list[float]] = {"ioi": [], "synthetic": []}
            for i in range(repeats + 1):
                for name in ("ioi", "synthetic"):
                    t = load_circuit(page, name, sizes[name])
                    wait_rendered(page, 600)
                    if i:
                        draws[name].append(t)
            print(f"first draw: { {k: [round(t, 3) for t in v] for k, v in draws.items()} } s")
            for name, prefix in (("ioi", ""), ("synthetic", "synthetic_")):
                clicks = measure_clicks(page, name, sizes[name], repeats)
                out[f"{prefix}first_draw_s"] = round(statistics.median(draws[name]), 3)
                out[f"{prefix}click_card_s"] = round(statistics.median(clicks), 3)
                if shots:
                    page.screenshot(path=str(shots / f"bench-graph-{name}.png"))
            browser.close()
    return out


def steer_seconds() -> float:
    """A steering run on the IOI prompt (one latent zeroed, a 10-token continuation before and after), median
    seconds on the default model with one thread (core.tracing.steering.bench_steer)."""
    from core.tracing.steering import bench_steer

    return round(bench_steer(), 3)


def export_ioi(ws: Path, out_dir: Path) -> Path:
    """The saved IOI circuit as graph JSON for Neuronpedia and circuit-tracer (core.circuits.interop), in
    `out_dir/ioi-graph.json`, so anyone can check the export: returns its path."""
    from core.circuits import saved as C
    from core.circuits.interop import write_graph_json

    version = C.load_circuit(ws, "ioi")
    path = out_dir / "ioi-graph.json"
    return write_graph_json(version.graph, path, slug="ioi-example", model_id="default", node_threshold=0.8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshots", type=Path, default=ROOT / "test-artifacts", help="folder for screenshots")
    args = ap.parse_args()

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        sizes = build_workspace(ws)
        print(f"traced and saved in {time.perf_counter() - t0:.1f} s: {sizes}")
        args.screenshots.mkdir(parents=True, exist_ok=True)
        results.update(browser_figures(ws, sizes, args.repeats, args.screenshots))
        results["steer_s"] = steer_seconds()
        results["export_path"] = str(export_ioi(ws, args.screenshots))
    results["nodes"] = sizes
    results["goals"] = GOALS
    print(json.dumps(results))


if __name__ == "__main__":
    main()
