"""Text from users, workspaces and models is shown literally (ui.text), and bad URL parameters of the
Latents page get a notice instead of a traceback or a silent change (AppTest; Chromium in tests/browser/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hostile_text import EVIL_PROMPT, HOSTILE, collapse, rendered, shown
from streamlit.testing.v1 import AppTest

from ui.text import code, literal

ROOT = Path(__file__).resolve().parent.parent
LATENTS = str(ROOT / "pages" / "1_Latents.py")
APP = str(ROOT / "app.py")
DICT = "resid:blocks.1.hook_resid_pre"  # 96 latents in the tiny app workspace
FORMATTING = {"img", "a", "strong", "em", "code", "del", "h1", "h2", "h3", "ul", "ol", "blockquote", "table", "pre"}

# What Streamlit 1.67's Markdown component rewrites after parsing (copied from its frontend bundle), where
# backslash escapes no longer count: it loads remark-emoji when the raw source matches EMOJI_GATE.
EMOJI_GATE = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")
TEXT_REWRITES = [
    re.compile(r":material_(\w+):"),  # Material icon
    re.compile(r":streamlit:"),  # logo image
    re.compile(r"(^|\s)(<->|->|<-|--|>=|<=|~=)(\s|$)"),  # typographic arrows
    re.compile(r"(https?://|www(?=\.))([-.\w]+)", re.IGNORECASE),  # remark-gfm autolinked URL
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"),  # remark-gfm autolinked e-mail address
]


# ---------------------------------------------------------------------------------------------------------
# ui.text


@pytest.mark.parametrize("text", HOSTILE)
def test_literal_renders_as_the_text_itself(text):
    shown_text, tags = rendered(literal(text))
    assert shown_text == collapse(text)
    assert tags <= {"p", "br"}  # no formatting, link, image, heading, list, table or HTML


@pytest.mark.parametrize("text", HOSTILE)
def test_literal_breaks_what_streamlit_rewrites_after_parsing(text):
    source = literal(text)
    assert ":material/" not in source  # Streamlit rewrites it in the raw source, escapes or not
    decoded = re.sub(r"\\(.)", r"\1", source)
    assert not EMOJI_GATE.search(decoded)
    for pattern in TEXT_REWRITES:
        assert not pattern.search(decoded), pattern.pattern


def test_literal_keeps_plain_text_readable():
    # Only what could start syntax is escaped: ids, model names and sentences read the same in the source.
    for plain in ["openai/gpt-4o-mini", "no token of this workspace's vocabulary reads 'x'", "ANTHROPIC_API_KEY"]:
        assert literal(plain) == plain
    assert shown(literal(EVIL_PROMPT)) == EVIL_PROMPT


@pytest.mark.parametrize("text", [*HOSTILE, "`a`", "``b`` ` c", "x :material/home: y"])
def test_code_shows_the_text_verbatim(text):
    md = code(text)
    shown_text, tags = rendered(md)
    assert tags <= {"p", "code"}
    assert shown_text == collapse(text)
    assert ":material/" not in md


# ---------------------------------------------------------------------------------------------------------
# Pages: user- and model-supplied text


def _assert_literal(values: list[str], text: str) -> None:
    """Some of `values` (Markdown sources of alerts, captions…) show `text`, and none of them formats it."""
    hits = [v for v in values if "evil.example" in v]
    assert hits, f"no element shows {text!r}"
    for value in hits:
        shown_text, tags = rendered(value)
        assert collapse(text) in shown_text
        assert not tags & (FORMATTING - {"code"}), value


def _messages(at: AppTest) -> list[str]:
    kinds = (at.error, at.warning, at.info, at.success, at.caption, at.markdown, at.header, at.subheader)
    return [str(e.value) for kind in kinds for e in kind]


def _latents(workspace: Path, **params: str) -> AppTest:
    at = AppTest.from_file(LATENTS, default_timeout=120)
    at.session_state["workspace"] = str(workspace)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def test_token_search_echoes_the_typed_text_literally(app_workspace):
    at = _latents(app_workspace).run()
    at.radio(key="lat_mode").set_value("by token").run()
    at.text_input(key="lat_token").set_value(EVIL_PROMPT).run()
    assert not at.exception
    _assert_literal(_messages(at), EVIL_PROMPT)


@pytest.mark.parametrize("typed", ["#²", "#-5", "#1e3", "#999999999999999999", "#" + "9" * 40])
def test_token_search_by_odd_ids_gives_a_message(app_workspace, typed):
    at = _latents(app_workspace).run()
    at.radio(key="lat_mode").set_value("by token").run()
    at.text_input(key="lat_token").set_value(typed).run()
    assert not at.exception
    assert at.error or at.info  # no such token: said in words


def test_llm_id_is_shown_literally_on_home_and_latents_pages(app_workspace):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["workspace"] = str(app_workspace)
    at.run()
    at.text_input(key="llm_model_input").set_value(EVIL_PROMPT).run()
    assert not at.exception
    _assert_literal(_messages(at), EVIL_PROMPT)

    at = _latents(app_workspace, dictionary=DICT, latent="10")
    at.session_state["llm_model"] = EVIL_PROMPT
    at.run()
    assert not at.exception
    _assert_literal(_messages(at), EVIL_PROMPT)  # the "Explain now" caption names the explainer


def _error_script():
    import streamlit as st

    from ui.state import core_errors

    with core_errors("Reading ![x](http://evil.example/ctx.png)"):
        raise ValueError(st.session_state["message"])


def test_engine_errors_are_shown_literally():
    at = AppTest.from_function(_error_script, default_timeout=60)
    at.session_state["message"] = EVIL_PROMPT
    at.run()
    assert not at.exception and len(at.error) == 1
    shown_text, tags = rendered(at.error[0].value)
    assert shown_text == collapse(f"Reading ![x](http://evil.example/ctx.png): {EVIL_PROMPT}")
    assert not tags & FORMATTING


def _provenance_script():
    import streamlit as st

    from core.analysis.analyses import Provenance
    from ui.analysis_view import provenance_caption

    evil = st.session_state["message"]
    provenance_caption(Provenance({evil: False}, {"detection": [evil]}, 3, 2, "default"))


def test_analysis_provenance_names_models_literally():
    at = AppTest.from_function(_provenance_script, default_timeout=60)
    at.session_state["message"] = EVIL_PROMPT
    at.run()
    assert not at.exception
    _assert_literal(_messages(at), EVIL_PROMPT)


# ---------------------------------------------------------------------------------------------------------
# Latents page: URL parameters


@pytest.mark.parametrize("value", ["²", "٣", "-5", "abc", "1e3", "1.5", " 7", "", "96", "9" * 40])
def test_bad_latent_in_the_url_gets_a_notice(app_workspace, value):
    at = _latents(app_workspace, dictionary=DICT, latent=value).run()
    assert not at.exception and not at.error
    notices = [shown(w.value) for w in at.warning]
    notice = next((n for n in notices if "The link's latent" in n), None)
    assert notice is not None, notices
    assert repr(value) in notice and "0 – 95" in notice
    shown_latent = int(at.query_params["latent"])  # the URL now names what is shown, and the notice says so
    assert f"showing latent {shown_latent} of {DICT} instead" in notice
    assert shown(at.header[0].value) == f"{DICT} · latent {shown_latent}"


def test_unknown_dictionary_in_the_url_gets_a_notice(app_workspace):
    at = _latents(app_workspace, dictionary="nope", latent="3").run()
    assert not at.exception and not at.error
    notice = " ".join(shown(w.value) for w in at.warning)
    first = at.selectbox(key="lat_dict").value
    assert "dictionary 'nope' is not in this workspace" in notice
    assert f"of {first} instead" in notice
    assert at.query_params["dictionary"] == first


def test_hostile_dictionary_in_the_url_is_named_literally(app_workspace):
    at = _latents(app_workspace, dictionary=EVIL_PROMPT).run()
    assert not at.exception
    _assert_literal([w.value for w in at.warning], repr(EVIL_PROMPT))


def test_good_url_gets_no_notice(app_workspace):
    at = _latents(app_workspace, dictionary=DICT, latent="10").run()
    assert not at.exception and not at.error and not at.warning
    assert shown(at.header[0].value) == f"{DICT} · latent 10"
