"""The circuits page: trace and render a 20-token prompt through the page (Streamlit AppTest).

    python bench/circuits_page.py [--repeats 3] [--no-browser]

Drives pages/5_Circuits.py with Streamlit's AppTest on the embedded default, in a scratch
workspace: types a 20-token prompt (plus BOS) that ends inside an open bracket, target ')' and
contrast '.', presses Trace and times the page's whole script run: the hierarchical trace, mean
ablation faithfulness on the real model, pruning bookkeeping and the pyvis HTML of the graph.
- seconds_cold: the first trace of the process (loads the model, dictionaries and latent means).
- seconds: median over `repeats` further traces of different 20-token prompts (model cached, as
  in a running app: st.cache_resource keeps it per server process). Goal < 8 s on 2 cores.
- cpu_seconds: the CPU time of those runs (all threads of this process), which a machine busy
  with other jobs does not inflate (wall time on a shared 2-core machine varies several-fold).
- render_seconds: of that, building the graph's HTML (graph_html on the traced graph).
- browser_seconds: the same in headless Chromium against `streamlit run` (tests/browser/serve.py): from the
  click on Trace until the new graph's vis-network canvas has its nodes, median over the same
  prompts after a first (cold) trace; includes the websocket round trip and the drawing.
  Skipped (null) without Debian chromium or with --no-browser.
The page runs its torch work with one intra-op thread (pages/5_Circuits.py explains why).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "The old man said that the new plan (which the city council had approved last year without a vote",
    "Yesterday she told us that the long report (which the small committee had written over the summer for the",
    "Last week we heard that the first game (which the local team had played at home against the best side in",
    "In his letter he wrote that the old house (which his father had built with his own hands many years before the",
]
N_TOKENS = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium timing")
    args = ap.parse_args()

    from streamlit.testing.v1 import AppTest

    from core.subjects.models import load_default_model
    from ui import graph_view

    tok = load_default_model(device="cpu").tokenizer
    prompts = []
    for p in PROMPTS[: args.repeats + 1]:
        ids = tok.encode(p, add_special_tokens=False)
        if len(ids) < N_TOKENS:
            raise SystemExit(f"bench prompt has only {len(ids)} tokens: {p!r}")
        prompts.append(tok.decode(ids[-N_TOKENS:]))

    with tempfile.TemporaryDirectory() as tmp:
        at = AppTest.from_file(str(ROOT / "pages" / "5_Circuits.py"), default_timeout=600)
        at.session_state["workspace"] = str(Path(tmp) / "bench.duckdb")
        at.run()
        times, cpu, renders, sizes = [], [], [], []
        for prompt in prompts:
            at.text_area(key="circ.prompt").input(prompt)
            at.text_input(key="circ.target_text").input(")")
            at.text_input(key="circ.contrast_text").input(".")
            next(b for b in at.button if b.label == "Trace").click()
            t0, c0 = time.perf_counter(), time.process_time()
            at.run()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if at.exception or at.error:
                raise SystemExit(f"the page failed: {[e.value for e in at.error]} {at.exception}")
            G = at.session_state["circ.original"]
            frames = at.get("component_instance")  # the graph component (ui/graph_view.circuit_graph)
            if not frames or '"nodes"' not in frames[0].proto.json_args:
                raise SystemExit("the page rendered no graph")
            t1 = time.perf_counter()
            graph_view.graph_html(G, {}, {}, at.session_state["circ.influence"])
            renders.append(time.perf_counter() - t1)
            sizes.append((G.number_of_nodes(), G.number_of_edges(), len(frames[0].proto.json_args)))
            print(
                f"{times[-1]:.2f} s  {G.graph['target']['node_id']}  {sizes[-1][0]} nodes, {sizes[-1][1]} edges, "
                f"HTML {sizes[-1][2] / 1e6:.2f} MB  ({prompt!r})"
            )
    warm = times[1:]
    browser = None if args.no_browser else browser_times(prompts)
    print(
        json.dumps(
            {
                "seconds": round(statistics.median(warm), 3),
                "cpu_seconds": round(statistics.median(cpu[1:]), 3),
                "seconds_max": round(max(warm), 3),
                "seconds_cold": round(times[0], 3),
                "render_seconds": round(statistics.median(renders[1:]), 3),
                "prompt_tokens": N_TOKENS + 1,
                "nodes": [s[0] for s in sizes[1:]],
                "edges": [s[1] for s in sizes[1:]],
                "browser_seconds": round(statistics.median(browser[1:]), 3) if browser else None,
                "browser_seconds_cold": round(browser[0], 3) if browser else None,
                "goal_seconds": 8.0,
            }
        )
    )


def browser_times(prompts: list[str]) -> list[float] | None:
    """Seconds from the click on Trace to the new graph drawn, per prompt, in headless Chromium (None without it)."""
    from tests.browser.serve import CHROMIUM, launch_chromium, serve_app, wait_rendered

    if not Path(CHROMIUM).exists():
        print("no chromium: browser timing skipped")
        return None
    from playwright.sync_api import sync_playwright

    out = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_app(Path(tmp) / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(Path(tmp) / "bench.duckdb")}) as served,
    ):
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served.url + "/Circuits", timeout=600_000)
            wait_rendered(page, 600)
            previous = ""
            for prompt in prompts:
                page.get_by_role("textbox", name="Prompt", exact=True).fill(prompt)
                page.get_by_role("textbox", name="Target token", exact=True).fill(")")
                page.get_by_role("textbox", name="Contrast token (optional)", exact=True).fill(".")
                t0 = time.perf_counter()
                page.get_by_role("button", name="Trace").click()
                previous = _wait_new_graph(page, previous)
                out.append(time.perf_counter() - t0)
                print(f"browser {out[-1]:.2f} s ({prompt!r})")
            browser.close()
    return out


def _wait_new_graph(page, previous: str, timeout: float = 600.0) -> str:
    """Wait until an iframe's vis-network holds nodes other than `previous` (joined ids); returns the new ids."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for frame in page.frames:
            try:
                ids = frame.evaluate(
                    "typeof network !== 'undefined' && network.body.data.nodes.length > 0 ? nodes.getIds().join('|') : ''"
                )
            except Exception:  # a frame being replaced
                continue
            if ids and ids != previous:
                return ids
        time.sleep(0.02)
    raise SystemExit("the browser drew no new graph")


if __name__ == "__main__":
    main()
