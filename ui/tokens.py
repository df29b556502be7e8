"""Token-highlighted text as HTML: each token coloured by a latent's activation, its value on hover.

Every piece of text that reaches the HTML — token texts and the values in `title` attributes — goes
through `html.escape`, so a token or annotation such as `<img src=x onerror=alert(1)>` shows as text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

# Positive activations shade orange, negative ones blue (neurons and some baselines go negative).
_POS_RGB = "255, 140, 0"
_NEG_RGB = "30, 136, 229"
_SPAN_STYLE = "white-space: pre-wrap; border-radius: 2px; padding: 0 1px"


def token_display(text: str) -> str:
    """A token's text made visible in a line of HTML: newlines as ↵, tabs as →, the empty string as ∅ (not escaped)."""
    if text == "":
        return "∅"
    return text.replace("\r", "").replace("\n", "↵").replace("\t", "→")


def activation_alpha(values: np.ndarray, scale: float) -> np.ndarray:
    """Background opacity `[n]` in [0, 0.85] for activations `values: [n]` relative to `scale` (> 0), by |value|."""
    if scale <= 0:
        return np.zeros(len(values), dtype=np.float32)
    return np.clip(np.abs(np.asarray(values, dtype=np.float32)) / scale, 0.0, 1.0) * 0.85


def highlight_html(texts: Sequence[str], values: np.ndarray, scale: float, center: int | None = None) -> str:
    """One line of HTML: `texts[i]` shaded by `values[i] / scale` with the value on hover; `center` is underlined.

    `texts: [n]` decoded token strings, `values: [n]` activations (0 where the latent does not fire).
    """
    values = np.asarray(values, dtype=np.float32)
    if len(texts) != len(values):
        raise ValueError(f"{len(texts)} tokens but {len(values)} activation values")
    alpha = activation_alpha(values, scale)
    spans = []
    for i, (text, value, a) in enumerate(zip(texts, values, alpha, strict=True)):
        rgb = _POS_RGB if value >= 0 else _NEG_RGB
        style = f"{_SPAN_STYLE}; background: rgba({rgb}, {a:.2f})"
        if i == center:
            style += "; text-decoration: underline; font-weight: 600"
        cls = "tok act" if value != 0 else "tok"
        title = html.escape(f"{text!r}: {value:.4g}", quote=True)
        spans.append(f'<span class="{cls}" style="{style}" title="{title}">{html.escape(token_display(text))}</span>')
    return "".join(spans)


def example_html(
    texts: Sequence[str], values: np.ndarray, scale: float, center: int | None = None, label: str | None = None
) -> str:
    """A boxed example line: an optional escaped `label` (e.g. the activation) then the highlighted tokens."""
    head = (
        f'<span style="color: #888; font-size: 0.8em; margin-right: 0.6em">{html.escape(label)}</span>' if label else ""
    )
    body = highlight_html(texts, values, scale, center)
    return (
        '<div class="example" style="font-family: monospace; font-size: 0.9em; line-height: 1.7; '
        f'padding: 2px 6px; margin: 2px 0; border-left: 3px solid #ddd">{head}{body}</div>'
    )
