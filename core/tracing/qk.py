"""QK attribution: which nodes decide where an attention head looks, by an exact bilinear decomposition.

Hierarchical tracing freezes attention patterns, so a node that matters by moving *where* a head
attends (through its query or its key) has no direct effect. This module measures that route.

Method, step by step (`QKAttributor.attribute`):
1. With LayerNorm scales and attention patterns frozen (as everywhere in tracing), the query
   `q = W_Q^T LN(x_q) + b_Q` of a head is affine in every node's vector, and so is the key.
2. For a head `h` of layer `L` and a (query, key) pair, each node's part of the query and the key:
   `Q: [n_nodes, d_head]`, `K: [n_nodes, d_head]`, by one of two exact routes:
   - closed form, when every layer below L has an attention SAE (the default model): the residual
     at a position is then the sum of that position's node vectors plus constants, so
     `Q_i = LN1_lin(v_i) @ W_Q[h]` (`LN1_lin`: centre, divide by the cached scale, times ln1.w);
   - gradients otherwise (an attention layer without an SAE carries nodes of other positions into
     the query and key): one frozen forward (`ReplacementModel.frozen_forward`) over
     `2 * d_head` copies, row r < d_head reading component r of `hook_q[q_pos, h]` and row
     d_head + r component r of `hook_k[k_pos, h]`; one backward pass per pair, turned into node
     parts by `effects_from_gradients`.
   What is left (`q - Q.sum(0)`: b_Q, LayerNorm and decoder biases) is `q_const` (likewise `k_const`).
3. The score `s = q . k / attn_scale` (TransformerLens's `hook_attn_scores` before the causal mask,
   with its scale and biases) is bilinear in the two sides, exactly:
       s = sum_ij Q_i . K_j / c + sum_i Q_i . k_const / c + q_const . sum_j K_j / c + q_const . k_const / c.
   A node's query-side contribution is `Q_i . k / c` (its whole effect on s with the key side at
   its clean value, so it equals the score change when the node's vector is removed from the
   query-side residual, LN scale frozen); its key-side contribution is `q . K_j / c`.
4. The pattern weight `p = softmax(s[q, :])[k]` the traced edges used moves with the score: its
   sensitivity is `dp/ds = p (1 - p)` (the softmax Jacobian's diagonal at clean values). First-order
   pattern effects: a key-side node (which moves only s[q, k] when all attention layers below have
   SAEs) changes p by `p (1 - p) * key_side`; a query-side node moves the whole row,
   `dp_k = p_k (qs_k - sum_k' p_k' qs_k')` with `qs_k' = Q_i . k_k' / c`.
5. `expand_qk` adds the top QK contributors of the heads that carry a graph's attention latents as
   nodes with edges of a second kind (`edge_kind="qk"`), weighted by the first-order effect on the
   attention latent's pre-activation through the pattern: for a value write `z_k' = (v_k' W_O) . e`
   (`e` the latent's encoder direction), a score change `ds` moves the pre-activation by
   `sum_k' dp_k' z_k'`. Per latent it examines the `heads_per_latent` heads with the largest
   `sum_k |p_k z_k|` and, per head, the `keys_per_head` keys with the largest `|p_k (z_k - mean_p z)|`.
   With `expand_parents`, each added latent is expanded one level as hierarchical tracing does
   (its direct parents by `node_threshold`/`max_parents`, edges from nodes in the graph above
   `edge_threshold`). Times go to `G.graph["timings"]` (`qk_*` phases), the pairs to `qk_pairs`.
`qk_ablation_effect` is the independent check of step 3: explicit removal of a node's vector from
its site, a frozen forward, and the recomputed score.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import networkx as nx
import torch

from core.tracing.attribution import effects_from_gradients
from core.tracing.graph import node_attributes
from core.tracing.replacement import FrozenRun, PromptState, ReplacementModel, pre_activation
from core.tracing.timing import phase

log = logging.getLogger(__name__)

Side = Literal["query", "key"]


@dataclass
class QKAttribution:
    """The attention score of one head at one (query, key) pair split into node contributions.

    Node indices are those of `state.nodes`; `c = scale` is TransformerLens's attn_scale.
    Invariants (exact, float error only): `query_side.sum() + query_bias == score` and
    `key_side.sum() + key_bias == score`.
    """

    layer: int
    head: int
    q_pos: int
    k_pos: int
    score: float  # s = q . k / c at clean values
    scale: float  # c
    q_vec: torch.Tensor  # [d_head] clean query (with b_Q)
    k_vec: torch.Tensor  # [d_head] clean key (with b_K)
    q_contrib: torch.Tensor  # [n_nodes, d_head] each node's part of q_vec
    k_contrib: torch.Tensor  # [n_nodes, d_head] each node's part of k_vec
    q_const: torch.Tensor  # [d_head] biases' part of q_vec
    k_const: torch.Tensor  # [d_head] biases' part of k_vec
    query_side: torch.Tensor  # [n_nodes] Q_i . k / c
    key_side: torch.Tensor  # [n_nodes] q . K_j / c
    query_bias: float  # q_const . k / c
    key_bias: float  # q . k_const / c
    pattern: float  # p = pattern[head, q_pos, k_pos]
    dpattern_ds: float  # p (1 - p)
    query_pattern_effect: torch.Tensor  # [n_nodes] first-order change of p from each query-side node
    key_pattern_effect: torch.Tensor  # [n_nodes] p (1 - p) * key_side
    query_scores: torch.Tensor = field(repr=False)  # [n_nodes, q_pos + 1] Q_i . k_k' / c for every key k'

    def bilinear(self, rows: list[int], cols: list[int]) -> torch.Tensor:
        """The bilinear terms `Q_i . K_j / c` for query-side nodes `rows` and key-side nodes `cols`: `[rows, cols]`."""
        return self.q_contrib[rows] @ self.k_contrib[cols].T / self.scale

    def top(self, side: Side, n: int = 10) -> list[tuple[int, float]]:
        """The `n` nodes with the largest |contribution| on `side`, as (node index, contribution)."""
        v = self.query_side if side == "query" else self.key_side
        k = min(n, int((v != 0).sum()))
        if k == 0:
            return []
        idx = torch.topk(v.abs(), k).indices
        return [(int(i), float(v[i])) for i in idx]


def _check_config(rm: ReplacementModel) -> None:
    cfg = rm.model.cfg
    if cfg.positional_embedding_type in ("rotary", "alibi"):
        raise NotImplementedError(
            f"QK attribution reads hook_q/hook_k before any rotation; {cfg.positional_embedding_type} "
            "position embeddings are not supported"
        )
    if getattr(cfg, "attn_scores_soft_cap", -1.0) > 0:
        raise NotImplementedError("QK attribution needs raw scores; this model soft-caps them")


def check_pair(rm: ReplacementModel, state: PromptState, layer: int, head: int, q_pos: int, k_pos: int) -> None:
    """ValueError with the allowed range if the layer, head or positions do not exist or the key is masked."""
    cfg = rm.model.cfg
    n = state.n_positions
    if not 0 <= layer < cfg.n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{cfg.n_layers - 1}")
    if not 0 <= head < cfg.n_heads:
        raise ValueError(f"head {head} does not exist: layer {layer} has heads 0..{cfg.n_heads - 1}")
    for name, p in (("query", q_pos), ("key", k_pos)):
        if not 0 <= p < n:
            raise ValueError(f"{name} position {p} is outside the prompt (0..{n - 1})")
    if k_pos > q_pos:
        raise ValueError(f"key position {k_pos} is after query position {q_pos}: the causal mask hides it")


def _kv_head(rm: ReplacementModel, head: int) -> int:
    cfg = rm.model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return head // (cfg.n_heads // n_kv)


def _attn_scale(rm: ReplacementModel, layer: int) -> float:
    return float(rm.model.blocks[layer].attn.attn_scale)


def node_vector(state: PromptState, index: int) -> tuple[str, int, torch.Tensor]:
    """(site hook, position, vector `[d_model]`) that node `index` writes into the residual stream."""
    for site in state.sites:
        local = index - site.node_offset
        if 0 <= local < site.n_nodes:
            if local < site.n_features:
                return site.hook, int(site.feat_pos[local]), site.feat_act[local] * site.feat_dec[local]
            p = local - site.n_features
            return site.hook, p, site.residual[p]
    raise IndexError(f"node {index} does not exist: the prompt has {state.n_nodes} nodes")


class QKAttributor:
    """QK attributions of any (layer, head, query, key) on one prepared prompt (steps 1-4).

    Two exact routes to the node parts `Q`, `K` of step 2:
    - closed form, when every layer below `layer` has an attention SAE: the residual at a position
      is then the sum of the node vectors at that position plus constants, so
      `Q_i = LN1_lin(v_i) @ W_Q[head]` with `LN1_lin` the frozen LayerNorm's linear part (centre,
      divide by the cached scale, times its weight): no backward pass;
    - gradients (`2 * d_head` rows over one retained frozen forward, one backward per pair),
      otherwise: an attention layer without an SAE is inside the linear path and carries nodes of
      other positions into the query and key.
    `method="gradient"` forces the second route (the tests check both agree). `timings` holds the
    seconds of each phase; `n_backward` counts backward passes.
    """

    def __init__(self, rm: ReplacementModel, state: PromptState, method: Literal["auto", "gradient"] = "auto"):
        _check_config(rm)
        if method not in ("auto", "gradient"):
            raise ValueError(f"method must be 'auto' or 'gradient', got {method!r}")
        self.rm = rm
        self.state = state
        self.method = method
        self.d_head: int = rm.model.cfg.d_head
        self.timings: dict[str, float] = {}
        self.n_backward = 0
        self._run: FrozenRun | None = None
        self._live: dict[str, torch.Tensor] = {}
        self._clean: dict[str, torch.Tensor] = {}
        self._normed: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _forward(self) -> FrozenRun:
        if self._run is None:
            live: dict[str, torch.Tensor] = {}

            def keep(value: torch.Tensor, hook) -> torch.Tensor:
                live[hook.name] = value
                return value

            names = [f"blocks.{L}.attn.hook_{x}" for L in range(self.rm.n_layers) for x in ("q", "k")]
            with phase("qk_forward", self.timings, log), self.rm.model.hooks(fwd_hooks=[(n, keep) for n in names]):
                self._run = self.rm.frozen_forward(self.state, 2 * self.d_head)
            self._live = live
        return self._run

    def clean(self, name: str) -> torch.Tensor:
        """Clean activation `[pos, ...]` of `blocks.L.attn.hook_q/k/v` (one cached run of the real model)."""
        if not self._clean:
            names = {f"blocks.{L}.attn.hook_{x}" for L in range(self.rm.n_layers) for x in ("q", "k", "v")}
            with phase("qk_clean_run", self.timings, log), torch.no_grad():
                _, cache = self.rm.model.run_with_cache(self.state.tokens[None], names_filter=lambda n: n in names)
            self._clean = {n: cache[n][0].detach().float() for n in names}
        return self._clean[name]

    def values(self, layer: int) -> torch.Tensor:
        """Clean value vectors of `layer`: `[pos, n_kv_heads, d_head]`."""
        return self.clean(f"blocks.{layer}.attn.hook_v")

    def closed_form(self, layer: int) -> bool:
        """True if the residual at `layer`'s input is, at each position, the sum of that position's node vectors."""
        return self.method == "auto" and all(lay in self.rm.attn for lay in range(layer))

    def _position_inputs(self, layer: int, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(node indices `[m]`, their vectors through the frozen ln1 of `layer` `[m, d_model]`) at `pos`."""
        key = (layer, pos)
        if key not in self._normed:
            idx, vecs = [], []
            for site in self.state.sites:
                if site.layer >= layer:
                    continue
                off, nf = site.node_offset, site.n_features
                for p, a, b in site.pos_slices:
                    if p == pos:
                        idx.append(torch.arange(off + a, off + b))
                        vecs.append(site.feat_act[a:b, None] * site.feat_dec[a:b])
                idx.append(torch.tensor([off + nf + pos]))
                vecs.append(site.residual[pos][None])
            V = torch.cat(vecs).float()  # [m, d_model]
            ln = self.rm.model.blocks[layer].ln1
            if self.rm.model.cfg.normalization_type in ("LN", "LNPre"):
                V = V - V.mean(-1, keepdim=True)
            V = V / self.state.frozen[f"blocks.{layer}.ln1.hook_scale"][0, pos].float()
            if hasattr(ln, "w"):
                V = V * ln.w.detach().float()
            self._normed[key] = (torch.cat(idx).to(V.device), V)
        return self._normed[key]

    def _parts_closed(self, layer: int, head: int, q_pos: int, k_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.rm.model.blocks[layer].attn
        W_K = attn._W_K[_kv_head(self.rm, head)] if hasattr(attn, "_W_K") else attn.W_K[head]
        n = self.state.n_nodes
        out = []
        for pos, W in ((q_pos, attn.W_Q[head]), (k_pos, W_K)):
            idx, V = self._position_inputs(layer, pos)
            part = torch.zeros(n, self.d_head, device=V.device)
            part[idx] = V @ W.detach().float()
            out.append(part)
        return out[0], out[1]

    def _parts_gradient(self, layer: int, head: int, q_pos: int, k_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        run = self._forward()
        d = self.d_head
        q_all = self._live[f"blocks.{layer}.attn.hook_q"]  # [2d, pos, n_heads, d_head]
        k_all = self._live[f"blocks.{layer}.attn.hook_k"]  # [2d, pos, n_kv, d_head]
        r = torch.arange(d, device=q_all.device)
        t0 = time.perf_counter()
        with torch.enable_grad():
            rows = torch.cat([q_all[r, q_pos, head, r], k_all[d + r, k_pos, _kv_head(self.rm, head), r]])  # [2d]
            hooks = list(run.leaves)
            grads = torch.autograd.grad(
                rows.sum(), [run.leaves[h] for h in hooks], retain_graph=True, allow_unused=True
            )
        self.n_backward += 1
        self.timings["qk_backward"] = self.timings.get("qk_backward", 0.0) + time.perf_counter() - t0
        E = effects_from_gradients(self.state, dict(zip(hooks, grads, strict=True)), 2 * d)  # [2d, n_nodes]
        return E[:d].T, E[d:].T

    def attribute(self, layer: int, head: int, q_pos: int, k_pos: int) -> QKAttribution:
        """The QK attribution of head `head` of `layer` at (q_pos, k_pos) (steps 2-4)."""
        check_pair(self.rm, self.state, layer, head, q_pos, k_pos)
        closed = self.closed_form(layer)
        parts = self._parts_closed if closed else self._parts_gradient
        with phase("qk_closed_form" if closed else "qk_gradient", self.timings, log):
            Q, K = parts(layer, head, q_pos, k_pos)
        q_vec = self.clean(f"blocks.{layer}.attn.hook_q")[q_pos, head]
        k_keys = self.clean(f"blocks.{layer}.attn.hook_k")[: q_pos + 1, _kv_head(self.rm, head)]  # [q_pos + 1, d_head]
        pattern_row = self.state.frozen[f"blocks.{layer}.attn.hook_pattern"][0, head, q_pos, : q_pos + 1].float()
        return qk_from_contributions(
            layer, head, q_pos, k_pos, Q, K, q_vec, k_keys, pattern_row, _attn_scale(self.rm, layer)
        )

    def release(self) -> None:
        """Drop the retained forward graph and cached activations."""
        self._run = None
        self._live = {}
        self._clean = {}
        self._normed = {}


def qk_from_contributions(
    layer: int,
    head: int,
    q_pos: int,
    k_pos: int,
    Q: torch.Tensor,
    K: torch.Tensor,
    q_vec: torch.Tensor,
    k_keys: torch.Tensor,
    pattern_row: torch.Tensor,
    scale: float,
) -> QKAttribution:
    """Steps 3-4 as pure tensor maths.

    Q: [n_nodes, d_head] node parts of the query; K: [n_nodes, d_head] node parts of the key at k_pos;
    q_vec: [d_head]; k_keys: [q_pos + 1, d_head] clean keys of every visible position;
    pattern_row: [q_pos + 1] the frozen pattern of the query row; scale: attn_scale.
    """
    k_vec = k_keys[k_pos]
    q_const = q_vec - Q.sum(0)
    k_const = k_vec - K.sum(0)
    query_scores = Q @ k_keys.T / scale  # [n_nodes, q_pos + 1]
    query_side = query_scores[:, k_pos]
    key_side = K @ q_vec / scale
    p = float(pattern_row[k_pos])
    dp = p * (1.0 - p)
    query_pattern_effect = p * (query_side - query_scores @ pattern_row)
    return QKAttribution(
        layer=layer,
        head=head,
        q_pos=q_pos,
        k_pos=k_pos,
        score=float(q_vec @ k_vec / scale),
        scale=scale,
        q_vec=q_vec,
        k_vec=k_vec,
        q_contrib=Q,
        k_contrib=K,
        q_const=q_const,
        k_const=k_const,
        query_side=query_side,
        key_side=key_side,
        query_bias=float(q_const @ k_vec / scale),
        key_bias=float(q_vec @ k_const / scale),
        pattern=p,
        dpattern_ds=dp,
        query_pattern_effect=query_pattern_effect,
        key_pattern_effect=dp * key_side,
        query_scores=query_scores,
    )


def qk_attribution(
    rm: ReplacementModel, state: PromptState, layer: int, head: int, q_pos: int, k_pos: int
) -> QKAttribution:
    """The attention score of `head` of `layer` at (q_pos, k_pos) split into node contributions (see the module docstring)."""
    return QKAttributor(rm, state).attribute(layer, head, q_pos, k_pos)


@torch.no_grad()
def _frozen_qk(
    rm: ReplacementModel, state: PromptState, layer: int, overrides: dict[str, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """hook_q `[pos, n_heads, d_head]` and hook_k `[pos, n_kv, d_head]` of `layer` in a frozen forward with `overrides`."""
    out: dict[str, torch.Tensor] = {}

    def keep(value: torch.Tensor, hook) -> torch.Tensor:
        out[hook.name] = value.detach()
        return value

    names = [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
    with rm.model.hooks(fwd_hooks=[(n, keep) for n in names]):
        rm.frozen_forward(state, 1, overrides)
    return out[names[0]][0].float(), out[names[1]][0].float()


def qk_ablation_effect(
    rm: ReplacementModel, state: PromptState, layer: int, head: int, q_pos: int, k_pos: int, node: int, side: Side
) -> float:
    """Score change `s_clean - s_ablated` when node `node`'s vector is removed from its site (LN scales
    and patterns frozen) and only the `side` ('query' or 'key') of the score sees the removal.

    The independent check of `QKAttribution.query_side[node]` / `key_side[node]` (equal up to float error).
    """
    check_pair(rm, state, layer, head, q_pos, k_pos)
    hook, pos, vec = node_vector(state, node)
    site = next(s for s in state.sites if s.hook == hook)
    ablated = site.value.clone()
    ablated[pos] -= vec
    q0, k0 = _frozen_qk(rm, state, layer, None)
    q1, k1 = _frozen_qk(rm, state, layer, {hook: ablated})
    kvh = _kv_head(rm, head)
    c = _attn_scale(rm, layer)
    s0 = float(q0[q_pos, head] @ k0[k_pos, kvh]) / c
    if side == "query":
        s1 = float(q1[q_pos, head] @ k0[k_pos, kvh]) / c
    else:
        s1 = float(q0[q_pos, head] @ k1[k_pos, kvh]) / c
    return s0 - s1


def max_qk_error(
    rm: ReplacementModel,
    state: PromptState,
    pairs: list[tuple[int, int, int, int]],
    nodes_per_side: int = 5,
) -> float:
    """Max |QK attribution - explicit ablation effect| over each (layer, head, q_pos, k_pos) in `pairs`,
    for its `nodes_per_side` largest contributors on each side, and of the sum rule (contributions
    plus bias equal the score)."""
    qa = QKAttributor(rm, state)
    worst = 0.0
    for layer, head, q, k in pairs:
        a = qa.attribute(layer, head, q, k)
        worst = max(worst, abs(float(a.query_side.sum()) + a.query_bias - a.score))
        worst = max(worst, abs(float(a.key_side.sum()) + a.key_bias - a.score))
        sides: tuple[tuple[Side, torch.Tensor], ...] = (("query", a.query_side), ("key", a.key_side))
        for side, v in sides:
            for i, _ in a.top(side, nodes_per_side):
                eff = qk_ablation_effect(rm, state, layer, head, q, k, i, side)
                worst = max(worst, abs(float(v[i]) - eff))
    qa.release()
    return worst


# ---------------------------------------------------------------------- graph expansion (step 5)


@dataclass(frozen=True)
class QKParams:
    """Knobs of `expand_qk`; stored in `G.graph["qk_params"]`."""

    qk_threshold: float = 0.05  # keep a QK contributor whose |effect| is this share of the latent's |direct effects|
    max_qk_parents: int = 5  # at most this many QK contributors per attention latent
    heads_per_latent: int = 2  # heads examined per attention latent (largest |p z|)
    keys_per_head: int = 2  # key positions examined per head (largest |p (z - mean z)|)
    max_latents: int = 20  # attention latents examined (largest total |edge weight| first)
    expand_parents: bool = True  # give QK-added latents their own direct parents (one level, `connect_parents`)
    latents_only: bool = False  # rank only latent contributors (embeddings and errors dominate otherwise)

    def __post_init__(self) -> None:
        if not 0 <= self.qk_threshold < 1:
            raise ValueError(f"qk_threshold must be in [0, 1), got {self.qk_threshold}")
        for name in ("max_qk_parents", "heads_per_latent", "keys_per_head", "max_latents"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _encoder_direction(rm: ReplacementModel, dict_id: str, latent: int, x: torch.Tensor) -> torch.Tensor:
    """Gradient `[d_model]` of the latent's pre-activation with respect to its input at `x: [d_model]`
    (the encoder is affine, so this is its linear part)."""
    d = rm.by_id[dict_id]
    with torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        pre = pre_activation(d, xi[None], torch.tensor([latent], device=x.device))
        (g,) = torch.autograd.grad(pre.sum(), xi)
    return g.detach().float()


def qk_latent_effects(
    qa: QKAttributor, layer: int, head: int, q_pos: int, enc: torch.Tensor, params: QKParams
) -> tuple[torch.Tensor, list[int]]:
    """First-order effect `[n_nodes]` of every node, through head `head`'s pattern at row q_pos, on a
    latent whose pre-activation reads layer `layer`'s attention output along `enc: [d_model]`; and the
    key positions examined. The query side moves the whole row; the key side is summed over the
    `keys_per_head` key positions with the largest |p_k (z_k - mean_p z)|."""
    query, key, keys = qk_latent_side_effects(qa, layer, head, q_pos, enc, params)
    return query + key, keys


def qk_latent_side_effects(
    qa: QKAttributor, layer: int, head: int, q_pos: int, enc: torch.Tensor, params: QKParams
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """`qk_latent_effects` split by side: (through the query `[n_nodes]`, through the keys `[n_nodes]`, keys)."""
    rm = qa.rm
    attn = rm.model.blocks[layer].attn
    v = qa.values(layer)[: q_pos + 1, _kv_head(rm, head)]  # [q_pos + 1, d_head]
    z = v @ attn.W_O[head].detach().float() @ enc  # [q_pos + 1] value writes onto the latent
    p = qa.state.frozen[f"blocks.{layer}.attn.hook_pattern"][0, head, q_pos, : q_pos + 1].float()
    zc = z - p @ z
    keys = torch.topk((p * zc).abs(), min(params.keys_per_head, q_pos + 1)).indices.tolist()
    query = torch.zeros(qa.state.n_nodes, device=qa.state.tokens.device)
    key = torch.zeros_like(query)
    for j, k in enumerate(keys):
        a = qa.attribute(layer, head, q_pos, k)
        if j == 0:  # the query side moves the whole row: dp_k' = p_k' (qs_k' - mean_p qs), once per head
            qs = a.query_scores
            query += (p * (qs - (qs @ p)[:, None])) @ z
        key += a.key_side * p[k] * zc[k]
    return query, key, keys


def expand_qk(rm: ReplacementModel, state: PromptState, G: nx.DiGraph, params: QKParams | None = None) -> nx.DiGraph:
    """Add to `G` (in place, and returned) the nodes that steer the attention its attention latents read.

    For each attention latent of `G` (up to `max_latents`, strongest edges first), the heads of its
    layer that carry most of its value writes and the key positions whose score moves it most are
    attributed (`QKAttributor`); every node's first-order effect on the latent through those patterns
    (`qk_latent_effects`) whose share of the latent's |direct effects| (`total_abs_effect`, else the sum
    of |in-edge weights|) is at least `qk_threshold` becomes an edge `source -> latent` with
    `edge_kind="qk"`, `weight` the effect, `heads` the heads used and `qk_sides` its split
    [through the query, through the keys]. A source that already has a direct edge to the latent gets
    `qk_weight` (and `qk_sides`) on that edge instead. New nodes get `qk_only=True`.
    With `latents_only`, only latents are ranked (and layer-0 attention latents, whose query and key
    read only embeddings, are skipped). One round: latents added here are not QK-expanded in turn.
    """
    params = params or QKParams()
    qa = QKAttributor(rm, state)
    index = {n.node_id: i for i, n in enumerate(state.nodes)}
    # A latent's query and key read only nodes of earlier layers: layer 0 attention has no latent QK contributors.
    min_layer = 1 if params.latents_only else 0
    attn_nodes = [
        v for v, a in G.nodes(data=True) if a.get("kind") == "attn" and v in index and a["layer"] >= min_layer
    ]

    def strength(v: str) -> float:
        return sum(abs(d["weight"]) for *_, d in G.in_edges(v, data=True)) + sum(
            abs(d["weight"]) for *_, d in G.out_edges(v, data=True)
        )

    latent_mask = torch.tensor([n.is_latent for n in state.nodes], dtype=torch.float32, device=state.tokens.device)
    n_added = 0
    added: list[int] = []
    pairs: list[list[int]] = []
    t0 = time.perf_counter()
    for v in sorted(attn_nodes, key=strength, reverse=True)[: params.max_latents]:
        info = state.nodes[index[v]]
        assert info.dictionary is not None and info.latent is not None
        d = rm.by_id[info.dictionary]
        site = next(s for s in state.sites if s.hook == d.hook_in)
        enc = _encoder_direction(rm, d.id, info.latent, site.value[info.position])
        L, q = info.layer, info.position
        attn = rm.model.blocks[L].attn
        vals = qa.values(L)[: q + 1]  # [q + 1, n_kv, d_head]
        pat = state.frozen[f"blocks.{L}.attn.hook_pattern"][0, :, q, : q + 1].float()  # [heads, q + 1]
        writes = torch.stack(
            [
                (pat[h] * (vals[:, _kv_head(rm, h)] @ attn.W_O[h].detach().float() @ enc)).abs().sum()
                for h in range(pat.shape[0])
            ]
        )
        heads = torch.topk(writes, min(params.heads_per_latent, pat.shape[0])).indices.tolist()
        by_query = torch.zeros(state.n_nodes, device=state.tokens.device)
        by_key = torch.zeros_like(by_query)
        for h in heads:
            eq, ek, keys = qk_latent_side_effects(qa, L, h, q, enc, params)
            by_query += eq
            by_key += ek
            pairs += [[L, int(h), q, int(k)] for k in keys]
        effect = by_query + by_key
        total = G.nodes[v].get("total_abs_effect") or sum(abs(dd["weight"]) for *_, dd in G.in_edges(v, data=True))
        if not total:
            continue
        share = effect.abs() / total
        if params.latents_only:
            share = share * latent_mask
        k = min(params.max_qk_parents, int((share >= params.qk_threshold).sum()))
        if k == 0:
            continue
        for s in torch.topk(share, k).indices.tolist():
            src = state.nodes[s]
            if src.node_id == v:
                continue
            if src.node_id not in G:
                G.add_node(src.node_id, **node_attributes(src), qk_only=True, expanded=False)
                n_added += 1
                added.append(s)
            w = float(effect[s])
            sides = [float(by_query[s]), float(by_key[s])]
            if G.has_edge(src.node_id, v):
                G.edges[src.node_id, v].update(qk_weight=w, qk_sides=sides)
            else:
                G.add_edge(src.node_id, v, weight=w, edge_kind="qk", heads=[int(h) for h in heads], qk_sides=sides)
    qa.release()
    G.graph["qk_params"] = params.to_json()
    G.graph["qk_pairs"] = [list(p) for p in dict.fromkeys(tuple(p) for p in pairs)]
    if params.expand_parents:
        with phase("qk_parents", qa.timings, log):
            connect_parents(rm, state, G, [s for s in added if state.nodes[s].is_latent])
    timings = G.graph.setdefault("timings", {})
    for name, sec in qa.timings.items():
        timings[name] = round(timings.get(name, 0.0) + sec, 4)
    timings["qk_expand"] = round(time.perf_counter() - t0, 4)
    G.graph["qk_backward"] = qa.n_backward
    log.info("expand_qk: %d nodes added, %d backward passes", n_added, qa.n_backward)
    return G


def connect_parents(rm: ReplacementModel, state: PromptState, G: nx.DiGraph, latents: list[int]) -> None:
    """Expand the latents `latents` (indices into state.nodes, already nodes of `G`) one level, as
    hierarchical tracing does (`select_parents` with the graph's node_threshold and max_parents, plus
    edges from nodes already in `G` above its edge_threshold); parents that are new join as leaves."""
    from core.tracing.attribution import Attributor, target_for_node
    from core.tracing.hierarchical import TraceParams, select_parents

    if not latents:
        return
    known = {f.name for f in TraceParams.__dataclass_fields__.values()}
    tp = TraceParams(**{k: v for k, v in (G.graph.get("params") or {}).items() if k in known})
    attributor = Attributor(rm, state, tp.batch_size)
    rows = attributor.effects([target_for_node(state, i) for i in latents])  # [len(latents), n_nodes]
    attributor.release()
    index = {n.node_id: i for i, n in enumerate(state.nodes)}
    in_graph = torch.tensor(sorted(index[v] for v in G if v in index), dtype=torch.long)
    for i, row in zip(latents, rows, strict=True):
        v = state.nodes[i].node_id
        total = float(row.abs().sum())
        G.nodes[v].update(expanded=True, total_abs_effect=total)
        if total <= 0:
            continue
        chosen = set(select_parents(row, tp.node_threshold, tp.max_parents))
        chosen |= {int(j) for j in in_graph[row[in_graph].abs() / total >= tp.edge_threshold]}
        for j in chosen - {i}:
            src = state.nodes[j]
            if src.node_id not in G:
                G.add_node(src.node_id, **node_attributes(src), qk_only=True, expanded=False)
            if not G.has_edge(src.node_id, v):
                G.add_edge(src.node_id, v, weight=float(row[j]))


# ---------------------------------------------------------------------- QK edges of a graph (views, exports)


@dataclass(frozen=True)
class QKEdge:
    """One QK effect of a graph: `source` steers the attention that `target` (an attention latent) reads.

    `weight`: the first-order effect on the target's pre-activation (`expand_qk`); `share`: |weight|
    over the target's total |direct effect| (`total_abs_effect`, else the sum of its direct in-edges),
    the scale of `QKParams.qk_threshold`; `on_direct`: True when it is the `qk_weight` of a direct edge."""

    source: str
    target: str
    weight: float
    share: float
    heads: tuple[int, ...]
    on_direct: bool


def qk_edges(G: nx.DiGraph, threshold: float = 0.0) -> list[QKEdge]:
    """The QK effects of `G` (edges of kind 'qk' and `qk_weight`s on direct edges) whose share is at least
    `threshold`, strongest first."""
    totals: dict[str, float] = {}

    def total(v: str) -> float:
        if v not in totals:
            t = G.nodes[v].get("total_abs_effect")
            if t is None or not t > 0:
                t = sum(abs(d.get("weight") or 0.0) for *_, d in G.in_edges(v, data=True) if d.get("edge_kind") != "qk")
            totals[v] = float(t)
        return totals[v]

    out = []
    for u, v, d in G.edges(data=True):
        on_direct = d.get("edge_kind") != "qk"
        w = d.get("qk_weight") if on_direct else d.get("weight")
        if w is None or w != w:  # absent or NaN
            continue
        share = abs(float(w)) / total(v) if total(v) > 0 else 0.0
        if share >= threshold:
            out.append(QKEdge(u, v, float(w), share, tuple(int(h) for h in d.get("heads") or ()), on_direct))
    return sorted(out, key=lambda e: -abs(e.weight))
