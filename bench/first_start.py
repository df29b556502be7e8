"""First start of the app on a clean clone: time until every page shows real content, cold and warm.

    python bench/first_start.py [--timeout 180] [--keep]

Copies the files a clone would hold (`git ls-files --cached --others --exclude-standard`: tracked files and new
files not ignored, so no workspace, no data/_build) into a temporary folder, links this checkout's .venv into it,
and starts `streamlit run app.py` there on a free localhost port, as `./dev app` does. It opens every page in
headless Chromium and waits until each shows its content:

    Home       its tables (the workspace's dictionaries, who produced the explanations and scores)
    Latents    a latent's card (?dictionary=..&latent=..): highlighted examples, an explanation and its scores table
    Scores     its charts, every SVG image decoded (or a plotly chart, with Interactive charts on); Deciles and
               Overlap the same (Overlap: the heatmaps)
    Circuits   a drawn graph (vis-network with nodes) of a stored circuit

Three launches of the server on the same copy and port, in one browser context (as a researcher's `./dev app`
and browser: the second run finds the app's scripts in the browser's cache), each measured from the launch:

    cold       the first start (no workspace: the shipped seed is copied in), every page opened at once.
               `every_page_s`: launch to the slowest page done (the issue's figure); `first_page_s`: to the fastest.
    warm       the second run, as a researcher meets it: the server started again on the built workspace, the
               pages opened one after another in one tab. `warm_s`: the slowest page, each timed from its
               navigation to its content (the first, Home, also loads the app's code); `warm_pages_s` per page;
               `warm_first_page_s`: launch to Home done.
    warm, all at once   started again, every page opened at once: `warm_all_at_once_s` (launch to the slowest).

Each run also reports the CPU seconds the server and the browser used (`server_cpu_s`, `browser_cpu_s`): on a
small machine the pages' times are mostly their sum. Also measured: `seed_copy_s` (copying the shipped seed into
place, in-process, on a second temporary folder) and `seed_mb` (its committed files). The background job the home
page starts runs on (at the lowest priority) through the warm runs, as it does for a researcher; it is stopped at
the end and the copy removed (unless --keep). `uptime_before`/`uptime_after`: the machine's load. Last stdout
line: one JSON object.
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

from tests.browser.serve import (  # noqa: E402
    CHARTS_DRAWN_JS,
    OFFLINE_ENV,
    free_port,
    launch_chromium,
    streamlit_command,
)

# JavaScript checks, evaluated in each page's main frame: true once the page shows its content.
HAS = "document.querySelectorAll('[data-testid=\"{}\"]').length"
READY_JS = {
    "home": f"{HAS.format('stDataFrame')} >= 2",
    "latents": "document.querySelector('span.tok.act') !== null && document.querySelector('div.explanation') !== null"
    f" && {HAS.format('stDataFrame')} >= 1",
    "scores": CHARTS_DRAWN_JS,
    "deciles": CHARTS_DRAWN_JS,
    "overlap": CHARTS_DRAWN_JS,
}
IDLE_JS = (
    "document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'"
    " && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
)
POLL_S = 0.1  # how often each page is checked (each check is a few round trips to the browser)
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


def start_server(copy: Path, log: Path, port: int) -> tuple[subprocess.Popen, str]:
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


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, their waited-for children included) of the processes `pids` (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _browser_pids() -> list[int]:
    """This benchmark's Chromium processes (the browser and its renderers, GPU and utility processes): those
    descending from this process (through Playwright's driver), so other browsers on the machine do not count."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                pass
    mine, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    pids = []
    for pid in mine:
        try:
            if b"chrom" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                pids.append(pid)
        except OSError:
            pass
    return pids


def _page_state(tab, name: str, read_text: bool) -> tuple[bool, str]:
    """(whether the page shows its content, its main area's text: read when `read_text` or the page is ready;
    reading it lays the page out, so the poll reads it only once a second, not on each of its checks)."""
    idle = tab.evaluate(IDLE_JS)
    ready = graph_drawn(tab) if name == "circuits" else idle and tab.evaluate(READY_JS[name])
    text = ""
    if read_text or ready:
        text = tab.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.innerText || ''")
    return bool(ready), text


_TEXT_READ: dict[str, float] = {}


def _text_due(name: str) -> bool:
    """True at most once a second per page name: time to read its text for command hints again."""
    now = time.monotonic()
    if now - _TEXT_READ.get(name, 0.0) >= 1.0:
        _TEXT_READ[name] = now
        return True
    return False


def _hint(text: str) -> str | None:
    for hint in COMMAND_HINTS:
        if hint in text:
            return text[max(0, text.index(hint) - 120) : text.index(hint) + 80]
    return None


def _new_context(browser, foreign: list[str]):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.on(
        "request",
        lambda r: (
            foreign.append(r.url) if urllib.parse.urlparse(r.url).hostname not in ("127.0.0.1", "localhost") else None
        ),
    )
    return context


def measure(
    context,
    foreign: list[str],
    copy: Path,
    paths: dict[str, str],
    port: int,
    log: Path,
    timeout: float,
    in_turn: bool = False,
) -> dict:
    """Launch the server on `copy` (on `port`) and open every page in browser `context`: at once, one tab each
    (`pages_s`: seconds from the launch until each showed its content), or `in_turn` in one tab (`pages_s`: seconds
    from each page's navigation). `foreign`: the list the context appends requests to other hosts to."""
    t0 = time.monotonic()
    browser_cpu0 = _cpu_seconds(_browser_pids())
    foreign_before = len(foreign)
    proc, url = start_server(copy, log, port)
    done: dict[str, float] = {}
    hints: dict[str, str] = {}
    opened = []
    missing: dict[str, str] = {}
    first_from_launch: float | None = None  # in turn: launch to the first page done
    try:
        wait_healthy(url, proc, timeout)
        healthy = time.monotonic() - t0
        if in_turn:
            tab = context.new_page()
            opened.append(tab)
            for name, path in paths.items():
                start = time.monotonic()
                tab.goto(url + path, wait_until="commit")
                text = ""
                while time.monotonic() - start < timeout:
                    try:
                        ready, text = _page_state(tab, name, _text_due(name))
                    except Exception:  # navigation or rerun in progress
                        ready = False
                    if (hint := _hint(text)) and name not in hints:
                        hints[name] = hint
                    if ready:
                        done[name] = round(time.monotonic() - start, 2)
                        break
                    time.sleep(POLL_S)
                else:
                    missing[name] = text[:300]
                if name == next(iter(paths)) and name in done:
                    first_from_launch = round(time.monotonic() - t0, 2)
        else:
            tabs = {}
            for name, path in paths.items():
                tab = context.new_page()
                opened.append(tab)
                tab.goto(url + path, wait_until="commit")
                tabs[name] = tab
            deadline = time.monotonic() + timeout
            while len(done) < len(tabs) and time.monotonic() < deadline:
                for name, tab in tabs.items():
                    if name in done:
                        continue
                    try:
                        ready, text = _page_state(tab, name, _text_due(name))
                    except Exception:  # navigation or rerun in progress
                        continue
                    if (hint := _hint(text)) and name not in hints:
                        hints[name] = hint
                    if ready:
                        done[name] = round(time.monotonic() - t0, 2)
                time.sleep(POLL_S)
            missing = {
                name: tabs[name].evaluate("document.querySelector('[data-testid=\"stMain\"]')?.innerText || ''")[:300]
                for name in tabs
                if name not in done
            }
        server_cpu = _cpu_seconds([proc.pid])
        browser_cpu = _cpu_seconds(_browser_pids()) - browser_cpu0
        for tab in opened:
            tab.close()
    finally:
        stop_server(proc)
    result = {
        "healthy_s": round(healthy, 2),
        "pages_s": done,
        "server_cpu_s": round(server_cpu, 1),
        "browser_cpu_s": round(browser_cpu, 1),
        "not_ready": missing,
        "command_hints": hints,
        "foreign_requests": foreign[foreign_before:],
    }
    if in_turn:
        result["first_page_from_launch_s"] = first_from_launch
    return result


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


def _uptime() -> str:
    """The machine's load averages (1, 5, 15 min) as `uptime` prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
        uptime_before = _uptime()
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                # One port and one browser context for the three launches, as a researcher's `./dev app` and
                # browser: the second run finds the app's scripts in the browser's cache, as it would.
                port, foreign = free_port(), []
                context = _new_context(browser, foreign)
                cold = measure(context, foreign, copy, paths, port, copy / "cold.log", args.timeout)
                warm = measure(context, foreign, copy, paths, port, copy / "warm.log", args.timeout, in_turn=True)
                warm_all = measure(context, foreign, copy, paths, port, copy / "warm-all.log", args.timeout)
                context.close()
            finally:
                browser.close()
        stop_job(copy)

        def slowest(run: dict, names) -> float | None:
            return max(run["pages_s"][n] for n in names) if all(n in run["pages_s"] for n in names) else None

        others = [n for n in paths if n != "circuits"]
        result = {
            "every_page_s": slowest(cold, paths),
            "warm_s": slowest(warm, paths),
            "first_page_s": min(cold["pages_s"].values(), default=None),
            "warm_all_at_once_s": slowest(warm_all, paths),
            "warm_first_page_s": warm.get("first_page_from_launch_s"),
            "warm_pages_s": warm["pages_s"],
            "every_page_but_circuits_s": slowest(cold, others),
            **result,
            "seed_mb": round(manifest.get("bytes", 0) / 1e6, 1),
            "seed_n_tokens": manifest.get("n_tokens"),
            "seed_steps": manifest.get("steps"),
            "cold": cold,
            "warm": warm,
            "warm_all_at_once": warm_all,
            "cpus": os.cpu_count(),
            "uptime_before": uptime_before,
            "uptime_after": _uptime(),
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
