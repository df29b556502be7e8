"""Time from navigation to a fully rendered latents page of the default workspace, in headless Chromium.

The app is served by `streamlit run`; one warm-up visit loads what a running server keeps (imports,
the workspace's contexts and vocabulary). Then each of `--n` live latents (seeded choice) is opened in a
fresh browser context (a new Streamlit session), timed from `page.goto` until the script has finished,
the highlighted tokens and both plots are drawn, and the page stays so. Goal: < 2 s.
Last line: JSON {"seconds": median, "max_seconds", "first_seconds", "n", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core import store  # noqa: E402
from core.cache import DEFAULT_WORKSPACE, default_workspace_ready  # noqa: E402
from ui.serve import launch_chromium, serve_app, wait_rendered  # noqa: E402

READY_JS = "document.querySelector('span.tok.act') !== null && document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dictionary", default="resid:blocks.2.hook_resid_pre")
    p.add_argument("--n", type=int, default=8, help="latents to open")
    p.add_argument("--seed", type=int, default=0)
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

    def visit(browser, url: str, latent: int) -> float:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        t0 = time.monotonic()
        page.goto(
            f"{url}/Latents?dictionary={quote(args.dictionary)}&latent={latent}", wait_until="commit", timeout=180_000
        )
        done = wait_rendered(page, ready_js=READY_JS)
        if page.query_selector('[data-testid="stException"]') or page.query_selector(
            '[data-testid="stAlertContentError"]'
        ):
            raise RuntimeError(f"latent {latent}: the page shows an error")
        context.close()
        return done - t0

    with tempfile.TemporaryDirectory() as tmp, serve_app(Path(tmp) / "server.log") as url, sync_playwright() as pw:
        browser = launch_chromium(pw)
        first = visit(browser, url, int(live[0]))
        times = [visit(browser, url, int(latent)) for latent in latents]
        browser.close()
    for latent, t in zip(latents, times, strict=True):
        print(f"latent {latent}: {t:.2f} s")
    print(
        json.dumps(
            {
                "seconds": round(statistics.median(times), 3),
                "max_seconds": round(max(times), 3),
                "first_seconds": round(first, 3),
                "n": len(times),
                "dictionary": args.dictionary,
                "stored_activations": n_rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
