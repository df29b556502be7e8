"""First start of the app on a clean clone: time until every page shows real content, cold and warm.

    python bench/first_start.py [--timeout 180] [--keep]

Copies the files a clone would hold (`git ls-files --cached --others --exclude-standard`: tracked files and new
files not ignored, so no workspace, no data/_build) into a temporary folder, links this checkout's .venv into it,
and starts `streamlit run app.py` there on a free localhost port, as `./dev app` does. It then opens every page at
once in headless Chromium (one tab each) and waits until each shows its content:

    Home       its tables (the workspace's dictionaries, who produced the explanations and scores)
    Latents    a latent's card (?dictionary=..&latent=..): highlighted examples, an explanation and its scores table
    Scores     a chart;  Deciles: a chart;  Overlap: a chart (the heatmaps)
    Circuits   a drawn graph (vis-network with nodes) of a stored circuit

`every_page_s` is the time from launching the server to the slowest page done; the server is then stopped and
started again on the same copy (`warm_s`, same measure). Also measured: `seed_copy_s` (copying the shipped seed
into place, in-process, on a second temporary folder) and `seed_mb` (its committed files). The background job the
home page starts is stopped at the end and the copy removed (unless --keep). Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser.serve import OFFLINE_ENV, free_port, launch_chromium, streamlit_command  # noqa: E402

# JavaScript checks, evaluated in each page's main frame: true once the page shows its content.
HAS = "document.querySelectorAll('[data-testid=\"{}\"]').length"
READY_JS = {
    "home": f"{HAS.format('stDataFrame')} >= 2",
    "latents": "document.querySelector('span.tok.act') !== null && document.querySelector('div.explanation') !== null"
    f" && {HAS.format('stDataFrame')} >= 1",
    "scores": f"{HAS.format('stPlotlyChart')} >= 1",
    "deciles": f"{HAS.format('stPlotlyChart')} >= 1",
    "overlap": f"{HAS.format('stPlotlyChart')} >= 1",
}
IDLE_JS = (
    "document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
)
COMMAND_HINTS = ("python -m core", "run `")  # a page must not tell the user to run what the app runs


def clean_copy(dest: Path) -> None:
    """The files a clone of this checkout would hold (tracked and new non-ignored files), with .venv linked."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in names:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def probe_latent(seed_workspace: Path) -> tuple[str, int]:
    """A latent of the seed with an ok explanation and ok scores (read-only)."""
    import duckdb

    con = duckdb.connect(str(seed_workspace), read_only=True)
    try:
        row = con.execute(
            """SELECT e.dictionary, e.latent FROM explanations e JOIN scores s USING (explanation_id)
               WHERE e.status = 'ok' AND s.status = 'ok' AND e.baseline IS NULL AND e.dictionary LIKE 'resid:%'
               GROUP BY ALL ORDER BY count(*) DESC, e.dictionary, e.latent LIMIT 1"""
        ).fetchone()
    finally:
        con.close()
    return (row[0], int(row[1])) if row else ("resid:blocks.1.hook_resid_pre", 0)


def start_server(copy: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = streamlit_command(port, python=str(copy / ".venv" / "bin" / "python"))
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("SAE_EXPLORER_WORKSPACE", None)
    env.pop("SAE_EXPLORER_DATA", None)
    proc = subprocess.Popen(
        cmd, cwd=copy, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError("streamlit did not answer /_stcore/health")


def graph_drawn(page) -> bool:
    for frame in page.frames:
        try:
            if frame.evaluate("typeof network !== 'undefined' && network.body.data.nodes.length > 0"):
                return True
        except Exception:  # a frame being replaced by a rerun
            pass
    return False


def measure(browser, copy: Path, paths: dict[str, str], log: Path, timeout: float) -> dict:
    """Launch the server on `copy`, open every page at once; seconds from launch until each showed its content."""
    t0 = time.monotonic()
    proc, url = start_server(copy, log)
    done: dict[str, float] = {}
    hints: dict[str, str] = {}
    try:
        wait_healthy(url, proc, timeout)
        healthy = time.monotonic() - t0
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        foreign: list[str] = []
        context.on(
            "request",
            lambda r: (
                foreign.append(r.url)
                if urllib.parse.urlparse(r.url).hostname not in ("127.0.0.1", "localhost")
                else None
            ),
        )
        tabs = {}
        for name, path in paths.items():
            tab = context.new_page()
            tab.goto(url + path, wait_until="commit")
            tabs[name] = tab
        deadline = time.monotonic() + timeout
        while len(done) < len(tabs) and time.monotonic() < deadline:
            for name, tab in tabs.items():
                if name in done:
                    continue
                try:
                    idle = tab.evaluate(IDLE_JS)
                    ready = graph_drawn(tab) if name == "circuits" else idle and tab.evaluate(READY_JS[name])
                    text = tab.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.innerText || ''")
                except Exception:  # navigation or rerun in progress
                    continue
                for hint in COMMAND_HINTS:
                    if hint in text and name not in hints:
                        hints[name] = text[max(0, text.index(hint) - 120) : text.index(hint) + 80]
                if ready:
                    done[name] = round(time.monotonic() - t0, 2)
            time.sleep(0.05)
        missing = {
            name: tabs[name].evaluate("document.querySelector('[data-testid=\"stMain\"]')?.innerText || ''")[:300]
            for name in tabs
            if name not in done
        }
        context.close()
    finally:
        stop_server(proc)
    return {
        "healthy_s": round(healthy, 2),
        "pages_s": done,
        "not_ready": missing,
        "command_hints": hints,
        "foreign_requests": foreign,
    }


def stop_job(copy: Path) -> None:
    status = copy / "data" / "default" / "workspace.duckdb.data" / "default-explanations.json"
    try:
        pid = json.loads(status.read_text()).get("pid")
    except (OSError, ValueError):
        return
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)  # the job runs in its own session (its pid is its group)
        except (ProcessLookupError, PermissionError):
            pass


def seed_copy() -> tuple[float, tuple[str, int]]:
    """Seconds to install the seed into a temporary folder (what the first start does), and a scored latent of it."""
    from core.build.seed import SEED_DIR, install_seed

    with tempfile.TemporaryDirectory(prefix="seed-copy-") as tmp:
        t0 = time.perf_counter()
        install_seed(Path(tmp) / "workspace.duckdb", SEED_DIR)
        seconds = round(time.perf_counter() - t0, 2)
        return seconds, probe_latent(Path(tmp) / "workspace.duckdb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every page")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args()
    os.environ.update(OFFLINE_ENV)
    from playwright.sync_api import sync_playwright

    from core.build.seed import SEED_DIR, read_seed_manifest

    manifest = read_seed_manifest(SEED_DIR) or {}
    seed_copy_s, (dictionary, latent) = seed_copy()
    paths = {
        "home": "/",
        "latents": "/Latents?" + urllib.parse.urlencode({"dictionary": dictionary, "latent": latent}),
        "scores": "/Scores",
        "deciles": "/Deciles",
        "overlap": "/Overlap",
        "circuits": "/Circuits",
    }
    copy = Path(tempfile.mkdtemp(prefix="first-start-"))
    result: dict = {}
    try:
        clean_copy(copy)
        assert not (copy / "data" / "default" / "workspace.duckdb").exists()
        result["seed_copy_s"] = seed_copy_s
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                cold = measure(browser, copy, paths, copy / "cold.log", args.timeout)
                warm = measure(browser, copy, paths, copy / "warm.log", args.timeout)
            finally:
                browser.close()
        stop_job(copy)

        def slowest(run: dict, names) -> float | None:
            return max(run["pages_s"][n] for n in names) if all(n in run["pages_s"] for n in names) else None

        others = [n for n in paths if n != "circuits"]
        result = {
            "every_page_s": slowest(cold, paths),
            "warm_s": slowest(warm, paths),
            "every_page_but_circuits_s": slowest(cold, others),
            "warm_but_circuits_s": slowest(warm, others),
            **result,
            "seed_mb": round(manifest.get("bytes", 0) / 1e6, 1),
            "seed_n_tokens": manifest.get("n_tokens"),
            "seed_steps": manifest.get("steps"),
            "cold": cold,
            "warm": warm,
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        stop_job(copy)
        if not args.keep:
            shutil.rmtree(copy, ignore_errors=True)
        else:
            print(f"kept {copy}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
