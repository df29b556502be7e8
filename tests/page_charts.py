"""The analysis pages' charts as AppTest sees them: SVG images by default (ui.analysis_charts), plotly on request."""

from __future__ import annotations

import re
from urllib.parse import unquote

from streamlit.testing.v1 import AppTest

_IMG = re.compile(r'src="data:image/svg\+xml;charset=utf-8,([^"]+)"')


def chart_svgs(at: AppTest) -> list[str]:
    """The SVG source of every analysis chart the page drew as an image (`show_chart`), in page order."""
    return [
        unquote(m.group(1))
        for h in at.get("html")
        if 'class="analysischart"' in h.proto.body
        for m in _IMG.finditer(h.proto.body)
    ]


def chart_count(at: AppTest) -> int:
    """How many analysis charts the page drew, as images or as plotly charts."""
    return len(chart_svgs(at)) + len(at.get("plotly_chart"))
