"""ui.tokens: token highlighting escapes every text and shades by activation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ui.tokens import activation_levels, highlight_html


def test_highlight_escapes_tokens():
    probe = '<img src=x onerror=alert(1)>"'
    out = highlight_html(["a", probe, " b"], np.array([0.0, 2.0, 1.0]), scale=2.0, center=1)
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;&quot;" in out
    assert re.findall(r'title="([^"]*)"', out) == ["0", "2", "1"]  # the activation on hover
    assert out.count('class="tok act') == 2 and out.count(' c"') == 1


def test_shade_levels_follow_the_activation():
    values = np.array([0.0, 0.5, 1.0, 3.0, -1.0, 1e-6])
    levels = activation_levels(values, scale=1.0)
    assert levels.tolist() == [0, 5, 10, 10, 10, 1]  # clipped at the scale; a tiny activation is still marked
    out = highlight_html(list("abcdef"), values, scale=1.0)
    assert re.findall(r'class="([^"]*)"', out) == [
        "tok",
        "tok act p5",
        "tok act p10",
        "tok act p10",
        "tok act n10",
        "tok act p1",
    ]
    with pytest.raises(ValueError, match="2 tokens but 3"):
        highlight_html(["a", "b"], np.zeros(3), 1.0)
