"""Inline SVG histograms (ui.svg_charts): bars, ticks, marker and escaping."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ui.svg_charts import histogram_svg, nice_ticks, side_by_side


def test_nice_ticks_are_round_and_inside_the_range():
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(-4.3, -0.2) == [-4, -3, -2, -1]
    assert nice_ticks(0.013, 0.087, 4) == pytest.approx([0.02, 0.04, 0.06, 0.08])
    assert nice_ticks(3, 3) == [3] and nice_ticks(float("nan"), 1) == []


def test_histogram_draws_a_bar_per_non_empty_bin_with_its_value_on_hover():
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    svg = histogram_svg(
        edges, np.array([5, 0, 12, 1]), title="t", x_label="activation", y_label="tokens", color="red", unit="tokens"
    )
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg)
    assert len(bars) == 3
    heights = [float(h) for *_, h in bars]
    assert heights[1] == max(heights) and heights[1] == pytest.approx(12 * heights[2], rel=0.02)  # 12 vs 1
    assert "<title>2 – 3: 12 tokens</title>" in svg and "0 – 1: 5 tokens" in svg
    xs = [float(x) for x, *_ in bars]
    assert xs == sorted(xs)  # bins left to right
    assert 'class="marker"' not in svg


def test_histogram_marker_widens_the_axis_and_text_is_escaped():
    hostile = "<script>alert(1)</script> & **bold**"
    svg = histogram_svg(
        np.linspace(-3, -1, 5),
        np.ones(4),
        title=hostile,
        x_label=hostile,
        y_label="n",
        color="blue",
        marker=-0.5,
        marker_label=hostile,
        marker_color="orange",
    )
    assert "<script>" not in svg and html_escaped(hostile) in svg
    marker = re.search(r'<line class="marker" x1="([\d.]+)"[^>]*stroke="orange"', svg)
    right_edge = max(float(x) + float(w) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg))
    assert marker and float(marker.group(1)) > right_edge  # the marker lies beyond the last bin, inside the plot


def test_empty_histogram_says_no_data():
    svg = histogram_svg(np.zeros(0), np.zeros(0), title="Density", x_label="x", y_label="y", color="blue")
    assert "no data" in svg and "<rect" not in svg


def test_side_by_side_shows_each_chart_as_an_image_with_its_summary():
    from urllib.parse import unquote

    svg = histogram_svg(np.arange(3.0), np.array([1, 2]), title="a", x_label="x", y_label="y", color="red")
    page = side_by_side((svg, 'summary "one" <b>'), (svg, "two"))
    images = re.findall(r'<img src="data:image/svg\+xml;charset=utf-8,([^"]+)" alt="([^"]*)" title="([^"]*)">', page)
    assert len(images) == 2 and unquote(images[0][0]) == svg  # the SVG itself, percent-encoded
    assert images[0][1] == images[0][2] == "summary &quot;one&quot; &lt;b&gt;"


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)
