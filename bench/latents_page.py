"""Time from navigation to a fully rendered latents page of the default workspace, in headless Chromium.

The app is served by `streamlit run`; one warm-up visit loads what a running server keeps (imports,
the workspace's contexts and vocabulary) and what a browser caches (the app's JavaScript). Then each of
`--n` live latents (seeded choice) is opened by navigating the same tab to its URL (a full page load and
a new Streamlit session), timed from `page.goto` until the script has finished, the highlighted tokens
and both plots are drawn, and the page stays so. `--fresh-context` opens each in a new browser context
instead (empty cache: a first visit). Goal: < 2 s. Last line: JSON {"seconds": median, ...}.
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
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core import store  # noqa: E402
from core.cache.workspace import DEFAULT_WORKSPACE, default_workspace_ready  # noqa: E402
from tests.browser.serve import launch_chromium, serve_app, wait_rendered  # noqa: E402


def _task_seconds(cdp) -> float:
    """Cumulative time the page's renderer main thread has been busy (Chrome's TaskDuration metric)."""
    return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration")


READY_JS = "document.querySelector('span.tok.act') !== null && document.querySelectorAll('.svgcharts img').length >= 2"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dictionary", default="resid:blocks.2.hook_resid_pre")
    p.add_argument("--n", type=int, default=8, help="latents to open")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh-context", action="store_true", help="each visit in a new browser context (empty cache)")
    args = p.parse_args()
    if not default_workspace_ready():
        print(
            f"the default workspace {DEFAULT_WORKSPACE} is not built: start the app once (./dev app) to build it",
            file=sys.stderr,
        )
        return 1
    frame = store.latent_stats_frame(DEFAULT_WORKSPACE, args.dictionary)
    live = frame.loc[frame["n_fires"] > 0, "latent"].to_numpy()
    latents = np.random.default_rng(args.seed).choice(live, size=min(args.n, len(live)), replace=False).tolist()
    summary = store.workspace_summary(DEFAULT_WORKSPACE)
    n_rows = sum(d["n_activations"] or 0 for d in summary["dictionaries"])

    from playwright.sync_api import sync_playwright

    def visit(page, served, latent: int) -> tuple[float, float, float]:
        """(wall seconds, browser main-thread task seconds, server CPU seconds) of one navigation."""
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        task0 = _task_seconds(cdp)
        cpu0 = served.cpu_seconds()
        t0 = time.monotonic()
        page.goto(
            f"{served.url}/Latents?dictionary={quote(args.dictionary)}&latent={latent}",
            wait_until="commit",
            timeout=180_000,
        )
        done = wait_rendered(page, ready_js=READY_JS)
        cpu = served.cpu_seconds() - cpu0
        task = _task_seconds(cdp) - task0
        if page.query_selector('[data-testid="stException"]') or page.query_selector(
            '[data-testid="stAlertContentError"]'
        ):
            raise RuntimeError(f"latent {latent}: the page shows an error")
        cdp.detach()
        return done - t0, task, cpu

    def new_page(browser):
        return browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()

    with tempfile.TemporaryDirectory() as tmp, serve_app(Path(tmp) / "server.log") as served, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = new_page(browser)
        first = visit(page, served, int(live[0]))[0]
        runs = [visit(new_page(browser) if args.fresh_context else page, served, int(latent)) for latent in latents]
        browser.close()
    times = [r[0] for r in runs]
    for latent, (t, task, cpu) in zip(latents, runs, strict=True):
        print(f"latent {latent}: {t:.2f} s wall; browser main thread busy {task:.2f} s; server CPU {cpu:.2f} s")
    print(
        json.dumps(
            {
                "seconds": round(statistics.median(times), 3),
                "max_seconds": round(max(times), 3),
                "browser_task_seconds": round(statistics.median(r[1] for r in runs), 3),
                "server_cpu_seconds": round(statistics.median(r[2] for r in runs), 3),
                "first_seconds": round(first, 3),
                "n": len(times),
                "fresh_context": args.fresh_context,
                "dictionary": args.dictionary,
                "stored_activations": n_rows,
                "load_average_1min": round(os.getloadavg()[0], 2),  # the machine is shared: context for the figure
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
