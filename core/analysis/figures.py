"""Plotly figures of the analyses, shared by the app's pages and `python -m core report`.

Each function takes a result of `core.analysis.analyses` / `core.analysis.overlap` and returns a `plotly.graph_objects.Figure`;
baselines are drawn grey and labelled "(baseline)". No Streamlit here.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from core.analysis.analyses import BASELINE_GROUPS, DecileCurve, Deciles, Distributions, SpearmanMatrix, UnitComparison

DECILE_LABELS = ["non-act."] + [str(d) for d in range(1, 11)]
GROUP_COLORS = {
    "top": "#1f77b4",
    "random": "#ff7f0e",
    "quantile": "#2ca02c",
    "random-explanation": "#7f7f7f",
    "random-latent": "#bdbdbd",
}
UNIT_COLORS = {"latents": "#1f77b4", "neurons": "#d62728", "top-k neurons": "#ff9896", "random latents": "#bdbdbd"}


def group_label(group: str) -> str:
    """How a strategy or baseline is named in legends: baselines say so."""
    return f"{group.replace('-', ' ')} (baseline)" if group in BASELINE_GROUPS else group


def _nan_none(values) -> list:
    return [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in values]


def distributions_figure(dist: Distributions, scorers: list[str] | None = None) -> go.Figure:
    """Box plots of score values per scorer (x) and strategy/baseline (colour), means marked."""
    fig = go.Figure()
    groups = list(dict.fromkeys(g.group for g in dist.groups))
    for group in groups:
        rows = [g for g in dist.groups if g.group == group and (scorers is None or g.scorer in scorers)]
        x = [g.scorer for g in rows for _ in g.values]
        y = [v for g in rows for v in g.values]
        fig.add_trace(
            go.Box(
                x=x, y=y, name=group_label(group), boxmean=True, marker_color=GROUP_COLORS.get(group), boxpoints=False
            )
        )
    fig.update_layout(
        boxmode="group",
        yaxis_title="score",
        xaxis_title="scorer",
        legend_title="sampling / baseline",
        title=f"Score distributions by sampling strategy ({dist.units}, {dist.n_latents} latents)",
    )
    return fig


def decile_figure(deciles: Deciles, scorer: str) -> go.Figure:
    """Accuracy per activation decile (and on non-activating examples) of one scorer, one line per strategy, 95% CI bars."""
    fig = go.Figure()
    curves: list[DecileCurve] = [c for c in deciles.curves if c.scorer == scorer]
    for c in curves:
        acc = np.asarray(c.accuracy, dtype=float)
        hi = np.asarray(c.ci_high, dtype=float) - acc
        lo = acc - np.asarray(c.ci_low, dtype=float)
        fig.add_trace(
            go.Scatter(
                x=DECILE_LABELS,
                y=_nan_none(acc.tolist()),
                mode="lines+markers",
                name=group_label(c.group),
                line={"color": GROUP_COLORS.get(c.group), "dash": "dot" if c.group in BASELINE_GROUPS else "solid"},
                error_y={
                    "type": "data",
                    "array": _nan_none(hi.tolist()),
                    "arrayminus": _nan_none(lo.tolist()),
                    "visible": True,
                },
                customdata=np.stack([c.n_examples, c.n_explanations], axis=1),
                hovertemplate="decile %{x}: %{y:.3f}<br>%{customdata[0]} examples, %{customdata[1]} explanations<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"{scorer}: accuracy per activation decile",
        xaxis_title="activation decile (10 = highest)",
        xaxis_type="category",  # labels in order, "non-act." included (as numbers, plotly dropped it)
        yaxis_title="accuracy",
        yaxis_range=[0, 1.05],
        legend_title="sampling",
    )
    return fig


def spearman_figure(m: SpearmanMatrix) -> go.Figure:
    """Heatmap of Spearman's rho between scorers; each cell says rho, its 95% CI and n."""
    rho = np.asarray(m.rho, dtype=float)
    text = [
        [
            "1"
            if i == j
            else (
                f"{rho[i, j]:.2f}<br>[{m.ci_low[i][j]:.2f}, {m.ci_high[i][j]:.2f}]<br>n={m.n[i][j]}"
                if not math.isnan(rho[i, j])
                else f"n={m.n[i][j]}<br>(too few)"
            )
            for j in range(len(m.scorers))
        ]
        for i in range(len(m.scorers))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=_nan_none_2d(rho),
            x=m.scorers,
            y=m.scorers,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            text=text,
            texttemplate="%{text}",
            hoverinfo="text",
            colorbar={"title": "rho"},
        )
    )
    fig.update_layout(
        title=f"Scorer agreement: Spearman rho ({m.ci_method} 95% CI), {m.n_latents} latents",
        yaxis_autorange="reversed",
    )
    return fig


def _nan_none_2d(mat: np.ndarray) -> list:
    return [_nan_none(row) for row in np.asarray(mat, dtype=float).tolist()]


def units_heading(u: UnitComparison) -> str:
    """What `units_figure(u)` compares, from the groups present, e.g. "Latents vs random latents (baseline)"."""
    present = [
        f"{unit} (baseline)" if unit == "random latents" else unit for unit in dict.fromkeys(g.group for g in u.groups)
    ]
    return " vs ".join(present).capitalize() if present else "No units scored"


def units_figure(u: UnitComparison) -> go.Figure:
    """Mean score (95% CI) per scorer of each kind of unit present: SAE latents, neurons, top-k neurons, random latents."""
    fig = go.Figure()
    for unit in dict.fromkeys(g.group for g in u.groups):
        rows = [g for g in u.groups if g.group == unit]
        fig.add_trace(
            go.Bar(
                x=[g.scorer for g in rows],
                y=[g.mean for g in rows],
                name=f"{unit} (baseline)" if unit == "random latents" else unit,
                marker_color=UNIT_COLORS.get(unit),
                error_y={
                    "type": "data",
                    "array": _nan_none([g.ci_high - g.mean for g in rows]),
                    "arrayminus": _nan_none([g.mean - g.ci_low for g in rows]),
                },
                customdata=[g.n for g in rows],
                hovertemplate="%{x}: %{y:.3f} (n=%{customdata})<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group", title=f"{units_heading(u)}: mean score per scorer (95% CI)", yaxis_title="mean score"
    )
    return fig


def heatmap_range(mat: np.ndarray, chance: float | None = None) -> tuple[float, float]:
    """(zmin, zmax) of an overlap heatmap `mat: [n, n]`: the finite off-diagonal values (and `chance`, if given).

    The diagonal (a layer with itself, always 1) is left out so that differences between other layers show;
    (0, 1) when no off-diagonal value is known.
    """
    m = np.asarray(mat, dtype=float)
    off = m[~np.eye(len(m), dtype=bool)] if m.size else m.ravel()
    values = [float(v) for v in off if not math.isnan(v)] + ([float(chance)] if chance is not None else [])
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi - lo < 1e-6:  # one value: a small band around it, so the colour scale still has a range
        lo, hi = lo - 0.05, hi + 0.05
    return lo, hi


def overlap_heatmap(layers: list[int], mat: np.ndarray, title: str, chance: float | None = None) -> go.Figure:
    """Layer x layer heatmap of an overlap score `mat: [n, n]`; blank on the diagonal and where not computed.

    The colour scale spans the off-diagonal values (see `heatmap_range`); `chance`, the score two dictionaries
    of random directions reach, is marked on the colour bar.
    """
    labels = [f"L{layer}" for layer in layers]
    m = np.array(mat, dtype=float)
    np.fill_diagonal(m, np.nan)  # a layer with itself is 1 by definition: drawn, it would squash the scale
    zmin, zmax = heatmap_range(m, chance)
    text = [["" if math.isnan(v) else f"{v:.3f}" for v in row] for row in m.tolist()]
    colorbar: dict = {"title": "overlap"}
    if chance is not None:
        ticks = [float(v) for v in np.linspace(zmin, zmax, 5)]
        ticks = [t for t in ticks if abs(t - chance) > (zmax - zmin) / 10]
        colorbar.update(tickvals=[*ticks, chance], ticktext=[f"{t:.2f}" for t in ticks] + [f"chance {chance:.3f}"])
    fig = go.Figure(
        go.Heatmap(
            z=_nan_none_2d(m),
            x=labels,
            y=labels,
            zmin=zmin,
            zmax=zmax,
            colorscale="Viridis",
            text=text,
            texttemplate="%{text}",
            hoverongaps=False,
            colorbar=colorbar,
        )
    )
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="layer", yaxis_autorange="reversed")
    return fig


def pair_similarity_histogram(similarity: np.ndarray, title: str) -> go.Figure:
    """Histogram of matched pairs' similarities `[n_matched]`."""
    fig = go.Figure(go.Histogram(x=np.asarray(similarity, dtype=float), nbinsx=50))
    fig.update_layout(title=title, xaxis_title="similarity of matched pair", yaxis_title="pairs")
    return fig
