"""Small charts drawn as SVG images, for panels a page shows on first load (the latent card's histograms).

Each image sits on white, so its dark labels read in Streamlit's dark theme too.

A plotly chart costs the browser its 4.7 MB bundle and a few CPU seconds to draw (measured in
docs/benchmarks.md, "First start"); these bars cost nothing beyond the page. Every label is escaped.
`st.html` keeps HTML only (no inline SVG), so `side_by_side` shows each chart as an `<img>` with a data
URI, its one-line summary on hover (the bars' own `<title>`s do not show inside an image). The analysis
pages' charts (ui.analysis_charts) build on these helpers and keep plotly one toggle away.
"""

from __future__ import annotations

import html
import math
from urllib.parse import quote

import numpy as np

_W, _H = 460, 230  # viewBox size; the SVG scales to its container's width
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 28, 40
CHARTS_CSS = "<style>.svgcharts{display:flex;gap:1.5em;flex-wrap:wrap}.svgcharts img{flex:1 1 360px;max-width:640px;min-width:0;background:#fff;border-radius:4px}</style>"
_SVG_STYLE = "<style>text{font-family:sans-serif;font-size:11px;fill:#555}.t{font-size:12px;fill:#222}</style>"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values (steps of 1, 2 or 5 × 10^k) covering `[lo, hi]`, both ends inside."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def short_number(v: float) -> str:
    """`v` to three significant digits, as chart labels show it."""
    return f"{v:.3g}"


def histogram_svg(
    edges: np.ndarray,
    counts: np.ndarray,
    *,
    title: str,
    x_label: str,
    y_label: str,
    color: str,
    marker: float | None = None,
    marker_label: str = "",
    marker_color: str | None = None,
    unit: str = "",
) -> str:
    """An SVG bar chart of `counts: [b]` over bins `edges: [b + 1]` (increasing), axes ticked, optional vertical `marker`.

    Each bar carries "a – b: n unit" as an SVG `<title>` (a tooltip only where the SVG is inlined; in the
    `<img>` of `side_by_side` the image's summary is the tooltip). Returns one `<svg>` element; empty bins
    draw nothing.
    """
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    esc = html.escape
    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">',
        _SVG_STYLE,
        f'<text class="t" x="{_LEFT}" y="16">{esc(title)}</text>',
    ]
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    if len(edges) < 2 or not np.isfinite(edges).all() or edges[-1] <= edges[0]:
        parts.append(f'<text x="{_LEFT}" y="{_TOP + plot_h / 2:.0f}">no data</text></svg>')
        return "".join(parts)
    lo, hi = float(edges[0]), float(edges[-1])
    if marker is not None and math.isfinite(marker):
        lo, hi = min(lo, marker), max(hi, marker)
    top = float(counts.max()) if len(counts) and counts.max() > 0 else 1.0

    def x(v: float) -> float:
        return _LEFT + (v - lo) / (hi - lo) * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - v / top * plot_h

    base = _TOP + plot_h
    for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True):
        if n <= 0:
            continue
        x0, x1 = x(a), x(b)
        parts.append(
            f'<rect x="{x0:.1f}" y="{y(n):.1f}" width="{max(x1 - x0, 0.8):.1f}" height="{base - y(n):.1f}" '
            f'fill="{color}"><title>{esc(f"{short_number(a)} – {short_number(b)}: {int(n):,} {unit}".strip())}</title></rect>'
        )
    # axes, ticks and labels
    parts.append(f'<line x1="{_LEFT}" y1="{base}" x2="{_W - _RIGHT}" y2="{base}" stroke="#999"/>')
    parts.append(f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{base}" stroke="#999"/>')
    for t in nice_ticks(lo, hi):
        parts.append(f'<line x1="{x(t):.1f}" y1="{base}" x2="{x(t):.1f}" y2="{base + 4}" stroke="#999"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{base + 15}" text-anchor="middle">{esc(short_number(t))}</text>')
    for t in nice_ticks(0.0, top, 4):
        parts.append(f'<text x="{_LEFT - 5}" y="{y(t) + 4:.1f}" text-anchor="end">{esc(f"{t:,.0f}")}</text>')
    parts.append(f'<text x="{_LEFT + plot_w / 2:.0f}" y="{_H - 6}" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(
        f'<text x="12" y="{_TOP + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {_TOP + plot_h / 2:.0f})">{esc(y_label)}</text>'
    )
    if marker is not None and math.isfinite(marker):
        parts.append(
            f'<line class="marker" x1="{x(marker):.1f}" y1="{_TOP}" x2="{x(marker):.1f}" y2="{base}" stroke="{marker_color or color}" '
            f'stroke-width="3"><title>{esc(f"{marker_label} {short_number(marker)}".strip())}</title></line>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_image(svg: str, summary: str) -> str:
    """An `<img>` showing `svg` (a data URI), `summary` as its alt text and hover text (escaped)."""
    text = html.escape(summary)
    return f'<img src="data:image/svg+xml;charset=utf-8,{quote(svg)}" alt="{text}" title="{text}">'


def side_by_side(*charts: tuple[str, str]) -> str:
    """HTML that lays `(svg, summary)` charts out in a row (wrapping on narrow pages), as `svg_image`s."""
    return CHARTS_CSS + '<div class="svgcharts">' + "".join(svg_image(s, t) for s, t in charts) + "</div>"
