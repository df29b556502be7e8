"""The Scores, Deciles and Overlap pages (AppTest) on a small synthetic workspace, and without data."""

from __future__ import annotations

from pathlib import Path

import analysis_workspace
import pytest
from hostile_text import shown
from page_charts import chart_count, chart_svgs
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
SCORES, DECILES, OVERLAP = (str(ROOT / "pages" / n) for n in ("2_Scores.py", "3_Deciles.py", "4_Overlap.py"))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    """A synthetic workspace with scores, overlaps and stored analyses."""
    from core.analysis import analyses as analysis

    ws = analysis_workspace.build(tmp_path_factory.mktemp("pages") / "ws.duckdb")
    analysis.analyze_workspace(ws)
    return ws


def _page(path: str, ws: Path | str) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    return at.run()


def _texts(at: AppTest) -> str:
    """What the page's messages display (their Markdown sources with ui.text.literal's escapes decoded)."""
    return shown(
        " ".join(str(x.value) for x in list(at.info) + list(at.warning) + list(at.caption) + list(at.markdown))
    )


def test_scores_page_shows_distributions_units_and_spearman(analysed):
    at = _page(SCORES, analysed)
    assert not at.exception
    svgs = chart_svgs(at)
    assert len(svgs) == 3 and not at.get("plotly_chart")  # images by default: no plotly bundle for the browser
    assert "Score distributions by sampling strategy" in svgs[0] and "Spearman rho" in svgs[2]
    groups = set(at.dataframe[0].value["group"])
    assert {"top", "random", "quantile", "random explanation (baseline)", "random latent (baseline)"} <= groups
    assert "baseline:token-stats (baseline)" in _texts(at)  # provenance, baselines labelled
    contrasts = at.dataframe[1].value
    assert set(contrasts["contrast"]) == {"random − top", "quantile − top"}


def test_deciles_page_switches_scorer(analysed):
    at = _page(DECILES, analysed)
    assert not at.exception
    assert at.selectbox[0].options == ["detection", "fuzzing"]
    table = at.dataframe[0].value.set_index("group")
    assert table.loc["top", "1"] == 0.0 and table.loc["top", "10"] == 1.0 and table.loc["random", "1"] == 1.0
    assert "detection: accuracy per activation decile" in chart_svgs(at)[0]
    at.selectbox[0].select("fuzzing").run()
    assert not at.exception and len(chart_svgs(at)) == 1 and "fuzzing: accuracy" in chart_svgs(at)[0]
    assert "embedding" in _texts(at)  # continuous scorer listed as not shown


def test_overlap_page_heatmaps_and_matched_pairs(analysed):
    at = _page(OVERLAP, analysed)
    assert not at.exception
    assert len(chart_svgs(at)) == 3  # resid and transcoder heatmaps + pair histogram
    at.selectbox[0].select("transcoder").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["latent_a", "explanation_a", "similarity", "latent_b", "explanation_b"]
    assert len(table) == 48 and table["similarity"].is_monotonic_decreasing
    explained = table["explanation_a"] != ""  # 12 of the 48 latents have explanations
    assert explained.sum() == 12
    assert (
        table.loc[explained, "explanation_a"].str.contains("<b>").all()
    )  # shown as text in a dataframe, never rendered as HTML
    at.radio[0].set_value("explanation").run()
    assert not at.exception
    assert "baseline:token-stats" in _texts(at)
    table = at.dataframe[0].value
    assert len(table) == 12  # one explanation per explained latent


def test_pages_before_analyses_offer_to_compute_them(tmp_path):
    ws = analysis_workspace.build(tmp_path / "fresh.duckdb", overlaps=False)
    at = _page(SCORES, ws)
    assert not at.exception
    assert "python -m core analyze" in _texts(at)
    at.button(key="compute_analyses").click().run()
    assert not at.exception
    assert chart_count(at) == 3
    at = _page(OVERLAP, ws)
    assert not at.exception
    assert "python -m core overlap" in _texts(at)
    at.button[0].click().run()  # no dictionary weights for this workspace: explanation overlap only, and says so
    assert not at.exception
    assert chart_count(at) >= 2


@pytest.mark.parametrize("page", [SCORES, DECILES, OVERLAP])
def test_pages_without_data_say_which_command_fills_them(tmp_path, page):
    from core import store

    at = _page(page, tmp_path / "missing.duckdb")
    assert not at.exception and "does not exist" in _texts(at)
    empty = tmp_path / "empty.duckdb"
    with store.session(empty, write=True):
        pass
    at = _page(page, empty)
    assert not at.exception
    assert "python -m core explain" in _texts(at) or "python -m core overlap" in _texts(at)


def test_a_workspace_made_by_older_code_can_be_upgraded_from_the_page(tmp_path):
    from core import store

    old = tmp_path / "old.duckdb"
    with store.session(old, write=True) as con:  # as if made before the analysis tables existed
        con.execute("DELETE FROM schema_migrations WHERE version = 4")
        for table in ("analysis_results", "overlap_results", "overlap_pairs"):
            con.execute(f"DROP TABLE {table}")
    at = _page(OVERLAP, old)
    assert not at.exception
    assert "this code needs v" in " ".join(w.value for w in at.warning)
    at.button(key="upgrade_workspace").click().run()
    assert not at.exception
    assert "python -m core overlap" in _texts(at)  # upgraded: now it says which command fills the page
