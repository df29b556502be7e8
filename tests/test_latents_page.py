"""The latents page (pages/1_Latents.py) driven by AppTest on the tiny app workspace: its widgets make the
real engine calls, and what it shows is checked against the engine's own answer."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from app_workspace import PROBE
from hostile_text import shown
from streamlit.testing.v1 import AppTest

from core import store
from core.latents.cards import find_latents_by_token, latent_card

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "1_Latents.py")


def _page(workspace: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["workspace"] = str(workspace)
    return at


def _html(at: AppTest) -> str:
    """Everything the page rendered as Markdown or HTML."""
    return "".join(m.value for m in at.markdown) + "".join(h.proto.body for h in at.html)


def test_card_by_dictionary_and_id_matches_the_engine(app_workspace):
    dictionary = "resid:blocks.1.hook_resid_pre"
    at = _page(app_workspace).run()
    assert not at.exception
    at.selectbox(key="lat_dict").set_value(dictionary)
    at.number_input(key="lat_id").set_value(10).run()
    assert not at.exception and not at.error
    card = latent_card(app_workspace, dictionary, 10)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["tokens fired"] == f"{card.stats.n_fires:,}"
    assert metrics["max activation"] == f"{card.stats.max_activation:.3g}"
    page = _html(at)
    examples = card.top_examples + [ex for d in range(1, 11) for ex in card.decile_examples[d]]
    assert page.count('<span class="tok act') == sum(int(np.count_nonzero(ex.activations)) for ex in examples)
    assert page.count('<span class="tok') == sum(len(ex.tokens) for ex in examples)
    assert page.count('class="decile"') == 10
    assert at.query_params["latent"] == "10" and at.query_params["dictionary"] == dictionary
    # the histograms are inline SVG (no plotly bundle for the browser): one bar per non-empty bin of the card
    assert not at.get("plotly_chart")
    activation_svg = unquote(page).split('aria-label="Activation histogram (firing tokens)"')[1].split("</svg>")[0]
    assert activation_svg.count("<rect") == int(np.count_nonzero(card.hist_counts))
    assert 'class="marker"' in unquote(page)  # this latent's frequency marked on the density panel


def test_probe_token_is_escaped(app_workspace):
    match = find_latents_by_token(app_workspace, PROBE)[0]
    at = _page(app_workspace)
    at.query_params["dictionary"] = match.dictionary
    at.query_params["latent"] = str(match.latent)
    at.run()
    assert not at.exception
    page = _html(at)
    assert html.escape(PROBE) in page
    assert PROBE not in page


def test_dead_latent_and_out_of_range(app_workspace):
    at = _page(app_workspace).run()
    at.selectbox(key="lat_dict").set_value("resid:blocks.1.hook_resid_pre")
    at.number_input(key="lat_id").set_value(0).run()  # tiny_cache kills latents 0..3 of this SAE
    assert not at.exception
    assert any("never fires" in w.value for w in at.warning)
    at.number_input(key="lat_id").set_value(96).run()
    assert not at.exception
    assert any("out of range" in e.value and "0 – 95" in e.value for e in at.error)


def test_find_by_token(app_workspace):
    at = _page(app_workspace).run()
    at.radio(key="lat_mode").set_value("by token").run()
    at.text_input(key="lat_token").set_value(PROBE).run()
    assert not at.exception and not at.error
    expected = find_latents_by_token(app_workspace, PROBE)
    table = at.dataframe[0].value
    assert list(zip(table["dictionary"], table["latent"], strict=True)) == [(m.dictionary, m.latent) for m in expected]
    assert shown(at.header[0].value) == f"{expected[0].dictionary} · latent {expected[0].latent}"
    at.selectbox(key="lat_token_pick").set_value(1).run()
    assert shown(at.header[0].value) == f"{expected[1].dictionary} · latent {expected[1].latent}"

    at.text_input(key="lat_token").set_value("zzqqxx").run()
    assert not at.exception
    assert any("no token of this workspace's vocabulary" in e.value for e in at.error)


def test_search_by_meaning_indexes_then_finds(app_workspace, tmp_path):
    from app_workspace import copy_workspace, store_explanations

    at = _page(app_workspace).run()
    at.radio(key="lat_mode").set_value("by meaning").run()
    assert not at.exception
    assert any("No explanations are stored" in i.value for i in at.info)

    workspace = copy_workspace(app_workspace, tmp_path)
    store_explanations(workspace, "resid:blocks.1.hook_resid_pre", 10)
    at = _page(workspace).run()
    at.radio(key="lat_mode").set_value("by meaning").run()
    assert any("2 explanations are not indexed" in i.value for i in at.info)
    at.button(key="lat_index").click().run()
    assert not at.exception and not at.error
    at.text_input(key="lat_meaning").set_value("people's first names").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["explanation"])[0] == "fires on: Mary, John"
    assert list(table["explainer"]) == ["baseline: baseline:token-stats", "openai/gpt-4o-mini"]
    assert shown(at.header[0].value) == "resid:blocks.1.hook_resid_pre · latent 10"


def test_explain_now_runs_the_engine_and_shows_the_result(app_workspace, tmp_path):
    """The offline baseline explainer and two offline scorers on one latent, through the page's button."""
    from app_workspace import copy_workspace

    workspace = copy_workspace(app_workspace, tmp_path)
    dictionary, latent = "resid:blocks.1.hook_resid_pre", 32
    at = _page(workspace)
    at.query_params["dictionary"] = dictionary
    at.query_params["latent"] = str(latent)
    at.run()
    assert any("No explanations of this latent" in i.value for i in at.info)
    assert at.multiselect(key="explain_scorers").value == [
        "detection",
        "fuzzing",
        "simulation",
        "embedding",
    ]  # no subject model
    at.multiselect(key="explain_scorers").set_value(["detection", "embedding"])
    at.button(key="explain_now").click().run(timeout=600)
    assert not at.exception and not at.error
    stored = store.explanations_for_latent(workspace, dictionary, latent)
    assert [(e.explainer, e.is_baseline) for e in stored] == [("baseline:token-stats", True)]
    scores = store.scores_for_explanations(workspace, [stored[0].explanation_id])
    assert sorted(s.scorer for s in scores) == ["detection", "embedding"]
    page = _html(at)
    assert html.escape(stored[0].text) in page and "BASELINE" in page  # shown after the rerun, escaped
    table = next(df.value for df in at.dataframe if "scorer model" in df.value)
    assert sorted(zip(table["scorer"], table["value"], strict=True)) == sorted((s.scorer, s.value) for s in scores)


def test_explain_now_offers_the_contrastive_explainer_and_the_intruder_scorer(app_workspace, tmp_path):
    """The button can run the contrastive explainer (offline: its labelled baseline) and the optional intruder
    scorer, which are not chosen by default."""
    from app_workspace import copy_workspace

    workspace = copy_workspace(app_workspace, tmp_path)
    dictionary, latent = "resid:blocks.1.hook_resid_pre", 32
    at = _page(workspace)
    at.query_params["dictionary"] = dictionary
    at.query_params["latent"] = str(latent)
    at.run()
    assert "intruder" in at.multiselect(key="explain_scorers").options
    assert "intruder" not in at.multiselect(key="explain_scorers").value
    at.multiselect(key="explain_scorers").set_value(["detection", "intruder"])
    at.checkbox(key="explain_contrastive").check()
    at.button(key="explain_now").click().run(timeout=600)
    assert not at.exception and not at.error, [e.value for e in at.error]
    stored = store.explanations_for_latent(workspace, dictionary, latent)
    assert [(e.explainer, e.is_baseline) for e in stored] == [("baseline:contrastive-token-stats", True)]
    scores = store.scores_for_explanations(workspace, [stored[0].explanation_id])
    assert sorted(s.scorer for s in scores) == ["detection", "intruder"]


def test_missing_and_locked_workspaces_give_messages(app_workspace, tmp_path, monkeypatch):
    at = _page(tmp_path / "nothing.duckdb").run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom core import store\nwith store.session(sys.argv[1], write=True):\n"
            "    print('locked', flush=True)\n    time.sleep(60)\n",
            str(app_workspace),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(store.schema, "READ_TIMEOUT_S", 0.5)
        at = _page(app_workspace).run()
        assert not at.exception
        assert any("locked by process" in e.value for e in at.error)
    finally:
        holder.kill()
        holder.wait()
    at = _page(app_workspace).run()  # nothing was lost: the page works again once the writer is gone
    assert not at.exception and not at.error and at.header


def test_explanations_with_scores_and_producers(app_workspace, tmp_path):
    from app_workspace import copy_workspace, store_explanations

    workspace = copy_workspace(app_workspace, tmp_path)
    dictionary, latent = "resid:blocks.1.hook_resid_pre", 10
    explanations, scores = store_explanations(workspace, dictionary, latent)
    at = _page(workspace)
    at.query_params["dictionary"] = dictionary
    at.query_params["latent"] = str(latent)
    at.run()
    assert not at.exception and not at.error
    page = _html(at)
    assert f"the token {html.escape(PROBE)} in quotes" in page and PROBE not in page
    assert page.count("BASELINE") == 1 and "by baseline: baseline:token-stats" in page
    assert "by openai/gpt-4o-mini" in page
    table = next(df.value for df in at.dataframe if "scorer model" in df.value)
    got = sorted(zip(table["explanation"], table["scorer"], table["scorer model"], table["value"], strict=True))
    number = {"e-llm": "#1", "e-base": "#2"}  # real explanations first, then baselines
    assert got == sorted((number[s.explanation_id], s.scorer, s.scorer_model, s.value) for s in scores)
