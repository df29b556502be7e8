"""The Streamlit adapter of core.progress: an st.progress bar with the phase and the time left."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.progress import Progress, TimeLeft, progress_text
from ui.text import literal


def progress_callback(bar: Any) -> Progress:
    """A `progress(phase, done, total)` callback that updates `bar` (an st.progress element).

    The text is 'phase: done / total · about N s left' (fraction work: 'message · about N s left'),
    shown literally (a phase may name a model or a dictionary)."""
    left = TimeLeft()

    def progress(phase: str, done: int, total: int) -> None:
        text = progress_text(phase, done, total, left(phase, done, total))
        bar.progress(min(done / max(total, 1), 1.0), text=literal(text))

    return progress


def progress_bar(label: str) -> Progress:
    """A new st.progress bar showing `label` until the first report, and its callback."""
    return progress_callback(st.progress(0.0, text=literal(label)))
