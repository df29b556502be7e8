"""One influence per node, wherever a circuit's influence is shown, thresholded, sent or exported.

The Circuits page computes `graph_influence(version 1)` once (`circ.influence`, pages/5_Circuits.py
`set_original`) and draws `prune_graph(version 1, pruning)`. For one pruned graph this checks the numbers of:
the node tooltips (`ui.graph_view.node_title`), the node-threshold slider (`core.circuits.saved.prune_graph`),
the LLM pruning prompt as the page's LLM section sends it (`ui.llm_prune_view` -> `core.circuits.llm_pruning`,
captured from a scripted LLM), and the exports. Then the one function against circuit-tracer's own
`compute_node_influence` on a fixed matrix (run with circuit-tracer on PYTHONPATH; see docs' environment notes).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

from core.circuits import saved as C
from core.tracing.influence import graph_influence, node_influence, normalize_matrix

TARGET = "logit@4:')'-'.'"
THRESHOLD = 0.21


def original_graph() -> nx.DiGraph:
    """Version 1: T <- A (+4), T <- B (-2) of T's total 10; A <- C (+3), A <- E (+1) of 6; B <- C (+1), B <- E (+2)
    of 4; C <- E (+2) of 5. Influence: A 0.4, B 0.2, C 0.5*0.4 + 0.25*0.2 = 0.25, E 0.4/6 + 0.5*0.2 + 0.4*0.25.

    At node threshold 0.21 the page drops B only; C stays at 0.25, though through the pruned graph alone
    (without B) it would be 0.2, under the threshold that kept it (E: 0.267 on the page, 0.147 without B)."""
    G = nx.DiGraph()
    G.graph.update({"prompt": "He left (because", "target": {"node_id": TARGET, "label": "')' - '.'"}})
    common = {"position": 4, "activation": 1.5}
    G.add_node(TARGET, kind="logit", layer=3, latent=None, is_target=True, token="')'-'.'", total_abs_effect=10.0,
               **common)  # fmt: skip
    G.add_node("transcoder.2/7@4", kind="transcoder", layer=2, latent=7, dictionary="transcoder:blocks.2.ln2.hook_normalized",
               token=" because", total_abs_effect=6.0, **common)  # fmt: skip
    G.add_node("attn.1/5@4", kind="attn", layer=1, latent=5, dictionary="attn:blocks.1.hook_attn_out",
               token=" because", total_abs_effect=4.0, **common)  # fmt: skip
    G.add_node("transcoder.0/3@4", kind="transcoder", layer=0, latent=3, dictionary="transcoder:blocks.0.ln2.hook_normalized",
               token=" because", total_abs_effect=5.0, **common)  # fmt: skip
    G.add_node("embed@2", kind="embed", layer=-1, position=2, latent=None, activation=1.0, token=" (")
    for u, v, w in [
        ("transcoder.2/7@4", TARGET, 4.0),
        ("attn.1/5@4", TARGET, -2.0),
        ("transcoder.0/3@4", "transcoder.2/7@4", 3.0),
        ("embed@2", "transcoder.2/7@4", 1.0),
        ("transcoder.0/3@4", "attn.1/5@4", 1.0),
        ("embed@2", "attn.1/5@4", 2.0),
        ("embed@2", "transcoder.0/3@4", 2.0),
    ]:
        G.add_edge(u, v, weight=w)
    return G


def test_the_graph_as_computed_by_hand():
    page = graph_influence(original_graph())
    assert page["transcoder.2/7@4"] == pytest.approx(0.4) and page["attn.1/5@4"] == pytest.approx(0.2)
    assert page["transcoder.0/3@4"] == pytest.approx(0.25)
    assert page["embed@2"] == pytest.approx(0.4 / 6 + 0.1 + 0.1)
    G = C.prune_graph(original_graph(), C.Pruning(node_threshold=THRESHOLD))
    assert graph_influence(G)["transcoder.0/3@4"] == pytest.approx(0.2)  # why the page's numbers must be passed on


def tooltip_numbers(G: nx.DiGraph, influence) -> dict[str, float]:
    """The influence each node's tooltip on the page shows."""
    from ui.graph_view import node_title

    out = {}
    for v in G:
        m = re.search(r"influence on target ([0-9.]+)", node_title(v, G.nodes[v], {}, {}, influence))
        out[v] = float(m.group(1))
    return out


def prompt_numbers(user: str) -> dict[str, float]:
    """The influence each node line of an LLM pruning prompt shows ('id | ... | infl 0.250 | ...')."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) \|.*\| infl ([0-9.]+) \|", user, re.M)}


def _llm_section():
    from pathlib import Path

    import streamlit as st
    from test_one_influence import THRESHOLD, original_graph

    from core.circuits import saved as C
    from core.tracing.influence import graph_influence
    from ui import llm_prune_view

    original = original_graph()
    st.session_state["circ.influence"] = graph_influence(original)  # as the page's set_original
    pruning = C.Pruning(node_threshold=THRESHOLD)
    G = C.prune_graph(original, pruning)  # the graph the page draws and hands to its LLM section
    llm_prune_view.render(Path(st.session_state["test.ws"]), G, {}, C.unsaved_version("c", original, pruning), None)


def test_tooltips_slider_and_llm_prompt_show_one_number(tmp_path):
    from streamlit.testing.v1 import AppTest

    from tests.llm_helpers import scripted_llm

    original = original_graph()
    page = graph_influence(original)
    G = C.prune_graph(original, C.Pruning(node_threshold=THRESHOLD))
    # Slider: the nodes kept at the threshold are exactly those the page's numbers put at or above it.
    assert set(G) == {v for v in original if page[v] >= THRESHOLD} == set(original) - {"attn.1/5@4"}
    tooltips = tooltip_numbers(G, page)
    assert tooltips == {v: round(page[v], 3) for v in G}

    at = AppTest.from_function(_llm_section, default_timeout=60)
    at.session_state["test.ws"] = str(tmp_path / "ws.duckdb")
    at.session_state["llm_model"] = "scripted/pruner"
    at.run()
    with scripted_llm(lambda messages, params: "{}") as calls:
        at.button(key="llmp.ask").click().run()
    assert not at.exception and len(calls) == 1
    sent = prompt_numbers(calls.requests[0][1][-1]["content"])
    assert set(sent) == set(G) - {TARGET}
    assert sent == {v: tooltips[v] for v in sent}  # 0.250 for transcoder.0/3@4, as its tooltip; not 0.200


def test_the_llm_pruning_takes_the_influence_it_is_given(tmp_path, monkeypatch):
    from core.circuits import llm_pruning as L

    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    G = C.prune_graph(original_graph(), C.Pruning(node_threshold=THRESHOLD))
    incomplete = {TARGET: 1.0}
    with pytest.raises(ValueError, match="no number for 3 node"):
        L.suggest_pruning(tmp_path / "ws.duckdb", G, "openai/gpt-4o-mini", influence=incomplete)
    with pytest.raises(ValueError, match="not a finite number"):
        L.suggest_pruning(tmp_path / "ws.duckdb", G, "openai/gpt-4o-mini", influence=dict.fromkeys(G, float("nan")))
    assert not (tmp_path / "ws.duckdb").exists()  # refused before any call or write


def test_the_json_export_carries_the_page_numbers():
    original = original_graph()
    page = graph_influence(original)
    version = C.unsaved_version("c", original, C.Pruning(node_threshold=THRESHOLD))
    exported = {n["node_id"]: n.get("influence") for n in C.export_json(version)["nodes"]}
    assert exported == pytest.approx({v: page[v] for v in version.graph})


def test_the_graph_json_export_is_the_cumulative_of_the_page_numbers():
    from core.circuits import interop as I

    original = original_graph()
    page = graph_influence(original)
    page[TARGET] = 0.0  # circuit-tracer's convention: a logit has no influence on itself
    expected = I.cumulative_influence(page)  # over version 1's nodes, as circuit-tracer's create_graph_files
    G = C.prune_graph(original, C.Pruning(node_threshold=THRESHOLD))
    exported = {n["explorer"]["id"]: n["influence"] for n in I.to_graph_json(G, slug="t", model_id="default")["nodes"]}
    assert exported == pytest.approx({v: expected[v] for v in G})


def fixed_dag(n: int = 12, seed: int = 0) -> torch.Tensor:
    """A fixed adjacency `[n, n]` (rows targets, columns sources) of a DAG: strictly lower triangular, signed,
    with some zero rows (nodes without parents) and zero entries."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64).tril(-1)
    A[torch.rand(n, n, generator=g) < 0.3] = 0.0
    A[:3] = 0.0
    return A


def test_the_one_influence_is_circuit_tracers_own_function():
    import huggingface_hub.constants

    # circuit-tracer 0.5.0 imports a name huggingface-hub 1.x removed (docs: environment notes).
    huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER = getattr(
        huggingface_hub.constants, "HF_HUB_ENABLE_HF_TRANSFER", False
    )
    peers = str(Path(__file__).resolve().parents[1] / ".venv" / "peers")  # where ./dev test installs it
    sys.path.insert(0, peers)
    try:
        ct = pytest.importorskip("circuit_tracer.graph", reason="circuit-tracer is not installed (.venv/peers)")
    finally:
        sys.path.remove(peers)
    A = fixed_dag()
    w = torch.zeros(A.shape[0], dtype=torch.float64)
    w[-1], w[-2] = 0.7, 0.3  # two logits weighted by probability, as circuit-tracer weights them
    assert torch.equal(normalize_matrix(A), ct.normalize_matrix(A))
    assert torch.allclose(node_influence(A, w), ct.compute_node_influence(A, w), rtol=0, atol=1e-12)
