"""A tiny Streamlit script for tests/browser/test_hostile_text_browser.py: every hostile string through
ui.text.literal in each kind of element that renders Markdown, one container (key `s<i>`) per string."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import streamlit as st  # noqa: E402
from hostile_text import HOSTILE  # noqa: E402

from ui.text import literal  # noqa: E402

for i, text in enumerate(HOSTILE):
    shown = literal(text)
    with st.container(key=f"s{i}"):
        st.markdown(shown)
        st.caption(shown)
        st.error(shown)
        st.subheader(shown, anchor=False)
        st.metric(shown, shown)
        st.radio(shown, [shown], key=f"radio{i}")
        st.button(shown, key=f"button{i}")
        with st.expander(shown):
            st.write("inside")
