"""Serve the app with `streamlit run` and drive it in headless Debian Chromium (browser tests and benchmarks).

Playwright's Python package drives the system's `/usr/bin/chromium` (its own browser download does not
work offline). A page counts as rendered when Streamlit's main area exists, its running indicator is
gone and elements are drawn, steadily for a short settle time (the indicator appears a moment after
navigation, so one check is not enough).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer /_stcore/health within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@dataclass(frozen=True)
class ServedApp:
    """A running `streamlit run` server: its base URL and process id."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def streamlit_command(port: int, python: str = sys.executable) -> list[str]:
    """`./dev app`'s server (`python -m ui.server run app.py`: `streamlit run` with the engine imported before it
    listens), headless, on 127.0.0.1:`port`, no usage statistics, no file watcher."""
    return [
        python,
        "-m",
        "ui.server",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]


@contextmanager
def serve_app(log: Path, env: dict[str, str] | None = None, timeout: float = 180.0) -> Iterator[ServedApp]:
    """Run `streamlit run app.py` headless on a free 127.0.0.1 port (output to `log`); yields it once
    /_stcore/health answers, and stops the server (its whole process group) on exit."""
    port = free_port()
    cmd = streamlit_command(port)
    with Path(log).open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **OFFLINE_ENV, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, Path(log), timeout)
        yield ServedApp(url, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def launch_chromium(playwright):
    """Headless Debian Chromium through an open `sync_playwright()` handle."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# True once an analysis page's charts are drawn: every SVG image of ui.analysis_charts decoded, or (with the
# Interactive charts toggle on) a plotly chart present. Shared by the browser tests and bench/first_start.py.
CHARTS_DRAWN_JS = (
    "(() => { const imgs = [...document.querySelectorAll('.analysischart img')];"
    " return (imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0))"
    " || document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length >= 1; })()"
)
SCRIPT_STATE_JS = """document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state')"""


def wait_rendered(page, timeout: float = 120.0, settle: float = 0.3, ready_js: str | None = None) -> float:
    """Block until the Streamlit page has finished its script run and drawn its elements (and the JavaScript
    expression `ready_js`, if given, is true), steadily for `settle` s; returns the time.monotonic() at which
    it became (and stayed) so."""
    page.wait_for_selector('[data-testid="stMain"]', timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        # The running indicator shows only after a delay, so a fast page can look finished before its
        # run does; the app root's script state ('initial', 'running', 'rerunRequested', 'notRunning')
        # says it at once.
        running = (
            page.query_selector('[data-testid="stStatusWidget"]') is not None
            or page.evaluate(SCRIPT_STATE_JS) != "notRunning"
        )
        # An element whose code is still loading shows a placeholder (`stSkeleton`, a React Suspense
        # fallback) until its chunk arrives: on a loaded machine metrics and tables were still
        # placeholders when the script had finished.
        drawn = (
            page.query_selector('[data-testid="stElementContainer"]') is not None
            and page.query_selector('[data-testid="stSkeleton"]') is None
        )
        if drawn and not running and ready_js is not None:
            drawn = bool(page.evaluate(ready_js))
        if drawn and not running:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return quiet_since
        else:
            quiet_since = None
        time.sleep(0.02)
    raise TimeoutError(f"the page was still running or empty after {timeout:.0f} s")
