"""The Scores, Deciles and Overlap pages' charts as SVG images, the plotly versions one toggle away.

Plotly's 4.7 MB bundle cost the browser 3-4 CPU seconds on every page that drew one (docs/benchmarks.md,
"First start"). These charts draw the same results (`core.analysis.analyses`, `core.analysis.overlap`) as
plain SVG shown in an `<img>` (`ui.svg_charts.svg_image`), every value also written on the chart or in the
page's table; the sidebar's "Interactive charts" toggle (`interactive_charts`) draws the plotly figures of
`core.analysis.figures` instead, for zoom and hover. Same colours and labels as those figures; every label
escaped. The images sit on white (`CHART_CSS`), so their dark labels read in Streamlit's dark theme too.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.analysis.analyses import BASELINE_GROUPS, Deciles, Distributions, SpearmanMatrix, UnitComparison
from core.analysis.figures import DECILE_LABELS, GROUP_COLORS, UNIT_COLORS, group_label, heatmap_range
from ui.svg_charts import histogram_svg, nice_ticks, short_number, svg_image

_SVG_STYLE = (
    "<style>text{font-family:sans-serif;font-size:12px;fill:#444}.t{font-size:14px;fill:#222}.c{font-size:11px}</style>"
)
CHART_CSS = "<style>.analysischart img{width:100%;height:auto;background:#fff;border-radius:4px}</style>"
INTERACTIVE_KEY = "interactive_charts"


@dataclass
class _Frame:
    """A plot area `width x height` (viewBox units) with categorical x slots and a numeric y range."""

    width: int
    height: int
    categories: list[str]
    y_lo: float
    y_hi: float
    left: int = 64
    right: int = 16
    top: int = 58
    bottom: int = 52

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def slot(self, i: int) -> tuple[float, float]:
        """(left x, width) of category `i`'s slot."""
        w = self.plot_w / max(1, len(self.categories))
        return self.left + i * w, w

    def y(self, v: float) -> float:
        span = self.y_hi - self.y_lo or 1.0
        return self.top + self.plot_h - (min(max(v, self.y_lo), self.y_hi) - self.y_lo) / span * self.plot_h

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        """Title, axes, y ticks with grid lines, category labels and axis labels."""
        esc = html.escape
        base = self.top + self.plot_h
        out = [
            f'<svg viewBox="0 0 {self.width} {self.height}" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{esc(title)}">',
            _SVG_STYLE,
            f'<text class="t" x="{self.left}" y="18">{esc(title)}</text>',
        ]
        for t in nice_ticks(self.y_lo, self.y_hi, 5):
            out.append(
                f'<line x1="{self.left}" y1="{self.y(t):.1f}" x2="{self.width - self.right}" y2="{self.y(t):.1f}" '
                'stroke="#e5e5e5"/>'
            )
            out.append(
                f'<text x="{self.left - 6}" y="{self.y(t) + 4:.1f}" text-anchor="end">{esc(short_number(t))}</text>'
            )
        out.append(
            f'<line x1="{self.left}" y1="{base}" x2="{self.width - self.right}" y2="{base}" stroke="#999"/>'
            f'<line x1="{self.left}" y1="{self.top}" x2="{self.left}" y2="{base}" stroke="#999"/>'
        )
        for i, c in enumerate(self.categories):
            x0, w = self.slot(i)
            out.append(f'<text x="{x0 + w / 2:.1f}" y="{base + 16}" text-anchor="middle">{esc(c)}</text>')
        out.append(
            f'<text x="{self.left + self.plot_w / 2:.0f}" y="{self.height - 8}" text-anchor="middle">{esc(x_label)}</text>'
        )
        mid = self.top + self.plot_h / 2
        out.append(
            f'<text x="16" y="{mid:.0f}" text-anchor="middle" transform="rotate(-90 16 {mid:.0f})">{esc(y_label)}</text>'
        )
        return out


def _legend(items: Sequence[tuple[str, str, bool]], x: float, y: float) -> list[str]:
    """One row of swatches `(label, colour, dashed)` starting at `(x, y)`."""
    out = []
    for label, color, dashed in items:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<line x1="{x:.0f}" y1="{y - 4}" x2="{x + 18:.0f}" y2="{y - 4}" stroke="{color}" stroke-width="6"{dash}/>'
        )
        out.append(f'<text x="{x + 23:.0f}" y="{y}">{html.escape(label)}</text>')
        x += 23 + 7 * len(label) + 18
    return out


def _error_bar(x: float, y_lo: float, y_hi: float, color: str) -> str:
    return (
        f'<path d="M{x - 4:.1f},{y_lo:.1f}H{x + 4:.1f}M{x:.1f},{y_lo:.1f}V{y_hi:.1f}M{x - 4:.1f},{y_hi:.1f}H{x + 4:.1f}" '
        f'stroke="{color}" stroke-width="1.3" fill="none"/>'
    )


def _label_if_room(text: str, x: float, y: float, room: float) -> str:
    """A small centred label at `(x, y)`, or nothing when `room` (px) is too narrow to hold it without overlap."""
    if room < 6.5 * len(text):
        return ""
    return f'<text class="c" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">{html.escape(text)}</text>'


def _finite(v) -> bool:
    """True for a finite number of any numeric type (numpy's float32 included); False for None, NaN, inf."""
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def distributions_svg(dist: Distributions) -> str:
    """Box plots of score values per scorer (x) and strategy or baseline (colour): the group's quartile box, median
    line, mean (a diamond) and n as `GroupSummary` holds them (the page's table shows the same), whiskers to the
    furthest value within 1.5 IQR."""
    scorers = list(dict.fromkeys(g.scorer for g in dist.groups))
    groups = list(dict.fromkeys(g.group for g in dist.groups))
    values = [v for g in dist.groups for v in g.values if _finite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 0.05
    frame = _Frame(960, 420, scorers, lo - pad, hi + pad)
    title = f"Score distributions by sampling strategy ({dist.units}, {dist.n_latents} latents)"
    out = frame.axes(title, "scorer", "score")
    out += _legend([(group_label(g), GROUP_COLORS.get(g, "#555"), False) for g in groups], frame.left, 40)
    by_key = {(g.scorer, g.group): g for g in dist.groups}
    for i, scorer in enumerate(scorers):
        x0, w = frame.slot(i)
        box_w = w * 0.8 / max(1, len(groups))
        for j, group in enumerate(groups):
            g = by_key.get((scorer, group))
            if g is None or not all(_finite(x) for x in (g.q25, g.median, g.q75, g.mean)):
                continue
            v = np.asarray([x for x in g.values if _finite(x)], dtype=float)
            color = GROUP_COLORS.get(group, "#555")
            cx = x0 + w * 0.1 + box_w * (j + 0.5)
            q25, med, q75 = g.q25, g.median, g.q75
            iqr = q75 - q25
            wlo = float(v[v >= q25 - 1.5 * iqr].min())
            whi = float(v[v <= q75 + 1.5 * iqr].max())
            half = box_w * 0.38
            tip = (
                f"{scorer}, {group_label(group)}: n={g.n}, mean {short_number(g.mean)}, median {short_number(med)}, "
                f"IQR {short_number(q25)}–{short_number(q75)}"
            )
            out.append(f"<g><title>{html.escape(tip)}</title>")
            out.append(
                f'<line x1="{cx:.1f}" y1="{frame.y(wlo):.1f}" x2="{cx:.1f}" y2="{frame.y(whi):.1f}" stroke="{color}"/>'
            )
            out.append(
                f'<rect x="{cx - half:.1f}" y="{frame.y(q75):.1f}" width="{2 * half:.1f}" '
                f'height="{max(frame.y(q25) - frame.y(q75), 1):.1f}" fill="{color}" fill-opacity="0.35" stroke="{color}"/>'
            )
            out.append(
                f'<line x1="{cx - half:.1f}" y1="{frame.y(med):.1f}" x2="{cx + half:.1f}" y2="{frame.y(med):.1f}" '
                f'stroke="{color}" stroke-width="2.5"/>'
            )
            m = frame.y(g.mean)
            out.append(
                f'<path class="mean" d="M{cx:.1f},{m - 5:.1f}L{cx + 5:.1f},{m:.1f}L{cx:.1f},{m + 5:.1f}L{cx - 5:.1f},{m:.1f}Z" '
                f'fill="#fff" stroke="{color}" stroke-width="1.5"/>'
            )
            # n under the box where it fits (else left out: the table below has it)
            out.append(_label_if_room(f"n={g.n}", cx, frame.top + frame.plot_h + 30, box_w) + "</g>")
    out.append("</svg>")
    return "".join(out)


def units_svg(u: UnitComparison, heading: str) -> str:
    """Grouped bars: mean score (95% CI) per scorer of each kind of unit present, the mean written above each bar."""
    units = list(dict.fromkeys(g.group for g in u.groups))
    scorers = list(dict.fromkeys(g.scorer for g in u.groups))
    tops = [g.ci_high if _finite(g.ci_high) else g.mean for g in u.groups if _finite(g.mean)]
    lows = [g.ci_low if _finite(g.ci_low) else g.mean for g in u.groups if _finite(g.mean)]
    y_lo = min(0.0, *lows) if lows else 0.0
    y_hi = max(1e-6, *tops) * 1.12 if tops else 1.0
    frame = _Frame(960, 400, scorers, y_lo, y_hi)
    out = frame.axes(f"{heading}: mean score per scorer (95% CI)", "scorer", "mean score")
    label = {unit: f"{unit} (baseline)" if unit == "random latents" else unit for unit in units}
    out += _legend([(label[unit], UNIT_COLORS.get(unit, "#555"), False) for unit in units], frame.left, 40)
    by_key = {(g.scorer, g.group): g for g in u.groups}
    zero = frame.y(0.0)
    for i, scorer in enumerate(scorers):
        x0, w = frame.slot(i)
        bar_w = w * 0.8 / max(1, len(units))
        for j, unit in enumerate(units):
            g = by_key.get((scorer, unit))
            if g is None or not _finite(g.mean):
                continue
            color = UNIT_COLORS.get(unit, "#555")
            bx = x0 + w * 0.1 + bar_w * j
            ym = frame.y(g.mean)
            tip = f"{scorer}, {label[unit]}: mean {short_number(g.mean)} (95% CI {short_number(g.ci_low)}–{short_number(g.ci_high)}), n={g.n}"
            out.append(f"<g><title>{html.escape(tip)}</title>")
            out.append(
                f'<rect x="{bx + bar_w * 0.08:.1f}" y="{min(ym, zero):.1f}" width="{bar_w * 0.84:.1f}" '
                f'height="{max(abs(zero - ym), 1):.1f}" fill="{color}"/>'
            )
            if _finite(g.ci_low) and _finite(g.ci_high):
                out.append(_error_bar(bx + bar_w / 2, frame.y(g.ci_low), frame.y(g.ci_high), "#333"))
            above = frame.y(g.ci_high if _finite(g.ci_high) else g.mean)
            # the mean above the bar where it fits (else left out: the interactive chart has it)
            out.append(_label_if_room(short_number(g.mean), bx + bar_w / 2, min(above, ym) - 5, bar_w) + "</g>")
    out.append("</svg>")
    return "".join(out)


def decile_svg(deciles: Deciles, scorer: str) -> str:
    """Accuracy per activation decile (and on non-activating examples) of one scorer: one line per strategy,
    95% CI bars, baselines dotted."""
    curves = [c for c in deciles.curves if c.scorer == scorer]
    frame = _Frame(960, 420, list(DECILE_LABELS), 0.0, 1.05)
    out = frame.axes(f"{scorer}: accuracy per activation decile", "activation decile (10 = highest)", "accuracy")
    out += _legend(
        [(group_label(c.group), GROUP_COLORS.get(c.group, "#555"), c.group in BASELINE_GROUPS) for c in curves],
        frame.left,
        40,
    )
    for c in curves:
        color = GROUP_COLORS.get(c.group, "#555")
        dash = ' stroke-dasharray="5 4"' if c.group in BASELINE_GROUPS else ""
        points = []
        for i, acc in enumerate(c.accuracy):
            if not _finite(acc):
                points.append(None)
                continue
            x0, w = frame.slot(i)
            points.append((x0 + w / 2, frame.y(acc)))
        path, pen = [], "M"
        for p in points:
            if p is None:
                pen = "M"
                continue
            path.append(f"{pen}{p[0]:.1f},{p[1]:.1f}")
            pen = "L"
        if path:
            out.append(f'<path d="{"".join(path)}" stroke="{color}" stroke-width="2" fill="none"{dash}/>')
        for i, p in enumerate(points):
            if p is None:
                continue
            lo, hi = c.ci_low[i], c.ci_high[i]
            if _finite(lo) and _finite(hi):
                out.append(_error_bar(p[0], frame.y(lo), frame.y(hi), color))
            tip = (
                f"{group_label(c.group)}, decile {DECILE_LABELS[i]}: {c.accuracy[i]:.3f} "
                f"({c.n_examples[i]} examples, {c.n_explanations[i]} explanations)"
            )
            out.append(
                f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="4" fill="{color}"><title>{html.escape(tip)}</title></circle>'
            )
    out.append("</svg>")
    return "".join(out)


# colour scales as (position, (r, g, b)) stops
VIRIDIS = (
    (0.0, (68, 1, 84)),
    (0.25, (59, 82, 139)),
    (0.5, (33, 145, 140)),
    (0.75, (94, 201, 98)),
    (1.0, (253, 231, 37)),
)
DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))  # blue - white - red


def scale_color(t: float, stops=VIRIDIS) -> str:
    """The colour at `t` in [0, 1] (clipped) of a scale given by stops, as `#rrggbb`."""
    t = min(max(float(t), 0.0), 1.0)
    for (p0, c0), (p1, c1) in zip(stops[:-1], stops[1:], strict=True):
        if t <= p1:
            f = (t - p0) / (p1 - p0) if p1 > p0 else 0.0
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1, strict=True))
    return "#" + "".join(f"{v:02x}" for v in stops[-1][1])


def _ink(color: str) -> str:
    """Black or white text, whichever reads on `color`."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def heatmap_svg(
    labels: list[str],
    values: np.ndarray,
    *,
    title: str,
    zmin: float,
    zmax: float,
    stops=VIRIDIS,
    cell_text: Callable[[int, int], str] | None = None,
    cell_tip: Callable[[int, int], str] | None = None,
    colorbar_title: str = "",
    colorbar_marks: Sequence[tuple[float, str]] = (),
    axis_label: str = "",
) -> str:
    """A square heatmap of `values: [n, n]` (rows top to bottom, NaN cells blank) with a colour bar.

    `cell_text(i, j)` is written in the cell (multi-line with `\\n`; NaN cells too, on grey), `cell_tip(i, j)` is its
    hover text; `colorbar_marks` are `(value, label)` lines on the colour bar (e.g. the chance level).
    """
    esc = html.escape
    m = np.asarray(values, dtype=float)
    n = len(labels)
    left, top, cell = 70, 40, min(90, 420 // max(1, n))
    size = cell * n
    bar_x = left + size + 24
    width, height = bar_x + 150, top + size + 50
    out = [
        f'<svg viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(title)}">',
        _SVG_STYLE,
        f'<text class="t" x="{left}" y="20">{esc(title)}</text>',
    ]
    span = zmax - zmin or 1.0
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            x, y = left + j * cell, top + i * cell
            known = math.isfinite(v)
            if not known and cell_text is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="#f4f4f4" stroke="#fff"/>')
                continue
            color = scale_color((v - zmin) / span, stops) if known else "#f4f4f4"
            tip = cell_tip(i, j) if cell_tip else f"{labels[i]} × {labels[j]}: {short_number(v)}"
            out.append(
                f'<g><title>{esc(tip)}</title><rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{color}" stroke="#fff"/>'
            )
            text = cell_text(i, j) if cell_text else f"{v:.3f}"
            lines = text.split("\n")
            for k, line in enumerate(lines):
                ty = y + cell / 2 + (k - (len(lines) - 1) / 2) * 13 + 4
                out.append(
                    f'<text class="c" x="{x + cell / 2}" y="{ty:.1f}" text-anchor="middle" style="fill:{_ink(color)}">'
                    f"{esc(line)}</text>"
                )
            out.append("</g>")
    for i, label in enumerate(labels):
        out.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">{esc(label)}</text>')
        out.append(
            f'<text x="{left + i * cell + cell / 2}" y="{top + size + 16}" text-anchor="middle">{esc(label)}</text>'
        )
    if axis_label:
        out.append(f'<text x="{left + size / 2}" y="{top + size + 38}" text-anchor="middle">{esc(axis_label)}</text>')
    # colour bar: 20 bands, top = zmax
    bands = 20
    for b in range(bands):
        t = 1 - (b + 0.5) / bands
        out.append(
            f'<rect x="{bar_x}" y="{top + b * size / bands:.1f}" width="16" height="{size / bands + 0.5:.1f}" '
            f'fill="{scale_color(t, stops)}"/>'
        )

    def bar_y(v: float) -> float:
        return top + (1 - (v - zmin) / span) * size

    out.append(f'<text x="{bar_x}" y="{top - 8}">{esc(colorbar_title)}</text>')
    marks = list(colorbar_marks)
    for t in nice_ticks(zmin, zmax, 4):
        if all(abs(t - v) > span / 12 for v, _ in marks):
            out.append(f'<text x="{bar_x + 22}" y="{bar_y(t) + 4:.1f}">{esc(short_number(t))}</text>')
    for v, label in marks:
        out.append(
            f'<line x1="{bar_x - 4}" y1="{bar_y(v):.1f}" x2="{bar_x + 20}" y2="{bar_y(v):.1f}" stroke="#d00" stroke-width="2"/>'
            f'<text x="{bar_x + 22}" y="{bar_y(v) + 4:.1f}" style="fill:#b00">{esc(label)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def spearman_svg(m: SpearmanMatrix) -> str:
    """Spearman's rho between scorers, each cell with rho, its 95% CI and n (blue negative, red positive)."""
    rho = np.asarray(m.rho, dtype=float)

    def text(i: int, j: int) -> str:
        if i == j:
            return "1"
        if math.isnan(rho[i, j]):
            return f"n={m.n[i][j]}\n(too few)"
        return f"{rho[i, j]:.2f}\n[{m.ci_low[i][j]:.2f}, {m.ci_high[i][j]:.2f}]\nn={m.n[i][j]}"

    shown = rho.copy()
    np.fill_diagonal(shown, 1.0)
    return heatmap_svg(
        list(m.scorers),
        shown,
        title=f"Scorer agreement: Spearman rho ({m.ci_method} 95% CI), {m.n_latents} latents",
        zmin=-1.0,
        zmax=1.0,
        stops=DIVERGING,
        cell_text=text,
        cell_tip=lambda i, j: f"{m.scorers[i]} × {m.scorers[j]}: " + text(i, j).replace("\n", " "),
        colorbar_title="rho",
    )


def overlap_svg(layers: list[int], mat: np.ndarray, title: str, chance: float | None = None) -> str:
    """Layer x layer overlap `mat: [n, n]`, diagonal blank, colours over the off-diagonal values
    (`core.analysis.figures.heatmap_range`), the chance level marked on the colour bar."""
    m = np.array(mat, dtype=float)
    np.fill_diagonal(m, np.nan)
    zmin, zmax = heatmap_range(m, chance)
    labels = [f"L{layer}" for layer in layers]
    return heatmap_svg(
        labels,
        m,
        title=title,
        zmin=zmin,
        zmax=zmax,
        colorbar_title="overlap",
        colorbar_marks=[(chance, f"chance {chance:.3f}")] if chance is not None else [],
        axis_label="layer",
    )


def similarity_histogram_svg(similarity: np.ndarray, title: str) -> str:
    """Histogram of matched pairs' similarities `[n_matched]` (50 bins)."""
    s = np.asarray(similarity, dtype=float)
    s = s[np.isfinite(s)]
    counts, edges = np.histogram(s, bins=50) if len(s) else (np.zeros(0), np.zeros(0))
    return histogram_svg(
        edges, counts, title=title, x_label="similarity of matched pair", y_label="pairs", color="#1f77b4", unit="pairs"
    )


def interactive_charts() -> bool:
    """The sidebar's "Interactive charts" toggle, off by default; its choice holds on every page of the session."""
    on = st.sidebar.toggle(
        "Interactive charts",
        value=bool(st.session_state.get(INTERACTIVE_KEY, False)),
        help="Draw the charts with plotly (zoom, pan, hover). Off: the same charts as images, which load faster.",
    )
    st.session_state[INTERACTIVE_KEY] = on  # a plain key: a widget's own key is dropped on pages without it
    return on


def show_chart(
    svg: Callable[[], str],
    summary: str,
    plotly_figure: Callable[[], object],
    interactive: bool,
    container=st,
    max_width: int = 1100,
) -> None:
    """Draw one chart in `container`: the plotly figure when `interactive`, else the SVG image (at most `max_width`
    pixels wide) with `summary` on hover."""
    if interactive:
        container.plotly_chart(plotly_figure(), width="stretch")
    else:
        image = svg_image(svg(), summary)
        container.html(CHART_CSS + f'<div class="analysischart" style="max-width:{max_width}px">{image}</div>')
