"""The analysis pages' SVG charts (ui.analysis_charts): one mark per value, gaps where no value, escaped labels."""

from __future__ import annotations

import math
import re

import numpy as np

from core.analysis.analyses import (
    DecileCurve,
    Deciles,
    Distributions,
    GroupSummary,
    SpearmanMatrix,
    UnitComparison,
    summarise,
)
from ui.analysis_charts import (
    DIVERGING,
    decile_svg,
    distributions_svg,
    heatmap_svg,
    overlap_svg,
    scale_color,
    spearman_svg,
    units_svg,
)

HOSTILE = "<img src=x onerror=alert(1)>"
VALUE_LABEL = r'<text class="c"[^>]*>{}</text>'  # a value written on a bar (not an axis tick)


def _group(scorer: str, group: str, values: list[float]) -> GroupSummary:
    return summarise(scorer, group, np.asarray(values))


def test_distributions_draw_one_box_and_mean_per_scorer_and_group_and_escape_labels():
    rng = np.random.default_rng(0)
    groups = [
        _group(s, g, rng.uniform(0, 1, 40).tolist())
        for s in ("detection", HOSTILE)
        for g in ("top", "random", "random-explanation")
    ]
    groups.append(_group("fuzzing", "top", [0.5, 0.6, 0.7, 5.0]))  # 5.0: beyond 1.5 IQR, outside the whisker
    svg = distributions_svg(Distributions(groups, [], 10, "latents"))
    assert svg.count('fill-opacity="0.35"') == 7 and svg.count('class="mean"') == 7
    assert HOSTILE not in svg and html_escaped(HOSTILE) in svg
    assert "random explanation (baseline)" in svg and svg.count(">n=40<") == 6 and "n=4<" in svg
    box = re.findall(r"<title>fuzzing, top: n=4, mean ([\d.]+), median ([\d.]+)", svg)
    assert box == [("1.7", "0.65")]


def test_decile_lines_break_where_a_decile_has_no_example_and_baselines_are_dashed():
    acc = [0.9, 0.1, 0.2, math.nan, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    curves = [
        DecileCurve("detection", "top", acc, [a - 0.05 for a in acc], [a + 0.05 for a in acc], [5] * 11, [2] * 11),
        DecileCurve("detection", "random-explanation", [0.5] * 11, [0.4] * 11, [0.6] * 11, [5] * 11, [2] * 11),
        DecileCurve("fuzzing", "top", [0.5] * 11, [0.4] * 11, [0.6] * 11, [5] * 11, [2] * 11),
    ]
    svg = decile_svg(Deciles(curves, [], 3, "latents"), "detection")
    paths = re.findall(r'<path d="(M[^"]*)" stroke="[^"]+" stroke-width="2" fill="none"( stroke-dasharray)?', svg)
    assert len(paths) == 2
    (top, top_dash), (base, base_dash) = paths
    assert top.count("M") == 2 and top.count("L") == 8 and not top_dash  # 10 points in two runs around the gap
    assert base.count("M") == 1 and base_dash
    assert svg.count("<circle") == 10 + 11
    assert "top, decile 10: 1.000 (5 examples, 2 explanations)" in svg and "fuzzing" not in svg


def test_units_bars_have_their_means_and_label_the_baseline():
    groups = [_group(s, u, [0.2, 0.4]) for s in ("detection", "fuzzing") for u in ("latents", "random latents")]
    svg = units_svg(UnitComparison(groups, []), "Latents vs random latents (baseline)")
    assert svg.count('<rect x="') == 4 and len(re.findall(VALUE_LABEL.format("0.3"), svg)) == 4
    assert "random latents (baseline)" in svg


def test_heatmaps_leave_unknown_cells_blank_and_mark_chance():
    mat = np.array([[1.0, 0.42, math.nan], [0.42, 1.0, 0.55], [math.nan, 0.55, 1.0]])
    svg = overlap_svg([0, 1, 2], mat, HOSTILE, chance=0.21)
    assert svg.count('fill="#f4f4f4"') == 5  # the diagonal and the pair never computed
    assert ">0.420<" in svg and ">0.550<" in svg and ">chance 0.210<" in svg and HOSTILE not in svg
    assert mat[0, 0] == 1.0  # the caller's matrix is left as it was
    # the colour scale spans the off-diagonal values and chance: 0.55 is the top colour, chance the bottom
    assert 'fill="#fde725"' in svg and scale_color(0.0) == "#440154" and scale_color(2.0) == "#fde725"
    assert scale_color(0.5, DIVERGING) == "#f7f7f7"
    one = heatmap_svg(["a"], np.array([[math.nan]]), title="t", zmin=0, zmax=1)
    assert one.count("<rect") == 1 + 20  # one blank cell and the colour bar


def test_spearman_cells_say_rho_ci_and_n():
    m = SpearmanMatrix(
        ["detection", "fuzzing"],
        [[1.0, 0.5], [0.5, 1.0]],
        [[1.0, 0.3], [0.3, 1.0]],
        [[1.0, 0.7], [0.7, 1.0]],
        [[9, 9], [9, 9]],
        "fisher",
        9,
        "latents",
    )
    svg = spearman_svg(m)
    assert svg.count(">0.50<") == 2 and svg.count(">[0.30, 0.70]<") == 2 and svg.count(">n=9<") == 2
    m.rho[0][1] = m.rho[1][0] = math.nan
    assert spearman_svg(m).count(">(too few)<") == 2


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_labels_that_would_overlap_are_left_out():
    """Eight scorers x five groups: boxes too narrow for their n under them; bars too narrow for their means."""
    rng = np.random.default_rng(1)
    scorers = [f"scorer{i}" for i in range(8)]
    groups = ["top", "random", "quantile", "random-explanation", "random-latent"]
    dist = Distributions([_group(s, g, rng.uniform(0, 1, 6150).tolist()) for s in scorers for g in groups], [], 9, "x")
    svg = distributions_svg(dist)
    assert svg.count('class="mean"') == 40 and ">n=6150<" not in svg
    units = UnitComparison(
        [_group(s, u, [0.2, 0.4]) for s in scorers for u in ("latents", "neurons", "top-k neurons")], []
    )
    assert len(re.findall(VALUE_LABEL.format("0.3"), units_svg(units, "x"))) == 24  # 3 bars of 29 px: room for "0.3"
    units = UnitComparison(
        [
            _group(s, u, [0.2, 0.4512])
            for s in scorers
            for u in ("latents", "neurons", "top-k neurons", "random latents")
        ],
        [],
    )
    assert ">0.326</text>" not in units_svg(units, "x")  # 22 px bars: no room for "0.326"


def test_numpy_float32_values_are_drawn_like_floats():
    acc = list(np.linspace(0.1, 1.0, 11, dtype=np.float32))
    curve = DecileCurve("detection", "top", acc, [a - 0.05 for a in acc], [a + 0.05 for a in acc], [5] * 11, [2] * 11)
    assert decile_svg(Deciles([curve], [], 1, "latents"), "detection").count("<circle") == 11
    g = _group("detection", "latents", [0.2, 0.4])
    g.mean, g.ci_low, g.ci_high = np.float32(0.3), np.float32(0.25), np.float32(0.35)
    assert units_svg(UnitComparison([g], []), "x").count('<rect x="') == 1


def test_interactive_decile_chart_keeps_the_non_activating_point():
    """Plotly read the labels "1".."10" as numbers and left "non-act." off its axis; a category axis keeps all 11."""
    from core.analysis.figures import decile_figure

    curve = DecileCurve("detection", "top", [0.9] + [0.5] * 10, [0.8] * 11, [1.0] * 11, [5] * 11, [2] * 11)
    fig = decile_figure(Deciles([curve], [], 1, "latents"), "detection")
    assert fig.layout.xaxis.type == "category" and list(fig.data[0].x)[0] == "non-act." and len(fig.data[0].x) == 11
