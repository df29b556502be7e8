"""Full attribution graph (circuit-tracer style): direct effects between every pair of active nodes.

Method, step by step:
1. Prepare the prompt (`ReplacementModel.prepare`); nodes are every active latent at every
   non-BOS position, one error node per (dictionary, position) and the embeddings.
2. Rows: the target and every active latent, in batches of `batch_size` per backward pass over one
   retained frozen forward (`Attributor`). Row t of the adjacency `A: [n+1, n+1]` holds the direct
   effect of every source s on t (`A[t, s]`); the target is the last index. Errors and embeddings
   have no parents (zero rows). Memory is (n+1)^2 floats for n active nodes: 100 MB at n = 5,000 (refused above `max_nodes`);
   restricted to active nodes at the prompt's positions, never [d_sae, d_sae].
3. Influence (circuit-tracer's pruning score, `core.tracing.influence`): normalise each row by its
   absolute sum, `Â = |A| / rowsum`, and sum the target's row over all path lengths,
   `e_t (Â + Â² + ...)`; the graph is a DAG so the series ends after at most 2 * n_layers + 2 terms.
4. Pruning: keep the latents with the highest influence, either a fixed number or the smallest set
   reaching a share of the total latent influence (`prune_by_influence`).
Each phase's time is logged and kept in `FullGraph.timings`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import networkx as nx
import torch

from core.progress import Progress
from core.tracing.attribution import Attributor, target_for_node
from core.tracing.graph import node_attributes, start_graph
from core.tracing.influence import node_influence, one_hot
from core.tracing.nodes import NodeInfo, Target
from core.tracing.replacement import PromptState, ReplacementModel
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)


@dataclass
class FullGraph:
    """Dense adjacency over every node of a prompt plus the target (last index)."""

    nodes: list[NodeInfo]  # state.nodes + [target node]
    adjacency: torch.Tensor  # [n+1, n+1], A[t, s] = direct effect of s on t
    n_backward: int
    batch_size: int
    token_strs: list[str]
    token_ids: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def target_index(self) -> int:
        """Index of the target node (the last)."""
        return len(self.nodes) - 1

    def effect(self, source: int, target: int) -> float:
        """Direct effect of node `source` on node `target`."""
        return float(self.adjacency[target, source])


def full_attribution_graph(
    rm: ReplacementModel,
    state: PromptState,
    target: Target,
    batch_size: int = 32,
    progress: Progress | None = None,
    max_nodes: int = 12_000,
) -> FullGraph:
    """Direct effects between all active nodes of `state` and on `target` (steps 1-2)."""
    rm.check_target(target, state.n_positions)
    n = state.n_nodes
    if n + 1 > max_nodes:
        raise ValueError(
            f"the full graph would have {n + 1} nodes (> max_nodes {max_nodes}); use hierarchical tracing or a shorter prompt"
        )
    attributor = Attributor(rm, state, batch_size)
    timings = attributor.timings
    A = torch.zeros(n + 1, n + 1, device=state.tokens.device)
    A[n, :n] = attributor.effects([target])[0]
    latents = state.latent_node_indices()
    step = batch_size * 4
    for start in range(0, len(latents), step):
        idx = latents[start : start + step]
        A[torch.tensor(idx), :n] = attributor.effects([target_for_node(state, i) for i in idx])
        report(
            progress,
            f"full graph: {start + len(idx)}/{len(latents)} latents",
            (start + len(idx)) / max(1, len(latents)),
        )
    attributor.release()
    log.info(
        "full graph: %d nodes, %d backward passes; %s",
        n + 1,
        attributor.n_backward,
        ", ".join(f"{k} {v:.3f} s" for k, v in timings.items()),
    )
    value = rm.clean_target_value(state, target)
    nodes = [*state.nodes, rm.target_node(state, target, value)]
    return FullGraph(
        nodes, A, attributor.n_backward, batch_size, list(state.token_strs), state.tokens.tolist(), timings
    )


def target_influence(full: FullGraph) -> torch.Tensor:
    """Every node's influence on the target (step 3, `core.tracing.influence.node_influence`): `[n+1]`."""
    return node_influence(full.adjacency, one_hot(len(full.nodes), full.target_index, full.adjacency))


def prune_by_influence(full: FullGraph, n_latents: int | None = None, cumulative: float = 0.8) -> list[int]:
    """Latent node indices kept by influence (step 4): the top `n_latents`, or the fewest reaching `cumulative` of the latents' total."""
    t0 = time.perf_counter()
    influence = target_influence(full)
    latent = torch.tensor([i for i, nd in enumerate(full.nodes[:-1]) if nd.is_latent], dtype=torch.long)
    if latent.numel() == 0:
        return []
    scores = influence[latent]
    order = torch.argsort(scores, descending=True)
    if n_latents is None:
        csum = torch.cumsum(scores[order], 0) / scores.sum().clamp_min(1e-30)
        n_latents = int((csum < cumulative).sum()) + 1
    keep = [int(latent[j]) for j in order[: min(n_latents, latent.numel())]]
    full.timings["prune"] = full.timings.get("prune", 0.0) + time.perf_counter() - t0
    return keep


def full_graph_to_networkx(full: FullGraph, keep: list[int] | None = None, edge_threshold: float = 0.0) -> nx.DiGraph:
    """The full graph (or the subgraph of `keep` latents plus all errors, embeddings and the target) as a DiGraph.

    Edges whose share of their target's absolute direct-effect total is below `edge_threshold` are dropped.
    """
    with phase("to_networkx", full.timings, log):
        tnode = full.nodes[-1]
        G = start_graph(
            full.token_strs,
            full.token_ids,
            tnode,
            "full",
            {"batch_size": full.batch_size, "edge_threshold": edge_threshold},
        )
        influence = target_influence(full)
        chosen = set(range(len(full.nodes) - 1)) if keep is None else set(keep)
        chosen |= {i for i, nd in enumerate(full.nodes[:-1]) if not nd.is_latent}
        ids = {full.target_index: tnode.node_id}
        # Each node's |direct effect| from all its parents, kept or not, so that influence and edge shares
        # of the (possibly pruned) networkx graph are those of the full graph (core.tracing.influence).
        row_totals = full.adjacency.abs().sum(1)
        for i in sorted(chosen):
            nd = full.nodes[i]
            ids[i] = nd.node_id
            G.add_node(
                nd.node_id,
                **node_attributes(nd),
                influence=float(influence[i]),
                total_abs_effect=float(row_totals[i]),
            )
        G.nodes[tnode.node_id]["total_abs_effect"] = float(row_totals[full.target_index])
        idx = torch.tensor(sorted(chosen | {full.target_index}), dtype=torch.long)
        sub = full.adjacency[idx][:, idx]
        totals = full.adjacency[idx].abs().sum(1, keepdim=True).clamp_min(1e-30)
        mask = (sub != 0) & (sub.abs() / totals >= edge_threshold)
        for r, c in mask.nonzero().tolist():
            G.add_edge(ids[int(idx[c])], ids[int(idx[r])], weight=float(sub[r, c]))
        G.graph["n_backward"] = full.n_backward
        G.graph["timings"] = {k: round(v, 4) for k, v in full.timings.items()}
    return G
