"""Hostile text and bad links in headless Chromium: a prompt such as `![x](http://evil.example/a.png)` typed
into the token search or set as the LLM id is shown verbatim and fetches nothing; odd `?latent=` and
`?dictionary=` values get a notice, never a traceback; and ui.text.literal's output displays exactly the
text it was given in every kind of element that renders Markdown (tests/browser/literal_app.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
from hostile_text import EVIL_PROMPT, HOSTILE, collapse

from tests.browser.serve import OFFLINE_ENV, ROOT, free_port, wait_rendered

LITERAL_APP = Path(__file__).resolve().parent / "literal_app.py"
LLM_LABEL = "LLM for explanations and scoring (a litellm model id)"
TOKEN_LABEL = "Token text (surrounding spaces ignored) or #id"
# Elements that mean the text was interpreted rather than shown (headings are checked apart: st.subheader is one).
FORMATTED = (
    "a, img, strong, em, code, del, li, blockquote, table, hr, pre, .katex, span[role=img], "
    "[class*=stMarkdownColored], [class*=stMarkdownShimmer]"
)
SHOWN_JS = "els => els.map(e => e.innerText.replaceAll('\\u2060', ''))"  # word joiners are invisible


def shown_texts(page, selector: str) -> list[str]:
    """The visible text of each element matching `selector`, blanks collapsed as on screen."""
    return [collapse(t) for t in page.eval_on_selector_all(selector, SHOWN_JS)]


def wait_for_text(page, selector: str, text: str, timeout: float = 120.0) -> list[str]:
    """Wait until an element matching `selector` shows `text` (a rerun may start a moment after an action)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = shown_texts(page, selector)
        if any(collapse(text) in t for t in texts):
            return texts
        time.sleep(0.2)
    raise AssertionError(f"no {selector} shows {text!r}; the page shows:\n{page.locator('body').inner_text()[:2000]}")


@pytest.fixture(scope="module")
def literal_app(chromium, tmp_path_factory) -> Iterator[str]:
    """tests/browser/literal_app.py served by `streamlit run` on a free localhost port; yields its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("literal-app") / "server.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(LITERAL_APP), "--server.headless", "true"]
    cmd += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **OFFLINE_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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
                    raise RuntimeError(f"literal_app did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.browser
def test_literal_text_displays_verbatim_in_every_markdown_element(chromium, literal_app):
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(literal_app, timeout=120_000)
        wait_rendered(page, 120)
        assert page.query_selector('[data-testid="stException"]') is None
        for i, text in enumerate(HOSTILE):
            # Markdown, caption, error, subheader, metric label and value, radio label and option, button and
            # expander label: every one shows the text itself (its collapsed body is not checked).
            boxes = ':is([data-testid="stMarkdownContainer"], [data-testid="stCaptionContainer"])'
            scope = f'.st-key-s{i} {boxes}:not([data-testid="stExpanderDetails"] *)'
            texts = shown_texts(page, scope)
            assert len(texts) == 10 or (not text and texts), (text, texts)  # an empty one may draw no box
            assert texts == [collapse(text)] * len(texts), text
            assert page.query_selector_all(f".st-key-s{i} :is({FORMATTED})") == [], text
            assert len(page.query_selector_all(f".st-key-s{i} :is(h1, h2, h3, h4, h5, h6)")) == 1  # the subheader
        foreign = [u for u in requests if urlparse(u).hostname not in ("127.0.0.1", "localhost")]
        assert foreign == [] and requests  # the recorder saw the page's own requests
    finally:
        context.close()


@pytest.mark.browser
def test_hostile_llm_id_and_token_search_show_verbatim_and_fetch_nothing(browser_page):
    page = browser_page.page
    browser_page.open("/")
    box = page.get_by_label(LLM_LABEL, exact=True)
    box.fill(EVIL_PROMPT)
    box.press("Enter")
    wait_rendered(page)
    wait_for_text(page, '[data-testid="stAlert"]', EVIL_PROMPT)  # says whether its credentials are set

    # Within the same session (sidebar link), the Latents page names the LLM in "Explain now".
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text="Latents").click()
    wait_rendered(page)
    page.get_by_text("Explain now", exact=True).click()
    wait_for_text(page, '[data-testid="stCaptionContainer"]', f"Explainer: {EVIL_PROMPT}.")

    page.get_by_text("by token", exact=True).click()
    wait_rendered(page)
    token = page.get_by_label(TOKEN_LABEL, exact=True)
    token.fill(EVIL_PROMPT)
    token.press("Enter")
    wait_rendered(page)
    wait_for_text(page, '[data-testid="stAlert"]', EVIL_PROMPT)  # no such token: the message quotes it
    browser_page.screenshot("hostile-token-search")

    main = page.locator('[data-testid="stMain"]')
    assert main.locator("img").count() == 0 and main.locator("strong, em, .katex").count() == 0
    assert page.query_selector('[data-testid="stException"]') is None
    assert browser_page.foreign_requests() == [] and browser_page.dialogs == []


@pytest.mark.browser
@pytest.mark.parametrize(
    "query, named",
    [
        ("latent=²", "latent '²'"),
        ("latent=-5", "latent '-5'"),
        ("latent=abc", "latent 'abc'"),
        ("latent=1e3", "latent '1e3'"),
        ("dictionary=nope", "dictionary 'nope'"),
        (f"dictionary={quote(EVIL_PROMPT)}", f"dictionary {EVIL_PROMPT!r}"),
    ],
)
def test_bad_url_parameters_get_a_notice(browser_page, query, named):
    page = browser_page.page
    browser_page.open(f"/Latents?{query.replace('²', quote('²'))}")
    notices = wait_for_text(page, '[data-testid="stAlert"]', f"The link's {named}")
    assert any("instead" in n for n in notices)
    assert page.query_selector('[data-testid="stException"]') is None
    assert page.locator('[data-testid="stHeading"]').filter(has_text="· latent").count() == 1  # a card is shown
    assert browser_page.foreign_requests() == []
