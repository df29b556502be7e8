"""ui.state: the shared session choices and the error helper, run inside a real Streamlit script (AppTest)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _state_script():
    import streamlit as st

    from ui.state import core_errors, current_workspace, llm_model, set_llm_model, set_workspace

    st.text(f"workspace={current_workspace()}")
    st.text(f"llm={llm_model()}")
    if st.session_state.get("choose"):
        set_workspace("/tmp/other.duckdb")
        set_llm_model("  openai/gpt-4o-mini ")
        st.text(f"workspace={current_workspace()}")
        st.text(f"llm={llm_model()}")
    with core_errors("Opening"):
        from core import store

        with store.session(current_workspace().parent / "no-such-workspace.duckdb"):
            pass
    st.text("not reached")


def test_defaults_choices_and_errors():
    from core.cache.workspace import DEFAULT_WORKSPACE

    at = AppTest.from_function(_state_script, default_timeout=60).run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert texts[:2] == [f"workspace={DEFAULT_WORKSPACE}", "llm=None"]
    assert "not reached" not in texts  # core_errors stopped the script
    assert (
        len(at.error) == 1
        and at.error[0].value.startswith("Opening: workspace")
        and "does not exist" in at.error[0].value
    )

    at.session_state["choose"] = True
    at.run()
    texts = [t.value for t in at.text]
    assert texts[2:] == ["workspace=/tmp/other.duckdb", "llm=openai/gpt-4o-mini"]
    at.run()  # the choices persist across reruns
    assert [t.value for t in at.text][:2] == ["workspace=/tmp/other.duckdb", "llm=openai/gpt-4o-mini"]
