"""core.circuits.interop: our export against Neuronpedia's published graph schema (a copy in
tests/fixtures, source named beside it) and circuit-tracer's conventions; the round trip; importing
circuit-tracer's and Neuronpedia's JSON; malformed input; the export-graph / inspect-graph commands."""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from pathlib import Path

import jsonschema
import networkx as nx
import pytest
from interop_helpers import traced_default_graph

from core.circuits import interop as I
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "neuronpedia-graph-schema.json").read_text())
PEERS = ROOT / ".venv" / "peers"


@pytest.fixture(scope="module")
def traced():
    G, prob = traced_default_graph()
    return G.copy(), prob


def latents(G: nx.DiGraph, kind: str | None = None) -> list[str]:
    return [v for v, a in G.nodes(data=True) if a["kind"] in ((kind,) if kind else ("attn", "transcoder"))]


def test_export_satisfies_the_schema_and_the_viewers_conventions(traced):
    G, prob = traced
    out = I.to_graph_json(G, slug="ioi", model_id="default", target_prob=prob, node_threshold=0.8)
    jsonschema.Draft7Validator(SCHEMA).validate(out)
    json.loads(I.dumps(out))  # strict JSON: no NaN
    ids = [n["node_id"] for n in out["nodes"]]
    assert len(ids) == len(set(ids)) == G.number_of_nodes()
    assert {lk["source"] for lk in out["links"]} | {lk["target"] for lk in out["links"]} <= set(ids)
    token_ids = G.graph["prompt_token_ids"]
    by_kind: dict[str, list[dict]] = {}
    for n in out["nodes"]:
        by_kind.setdefault(n["explorer"]["kind"], []).append(n)
        assert isinstance(n["feature"], int)  # circuit-tracer's viewer reads it as a number
    for n in by_kind["transcoder"]:
        a = n["explorer"]
        assert n["node_id"] == f"{a['layer']}_{a['latent']}_{a['position']}"
        assert n["feature"] == I.cantor_pair(a["layer"], a["latent"]) and I.cantor_unpair(n["feature"]) == (
            a["layer"],
            a["latent"],
        )
        assert n["feature_type"] == "cross layer transcoder" and n["layer"] == str(a["layer"])
    for n in by_kind["attn"]:
        assert n["feature_type"] == "lorsa" and n["node_id"].startswith("A")
    for n in by_kind["embed"]:
        pos = n["ctx_idx"]
        assert n["node_id"] == f"E_{token_ids[pos]}_{pos}" and n["layer"] == "E" and n["feature"] == pos
    for n in by_kind.get("pos_embed", []):
        assert n["node_id"] == f"E_pos_{n['ctx_idx']}" and n["feature_type"] == "embedding"
    (logit,) = by_kind["logit"]
    n_layers = G.graph["n_layers"]
    mary = G.graph["target_spec"]["token"]
    assert logit["node_id"] == f"{n_layers + 1}_{mary}_14" and logit["layer"] == str(n_layers + 1)
    assert re.fullmatch(r'Output " Mary" \(p=0\.\d{3}\) vs " John"', logit["clerp"]), logit["clerp"]
    assert float(logit["clerp"].split("(p=")[1].split(")")[0]) == pytest.approx(prob, abs=5e-4)
    assert logit["is_target_logit"] and out["metadata"]["scan"] == "default"
    assert out["metadata"]["node_threshold"] == 0.8 and out["metadata"]["schema_version"] == 1


def test_influence_is_circuit_tracers_cumulative_share_of_the_one_influence(traced):
    from core.tracing.influence import graph_influence

    G, _ = traced
    out = I.to_graph_json(G, slug="ioi", model_id="default")
    infl = graph_influence(G)
    target = G.graph["target"]["node_id"]
    cum = {n["explorer"]["id"]: n["influence"] for n in out["nodes"]}
    assert cum[target] == pytest.approx(1.0)  # a logit has no influence on itself (circuit-tracer too)
    others = sorted((v for v in G if v != target), key=lambda v: -infl[v])
    total = sum(infl[v] for v in others)
    assert cum[others[0]] == pytest.approx(infl[others[0]] / total)
    assert cum[others[1]] == pytest.approx((infl[others[0]] + infl[others[1]]) / total)
    assert [cum[v] for v in others] == sorted(cum[v] for v in others)  # the viewer keeps influence <= threshold


def test_round_trip_keeps_nodes_edges_weights_pins_and_supernodes(traced):
    G, prob = traced
    lat = latents(G)
    out = I.to_graph_json(
        G,
        slug="ioi",
        model_id="default",
        pinned=[lat[0]],
        supernodes=[["name movers", lat[1], lat[2]]],
        target_prob=prob,
    )
    pinned_np = out["qParams"]["pinnedIds"]
    assert out["qParams"]["supernodes"] == [["name movers", pinned_np[1], pinned_np[2]]]
    G2, info = I.from_graph_json(I.dumps(out))
    assert set(G2.nodes) == set(G.nodes) and set(G2.edges) == set(G.edges)
    assert all(G2.edges[e]["weight"] == G.edges[e]["weight"] for e in G.edges)
    assert all(dict(G2.nodes[v]) == dict(G.nodes[v]) for v in G)
    assert G2.graph == G.graph
    assert info.source == "sae-circuit-explorer" and info.model_id == "default"
    assert info.loadable and info.reason == ""
    assert info.pinned == (lat[0], lat[1], lat[2])
    ((label, members),) = [I._label_members(s) for s in info.supernodes]
    assert label == "name movers" and set(members) == {lat[1], lat[2]}


@pytest.fixture(scope="module")
def traced_qk():
    """The IOI prompt of `traced` traced with QK expansion (`trace_prompt(qk=QKParams())`)."""
    from interop_helpers import PROMPT

    from core.circuits import saved as C
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import trace_prompt
    from core.tracing.qk import QKParams

    model = load_default_model(device="cpu")
    dicts = [d for d in load_default_dictionaries().values() if d.kind in ("attn", "transcoder")]
    result = trace_prompt(model, dicts, PROMPT, " Mary", " John", faithfulness=False, qk=QKParams())
    return C.with_target(result.graph.copy(), result.target)


def test_qk_edges_export_as_neuronpedia_qk_tracing_and_round_trip(traced_qk):
    from core.tracing.influence import is_qk_edge
    from core.tracing.qk import qk_edges

    G = traced_qk
    out = I.to_graph_json(G, slug="ioi-qk", model_id="default")
    jsonschema.Draft7Validator(SCHEMA).validate(out)
    json.loads(I.dumps(out))
    ids = {n["explorer"]["id"]: n["node_id"] for n in [*out["nodes"], *out.get("qk_only_nodes", {}).values()]}
    aside = I.qk_only_nodes(G, I.target_node(G))
    assert aside and set(out["qk_only_nodes"]) == {ids[v] for v in aside}  # e.g. a position embedding
    assert not {n["node_id"] for n in out["nodes"]} & set(out["qk_only_nodes"])
    # Links are the direct edges only (none touching a QK-only node): the viewer's influence is unchanged.
    direct = {
        (ids[u], ids[v]) for u, v, d in G.edges(data=True) if not is_qk_edge(d) and u not in aside and v not in aside
    }
    assert {(lk["source"], lk["target"]) for lk in out["links"]} == direct
    # Each steered attention latent lists its QK contributors by side, as Neuronpedia's viewer reads them.
    by_id = {n["node_id"]: n for n in out["nodes"]}
    edges = qk_edges(G)
    assert edges
    for e in edges:
        res = by_id[ids[e.target]]["qk_tracing_results"]
        q, k = G.edges[e.source, e.target]["qk_sides"]
        # Listed on each side it acts through (a side with an exactly zero effect is left out).
        assert ([ids[e.source], q] in res["top_q_marginal_contributors"]) == (q != 0)
        assert ([ids[e.source], k] in res["top_k_marginal_contributors"]) == (k != 0)
        assert res["pair_wise_contributors"] == []
    steered = [n for n in out["nodes"] if "qk_tracing_results" in n]
    assert steered and all(n["feature_type"] == "lorsa" for n in steered)
    known = set(by_id) | set(out["qk_only_nodes"])
    for n in steered:
        r = n["qk_tracing_results"]
        assert {c[0] for c in r["top_q_marginal_contributors"] + r["top_k_marginal_contributors"]} <= known
        assert [abs(c[1]) for c in r["top_k_marginal_contributors"]] == sorted(
            (abs(c[1]) for c in r["top_k_marginal_contributors"]), reverse=True
        )
    # Our import restores every node and edge with its kind, QK weight and sides.
    G2, _ = I.from_graph_json(I.dumps(out))
    assert set(G2.nodes) == set(G.nodes) and set(G2.edges) == set(G.edges)
    for e in G.edges:
        for key in ("weight", "edge_kind", "qk_weight", "qk_sides", "heads"):
            assert G2.edges[e].get(key) == G.edges[e].get(key), (e, key)


def test_import_reads_the_json_our_circuits_are_stored_in(traced):
    """`saved.export_json` (the stored graph format) imports too, with its version's pins and supernodes."""
    from core.circuits import saved as C

    G, _ = traced
    lat = latents(G)
    pruning = C.Pruning(pinned=(lat[0],), supernodes=(C.Supernode("movers", (lat[1], lat[2])),))
    version = C.unsaved_version("ioi", G, pruning)
    G2, info = I.from_graph_json(json.dumps(C.export_json(version)))
    assert set(G2.edges) == set(version.graph.edges) and info.loadable and info.source == "sae-circuit-explorer"
    assert info.pinned == (lat[0],) and [I._label_members(s)[0] for s in info.supernodes] == ["movers"]


def test_our_export_of_a_model_we_cannot_load_says_why(traced):
    G, _ = traced
    _, info = I.from_graph_json(I.to_graph_json(G, slug="x", model_id="gemma-2-2b"))
    assert not info.loadable and "'gemma-2-2b'" in info.reason and "cannot load" in info.reason


@pytest.mark.skipif(not (PEERS / "circuit_tracer").exists(), reason="circuit-tracer is not installed in .venv/peers")
def test_export_passes_circuit_tracers_own_graph_models(traced):
    """circuit-tracer's pydantic models (what its create_graph_files writes) accept every node of our export."""
    sys.path.insert(0, str(PEERS))
    try:
        from circuit_tracer.frontend.graph_models import Model
    finally:
        sys.path.remove(str(PEERS))
    G, prob = traced
    Model.model_validate(I.to_graph_json(G, slug="ioi", model_id="default", target_prob=prob))


def ct_graph() -> dict:
    """Graph JSON as circuit-tracer's create_graph_files writes it (fields of its graph_models.Node; a
    2-layer model, two logits): embeddings E_<token id>_<pos>, a feature 1_7_2, an error 0_0_1, logits 3_<id>_2."""
    node = {"token_prob": 0.0, "is_target_logit": False, "run_idx": 0, "reverse_ctx_idx": 0, "clerp": ""}
    nodes = [
        {**node, "node_id": "E_11_1", "feature": 1, "layer": "E", "ctx_idx": 1, "feature_type": "embedding"},
        {**node, "node_id": "E_12_2", "feature": 2, "layer": "E", "ctx_idx": 2, "feature_type": "embedding"},
        {
            **node,
            "node_id": "0_0_1",
            "feature": -1,
            "layer": "0",
            "ctx_idx": 1,
            "feature_type": "mlp reconstruction error",
        },
        {
            **node,
            "node_id": "1_7_2",
            "feature": I.cantor_pair(1, 7),
            "layer": "1",
            "ctx_idx": 2,
            "feature_type": "cross layer transcoder",
            "influence": 0.4,
            "activation": 3.5,
        },
        {
            **node,
            "node_id": "3_42_2",
            "feature": 42,
            "layer": "3",
            "ctx_idx": 2,
            "feature_type": "logit",
            "token_prob": 0.7,
            "is_target_logit": True,
            "clerp": 'Output " Paris" (p=0.700)',
        },
        {
            **node,
            "node_id": "3_43_2",
            "feature": 43,
            "layer": "3",
            "ctx_idx": 2,
            "feature_type": "logit",
            "token_prob": 0.2,
            "clerp": 'Output " London" (p=0.200)',
        },
    ]
    for n in nodes:
        n["jsNodeId"] = n["node_id"]
        n.setdefault("influence", None)
        n.setdefault("activation", None)
    links = [
        {"source": "E_11_1", "target": "0_0_1", "weight": 0.5},
        {"source": "E_12_2", "target": "1_7_2", "weight": 2.0},
        {"source": "0_0_1", "target": "1_7_2", "weight": -0.25},
        {"source": "1_7_2", "target": "3_42_2", "weight": 3.0},
        {"source": "1_7_2", "target": "3_43_2", "weight": -1.0},
    ]
    metadata = {
        "slug": "capital",
        "scan": "gemma-2-2b",
        "transcoder_list": [],
        "prompt_tokens": ["<bos>", "The", " capital"],
        "prompt": "The capital",
        "node_threshold": 0.8,
        "schema_version": 1,
    }
    q = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q, "nodes": nodes, "links": links}


@pytest.mark.skipif(not (PEERS / "circuit_tracer").exists(), reason="circuit-tracer is not installed in .venv/peers")
def test_ct_fixture_matches_circuit_tracers_writer():
    """The hand-written fixture has the ids and fields circuit-tracer's own Node constructors give."""
    sys.path.insert(0, str(PEERS))
    try:
        from circuit_tracer.frontend.graph_models import Node
    finally:
        sys.path.remove(str(PEERS))
    made = {
        "1_7_2": Node.feature_node(1, 2, 7, influence=0.4, activation=3.5),
        "0_0_1": Node.error_node(0, 1),
        "E_11_1": Node.token_node(1, 11),
        "3_42_2": Node.logit_node(2, 42, " Paris", num_layers=2, target_logit=True, token_prob=0.7),
    }
    ours = {n["node_id"]: n for n in ct_graph()["nodes"]}
    for node_id, node in made.items():
        theirs = node.model_dump()
        assert theirs["node_id"] == node_id
        for key in ("feature", "layer", "ctx_idx", "feature_type", "clerp", "is_target_logit", "token_prob"):
            assert ours[node_id][key] == theirs[key], (node_id, key)


def test_import_circuit_tracer_json():
    G, info = I.from_graph_json(ct_graph())
    assert info.source == "circuit-tracer" and info.model_id == "gemma-2-2b"
    assert not info.loadable and "circuit-tracer" in info.reason and "'gemma-2-2b'" in info.reason
    assert info.node_threshold == 0.8 and any("2 logit nodes" in w for w in info.warnings)
    assert set(G.nodes) == {
        "embed@1",
        "embed@2",
        "mlp_error.0@1",
        "transcoder.1/7@2",
        "logit@2:' Paris'",
        "logit@2:' London'",
    }
    assert G.nodes["transcoder.1/7@2"]["latent"] == 7 and G.nodes["transcoder.1/7@2"]["activation"] == 3.5
    assert G.nodes["embed@2"]["token"] == " capital" and G.nodes["embed@2"]["layer"] == -1
    assert G.graph["target"]["node_id"] == "logit@2:' Paris'" and G.graph["n_layers"] == 2
    assert G.edges["mlp_error.0@1", "transcoder.1/7@2"]["weight"] == -0.25
    from core.tracing.influence import graph_influence

    infl = graph_influence(G)  # on the target logit; shares over each node's in-edges (no recorded totals)
    assert infl["transcoder.1/7@2"] == pytest.approx(1.0) and infl["embed@2"] == pytest.approx(2.0 / 2.25)
    # The imported graph prunes with our pruning.
    from core.circuits.saved import Pruning, prune_graph

    assert "transcoder.1/7@2" not in prune_graph(G, Pruning(removed_nodes=("transcoder.1/7@2",)))


def test_import_neuronpedia_json_with_attention_features_pins_and_supernodes():
    data = ct_graph()
    del data["metadata"]["schema_version"], data["metadata"]["transcoder_list"]
    data["nodes"].append(
        {
            "node_id": "A1_5_2",
            "feature": 5,
            "layer": "1",
            "ctx_idx": 2,
            "feature_type": "lorsa",
            "jsNodeId": "A1_5-0",
            "clerp": "capital cities",
        }
    )
    data["links"].append({"source": "A1_5_2", "target": "3_42_2", "weight": 1.5})
    data["qParams"]["pinnedIds"] = "1_7_2,A1_5_2"  # circuit-tracer's viewer saves its URL form
    data["qParams"]["supernodes"] = [["capital", "1_7_2", "A1_5_2"]]
    G, info = I.from_graph_json(data)
    assert info.source == "neuronpedia"
    assert G.nodes["attn.1/5@2"]["kind"] == "attn" and G.nodes["attn.1/5@2"]["label"] == "capital cities"
    assert info.pinned == ("transcoder.1/7@2", "attn.1/5@2")
    ((label, members),) = [I._label_members(s) for s in info.supernodes]
    assert label == "capital" and set(members) == {"transcoder.1/7@2", "attn.1/5@2"}


def _mutated(f):
    data = ct_graph()
    f(data)
    return data


MALFORMED = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "must be an object"),
    (json.dumps({"nodes": [], "links": []}).encode(), "missing metadata, qParams"),
    (_mutated(lambda d: d["metadata"].pop("slug")), "metadata.slug must be a string; it is missing"),
    (_mutated(lambda d: d["metadata"].__setitem__("prompt_tokens", "The capital")), "metadata.prompt_tokens"),
    (_mutated(lambda d: d.__setitem__("nodes", [])), "nodes must be a non-empty list"),
    (_mutated(lambda d: d["nodes"][3].pop("feature")), "nodes[3] ('1_7_2') has no feature"),
    (_mutated(lambda d: d["nodes"][3].__setitem__("feature", "7")), "nodes[3] ('1_7_2').feature must be an integer"),
    (_mutated(lambda d: d["nodes"][3].__setitem__("ctx_idx", 9)), "ctx_idx is 9, outside the prompt's 3 tokens"),
    (
        _mutated(lambda d: d["nodes"].append({**d["nodes"][3], "node_id": "f", "feature": None})),
        "node 'f' is a cross layer transcoder feature without a feature index",
    ),
    (_mutated(lambda d: d["nodes"][3].__setitem__("node_id", "E_11_1")), "node id 'E_11_1' appears twice"),
    (_mutated(lambda d: d["nodes"][3].__setitem__("feature_type", "neuron")), "feature_type 'neuron'"),
    (_mutated(lambda d: d["links"][0].__setitem__("target", "9_9_9")), "'9_9_9', which is not a node id"),
    (_mutated(lambda d: d["links"][0].__setitem__("weight", math.nan)), "links[0].weight must be a finite number"),
    (_mutated(lambda d: d["links"][0].__setitem__("weight", "0.5")), "links[0].weight must be a finite number"),
    (_mutated(lambda d: d["links"].append(dict(d["links"][0]))), "appears twice in links"),
    (_mutated(lambda d: d["links"].append({"source": "3_42_2", "target": "1_7_2", "weight": 1.0})), "cycle"),
    (_mutated(lambda d: d["qParams"].__setitem__("pinnedIds", ["1_7_2", "nope"])), "pinnedIds names nodes"),
    (_mutated(lambda d: d["qParams"].__setitem__("supernodes", [["g", "1_7_2", "x"]])), "supernodes[0] ('g')"),
    (_mutated(lambda d: d["qParams"].__setitem__("supernodes", [["g"]])), "supernodes[0] must be a list"),
    (
        _mutated(
            lambda d: (
                d.__setitem__("nodes", [n for n in d["nodes"] if n["feature_type"] != "logit"]) or d["links"].clear()
            )
        ),
        "no logit node",
    ),
]


@pytest.mark.parametrize("data, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_or_foreign_json_is_a_clear_error(data, message):
    with pytest.raises(I.GraphImportError) as exc:
        I.from_graph_json(copy.deepcopy(data) if isinstance(data, dict) else data)
    assert isinstance(exc.value, UserError)
    assert message in str(exc.value), str(exc.value)


def test_export_refuses_what_it_cannot_write(traced):
    G, _ = traced
    with pytest.raises(ValueError, match="not in the graph: nope"):
        I.to_graph_json(G, slug="x", model_id="default", pinned=["nope"])
    with pytest.raises(ValueError, match="node_threshold"):
        I.to_graph_json(G, slug="x", model_id="default", node_threshold=1.5)
    H = G.copy()
    u, v = next(iter(H.edges))
    H.edges[u, v]["weight"] = math.nan
    with pytest.raises(ValueError, match="finite number"):
        I.to_graph_json(H, slug="x", model_id="default")


def test_export_and_inspect_commands(traced, tmp_path, capsys):
    from core import cli
    from core.circuits import saved as C

    G, _ = traced
    ws = tmp_path / "ws"
    C.save_circuit(ws, "ioi", G)
    lat = latents(G)
    pruning = C.Pruning(pinned=(lat[0],), supernodes=(C.Supernode("movers", (lat[1], lat[2])),))
    C.save_version(ws, "ioi", pruning, node_annotations={lat[1]: C.Annotation("copies the name", "hand")})
    out = tmp_path / "ioi.json"
    rc = cli.main(["export-graph", "--workspace", str(ws), "--circuit", "ioi", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and printed["n_nodes"] == G.number_of_nodes() and printed["supernodes"] == 1
    data = json.loads(out.read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(data)
    assert data["metadata"]["slug"] == "ioi-v2" and data["metadata"]["scan"] == "default"
    assert re.search(r"\(p=0\.\d{3}\)", next(n["clerp"] for n in data["nodes"] if n["feature_type"] == "logit"))
    assert next(n["clerp"] for n in data["nodes"] if n["explorer"]["id"] == lat[1]) == "copies the name"
    assert len(data["qParams"]["supernodes"]) == 1 and data["qParams"]["supernodes"][0][0] == "movers"

    assert cli.main(["inspect-graph", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["loadable"] and summary["n_nodes"] == G.number_of_nodes() and summary["pinned"][0] == lat[0]

    # Bad input: one line, no traceback.
    assert cli.main(["export-graph", "--workspace", str(ws), "--circuit", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'nope'" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_mutated(lambda d: d["links"][3].__setitem__("source", "x"))))
    assert cli.main(["inspect-graph", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: links[3].source is 'x', which is not a node id in nodes"


def _interop_page(export_path: str) -> None:
    """A page with the export button (for the graph in `export_path`) and the import uploader."""
    from pathlib import Path

    import streamlit as st

    from core.circuits.interop import from_graph_json
    from ui.graph_interop_view import render_export_button, render_import_uploader

    G, _ = from_graph_json(Path(export_path).read_bytes())
    render_export_button(G, slug="ioi", model_id="default", pinned=["nope"] if st.session_state.get("bad_pin") else ())
    got = render_import_uploader()
    st.session_state["got"] = None if got is None else (got[0].number_of_nodes(), got[1].source, got[1].loadable)


def test_page_exports_and_imports_with_clear_messages(traced, tmp_path):
    from streamlit.testing.v1 import AppTest

    G, prob = traced
    path = tmp_path / "ioi.json"
    path.write_text(I.dumps(I.to_graph_json(G, slug="ioi", model_id="default", target_prob=prob)))
    at = AppTest.from_function(_interop_page, args=(str(path),), default_timeout=120).run()
    assert not at.exception and not at.error
    assert at.get("download_button")[0].proto.label.startswith("Download graph JSON")
    assert at.session_state["got"] is None

    uploader = at.file_uploader[0]
    uploader.set_value(("ioi.json", path.read_bytes(), "application/json"))
    at = at.run()
    assert at.session_state["got"] == (G.number_of_nodes(), "sae-circuit-explorer", True)
    assert not at.warning and "Imported" in at.caption[0].value

    at.file_uploader[0].set_value(("ct.json", json.dumps(ct_graph()).encode(), "application/json"))
    at = at.run()
    assert at.session_state["got"] == (6, "circuit-tracer", False)
    assert "Faithfulness and steering are off" in at.warning[0].value and "gemma" in at.warning[0].value

    bad = _mutated(lambda d: d["links"][3].__setitem__("source", "x"))
    at.file_uploader[0].set_value(("bad.json", json.dumps(bad).encode(), "application/json"))
    at = at.run()
    assert at.session_state["got"] is None and not at.exception
    assert "Could not import bad.json" in at.error[0].value and "not a node id in nodes" in at.error[0].value

    at.session_state["bad_pin"] = True
    at = at.run()
    assert any("Cannot export this graph" in e.value for e in at.error) and not at.exception
