"""The served app in headless Chromium on a small workspace of the embedded default model: "test your own text"
on the latents page highlights the typed sentence's tokens, nothing leaves localhost, and the toolbar has no
Deploy button (.streamlit/config.toml: client.toolbarMode = "viewer")."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlparse

import pytest

from tests.browser.serve import serve_app, wait_rendered

DICTIONARY = "resid:blocks.1.hook_resid_pre"
SENTENCE = "The cat sat on the mat, and then it slept."
TEXTS = ["The dog ran to the park and played with a ball.", "She said that the weather was cold in the morning."]


@pytest.fixture(scope="module")
def default_workspace(tmp_path_factory) -> Path:
    """A workspace cached from the embedded default model and one of its dictionaries over a few sentences."""
    from core.build.corpus import BrownDocument
    from core.cache.plan import CacheParams, plan_contexts
    from core.cache.run import run_cache
    from core.subjects.dictionaries import load_dictionaries
    from core.subjects.models import load_model

    model = load_model("default", device="cpu")
    dictionary = load_dictionaries("default", ids=[DICTIONARY])[DICTIONARY]
    docs = [BrownDocument(f"doc{i}", "a", " ".join(TEXTS * 10)) for i in range(16)]
    plan = plan_contexts(model.tokenizer, docs, 2048, 64, {"corpus": "own-text-test", "split": "train"})
    workspace = tmp_path_factory.mktemp("own-text") / "default-small.duckdb"
    params = CacheParams(n_tokens=2048, ctx_len=64, batch_contexts=8, chunk_contexts=16)
    run_cache(model, [dictionary], workspace, plan, params, model_name="default")
    return workspace


@pytest.mark.browser
def test_own_text_box_highlights_typed_tokens_and_no_deploy_button(default_workspace, chromium, tmp_path):
    # the package's one Chromium (tests/browser/conftest.py): a second sync_playwright() would meet its asyncio loop
    requests: list[str] = []
    with serve_app(tmp_path / "server.log", env={"SAE_EXPLORER_WORKSPACE": str(default_workspace)}) as served:
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.on("request", lambda req: requests.append(req.url))
            page.goto(f"{served.url}/Latents?dictionary={quote(DICTIONARY)}&latent=5", timeout=180_000)
            wait_rendered(page, 180)
            assert page.query_selector('[data-testid="stException"]') is None
            assert page.get_by_role("button", name="Deploy").count() == 0
            assert page.query_selector('[data-testid="stAppDeployButton"]') is None

            box = page.get_by_label("Type a sentence to see this latent's activation on each of its tokens")
            box.fill(SENTENCE)
            box.press("Enter")
            page.wait_for_selector("div.own-text span.tok", timeout=180_000)
            wait_rendered(page, 180)
            spans = page.query_selector_all("div.own-text span.tok")
            texts = [s.inner_text() for s in spans]
            assert "".join(texts).replace("␣", " ") == SENTENCE
            assert any(t.startswith("␣") for t in texts)  # leading spaces are visible
            assert all(s.get_attribute("title") is not None for s in spans)  # the activation on hover
        finally:
            context.close()
    foreign = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    foreign = [u for u in foreign if urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert foreign == []
    assert requests
