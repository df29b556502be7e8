"""A tiny Streamlit script for the steering panel (tests/browser/test_steering_browser.py and the AppTests in
tests/test_steering.py): the embedded default model on the IOI prompt, a graph of the six most active latents at
the last position (target ' Mary' vs ' John'), the most active one selected, drawn by ui.steering_view.

With STEER_WS (a workspace path) and STEER_CIRCUIT (a saved circuit's name) set, the panel saves with that
circuit's latest version."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import networkx as nx  # noqa: E402
import streamlit as st  # noqa: E402

from ui.steering_view import render_steering  # noqa: E402

PROMPT = "When Mary and John went to the store, John gave a drink to"


@st.cache_resource(show_spinner=False)
def engine():
    """The default model, its attention SAEs and transcoders, a small graph and its most active latent."""
    import torch

    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model
    from core.tracing.graph import node_attributes
    from core.tracing.loading import tracing_dictionaries
    from core.tracing.replacement import ReplacementModel

    torch.set_num_threads(1)
    model = load_model("default")
    dicts = tracing_dictionaries(load_default_dictionaries().values())
    rm = ReplacementModel(model, dicts)
    state = rm.prepare(rm.tokenize(PROMPT))
    last = state.n_positions - 1
    nodes = sorted(
        (state.nodes[i] for i in state.latent_node_indices() if state.nodes[i].position == last),
        key=lambda n: -n.activation,
    )[:6]
    G = nx.DiGraph(
        prompt_tokens=list(state.token_strs),
        prompt=PROMPT,
        target={"node_id": f"logit@{last}:' Mary'-' John'", "token_str": " Mary", "contrast_str": " John"},
    )
    for n in nodes:
        G.add_node(n.node_id, **node_attributes(n))
    return model, dicts, G, nodes[0].node_id


model, dicts, graph, first = engine()
ws = os.environ.get("STEER_WS")
circuit = None
if ws:
    from core.circuits.saved import load_circuit

    v = load_circuit(Path(ws), os.environ["STEER_CIRCUIT"])
    circuit = {"name": v.name, "version": v.version, "circuit_id": v.circuit_id}
render_steering(model, dicts, PROMPT, graph, [first], ws=Path(ws) if ws else None, circuit=circuit)
