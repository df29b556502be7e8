"""core.tracing.influence: circuit-tracer's influence on a fixed matrix (values computed by hand), and one
number per node wherever influence is shown (Circuits page, LLM pruning prompt, saved-circuit pruning)."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from core.tracing.influence import compute_influence, graph_influence, node_influence, normalize_matrix

# Rows are targets, columns sources: 3 <- 2 (+2), 3 <- 0 (-2); 2 <- 0 (+1), 2 <- 1 (+3). Node 3 is the logit.
A = torch.tensor(
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 3.0, 0.0, 0.0],
        [-2.0, 0.0, 2.0, 0.0],
    ],
    dtype=torch.float64,
)


def test_normalize_matrix_divides_abs_rows_by_their_sum():
    expected = torch.tensor(
        [[0, 0, 0, 0], [0, 0, 0, 0], [0.25, 0.75, 0, 0], [0.5, 0, 0.5, 0]],
        dtype=torch.float64,
    )
    assert torch.equal(normalize_matrix(A), expected)  # zero rows stay zero (the 1e-10 clamp), no NaN


def test_influence_is_circuit_tracers_w_times_the_path_series():
    # By hand: w Â = [0.5, 0, 0.5, 0]; w Â² = 0.5 * row 2 = [0.125, 0.375, 0, 0]; w Â³ = 0.
    w = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert node_influence(A, w).tolist() == [0.625, 0.375, 0.5, 0.0]
    # Two weighted targets, as circuit-tracer's logit probabilities: w = e_2 + e_3.
    w2 = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert node_influence(A, w2).tolist() == [0.875, 1.125, 0.5, 0.0]
    # Closed form: w ((I - Â)^-1 - I).
    a = normalize_matrix(A)
    closed = w @ (torch.linalg.inv(torch.eye(4, dtype=torch.float64) - a) - torch.eye(4, dtype=torch.float64))
    assert torch.allclose(node_influence(A, w), closed)


def test_a_cycle_is_refused():
    cyc = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="cycle"):
        compute_influence(normalize_matrix(cyc), torch.tensor([1.0, 0.0]), max_iter=50)
    G = nx.DiGraph([("a", "b"), ("b", "a")])
    G.add_node("b", is_target=True)
    with pytest.raises(ValueError, match="cycle"):
        graph_influence(G)


def remainder_graph() -> nx.DiGraph:
    """The matrix above as a graph, with untraced remainders: node 2's total |effect| is 8 (graph edges 4),
    the target's 8 (graph edges 4)."""
    G = nx.DiGraph()
    G.graph["target"] = {"node_id": "logit@5"}
    G.add_node("logit@5", kind="logit", layer=3, position=5, is_target=True, total_abs_effect=8.0)
    G.add_node("transcoder.1/7@5", kind="transcoder", layer=1, position=5, dictionary="t1", latent=7,
               total_abs_effect=8.0)  # fmt: skip
    G.add_node("transcoder.0/3@5", kind="transcoder", layer=0, position=5, dictionary="t0", latent=3)
    G.add_node("embed@5", kind="embed", layer=-1, position=5)
    G.add_edge("transcoder.1/7@5", "logit@5", weight=2.0)
    G.add_edge("transcoder.0/3@5", "logit@5", weight=-2.0)
    G.add_edge("transcoder.0/3@5", "transcoder.1/7@5", weight=1.0)
    G.add_edge("embed@5", "transcoder.1/7@5", weight=3.0)
    return G


def test_graph_influence_sends_the_untraced_remainder_to_a_sink():
    infl = graph_influence(remainder_graph())
    # Shares: logit <- t1 0.25, logit <- t0 0.25; t1 <- t0 1/8, t1 <- embed 3/8.
    assert infl["logit@5"] == 1.0
    assert infl["transcoder.1/7@5"] == pytest.approx(0.25)
    assert infl["transcoder.0/3@5"] == pytest.approx(0.25 + 0.25 / 8)
    assert infl["embed@5"] == pytest.approx(0.25 * 3 / 8)


def test_the_page_the_llm_prompt_and_pruning_use_the_same_numbers():
    from core.circuits import llm_pruning as L
    from core.circuits import pruning_comparison as P
    from core.circuits import saved as C

    G = remainder_graph()
    page = graph_influence(G)  # what pages/5_Circuits.py stores in circ.influence (node sizes, tooltips, sliders)
    assert L.graph_influence(G, L.target_node(G)) == page
    user = L.single_prompt(G, L.task_for_graph(G), {}, L.graph_influence(G, L.target_node(G)), L.PruneConfig())[1][
        "content"
    ]
    for v in G:
        if v != "logit@5":
            assert f"\n{v} |" in user and f"| infl {page[v]:.3f} |" in user.split(f"\n{v} |", 1)[1].split("\n")[0]
    # Saved-circuit pruning drops exactly the nodes under the threshold by these numbers.
    H = C.prune_graph(G, C.Pruning(node_threshold=0.2))
    assert set(H) == {v for v in G if page[v] >= 0.2}
    # The comparison's threshold pruning ranks latents by them too.
    assert P.influence_circuit(G, 1) == frozenset({("t0", 5, 3)})
