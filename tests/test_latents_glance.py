"""The latents page at a glance (pages/1_Latents.py in AppTest): leading spaces shown as ␣, the random-explanation
baseline beneath the real explanation, and "test your own text" agreeing with core.latents.own_text."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from app_workspace import PROBE, copy_workspace
from streamlit.testing.v1 import AppTest

import ui.latent_card
from core import store
from core.latents.cards import find_latents_by_token, latent_card
from core.latents.own_text import TextInputError, activations_on_text
from ui.tokens import token_display

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "1_Latents.py")
SENTENCE = f"Then Mary wrote {PROBE} on the wall."


def _page(workspace: Path, dictionary: str, latent: int) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["workspace"] = str(workspace)
    at.query_params["dictionary"] = dictionary
    at.query_params["latent"] = str(latent)
    return at


def _html(at: AppTest) -> str:
    return "".join(h.proto.body for h in at.html)


@pytest.fixture(scope="module")
def probe_latent(app_workspace) -> tuple[str, int]:
    match = find_latents_by_token(app_workspace, PROBE)[0]
    return match.dictionary, match.latent


@pytest.fixture(scope="module")
def subject(app_workspace):
    """The tiny model and dictionaries the app workspace was cached from (rebuilt from the same seeds)."""
    import tiny_cache

    model, dictionaries = tiny_cache.build(app_workspace.parent / "tokenizer")
    return model, {d.id: d for d in dictionaries.values()}


def test_token_display_marks_leading_spaces_only():
    assert token_display(" the") == "␣the"
    assert token_display("  x y") == "␣␣x y"
    assert token_display("the") == "the"
    assert token_display("\n") == "↵"


def test_leading_space_tokens_show_the_space_mark(app_workspace, probe_latent):
    at = _page(app_workspace, *probe_latent).run()
    assert not at.exception and not at.error
    card = latent_card(app_workspace, *probe_latent)
    spaced = {t for t in card.token_text.values() if t.startswith(" ") and t.strip()}
    assert spaced, "the tiny BPE has tokens with a leading space"
    page = _html(at)
    assert any(f">␣{html.escape(t[1:])}</span>" in page for t in spaced)
    assert not any(f">{html.escape(t)}</span>" in page for t in spaced)  # never an invisible leading space
    assert html.escape(PROBE) in page and PROBE not in page  # still escaped


def test_random_explanation_baseline_is_shown_beneath_the_real_one(app_workspace, probe_latent, tmp_path):
    workspace = copy_workspace(app_workspace, tmp_path)
    dictionary, latent = probe_latent
    # The baseline is stored first: the page must still show the real explanation above it.
    borrowed = store.ExplanationRecord(
        "e-rand", dictionary, latent, "openai/gpt-4o-mini", True, "random-explanation", "top", "dates", "v1", {}
    )
    real = store.ExplanationRecord(
        "e-real", dictionary, latent, "openai/gpt-4o-mini", False, None, "top", "names of people", "v1", {}
    )
    store.write_explanations(workspace, [borrowed])
    store.write_explanations(workspace, [real])
    at = _page(workspace, dictionary, latent).run()
    assert not at.exception and not at.error
    page = _html(at)
    blocks = re.findall(r'<div class="(explanation[^"]*)"[^>]*><b>#(\d)</b>(.*?)</div></div>', page)
    assert [(cls, n) for cls, n, _ in blocks] == [("explanation", "1"), ("explanation baseline", "2")]
    assert "names of people" in blocks[0][2] and "dates" in blocks[1][2]
    assert "baseline: random other latent&#x27;s explanation" in blocks[1][2]
    assert page.index("Baselines, the floor to compare against") < page.index("dates")


def test_own_text_shows_the_core_activations_per_token(app_workspace, probe_latent, subject, monkeypatch):
    model, dictionaries = subject
    dictionary, latent = probe_latent
    monkeypatch.setattr(ui.latent_card, "MODEL_NAMES", ("tiny-test",))  # the test workspace's model
    monkeypatch.setattr(ui.latent_card, "load_subject", lambda name, d: (model, dictionaries[d]))
    at = _page(app_workspace, dictionary, latent).run()
    assert not at.exception
    box = next(t for t in at.text_input if str(t.key).startswith("own_text:"))
    box.set_value(SENTENCE).run()
    assert not at.exception and not at.error
    block = next(h.proto.body for h in at.html if 'class="own-text"' in h.proto.body)
    shown = re.findall(r'<span class="tok[^"]*" title="([^"]*)">([^<]*)</span>', block)

    expected = activations_on_text(model, dictionaries[dictionary], SENTENCE, latent)
    assert [(title, text) for title, text in shown] == [
        (f"{v:.4g}", html.escape(token_display(t))) for t, v in expected
    ]
    assert any(v > 0 for _, v in expected)  # the probe latent fires on the probe in this sentence
    assert block.count('<span class="tok act') == sum(v != 0 for _, v in expected)


def test_own_text_bad_input_gives_a_message(app_workspace, probe_latent, subject, monkeypatch):
    model, dictionaries = subject
    dictionary, latent = probe_latent
    monkeypatch.setattr(ui.latent_card, "MODEL_NAMES", ("tiny-test",))
    monkeypatch.setattr(ui.latent_card, "load_subject", lambda name, d: (model, dictionaries[d]))
    at = _page(app_workspace, dictionary, latent).run()
    box = next(t for t in at.text_input if str(t.key).startswith("own_text:"))
    box.set_value("   ").run()
    assert not at.exception and any("type some text" in e.value for e in at.error)
    box.set_value("Mary and John " * 40).run()
    assert not at.exception
    assert any("this model's context is 32 tokens" in e.value for e in at.error)


def test_own_text_is_not_offered_for_a_model_the_app_cannot_load(app_workspace, probe_latent):
    at = _page(app_workspace, *probe_latent).run()
    assert not at.exception
    assert not [t for t in at.text_input if str(t.key).startswith("own_text:")]
    assert any("can't load" in c.value for c in at.caption)


def test_activations_on_text_matches_the_cache(app_workspace, probe_latent, subject):
    """A cached context's text, run through the core function, gives the activations the cache stored for it."""
    from core.latents.cards import load_context_tokens, load_latent

    model, dictionaries = subject
    dictionary, latent = probe_latent
    _, acts = load_latent(app_workspace, dictionary, latent)
    context = int(acts.context[0])
    ids = load_context_tokens(app_workspace).get(np.array([context]))[0][1:]  # BOS dropped
    text = model.tokenizer.decode(ids.tolist())
    pairs = activations_on_text(model, dictionaries[dictionary], text, latent)
    assert len(pairs) == len(ids)
    stored = np.zeros(len(ids), dtype=np.float32)
    rows = acts.context == context
    stored[acts.position[rows] - 1] = acts.value[rows]
    np.testing.assert_allclose([v for _, v in pairs], stored, atol=1e-4)


def test_activations_on_text_refuses_bad_input(subject):
    model, dictionaries = subject
    d = next(iter(dictionaries.values()))
    with pytest.raises(TextInputError, match="type some text"):
        activations_on_text(model, d, " \n", 0)
    with pytest.raises(TextInputError, match="context is 32 tokens"):
        activations_on_text(model, d, "Mary " * 100, 0)
    with pytest.raises(TextInputError, match="not in"):
        activations_on_text(model, d, "Mary", d.d_sae)
