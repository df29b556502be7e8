"""The landing page, driven by Streamlit's AppTest on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.paths import DEFAULT_DIR

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_landing_page_shows_the_default_and_its_figures():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    evaluation = json.loads((DEFAULT_DIR / "evaluation.json").read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["IOI accuracy"] == f"{evaluation['ioi_accuracy']:.3f}"
    assert metrics["brackets accuracy"] == f"{evaluation['bracket_accuracy']:.3f}"
    table = at.dataframe[0].value
    assert len(table) == len(evaluation["dictionaries"])
    assert "transcoder:blocks.0.ln2.hook_normalized" in set(table["id"])


def test_landing_page_explains_a_missing_default(tmp_path, monkeypatch):
    monkeypatch.setattr("core.paths.DEFAULT_DIR", tmp_path)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("build-default" in e.value for e in at.error)
