"""QK attribution: exact against explicit ablation, recovers a planted key feature that frozen-attention tracing misses."""

from __future__ import annotations

import json

import pytest
import torch
from qk_helpers import planted_qk_model
from tracing_helpers import exact_dictionaries, relu_model


@pytest.fixture(scope="module")
def planted():
    from core.tracing.replacement import ReplacementModel

    model, dicts, tokens, info = planted_qk_model()
    rm = ReplacementModel(model, dicts)
    return rm, rm.prepare(tokens), info


def _ids(state, pairs):
    return [(state.nodes[i].node_id, round(v, 4)) for i, v in pairs]


def test_planted_key_feature_is_the_top_key_side_contributor(planted):
    from core.tracing.qk import qk_attribution

    rm, state, info = planted
    L, h, q, k = info["layer"], info["head"], info["q_pos"], info["k_pos"]
    a = qk_attribution(rm, state, L, h, q, k)
    _, cache = rm.model.run_with_cache(state.tokens[None])
    assert a.score == pytest.approx(float(cache[f"blocks.{L}.attn.hook_attn_scores"][0, h, q, k]), abs=1e-5)
    assert a.pattern == pytest.approx(float(cache[f"blocks.{L}.attn.hook_pattern"][0, h, q, k]), abs=1e-6)
    assert 0.5 < a.pattern < 0.9 and a.dpattern_ds == pytest.approx(a.pattern * (1 - a.pattern))
    (top_key, v_key), *rest = a.top("key", 3)
    assert state.nodes[top_key].node_id == info["key_feature"], _ids(state, a.top("key", 3))
    assert v_key == pytest.approx(a.score, abs=1e-5)  # the key reads only the marker the feature writes
    assert all(abs(v) < 1e-6 for _, v in rest)
    assert state.nodes[a.top("query", 1)[0][0]].node_id == f"embed@{q}"
    assert float(a.query_side.sum()) + a.query_bias == pytest.approx(a.score, abs=1e-5)
    assert float(a.key_side.sum()) + a.key_bias == pytest.approx(a.score, abs=1e-5)
    # The bilinear matrix sums, with the bias terms, to the score.
    nz_q = a.query_side.nonzero().flatten().tolist()
    nz_k = a.key_side.nonzero().flatten().tolist()
    total = float(a.bilinear(nz_q, nz_k).sum()) + float(a.q_contrib.sum(0) @ a.k_const + a.q_const @ a.k_vec) / a.scale
    assert total == pytest.approx(a.score, abs=1e-5)
    assert a.key_pattern_effect[top_key] == pytest.approx(a.dpattern_ds * v_key)


def test_planted_attribution_equals_explicit_ablation(planted):
    from core.tracing.qk import QKAttributor, max_qk_error, qk_ablation_effect

    rm, state, info = planted
    pairs = [(1, 0, 3, 1), (1, 0, 3, 2), (1, 0, 2, 1), (0, 0, 3, 3)]
    assert max_qk_error(rm, state, pairs, nodes_per_side=4) <= 1e-4
    a = QKAttributor(rm, state).attribute(1, 0, 3, 1)
    i = next(j for j, n in enumerate(state.nodes) if n.node_id == info["key_feature"])
    eff = qk_ablation_effect(rm, state, 1, 0, 3, 1, i, "key")
    assert eff == pytest.approx(float(a.key_side[i]), abs=1e-5) and eff > 1.0
    assert qk_ablation_effect(rm, state, 1, 0, 3, 1, i, "query") == pytest.approx(0.0, abs=1e-6)


def test_closed_form_equals_gradient_route(planted, default_setup):
    """Both exact routes give the same node parts of the query and the key; the closed form is used only
    where every attention layer below has an SAE (the planted model's layer 0 has none)."""
    from core.tracing.qk import QKAttributor

    rm, state, _ = planted
    assert QKAttributor(rm, state).closed_form(0) and not QKAttributor(rm, state).closed_form(1)
    rm, state = default_setup
    pairs = [(3, 2, 14, 2), (2, 5, 8, 4), (0, 1, 6, 6)]
    fast, slow = QKAttributor(rm, state), QKAttributor(rm, state, method="gradient")
    assert all(fast.closed_form(p[0]) for p in pairs) and not slow.closed_form(1)
    for p in pairs:
        a, b = fast.attribute(*p), slow.attribute(*p)
        assert torch.allclose(a.q_contrib, b.q_contrib, atol=1e-5) and torch.allclose(
            a.k_contrib, b.k_contrib, atol=1e-5
        )
        assert torch.allclose(a.key_side, b.key_side, atol=1e-5)
    assert fast.n_backward == 0 and slow.n_backward == len(pairs)
    with pytest.raises(ValueError, match="method"):
        QKAttributor(rm, state, method="exact")  # type: ignore[arg-type]


def _scale_frozen_pre(rm, state, hook: str, pos: int, vec: torch.Tensor, eps: float) -> float:
    """Pre-activation of attn.1/0@3 in the real model with LayerNorm scales frozen, patterns live, and
    `eps * vec` added at `hook`, position `pos`."""
    _, cache = rm.model.run_with_cache(state.tokens[None])

    def scale(value, hook):
        return cache[hook.name]

    def add(value, hook):
        value = value.clone()
        value[0, pos] += eps * vec
        return value

    names = [n for n in rm.model.hook_dict if n.endswith("hook_scale")]
    seen = {}
    hooks = [(n, scale) for n in names] + [(hook, add)]
    hooks.append(("blocks.1.hook_attn_out", lambda v, hook: seen.setdefault("out", v.detach())))
    rm.model.run_with_hooks(state.tokens[None], fwd_hooks=hooks)
    d = rm.by_id["attn:blocks.1.hook_attn_out"]
    return float(d.module.process_sae_in(seen["out"][0, 3:4]) @ d.module.W_enc[:, 0] + d.module.b_enc[0])


def test_planted_qk_expansion_recovers_what_frozen_tracing_misses(planted):
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget
    from core.tracing.qk import QKParams, expand_qk, node_vector

    rm, state, info = planted
    target = LogitTarget(info["token"], info["q_pos"])
    G = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.02))
    assert info["attn_latent"] in G
    assert info["key_feature"] not in G  # no direct effect: the value ignores the marker
    expand_qk(rm, state, G, QKParams(qk_threshold=0.1))
    assert info["key_feature"] in G and G.nodes[info["key_feature"]]["qk_only"]
    edge = G.edges[info["key_feature"], info["attn_latent"]]
    assert edge["edge_kind"] == "qk" and edge["heads"] == [info["head"]]
    # The planted feature sits at the key position: its effect runs through the key side alone.
    q_side, k_side = edge["qk_sides"]
    assert q_side + k_side == pytest.approx(edge["weight"], abs=1e-6) and q_side == pytest.approx(0.0, abs=1e-6)
    assert G.graph["qk_params"]["qk_threshold"] == 0.1 and G.graph["qk_backward"] >= 1
    assert [1, 0, 3, 1] in G.graph["qk_pairs"]
    # The flag expands the added latent one level: its direct parent, the token it reads, is joined to it.
    assert G.has_edge(f"embed@{info['k_pos']}", info["key_feature"]) and G.nodes[info["key_feature"]]["expanded"]
    assert "edge_kind" not in G.edges[f"embed@{info['k_pos']}", info["key_feature"]]
    # The edge weight is the first-order effect through the live pattern: check by finite differences.
    i = next(j for j, n in enumerate(state.nodes) if n.node_id == info["key_feature"])
    hook, pos, vec = node_vector(state, i)
    eps = 1e-3
    fd = (_scale_frozen_pre(rm, state, hook, pos, vec, eps) - _scale_frozen_pre(rm, state, hook, pos, vec, -eps)) / (
        2 * eps
    )
    assert edge["weight"] == pytest.approx(fd, rel=1e-2)
    # A threshold above every QK share adds nothing.
    G2 = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.02))
    n_before = G2.number_of_nodes()
    expand_qk(rm, state, G2, QKParams(qk_threshold=0.99))
    assert G2.number_of_nodes() == n_before
    assert not any(d.get("edge_kind") == "qk" for *_, d in G2.edges(data=True))
    G4 = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.02))
    expand_qk(rm, state, G4, QKParams(qk_threshold=0.1, latents_only=True))
    qk_sources = {u for u, _, d in G4.edges(data=True) if d.get("edge_kind") == "qk"}
    assert qk_sources == {info["key_feature"]}  # the query token's embedding is left out
    G3 = hierarchical_trace(rm, state, target, TraceParams(node_threshold=0.02))
    expand_qk(rm, state, G3, QKParams(qk_threshold=0.1, expand_parents=False))
    assert info["key_feature"] in G3 and not G3.in_edges(info["key_feature"])


def test_attention_without_saes_stays_exact():
    """Without attention SAEs the attention of earlier layers is inside the linear path: nodes at other
    positions reach the query and key, and the decomposition is still exact."""
    from core.tracing.qk import max_qk_error, qk_attribution
    from core.tracing.replacement import ReplacementModel

    model = relu_model(d_vocab=64, seed=3)
    dicts = [d for d in exact_dictionaries(model, seed=3) if d.kind == "transcoder"]
    rm = ReplacementModel(model, dicts)
    tokens = torch.tensor([0] + torch.randint(1, 64, (7,), generator=torch.Generator().manual_seed(3)).tolist())
    state = rm.prepare(tokens)
    a = qk_attribution(rm, state, 1, 2, 7, 3)
    assert any(state.nodes[i].position != 7 for i, _ in a.top("query", 20))
    # relu_model's sharp attention gives scores near 800: float32 leaves ~1e-4 absolute, so the bound is relative.
    pairs = [(1, 2, 7, 3), (1, 0, 6, 6), (0, 1, 5, 2)]
    biggest = max(abs(qk_attribution(rm, state, *p).score) for p in pairs)
    assert biggest > 100 and max_qk_error(rm, state, pairs, nodes_per_side=4) <= 1e-6 * biggest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((9, 0, 3, 1), "layer 9 does not exist"),
        ((1, 4, 3, 1), "head 4 does not exist"),
        ((1, 0, 7, 1), "query position 7 is outside"),
        ((1, 0, 3, -1), "key position -1 is outside"),
        ((1, 0, 1, 3), "causal mask"),
    ],
)
def test_bad_pairs_are_refused(planted, args, message):
    from core.tracing.qk import qk_attribution

    rm, state, _ = planted
    with pytest.raises(ValueError, match=message):
        qk_attribution(rm, state, *args)


def test_bad_qk_params_are_refused():
    from core.tracing.qk import QKParams

    with pytest.raises(ValueError, match="qk_threshold"):
        QKParams(qk_threshold=1.5)
    with pytest.raises(ValueError, match="max_qk_parents"):
        QKParams(max_qk_parents=0)
    with pytest.raises(ValueError, match="keys_per_head"):
        QKParams(keys_per_head=0)


@pytest.fixture(scope="module")
def default_setup():
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model
    from core.tracing.loading import tracing_dictionaries
    from core.tracing.replacement import ReplacementModel

    model = load_model("default")
    rm = ReplacementModel(model, tracing_dictionaries(load_default_dictionaries().values()))
    state = rm.prepare(rm.tokenize("When Mary and John went to the store, John gave a drink to"))
    return rm, state


def test_default_model_attribution_is_exact(default_setup):
    from core.tracing.qk import QKAttributor, max_qk_error

    rm, state = default_setup
    last = state.n_positions - 1
    a = QKAttributor(rm, state).attribute(3, 2, last, 2)
    _, cache = rm.model.run_with_cache(state.tokens[None])
    assert a.score == pytest.approx(float(cache["blocks.3.attn.hook_attn_scores"][0, 2, last, 2]), abs=1e-4)
    assert max_qk_error(rm, state, [(3, 2, last, 2), (2, 5, 8, 4), (1, 0, 5, 5)], nodes_per_side=3) <= 1e-4


def test_default_model_qk_expansion_adds_qk_edges(default_setup):
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.qk import QKParams, expand_qk
    from core.tracing.replacement import logit_target

    rm, state = default_setup
    target = logit_target(rm, state.tokens, " Mary", " John")
    G = hierarchical_trace(rm, state, target, TraceParams(max_latents=30))
    n_before = G.number_of_nodes()
    expand_qk(rm, state, G, QKParams(max_latents=5))
    qk = [(u, v) for u, v, d in G.edges(data=True) if d.get("edge_kind") == "qk" or "qk_weight" in d]
    assert qk and all(G.nodes[v]["kind"] == "attn" for _, v in qk)
    assert G.number_of_nodes() >= n_before


def test_qk_edges_keep_their_kind_through_the_graph_json(planted):
    """A saved or exported graph keeps which edges are QK edges (graph_to_json / graph_from_json)."""
    from core.tracing.graph import graph_from_json, graph_to_json
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.nodes import LogitTarget
    from core.tracing.qk import QKParams, expand_qk

    rm, state, info = planted
    G = hierarchical_trace(rm, state, LogitTarget(info["token"], info["q_pos"]), TraceParams(node_threshold=0.02))
    expand_qk(rm, state, G, QKParams(qk_threshold=0.1))
    back = graph_from_json(graph_to_json(G))
    edge = back.edges[info["key_feature"], info["attn_latent"]]
    assert edge["edge_kind"] == "qk" and edge["heads"] == [info["head"]]
    assert edge["qk_sides"] == pytest.approx(G.edges[info["key_feature"], info["attn_latent"]]["qk_sides"])
    assert {e for e in back.edges if back.edges[e].get("edge_kind") == "qk"} == {
        e for e in G.edges if G.edges[e].get("edge_kind") == "qk"
    }


def test_trace_command_with_qk_adds_qk_edges_and_refuses_bad_params(tmp_path, capsys):
    """`python -m core trace --qk` traces with QK expansion (its JSON summary counts the QK edges, the saved
    graph keeps their kind); a bad --qk-threshold is one error line before anything loads."""
    from core.cli import main
    from core.tracing.graph import load_graph

    out = tmp_path / "g.json"
    argv = ["trace", "--prompt", "When Mary and John went to the store, John gave a drink to", "--target", " Mary"]
    assert main([*argv, "--contrast", " John", "--qk", "--no-faithfulness", "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    G = load_graph(out)
    n_qk = sum(1 for *_, d in G.edges(data=True) if d.get("edge_kind") == "qk")
    assert summary["n_qk_edges"] == n_qk and n_qk > 0
    assert main([*argv, "--qk", "--qk-threshold", "2", "--no-faithfulness"]) == 2
    assert "qk_threshold must be in [0, 1)" in capsys.readouterr().err
