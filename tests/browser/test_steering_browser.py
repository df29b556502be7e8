"""The steering panel (ui.steering_view) in headless Chromium with real clicks: steering the selected latent to
zero changes the next-token probabilities shown after, nothing is requested from outside localhost, and a
screenshot goes to test-artifacts/steering.png. Served: tests/browser/steering_app.py (the default model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.browser.conftest import ARTIFACTS, LOCAL_HOSTS
from tests.browser.serve import OFFLINE_ENV, ROOT, free_port, wait_rendered

STEERING_APP = Path(__file__).resolve().parent / "steering_app.py"
PROBS_JS = "sel => [...document.querySelectorAll(sel + ' table.steer-top td.p')].map(td => parseFloat(td.innerText))"
TOKENS_JS = "sel => [...document.querySelectorAll(sel + ' table.steer-top code')].map(c => c.innerText)"


@pytest.fixture(scope="module")
def steering_app(chromium, tmp_path_factory) -> Iterator[str]:
    """tests/browser/steering_app.py served by `streamlit run` on a free localhost port; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("steering-app") / "server.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(STEERING_APP), "--server.headless", "true"]
    cmd += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    env = {k: v for k, v in os.environ.items() if k not in ("STEER_WS", "STEER_CIRCUIT")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**env, **OFFLINE_ENV}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"steering_app did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.browser
def test_steering_a_latent_to_zero_changes_the_next_token_probabilities(chromium, steering_app):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(steering_app, timeout=120_000)
        wait_rendered(page, 120)
        assert page.query_selector('[data-testid="stException"]') is None
        # The selected latent is chosen, set to zero at its own position.
        chips = page.locator(".st-key-steer-latents [data-tag]")
        assert chips.count() == 1
        assert page.query_selector("table.steer-top") is None  # nothing steered yet
        page.get_by_role("button", name="Steer", exact=True).click()
        wait_rendered(page, 120, ready_js="document.querySelectorAll('table.steer-top').length == 2")
        before = page.evaluate(PROBS_JS, ".st-key-steer_before")
        after = page.evaluate(PROBS_JS, ".st-key-steer_after")
        assert len(before) == len(after) == 10
        assert before != after and max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-3
        assert page.evaluate(TOKENS_JS, ".st-key-steer_before")[0] == "' Mary'"
        assert "Greedy continuation" in page.locator(".st-key-steer_after").inner_text()
        assert page.query_selector('[data-testid="stException"]') is None

        # Bad input: an absurd factor is refused with a message, and the result on screen stays.
        amount = page.get_by_role("textbox", name="Amount")
        amount.fill("1e9")
        amount.press("Enter")
        wait_rendered(page, 60)
        page.locator(".st-key-steer-latents").scroll_into_view_if_needed()
        mode = page.locator('[data-testid="stSelectbox"]').first
        mode.click()
        page.get_by_role("option", name="scale").click()
        wait_rendered(page, 60)
        assert amount.input_value() == "1e9"  # the error below needs mode scale too: zero ignores the amount
        page.get_by_role("button", name="Steer", exact=True).click()
        wait_rendered(page, 60)
        alert = page.locator('[data-testid="stAlertContentError"]')
        alert.first.wait_for(timeout=60_000)  # a rerun may start a moment after the click
        assert alert.count() == 1 and "larger than 10000" in alert.inner_text()
        assert page.evaluate(PROBS_JS, ".st-key-steer_after") == after

        ARTIFACTS.mkdir(exist_ok=True)  # Streamlit scrolls inside its main area: stretch the viewport for the shot
        height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 0")
        page.set_viewport_size({"width": 1400, "height": max(1000, min(int(height) + 50, 12000))})
        page.wait_for_timeout(300)
        page.screenshot(path=str(ARTIFACTS / "steering.png"), full_page=True)
        foreign = [
            u
            for u in requests
            if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname not in LOCAL_HOSTS
        ]
        assert foreign == [] and requests
    finally:
        context.close()
