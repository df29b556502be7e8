"""Render a latent card (core.latents.cards.LatentCard) in Streamlit: statistics, examples by decile, histogram,
density among the dictionary's latents, output tokens. Text that reaches HTML is escaped (ui.tokens).
"""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from core.latents.cards import LatentCard
from core.latents.own_text import activations_on_text
from core.latents.sampling import Example
from core.subjects.models import MODEL_NAMES
from ui.state import cached_dictionaries, cached_model, core_errors
from ui.svg_charts import histogram_svg, side_by_side
from ui.text import literal
from ui.tokens import TOKEN_CSS, example_html, token_display

_TABLE_CSS = (
    "<style>.tts{display:flex;gap:2em;flex-wrap:wrap}.tt table{border-collapse:collapse;font-size:0.9em}"
    ".tt td,.tt th{padding:1px 8px;border-bottom:1px solid #eee;text-align:left}.tt td.tok{font-family:monospace}</style>"
)
_DECILE_CSS = "<style>.decile .dh{font-weight:600;margin-top:0.5em}.decile .lb{color:#888}</style>"


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
        body = examples_html(card, examples) if examples else '<div class="lb">no examples in this decile</div>'
        parts.append(f'<div class="decile" data-decile="{d}"><div class="dh">{html.escape(head)}</div>{body}</div>')
    return "".join(parts)


def distribution_html(card: LatentCard, frequencies: np.ndarray | None) -> str:
    """Two SVG panels side by side: the latent's activation histogram over equal-width bins (`card.hist_counts`),
    and the density: log10 firing frequency of the dictionary's live latents (`frequencies: [d_sae]`), this one marked."""
    hist = np.asarray(card.hist_counts)
    edges = np.asarray(card.hist_edges, dtype=np.float64)
    live = np.asarray(frequencies if frequencies is not None else [], dtype=np.float64)
    live = live[live > 0]
    own = float(np.log10(card.stats.frequency)) if card.stats.frequency > 0 else None  # this latent's log10 frequency
    activation = histogram_svg(
        edges,
        hist,
        title="Activation histogram (firing tokens)",
        x_label="activation",
        y_label="tokens",
        color="darkorange",
        unit="tokens",
    )
    counts, bins = np.histogram(np.log10(live), bins=40) if len(live) else (np.zeros(0), np.zeros(0))
    density = histogram_svg(
        bins,
        counts,
        title=f"Density: log10 firing frequency of {len(live):,} live latents",
        x_label="log10(frequency)",
        y_label="latents",
        color="steelblue",
        marker=own,
        marker_label=f"latent {card.latent}: log10 frequency",
        marker_color="darkorange",
        unit="latents",
    )
    if len(hist) and hist.max() > 0:
        b = int(np.argmax(hist))
        activation_summary = (
            f"Activation histogram: {int(hist.sum()):,} firing tokens, most between "
            f"{edges[b]:.3g} and {edges[b + 1]:.3g} ({int(hist[b]):,})"
        )
    else:
        activation_summary = "Activation histogram: no firing tokens"
    where = f"this latent at {own:.2f}" if own is not None else "this latent never fired"
    density_summary = f"Density of {len(live):,} live latents' log10 firing frequency; {where}"
    return side_by_side((activation, activation_summary), (density, density_summary))


def token_tables_html(card: LatentCard) -> str:
    """Three small escaped HTML tables side by side: top positive and negative output tokens (logits) and the
    tokens at the latent's highest activations (counts)."""

    def table(title: str, rows: list[tuple[str, float]], head: str, fmt: str) -> str:
        body = "".join(
            f'<tr><td class="tok">{html.escape(token_display(t))}</td><td>{format(v, fmt)}</td></tr>' for t, v in rows
        )
        return (
            f'<div class="tt"><b>{html.escape(title)}</b><table><tr><th>token</th><th>{head}</th></tr>'
            f"{body or '<tr><td colspan=2>none</td></tr>'}</table></div>"
        )

    return (
        _TABLE_CSS
        + '<div class="tts">'
        + table("Top positive output tokens", card.top_output, "logit", ".3f")
        + table("Top negative output tokens", card.bottom_output, "logit", ".3f")
        + table("Tokens at its highest activations", card.top_tokens, "count", "d")
        + "</div>"
    )


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
    st.html(TOKEN_CSS + (examples_html(card, card.top_examples) or "no examples"))
    st.markdown("#### Examples by activation decile")
    st.html(TOKEN_CSS + _DECILE_CSS + decile_sections_html(card))


def render_plots(card: LatentCard, frequencies: np.ndarray | None) -> None:
    """Activation histogram and density among the dictionary's latents (inline SVG: no chart bundle to load)."""
    st.html(distribution_html(card, frequencies))


def render_tokens(card: LatentCard) -> None:
    """Output tokens the decoder direction promotes and suppresses, and the tokens it fires on most."""
    st.html(token_tables_html(card))
    if not card.top_output and not card.bottom_output:
        st.caption("This dictionary has no output direction through the unembedding (no output tokens stored).")


def load_subject(model_name: str, dictionary: str):
    """(model, Dictionary) for the workspace's model `model_name` ('default' | 'gpt2') and one of its dictionaries,
    loaded once per server process (ui.state's st.cache_resource loaders)."""
    dictionaries = cached_dictionaries(model_name, (dictionary,))
    if dictionary not in dictionaries:
        raise ValueError(f"model {model_name!r} has no dictionary {dictionary!r}")
    return cached_model(model_name), dictionaries[dictionary]


def render_own_text(card: LatentCard, model_name: str) -> None:
    """ "Test your own text": a text box; the latent's activation on each token of what is typed, token-highlighted
    (shaded on the card's max activation, or the text's own if higher; the value on hover)."""
    st.markdown("#### Test your own text")
    if model_name not in MODEL_NAMES:
        st.caption(
            f"This workspace was built from model {literal(repr(model_name))}, which this app can't load "
            f"(it loads {', '.join(MODEL_NAMES)}): the latent can't be run on new text here."
        )
        return
    typed = st.text_input(
        "Type a sentence to see this latent's activation on each of its tokens (press Enter)",
        key=f"own_text:{card.dictionary}:{card.latent}",
    )
    if not typed:
        return
    with core_errors(f"Running latent {card.latent} on your text", stop=False):
        model, dictionary = load_subject(model_name, card.dictionary)
        pairs = activations_on_text(model, dictionary, typed, card.latent)
        values = np.array([v for _, v in pairs], dtype=np.float32)
        scale = max(float(card.stats.max_activation), float(np.abs(values).max(initial=0.0)))
        top = int(np.argmax(values))
        st.html(
            TOKEN_CSS
            + '<div class="own-text">'
            + example_html([t for t, _ in pairs], values, scale, None, f"max {values[top]:.3g}")
            + "</div>"
        )
        st.caption(
            f"{len(pairs)} tokens; {int(np.count_nonzero(values))} fire. Shaded on {scale:.3g} "
            "(the latent's max activation in the cache, or this text's if higher); hover a token for its value."
        )
