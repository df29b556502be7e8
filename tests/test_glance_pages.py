"""What a researcher reads at a glance on the Scores, Overlap and Circuits pages (AppTest): headings that name what
is drawn, overlap heatmaps whose colours span the off-diagonal cells with the chance level marked, matched latents
linked to their cards, and faithfulness metrics short enough to show whole."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import analysis_workspace
import networkx as nx
import numpy as np
import pytest
from page_charts import chart_svgs
from streamlit.testing.v1 import AppTest

from core.analysis import figures

ROOT = Path(__file__).resolve().parent.parent
SCORES, OVERLAP, CIRCUITS = (str(ROOT / "pages" / n) for n in ("2_Scores.py", "4_Overlap.py", "5_Circuits.py"))
PLOTLY = {"interactive_charts": True}  # the sidebar toggle on: plotly figures instead of images


def _page(path: str, ws: Path | str, state: dict | None = None) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    for k, v in (state or {}).items():
        at.session_state[k] = v
    return at.run()


def _figures(at: AppTest) -> list[dict]:
    import json

    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    from core.analysis import analyses as analysis

    ws = analysis_workspace.build(tmp_path_factory.mktemp("glance") / "ws.duckdb")
    analysis.analyze_workspace(ws)
    return ws


@pytest.fixture(scope="module")
def no_neurons(tmp_path_factory) -> Path:
    """The synthetic workspace with its neuron and top-k neuron rows removed: latents vs random latents only."""
    from core import store
    from core.analysis import analyses as analysis

    ws = analysis_workspace.build(tmp_path_factory.mktemp("glance-latents") / "ws.duckdb", overlaps=False)
    with store.session(ws, write=True) as con:
        neuron_expls = "SELECT explanation_id FROM explanations WHERE dictionary LIKE 'neurons%'"
        con.execute(
            f"DELETE FROM score_examples WHERE score_id IN (SELECT score_id FROM scores WHERE explanation_id IN ({neuron_expls}))"
        )
        con.execute(f"DELETE FROM scores WHERE explanation_id IN ({neuron_expls})")
        con.execute("DELETE FROM explanation_embeddings WHERE explanation_id IN (" + neuron_expls + ")")
        con.execute("DELETE FROM explanations WHERE dictionary LIKE 'neurons%'")
    analysis.analyze_workspace(ws)
    return ws


def test_units_heading_names_the_groups_drawn(analysed, no_neurons):
    at = _page(SCORES, analysed)
    assert not at.exception
    headings = [h.value for h in at.subheader]
    assert "Latents vs neurons vs top-k neurons vs random latents (baseline)" in headings

    svg = chart_svgs(_page(SCORES, no_neurons))[1]  # the image drawn by default
    assert "Latents vs random latents (baseline)" in svg and "neurons" not in svg

    at = _page(SCORES, no_neurons, PLOTLY)
    assert not at.exception
    units = next(f for f in _figures(at) if f["data"] and f["data"][0]["type"] == "bar")
    drawn = [t["name"] for t in units["data"]]
    assert drawn == ["latents", "random latents (baseline)"]
    headings = [h.value for h in at.subheader]
    assert "Latents vs random latents (baseline)" in headings
    assert not any("neurons" in h for h in headings)  # nothing promised that is not drawn
    assert "neurons" not in units["layout"]["title"]["text"]


def test_heatmap_masks_the_diagonal_and_marks_chance():
    mat = np.array([[1.0, 0.42, 0.30], [0.42, 1.0, 0.55], [0.30, 0.55, 1.0]])
    fig = figures.overlap_heatmap([0, 1, 2], mat, "resid", chance=0.21)
    heat = fig.data[0]
    assert all(heat.z[i][i] is None for i in range(3))
    assert heat.zmax == pytest.approx(0.55) and heat.zmin == pytest.approx(0.21)  # off-diagonal values and chance
    assert any("chance 0.210" in t for t in heat.colorbar.ticktext)
    assert mat[0, 0] == 1.0  # the caller's matrix is left as it was
    empty = figures.overlap_heatmap([0], np.array([[1.0]]), "one layer")
    assert (empty.data[0].zmin, empty.data[0].zmax) == (0.0, 1.0)


def test_overlap_page_heatmaps_chance_and_links(analysed):
    svgs = chart_svgs(_page(OVERLAP, analysed))[:2]  # the images drawn by default: diagonal blank, chance marked
    for svg in svgs:
        n_layers = svg.count('text-anchor="end">L')  # the row labels
        assert n_layers >= 2 and svg.count('fill="#f4f4f4"') == n_layers and ">chance 0." in svg
    at = _page(OVERLAP, analysed, PLOTLY)
    assert not at.exception
    heatmaps = [f for f in _figures(at) if f["data"][0]["type"] == "heatmap"]
    assert len(heatmaps) == 2
    for fig in heatmaps:
        heat = fig["data"][0]
        z = heat["z"]
        assert all(z[i][i] is None for i in range(len(z)))
        off = [v for i, row in enumerate(z) for j, v in enumerate(row) if i != j and v is not None]
        assert max(off) < 1.0 and heat["zmax"] < 1.0 and heat["zmax"] == pytest.approx(max(off))
        assert any(str(t).startswith("chance ") for t in heat["colorbar"]["ticktext"])
    captions = " ".join(c.value for c in at.caption)
    assert "Chance level" in captions and "marked on the colour bars" in captions

    at.selectbox[0].select("transcoder").run()
    assert not at.exception
    table = at.dataframe[0].value
    for column, dictionary in (
        ("latent_a", "transcoder:blocks.0.ln2.hook_normalized"),
        ("latent_b", "transcoder:blocks.1.ln2.hook_normalized"),
    ):
        for link in table[column]:
            url = urlsplit(link)
            assert url.path == "Latents" and not url.scheme and not url.netloc  # relative: stays on this server
            query = parse_qs(url.query)
            assert query["dictionary"] == [dictionary] and int(query["latent"][0]) < 48
    config = at.dataframe[0].proto.columns
    assert "link" in config and "latent=" in config


FAITH = {
    "faithfulness": 0.734,
    "complement_faithfulness": -0.125,
    "metric_circuit": 7.412,
    "metric_complement": -1.234,
    "metric_full": 9.728,
    "metric_empty": -1.234,
    "ablation": "zero",
    "n_latents": 2,
}


def _small_circuit() -> nx.DiGraph:
    G = nx.DiGraph()
    G.graph.update({"n_layers": 2, "target": {"node_id": "logit@3:')'"}, "prompt": "# a long prompt " * 30})
    G.add_node("logit@3:')'", kind="logit", layer=2, position=3, latent=None, token="')'", activation=2.5)
    G.nodes["logit@3:')'"]["is_target"] = True
    for node, kind, layer, latent in (("transcoder.1/7@3", "transcoder", 1, 7), ("attn.0/2@1", "attn", 0, 2)):
        G.add_node(
            node,
            kind=kind,
            layer=layer,
            position=3,
            latent=latent,
            dictionary=f"{kind}:blocks.{layer}.hook_x",
            token=" b",
            activation=1.0,
        )
    G.add_edge("transcoder.1/7@3", "logit@3:')'", weight=0.8)
    G.add_edge("attn.0/2@1", "transcoder.1/7@3", weight=0.5)
    G.graph["faithfulness"] = FAITH
    return G


def test_circuit_metrics_are_short_and_a_long_prompt_is_body_text(tmp_path):
    from core.circuits import saved as C

    G = _small_circuit()
    state = {
        "circ.original": G,
        "circ.influence": C.graph_influence(G),
        "circ.faith": {C.Pruning().key(): FAITH},
    }
    at = _page(CIRCUITS, tmp_path / "w.duckdb", state)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    for label in ("faithfulness F(C)", "model m(M)", "empty m(∅)", "sufficiency m(C)", "necessity m(M\\C)"):
        assert label in metrics, metrics
    assert metrics["model m(M)"] == "9.728" and metrics["empty m(∅)"] == "-1.234"
    assert all(len(str(v)) <= 7 for v in metrics.values()), metrics  # one number each: nothing to cut off
    # the prompt is body text, never a heading, whatever it starts with
    assert not any("long prompt" in h.value for h in list(at.title) + list(at.header) + list(at.subheader))
    assert any("long prompt" in m.value and m.value.startswith("**Prompt:**") for m in at.markdown)
