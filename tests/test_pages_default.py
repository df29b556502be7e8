"""Every page through AppTest on a workspace of the embedded default model, filled by the real commands.

The workspace is made as a user makes one: `python -m core cache` (two residual SAEs of the default
model and the neuron baselines of their layers, 4k tokens), `explain` and `score` with the offline
explainer and judges for two sampling strategies, and `report` (analyses and layer overlap). Each
page must run without an exception and show that workspace's content.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from page_charts import chart_count
from streamlit.testing.v1 import AppTest

from core import store
from core.cli import main as core_main

ROOT = Path(__file__).resolve().parent.parent
DICTS = ["resid:blocks.1.hook_resid_pre", "resid:blocks.2.hook_resid_pre"]


def run(*argv: str) -> None:
    assert core_main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def default_ws(tmp_path_factory) -> Path:
    """A 4k-token workspace of the default model, explained and scored by two strategies, with a report."""
    d = tmp_path_factory.mktemp("default-pages")
    ws = str(d / "ws.duckdb")
    run("cache", "--model", "default", "--tokens", "4096", "--workspace", ws, "--dictionaries", *DICTS)
    for strategy in ("top", "quantile"):
        common = ["--workspace", ws, "--sample", "12", "--strategy", strategy, "--dictionary", *DICTS]
        run("explain", *common)
        run("score", *common, "--scorers", "detection,fuzzing,embedding", "--model", "judge")
    run("report", "--workspace", ws, "--out", str(d / "report"), "--images", "html")
    return Path(ws)


def page(path: str, ws: Path) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=300)
    at.session_state["workspace"] = str(ws)
    return at.run()


def texts(at: AppTest) -> str:
    parts = list(at.title) + list(at.subheader) + list(at.caption) + list(at.markdown) + list(at.info)
    return " ".join(str(x.value) for x in parts)


def test_home_page_shows_the_default_models_workspace(default_ws):
    at = page("app.py", default_ws)
    assert not at.exception and not at.error
    assert "baseline:token-stats" in texts(at) or any("baseline:token-stats" in str(df.value) for df in at.dataframe)


def test_latents_page_shows_a_scored_card_of_the_default(default_ws):
    scored = store.scores_frame(default_ws)
    row = scored[(scored["dictionary"] == DICTS[0]) & scored["baseline"].isna()].iloc[0]
    at = AppTest.from_file(str(ROOT / "pages" / "1_Latents.py"), default_timeout=300)
    at.session_state["workspace"] = str(default_ws)
    at.query_params["dictionary"] = DICTS[0]
    at.query_params["latent"] = str(int(row["latent"]))
    at.run()
    assert not at.exception and not at.error
    html = "".join(m.value for m in at.markdown) + "".join(h.proto.body for h in at.html)
    assert html.count('<span class="tok act') >= 5  # highlighted activating tokens in the examples
    assert "baseline:token-stats" in html + texts(at)  # who wrote the explanation is shown


def test_report_overlaps_explanations_that_explain_did_not_embed(default_ws):
    # `explain` stores no embeddings; the overlap step of `report` indexes the explanations itself
    (rec,) = store.read_overlaps(default_ws, similarity="explanation", kind="resid")
    assert {rec.dict_a, rec.dict_b} == set(DICTS) and rec.n_matched > 0


@pytest.mark.parametrize("path", ["pages/2_Scores.py", "pages/3_Deciles.py", "pages/4_Overlap.py"])
def test_analysis_pages_chart_the_default_workspace(default_ws, path):
    at = page(path, default_ws)
    assert not at.exception and not at.error
    charts = chart_count(at)
    assert charts, f"{path} drew no chart"


def test_circuits_page_opens_on_the_default_workspace(default_ws):
    at = page("pages/5_Circuits.py", default_ws)
    assert not at.exception and not at.error
    assert any("Trace a prompt" in i.value for i in at.info)
