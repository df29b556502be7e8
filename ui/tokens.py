"""Token-highlighted text as HTML: each token shaded by a latent's activation, its value on hover.

Every piece of text that reaches the HTML — token texts and the values in `title` attributes — goes
through `html.escape`, so a token or annotation such as `<img src=x onerror=alert(1)>` shows as text.
The markup is compact (a shade class per token, one stylesheet per block: `TOKEN_CSS`) because a card
holds over a thousand tokens and the browser's time to draw them grows with the bytes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

LEVELS = 10  # shades of activation: level 0 = not firing, 1..10 = up to the scale

# Positive activations shade orange (class pN), negative ones blue (nN); `c` marks the chosen token.
TOKEN_CSS = (
    "<style>"
    ".tok{white-space:pre-wrap;border-radius:2px;padding:0 1px}"
    ".tok.c{text-decoration:underline;font-weight:600}"
    ".ex{font-family:monospace;font-size:0.9em;line-height:1.7;padding:2px 6px;margin:2px 0;border-left:3px solid #ddd}"
    ".ex .lb{color:#888;font-size:0.8em;margin-right:0.6em}"
    + "".join(f".p{i}{{background:rgba(255,140,0,{0.85 * i / LEVELS:.3f})}}" for i in range(1, LEVELS + 1))
    + "".join(f".n{i}{{background:rgba(30,136,229,{0.85 * i / LEVELS:.3f})}}" for i in range(1, LEVELS + 1))
    + "</style>"
)


SPACE_MARK = "␣"  # a token's leading spaces, which the reader can't otherwise tell from the gap between tokens


def token_display(text: str) -> str:
    """A token's text made visible in a line of HTML: leading spaces as ␣ (' the' -> '␣the'), newlines as ↵,
    tabs as →, the empty string as ∅ (not escaped)."""
    if text == "":
        return "∅"
    body = text.lstrip(" ")
    text = SPACE_MARK * (len(text) - len(body)) + body
    return text.replace("\r", "").replace("\n", "↵").replace("\t", "→")


def activation_levels(values: np.ndarray, scale: float) -> np.ndarray:
    """Shade level `[n]` int in 0..LEVELS of activations `values: [n]` relative to `scale` (> 0), by |value|;
    any non-zero value gets at least level 1 so that every firing token is visibly marked."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    if scale <= 0:
        return np.where(values > 0, 1, 0)
    levels = np.ceil(np.clip(values / scale, 0.0, 1.0) * LEVELS).astype(np.int64)
    return np.where(values > 0, np.maximum(levels, 1), 0)


def highlight_html(texts: Sequence[str], values: np.ndarray, scale: float, center: int | None = None) -> str:
    """One line of HTML spans: `texts[i]` shaded by `values[i] / scale`, the value in its title; `center` underlined.

    `texts: [n]` decoded token strings, `values: [n]` activations (0 where the latent does not fire).
    Needs `TOKEN_CSS` once in the same HTML block.
    """
    values = np.asarray(values, dtype=np.float32)
    if len(texts) != len(values):
        raise ValueError(f"{len(texts)} tokens but {len(values)} activation values")
    levels = activation_levels(values, scale)
    spans = []
    for i, (text, value, level) in enumerate(zip(texts, values, levels, strict=True)):
        cls = "tok" if level == 0 else f"tok act {'p' if value > 0 else 'n'}{level}"
        if i == center:
            cls += " c"
        spans.append(f'<span class="{cls}" title="{value:.4g}">{html.escape(token_display(text))}</span>')
    return "".join(spans)


def example_html(
    texts: Sequence[str], values: np.ndarray, scale: float, center: int | None = None, label: str | None = None
) -> str:
    """A boxed example line: an optional escaped `label` (e.g. the activation) then the highlighted tokens."""
    head = f'<span class="lb">{html.escape(label)}</span>' if label else ""
    return f'<div class="ex">{head}{highlight_html(texts, values, scale, center)}</div>'
