"""The circuits page's LLM section (ui/llm_prune_view.py) in a real Streamlit script, with a scripted LLM."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest
from test_circuits_page_hardening import plain


def _section():
    from pathlib import Path

    import streamlit as st
    from test_circuit_llm import toy_graph

    from ui import llm_prune_view

    ws = Path(st.session_state["test.ws"])
    source = st.session_state.get("test.source")
    G, base = toy_graph(), None
    if source:
        from core.circuits import saved as C

        G = C.load_circuit(ws, "brackets", 1).graph
        base = C.unsaved_version("brackets", G, C.Pruning())
    from core.circuits.saved import NodeExplanation

    explained = {"transcoder.2/20@5": NodeExplanation("open bracket", "baseline:token-stats")}
    saved = llm_prune_view.render(ws, G, explained, base, source)
    if saved is not None:
        st.session_state["test.saved"] = [saved.version, saved.created_by]


def _app(tmp_path, source=None) -> AppTest:
    at = AppTest.from_function(_section, default_timeout=120)
    at.session_state["test.ws"] = str(tmp_path / "ws.duckdb")
    at.session_state["llm_model"] = "scripted/pruner"
    if source:
        at.session_state["test.source"] = source
    return at


def test_without_an_llm_the_section_says_so(tmp_path):
    at = _app(tmp_path)
    at.session_state["llm_model"] = None
    at.run()
    assert not at.exception
    assert "No LLM is chosen" in at.info[0].value and not at.button


def test_a_rejected_reply_is_shown_with_its_reason(tmp_path):
    from test_circuit_llm import reply

    from tests.llm_helpers import scripted_llm

    at = _app(tmp_path).run()
    with scripted_llm(lambda m, p: reply({"transcoder.9/9@5": "<b>made up</b>"}, [])):
        at.button(key="llmp.ask").click().run()
    assert not at.exception
    shown = [plain(e.value) for e in at.error]  # the reason is shown literally (escaped Markdown)
    assert any("not in the graph: 'transcoder.9/9@5'" in e and "nothing was applied" in e for e in shown), shown
    assert "<b>made up</b>" in at.code[0].value  # the raw reply, as text
    assert "llmp.suggestion" not in at.session_state


def test_suggestions_are_reviewed_then_saved_as_the_next_version(tmp_path):
    from test_circuit_llm import keep_top_layers, saved_toy

    from tests.llm_helpers import scripted_llm

    saved_toy(tmp_path / "ws.duckdb")
    from core.circuits import saved as C

    at = _app(tmp_path, source={"name": "brackets", "version": 1}).run()
    with scripted_llm(keep_top_layers) as calls:
        at.button(key="llmp.ask").click().run()
    assert not at.exception and len(calls) == 1
    sent = calls.requests[0][1][-1]["content"]
    assert "open bracket [baseline:token-stats]" in sent  # explanations reach the prompt with their explainer
    suggestion = json.loads(json.dumps(at.session_state["llmp.suggestion"]))
    assert suggestion["model"] == "scripted/pruner" and len(suggestion["nodes"]) == 7
    assert at.text_area(key="llmp.summary").value == suggestion["summary"]
    at.radio(key="llmp.summary_verdict").set_value("reject")
    at.button(key="llmp.save").click().run()
    assert not at.exception
    assert at.session_state["test.saved"] == [2, "scripted/pruner"]
    v2 = C.load_circuit(tmp_path / "ws.duckdb", "brackets", 2)
    assert v2.annotation is None  # the summary was rejected
    assert len(v2.node_annotations) == 5 and {a.author for a in v2.node_annotations.values()} == {"scripted/pruner"}
