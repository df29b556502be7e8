"""pages/5_Circuits.py on the gpt2 model set (AppTest), through the hub path on the reduced GPT-2 fixture: the
page traces GPT-2 with the releases and transcoders of $SAE_EXPLORER_RELEASES and $SAE_EXPLORER_TRANSCODER_DIR,
and says plainly when there are no transcoders to trace with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "5_Circuits.py")
RELEASES = ("gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k")
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    from core.subjects.hub_fixture import make_hub_fixture

    return make_hub_fixture(tmp_path_factory.mktemp("hf") / "cache", scale="reduced", seed=0, releases=RELEASES)


@pytest.fixture
def gpt2_env(hf_home, monkeypatch) -> Path:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("SAE_EXPLORER_RELEASES", "gpt2-small-attn-out-v5-32k")
    monkeypatch.setenv("SAE_EXPLORER_TRANSCODER_DIR", str(hf_home / "transcoders"))
    return hf_home


def trace_gpt2(ws: Path) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=600)
    at.session_state["workspace"] = str(ws)
    at.session_state["model_set"] = "gpt2"  # Home's "Model set (for live tracing)" choice
    at = at.run()
    at.text_area(key="circ.prompt").input(PROMPT)
    at.radio(key="circ.ablation").set_value("zero")
    next(b for b in at.button if b.label == "Trace").click()
    return at.run()


def test_the_page_traces_gpt2_through_the_hub_path(gpt2_env, tmp_path):
    at = trace_gpt2(tmp_path / "w.duckdb")
    assert not at.exception and not [e.value for e in at.error], [e.value for e in at.error]
    spec = json.loads(at.get("component_instance")[0].proto.json_args)["spec"]
    ids = {n["id"] for n in spec["nodes"]}
    assert any(i.startswith("transcoder.") for i in ids) and any(i.startswith("logit") for i in ids), ids
    original = at.session_state["circ.original"]
    assert original.graph["n_layers"] == 12  # GPT-2 small's depth, not the default's 4
    assert any("GPT-2 small" in c.value for c in at.caption)


def test_gpt2_without_transcoders_is_a_clear_message(gpt2_env, tmp_path, monkeypatch):
    monkeypatch.delenv("SAE_EXPLORER_TRANSCODER_DIR")
    at = trace_gpt2(tmp_path / "w.duckdb")
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("tracing gpt2 needs transcoders" in e for e in errors), errors
