"""Hierarchical tracing (the seed paper's method): expand the strongest parents level by level.

Method, step by step:
1. Prepare the prompt's replacement model (`ReplacementModel.prepare`): every active latent,
   error and embedding is a node; one frozen forward over `batch_size` copies is kept for all
   backward passes (`Attributor`).
2. Level 0 is the target: a token's logit, the difference of two tokens' logits, or a latent's
   pre-activation at a position.
3. For every node of the current level, in batches of `batch_size` per backward pass, compute the
   direct effect of every source node on it (`attribution.py`). A source's *share* is
   |effect| / sum of |effects| over all sources (latents, errors, embeddings).
4. Keep the parents whose share exceeds `node_threshold`, at most `max_parents` per node (largest
   first). Kept latents that have not been expanded form the next level; errors and embeddings are
   leaves. Stop when a level is empty, after `max_depth` levels, or once `max_latents` latents are
   kept (the rest stay in the graph unexpanded).
5. Edges: between every kept node and every expanded node, keep the direct effect if its share of
   the expanded node's total is at least `edge_threshold`; the parent edges chosen in step 4 are
   always kept. Edge weight = the direct effect (signed).
6. The graph (networkx, see `graph.py`) stores the parameters, the number of backward passes and
   the seconds of each phase (`prepare`, `frozen_forward`, `backward`, `effects`, `select`).

The backward-pass count is what makes this cheap: one pass per level (per `batch_size` nodes),
against one per `batch_size` active latents for the full graph (`full_graph.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import networkx as nx
import torch

from core.progress import Progress
from core.settings import setting
from core.tracing.attribution import Attributor, target_for_node
from core.tracing.graph import node_attributes, start_graph
from core.tracing.nodes import Target
from core.tracing.replacement import PromptState, ReplacementModel
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

_TARGET = -1  # key of the target in the expansion tables


@dataclass(frozen=True)
class TraceParams:
    """Every knob of a hierarchical trace; stored with the graph. Each field is also a flag of the
    `trace`/`circuits` commands (`core.settings`)."""

    node_threshold: float = setting(0.02, help="keep parents with a larger share of |direct effect|")
    max_parents: int = setting(10, help="at most this many parents per node")
    edge_threshold: float = setting(0.01, help="keep edges between kept nodes with at least this share")
    max_depth: int = setting(32, help="levels below the target")
    max_latents: int = setting(200, help="stop expanding after this many latents")
    batch_size: int = setting(32, help="targets per backward pass")

    def __post_init__(self) -> None:
        if not 0 <= self.node_threshold < 1:
            raise ValueError(f"node_threshold must be in [0, 1), got {self.node_threshold}")
        if not 0 <= self.edge_threshold < 1:
            raise ValueError(f"edge_threshold must be in [0, 1), got {self.edge_threshold}")
        for name in ("max_parents", "max_depth", "max_latents", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass
class Expansion:
    """What a trace computed: direct-effect rows of the expanded nodes and the kept nodes (indices into state.nodes)."""

    rows: dict[int, torch.Tensor]  # expanded node index (or -1 for the target) -> effects [n_nodes]
    kept: dict[int, int]  # kept node index -> level at which it was first kept
    parent_edges: set[tuple[int, int]]  # (source index, expanded index) chosen in step 4
    n_backward: int
    timings: dict[str, float]


def select_parents(row: torch.Tensor, node_threshold: float, max_parents: int) -> list[int]:
    """Indices of the parents kept from one direct-effect row `[n_nodes]` (step 4), largest share first."""
    absrow = row.abs()
    total = float(absrow.sum())
    if total <= 0:
        return []
    share = absrow / total
    k = min(max_parents, int((share > node_threshold).sum()))
    if k == 0:
        return []
    return [int(i) for i in torch.topk(share, k).indices]


def expand(
    rm: ReplacementModel,
    state: PromptState,
    target: Target,
    params: TraceParams,
    progress: Progress | None = None,
) -> Expansion:
    """Steps 2-4: expand from `target` level by level; returns the rows and kept nodes."""
    attributor = Attributor(rm, state, params.batch_size)
    timings = attributor.timings
    rows: dict[int, torch.Tensor] = {}
    kept: dict[int, int] = {}
    parent_edges: set[tuple[int, int]] = set()
    frontier = [_TARGET]
    n_latents = 0
    for level in range(params.max_depth + 1):
        if not frontier:
            break
        report(progress, f"level {level}: {len(frontier)} node(s)", min(0.9, 0.1 + 0.1 * level))
        targets = [target if k == _TARGET else target_for_node(state, k) for k in frontier]
        effects = attributor.effects(targets)  # [len(frontier), n_nodes]
        t0 = time.perf_counter()
        nxt: list[int] = []
        for k, row in zip(frontier, effects, strict=True):
            rows[k] = row
            for s in select_parents(row, params.node_threshold, params.max_parents):
                parent_edges.add((s, k))
                if s in kept:
                    continue
                kept[s] = level + 1
                if state.nodes[s].is_latent:
                    n_latents += 1
                    if n_latents <= params.max_latents and level < params.max_depth:
                        nxt.append(s)
        frontier = [s for s in nxt if s not in rows]
        timings["select"] = timings.get("select", 0.0) + time.perf_counter() - t0
    if frontier:
        log.info(
            "stopped with %d nodes unexpanded (max_depth %d, max_latents %d)",
            len(frontier),
            params.max_depth,
            params.max_latents,
        )
    attributor.release()
    return Expansion(rows, kept, parent_edges, attributor.n_backward, timings)


def expansion_graph(
    rm: ReplacementModel,
    state: PromptState,
    target: Target,
    params: TraceParams,
    ex: Expansion,
    prompt: str | None = None,
) -> nx.DiGraph:
    """Step 5: the networkx graph of an expansion, with edges above `edge_threshold`."""
    value = rm.clean_target_value(state, target)
    tnode = rm.target_node(state, target, value)
    G = start_graph(state.token_strs, state.tokens.tolist(), tnode, "hierarchical", params.to_json(), prompt)
    G.graph["n_layers"] = rm.n_layers
    ids = {_TARGET: tnode.node_id}
    for s, level in sorted(ex.kept.items(), key=lambda t: (t[1], t[0])):
        n = state.nodes[s]
        ids[s] = n.node_id
        G.add_node(n.node_id, **node_attributes(n), level=level, expanded=s in ex.rows)
    G.nodes[tnode.node_id].update(level=0, expanded=True)
    kept_idx = torch.tensor(sorted(ex.kept), dtype=torch.long)
    for k, row in ex.rows.items():
        total = float(row.abs().sum())
        G.nodes[ids[k]]["total_abs_effect"] = total
        if total <= 0 or kept_idx.numel() == 0:
            continue
        vals = row[kept_idx]
        strong = (vals.abs() / total >= params.edge_threshold).nonzero().flatten()
        chosen = {int(kept_idx[j]) for j in strong} | {s for s, t in ex.parent_edges if t == k}
        for s in chosen:
            if s != k:
                G.add_edge(ids[s], ids[k], weight=float(row[s]))
    return G


def hierarchical_trace(
    rm: ReplacementModel,
    state: PromptState,
    target: Target,
    params: TraceParams | None = None,
    progress: Progress | None = None,
    prompt: str | None = None,
) -> nx.DiGraph:
    """Trace `target` on a prepared prompt (steps 2-6); returns the attribution graph."""
    params = params or TraceParams()
    rm.check_target(target, state.n_positions)
    t0 = time.perf_counter()
    ex = expand(rm, state, target, params, progress)
    with phase("graph", ex.timings, log):
        G = expansion_graph(rm, state, target, params, ex, prompt)
    G.graph["n_backward"] = ex.n_backward
    G.graph["timings"] = {k: round(v, 4) for k, v in ex.timings.items()}
    G.graph["seconds"] = round(time.perf_counter() - t0, 4)
    report(progress, f"traced: {G.number_of_nodes()} nodes, {G.number_of_edges()} edges", 1.0)
    return G
