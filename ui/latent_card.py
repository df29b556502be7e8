"""Render a latent card (core.latents.LatentCard) in Streamlit: statistics, examples by decile, histogram,
density among the dictionary's latents, output tokens. Text that reaches HTML is escaped (ui.tokens).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.latents import LatentCard
from core.sampling import Example
from ui.tokens import example_html

_PLOT_HEIGHT = 260


def examples_html(card: LatentCard, examples: list[Example]) -> str:
    """HTML of `examples` (one boxed line each, labelled with the chosen token's activation), shaded on the card's max."""
    scale = float(card.stats.max_activation)
    return "".join(
        example_html(
            [card.token_text.get(int(t), str(t)) for t in ex.tokens],
            ex.activations,
            scale,
            ex.center,
            f"{ex.activation:.3g}",
        )
        for ex in examples
    )


def decile_sections_html(card: LatentCard) -> str:
    """HTML of every decile's examples, highest decile first, each headed by its activation range."""
    edges = card.stats.quantile_edges
    parts = []
    for d in range(10, 0, -1):
        examples = card.decile_examples.get(d, [])
        lo, hi = (float(edges[d - 1]), float(edges[d])) if len(edges) == 11 else (np.nan, np.nan)
        head = f"decile {d} ({lo:.3g} – {hi:.3g})"
        body = examples_html(card, examples) if examples else '<div style="color:#888">no examples in this decile</div>'
        parts.append(
            f'<div class="decile" data-decile="{d}"><div style="font-weight:600; margin-top:0.5em">{html.escape(head)}</div>{body}</div>'
        )
    return "".join(parts)


def histogram_figure(card: LatentCard) -> go.Figure:
    """Bar chart of the latent's non-zero activations over equal-width bins (`card.hist_counts`)."""
    edges = np.asarray(card.hist_edges, dtype=np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=card.hist_counts, width=np.diff(edges), marker_color="darkorange"))
    fig.update_layout(
        title="Activation histogram (firing tokens)",
        xaxis_title="activation",
        yaxis_title="tokens",
        height=_PLOT_HEIGHT,
        margin=dict(l=10, r=10, t=40, b=10),
        bargap=0,
    )
    return fig


def density_figure(frequencies: np.ndarray, frequency: float, dictionary: str) -> go.Figure:
    """Histogram of log10 firing frequency over a dictionary's firing latents, with this latent's marked."""
    live = np.asarray(frequencies, dtype=np.float64)
    live = live[live > 0]
    fig = go.Figure(go.Histogram(x=np.log10(live), nbinsx=40, marker_color="steelblue"))
    if frequency > 0:
        fig.add_vline(x=float(np.log10(frequency)), line_color="darkorange", line_width=3)
    fig.update_layout(
        title=f"Density: log10 firing frequency of {len(live):,} live latents of {dictionary}",
        xaxis_title="log10(frequency)",
        yaxis_title="latents",
        height=_PLOT_HEIGHT,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def render_stats(card: LatentCard) -> None:
    """The card's headline numbers as metrics."""
    s = card.stats
    cols = st.columns(4)
    cols[0].metric("firing frequency", f"{s.frequency:.3%}" if s.frequency >= 1e-4 else f"{s.frequency:.2e}")
    cols[1].metric("tokens fired", f"{s.n_fires:,}")
    cols[2].metric("max activation", f"{s.max_activation:.3g}")
    cols[3].metric("mean activation (when firing)", f"{s.mean_activation:.3g}")


def render_examples(card: LatentCard) -> None:
    """Top examples, then examples of every decile (token-highlighted HTML)."""
    st.markdown("#### Top activating examples")
    st.caption("Each token is shaded by the latent's activation (hover for the value); the chosen token is underlined.")
    st.markdown(examples_html(card, card.top_examples) or "no examples", unsafe_allow_html=True)
    st.markdown("#### Examples by activation decile")
    st.markdown(decile_sections_html(card), unsafe_allow_html=True)


def render_plots(card: LatentCard, frequencies: np.ndarray | None) -> None:
    """Activation histogram and density among the dictionary's latents, side by side."""
    left, right = st.columns(2)
    left.plotly_chart(histogram_figure(card), width="stretch", config={"displayModeBar": False})
    if frequencies is not None:
        right.plotly_chart(
            density_figure(frequencies, card.stats.frequency, card.dictionary),
            width="stretch",
            config={"displayModeBar": False},
        )


def render_tokens(card: LatentCard) -> None:
    """Output tokens the decoder direction promotes and suppresses, and the tokens it fires on most."""
    cols = st.columns(3)
    cols[0].markdown("**Top positive output tokens**")
    cols[0].dataframe(pd.DataFrame(card.top_output, columns=["token", "logit"]), hide_index=True, width="stretch")
    cols[1].markdown("**Top negative output tokens**")
    cols[1].dataframe(pd.DataFrame(card.bottom_output, columns=["token", "logit"]), hide_index=True, width="stretch")
    cols[2].markdown("**Tokens at its highest activations**")
    cols[2].dataframe(pd.DataFrame(card.top_tokens, columns=["token", "count"]), hide_index=True, width="stretch")
    if not card.top_output and not card.bottom_output:
        st.caption("This dictionary has no output direction through the unembedding (no output tokens stored).")
