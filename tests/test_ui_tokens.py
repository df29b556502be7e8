"""ui.tokens: token highlighting escapes every text and shades by activation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ui.tokens import activation_alpha, highlight_html


def test_highlight_escapes_tokens_and_titles():
    probe = '<img src=x onerror=alert(1)>"'
    out = highlight_html(["a", probe, " b"], np.array([0.0, 2.0, 1.0]), scale=2.0, center=1)
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;&quot;" in out
    titles = re.findall(r'title="([^"]*)"', out)
    assert len(titles) == 3 and titles[1].endswith(
        ": 2"
    )  # quotes inside the title are escaped, so it parses as one attribute
    assert out.count('class="tok act"') == 2 and out.count("text-decoration: underline") == 1


def test_shading_is_proportional_to_activation():
    values = np.array([0.0, 0.5, 1.0, 3.0, -1.0])
    alpha = activation_alpha(values, scale=1.0)
    np.testing.assert_allclose(alpha, [0.0, 0.425, 0.85, 0.85, 0.85])
    out = highlight_html(list("abcde"), values, scale=1.0)
    shades = [float(a) for a in re.findall(r"rgba\(\d+, \d+, \d+, ([0-9.]+)\)", out)]
    np.testing.assert_allclose(shades, alpha, atol=0.006)  # written with 2 decimals
    assert "rgba(30, 136, 229" in out  # negative values use the other colour
    with pytest.raises(ValueError, match="2 tokens but 3"):
        highlight_html(["a", "b"], np.zeros(3), 1.0)
