"""Replacement model: the subject model rewritten as a sum of interpretable nodes, frozen to be linear.

Method, step by step (what `ReplacementModel.prepare` and `frozen_forward` do):
1. Run the real model once on the prompt ([BOS] + tokens) and cache, at every layer, the MLP input
   `blocks.L.ln2.hook_normalized`, the MLP output `blocks.L.hook_mlp_out`, the attention output
   `blocks.L.hook_attn_out`, the token and position embeddings (`hook_embed`, `hook_pos_embed`),
   every attention pattern (`blocks.L.attn.hook_pattern`) and every LayerNorm scale (`*.hook_scale`).
2. Split each write into the residual stream ("site") into nodes:
   - embeddings: one `embed` and one `pos_embed` node per position (sources);
   - MLP of layer L: the transcoder's active latents at each position (`a_i * W_dec[i]`), the
     decoder bias (a constant, not a node), and one `mlp_error` node per position carrying
     `mlp_out - transcoder(ln2_normalized)`. A layer with no transcoder has only its error nodes
     (the whole MLP output), so the replacement stays exact;
   - attention of layer L: likewise with the attention-output SAE and `attn_error` nodes. A layer
     with no attention SAE keeps its attention inside the linear path (circuit-tracer style).
   At the BOS position the latents are not nodes: their output is folded into that position's error
   node, because BOS activations are the same for every prompt and would dominate every graph.
   The sum of every node's vector plus the biases equals the real output at every site, so the
   replacement reproduces the model's logits exactly.
3. Freeze: in `frozen_forward` every attention pattern and LayerNorm scale is replaced by its cached
   value, and every site's output is replaced by a fresh leaf tensor holding the cached value. The
   map from the leaves to (a) logits and (b) latent pre-activations is then affine: LayerNorm with a
   fixed scale is centring (linear) plus a bias; attention with a fixed pattern is linear in its
   values. Gradients do not flow back through an MLP or attention SAE site (their output is a
   leaf), so a gradient at a leaf is the *direct* effect through the residual stream only.
4. Latent pre-activations read the live (leaf-dependent) tensors:
   - transcoder latent of layer L: `ln2.hook_normalized[pos] @ W_enc[:, i] + b_enc[i]`, so its
     parents sit at the same position (embeddings, earlier sites, and layer L's attention);
   - attention SAE latent of layer L: `(attn_out[pos] - b_dec) @ W_enc[:, i] + b_enc[i]`, where
     `attn_out` is recomputed from `blocks.L.hook_resid_pre` through the frozen LayerNorm, the
     value/output weights and the frozen pattern: its parents sit at every position <= pos, reached
     through the OV circuit of that layer.
5. Residual-stream SAEs (`hook_resid_pre`) are left out: the residual stream is the sum of the
   sites above, so adding resid latents as nodes would count the same signal twice. They are
   ignored with a log message when passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch

from core.subjects.dictionaries import Dictionary
from core.subjects.tokens import single_token_id
from core.tracing.nodes import LatentTarget, LogitTarget, NodeInfo, NodeKind, Target

log = logging.getLogger(__name__)

SiteKind = Literal["embed", "pos_embed", "attn", "mlp"]
_RESIDUAL_NODE_KIND: dict[str, NodeKind] = {
    "embed": "embed",
    "pos_embed": "pos_embed",
    "attn": "attn_error",
    "mlp": "mlp_error",
}


@dataclass
class Site:
    """One write into the residual stream, split into latent nodes, per-position residual nodes and a bias.

    Nodes of a site are numbered from `node_offset`: first its active latents (sorted by position),
    then one residual node per position (the error, or the embedding itself for embedding sites).
    """

    hook: str  # TransformerLens hook whose output becomes a leaf in the frozen forward
    kind: SiteKind
    layer: int  # -1 for embeddings
    dictionary: Dictionary | None
    value: torch.Tensor  # [pos, d_model] clean output at `hook`
    residual: torch.Tensor  # [pos, d_model] error vectors (or embeddings), one node per position
    bias: torch.Tensor  # [d_model] constant part (decoder bias), not a node
    feat_pos: torch.Tensor  # [n] positions of active latents (sorted)
    feat_latent: torch.Tensor  # [n] latent indices
    feat_act: torch.Tensor  # [n] activations
    feat_dec: torch.Tensor  # [n, d_model] decoder rows W_dec[feat_latent]
    node_offset: int = 0
    pos_slices: list[tuple[int, int, int]] = field(default_factory=list)  # (position, start, end) into feat_*

    @property
    def n_features(self) -> int:
        """Number of active latent nodes of this site."""
        return int(self.feat_pos.numel())

    @property
    def n_nodes(self) -> int:
        """Latent nodes plus one residual node per position."""
        return self.n_features + int(self.value.shape[0])


@dataclass
class PromptState:
    """Everything a trace needs about one prompt: tokens, nodes, sites and the frozen patterns/scales."""

    tokens: torch.Tensor  # [pos] token ids, BOS first
    token_strs: list[str]
    sites: list[Site]
    nodes: list[NodeInfo]  # every source node, numbered as the columns of a direct-effect row
    frozen: dict[str, torch.Tensor]  # hook name -> cached pattern [1, heads, q, k] or scale [1, pos, 1]
    logits: torch.Tensor  # [pos, d_vocab] clean logits
    latent_index: dict[tuple[str, int, int], int]  # (dictionary id, position, latent) -> node index

    @property
    def n_nodes(self) -> int:
        """Number of source nodes (columns of a direct-effect matrix)."""
        return len(self.nodes)

    @property
    def n_positions(self) -> int:
        """Prompt length including BOS."""
        return int(self.tokens.shape[0])

    def latent_node_indices(self) -> list[int]:
        """Indices of all latent nodes (the candidates for circuits)."""
        return [i for i, n in enumerate(self.nodes) if n.is_latent]


@dataclass
class FrozenRun:
    """One frozen forward over `batch` copies of the prompt: final normalised residual, leaves, live reads.

    Logits are read only for the target tokens (`final @ W_U[:, token] + b_U[token]`), so the
    vocabulary-sized unembedding is never computed for the batch.
    """

    final: torch.Tensor  # [batch, pos, d_model] output of ln_final (frozen scale)
    leaves: dict[str, torch.Tensor]  # site hook -> leaf [batch, pos, d_model] (requires grad)
    live: dict[str, torch.Tensor]  # dictionary hook_in -> live input [batch, pos, d_in]
    batch: int


def pre_activation(d: Dictionary, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Pre-activations of `latents: [n]` for inputs `x: [n, d_in]` (row j for latent j): `[n]`.

    The encoder's affine map before its non-linearity, as SAE-Lens computes it (`process_sae_in`
    subtracts `b_dec` when the SAE is configured so; TopK SAEs may rescale by decoder norms).
    """
    module = d.module
    norm = getattr(module.cfg, "normalize_activations", "none")
    if norm not in ("none", None, "expected_average_only_in"):
        raise NotImplementedError(
            f"dictionary {d.id} normalises its input ({norm}); tracing needs a linear encoder input"
        )
    sae_in = module.process_sae_in(x)  # [n, d_in]
    pre = (sae_in * module.W_enc[:, latents].T).sum(-1) + module.b_enc[latents]
    if getattr(module.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * module.W_dec[latents].norm(dim=-1)
    return pre


@contextmanager
def params_frozen(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Turn off requires_grad on the modules' parameters for the block (gradients go to leaves only)."""
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


class ReplacementModel:
    """A HookedTransformer with transcoders for MLPs and SAEs for attention outputs (see module docstring)."""

    def __init__(self, model, dictionaries: Iterable[Dictionary]):
        self.model = model
        self.n_layers: int = model.cfg.n_layers
        self.attn: dict[int, Dictionary] = {}
        self.transcoders: dict[int, Dictionary] = {}
        for d in dictionaries:
            if d.kind == "resid":
                log.info("ignoring %s: residual-stream SAEs would double-count in the replacement graph", d.id)
                continue
            if d.kind not in ("attn", "transcoder"):
                raise ValueError(
                    f"{d.id} is a {d.kind} dictionary; the replacement model takes attention SAEs and transcoders"
                )
            table = self.attn if d.kind == "attn" else self.transcoders
            if d.layer in table:
                raise ValueError(f"two {d.kind} dictionaries for layer {d.layer}: {table[d.layer].id} and {d.id}")
            if not 0 <= d.layer < self.n_layers:
                raise ValueError(f"{d.id} is for layer {d.layer}; the model has layers 0..{self.n_layers - 1}")
            if d.d_in != model.cfg.d_model or d.d_out != model.cfg.d_model:
                raise ValueError(f"{d.id} maps {d.d_in}->{d.d_out}; the model's d_model is {model.cfg.d_model}")
            table[d.layer] = d
        self.by_id: dict[str, Dictionary] = {d.id: d for d in [*self.attn.values(), *self.transcoders.values()]}
        hooks = model.hook_dict
        self._frozen_hooks = [
            name
            for name in hooks
            if name.endswith("attn.hook_pattern")
            or (name.endswith("hook_scale") and ("ln1" in name or "ln2" in name or "ln_final" in name))
        ]

    @property
    def dictionaries(self) -> list[Dictionary]:
        """The dictionaries in the replacement, in layer order (attention before MLP)."""
        out = []
        for layer in range(self.n_layers):
            out += [t[layer] for t in (self.attn, self.transcoders) if layer in t]
        return out

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ input

    def tokenize(self, prompt: str) -> torch.Tensor:
        """Token ids `[pos]` of `prompt` with BOS first; clear errors for empty or over-long prompts."""
        if not prompt or not prompt.strip():
            raise ValueError("the prompt is empty; give the text to trace")
        tok = self.model.tokenizer
        if tok is None:
            raise ValueError("the model has no tokenizer; pass token ids instead of a prompt")
        ids = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
        n_ctx = self.model.cfg.n_ctx
        if len(ids) > n_ctx:
            raise ValueError(
                f"the prompt is {len(ids)} tokens with BOS; this model's context is {n_ctx} tokens: shorten it"
            )
        return torch.tensor(ids, dtype=torch.long)

    def token_id(self, text: str) -> int:
        """The id of `text` if it is exactly one token; a TokenizationError naming the pieces otherwise."""
        return single_token_id(self.model.tokenizer, text)

    def check_target(self, target: Target, n_positions: int) -> None:
        """Raise ValueError if `target` names a dictionary, latent, token or position that does not exist."""
        if not -n_positions <= target.position < n_positions:
            raise ValueError(f"position {target.position} is outside the prompt (0..{n_positions - 1})")
        if isinstance(target, LatentTarget):
            d = self.by_id.get(target.dictionary)
            if d is None:
                raise ValueError(
                    f"unknown dictionary {target.dictionary!r}; traceable ones: {', '.join(self.by_id) or 'none'}"
                )
            if not 0 <= target.latent < d.d_sae:
                raise ValueError(
                    f"latent {target.latent} is out of range: {d.id} has {d.d_sae} latents (0..{d.d_sae - 1})"
                )
        else:
            vocab = self.model.cfg.d_vocab
            for t in (target.token, target.contrast):
                if t is not None and not 0 <= t < vocab:
                    raise ValueError(f"token id {t} is out of range: the vocabulary has {vocab} tokens")

    # ------------------------------------------------------------------ step 1-2: prepare

    def _site_hooks(self) -> list[tuple[str, SiteKind, int]]:
        out: list[tuple[str, SiteKind, int]] = [("hook_embed", "embed", -1)]
        if "hook_pos_embed" in self.model.hook_dict:
            out.append(("hook_pos_embed", "pos_embed", -1))
        for layer in range(self.n_layers):
            if layer in self.attn:
                out.append((f"blocks.{layer}.hook_attn_out", "attn", layer))
            out.append((f"blocks.{layer}.hook_mlp_out", "mlp", layer))
        return out

    @torch.no_grad()
    def prepare(self, tokens: torch.Tensor) -> PromptState:
        """Run the real model on `tokens: [pos]` (BOS first) and split every site into nodes (steps 1-2)."""
        tokens = tokens.to(self.device)
        if tokens.ndim != 1 or tokens.numel() < 2:
            raise ValueError("tokens must be one prompt [pos] with BOS first and at least one more token")
        if tokens.numel() > self.model.cfg.n_ctx:
            raise ValueError(
                f"the prompt is {tokens.numel()} tokens with BOS; this model's context is {self.model.cfg.n_ctx}"
            )
        t0 = time.perf_counter()
        sites_spec = self._site_hooks()
        wanted = {h for h, _, _ in sites_spec} | set(self._frozen_hooks)
        wanted |= {d.hook_in for d in self.transcoders.values()}
        logits, cache = self.model.run_with_cache(tokens[None], names_filter=lambda n: n in wanted)
        tok = self.model.tokenizer
        token_strs = [tok.decode([int(t)]) if tok is not None else str(int(t)) for t in tokens]
        n_pos = tokens.numel()

        sites: list[Site] = []
        nodes: list[NodeInfo] = []
        latent_index: dict[tuple[str, int, int], int] = {}
        for hook, kind, layer in sites_spec:
            site = self._split_site(cache, hook, kind, layer)
            site.node_offset = len(nodes)
            counts = torch.bincount(site.feat_pos, minlength=n_pos).tolist()
            start = 0
            for p, c in enumerate(counts):
                if c:
                    site.pos_slices.append((p, start, start + c))
                start += c
            nodes.extend(_site_nodes(site, token_strs, latent_index, first=len(nodes)))
            sites.append(site)
        frozen = {h: cache[h].detach() for h in self._frozen_hooks}
        log.info(
            "prepare: %.3f s (%d positions, %d nodes, %d latents)",
            time.perf_counter() - t0,
            n_pos,
            len(nodes),
            len(latent_index),
        )
        return PromptState(tokens, token_strs, sites, nodes, frozen, logits[0].detach().float(), latent_index)

    def _split_site(self, cache, hook: str, kind: str, layer: int) -> Site:
        """One site of the cached run split into its dictionary's latents, its bias and its error
        (`value - reconstruction`); a site without a dictionary is all error."""
        value = cache[hook][0].float()  # [pos, d_model]
        d = self.attn.get(layer) if kind == "attn" else self.transcoders.get(layer) if kind == "mlp" else None
        if d is None:
            empty = torch.zeros(0, dtype=torch.long, device=value.device)
            return Site(
                hook,
                kind,
                layer,
                None,
                value,
                value.clone(),
                torch.zeros_like(value[0]),
                empty,
                empty,
                value.new_zeros(0),
                value.new_zeros(0, value.shape[1]),
            )
        x_in = cache[d.hook_in][0].float()  # [pos, d_in]
        acts = d.encode(x_in).float()  # [pos, d_sae]
        acts[0] = 0.0  # BOS latents fold into the BOS error node (see docstring)
        bias = d.decode(torch.zeros_like(acts[:1]))[0].float()  # [d_model]
        recon = d.decode(acts).float()
        pos_idx, lat_idx = torch.nonzero(acts, as_tuple=True)  # sorted by position, then latent
        return Site(
            hook,
            kind,
            layer,
            d,
            value,
            value - recon,
            bias,
            pos_idx,
            lat_idx,
            acts[pos_idx, lat_idx],
            d.W_dec[lat_idx].detach().float(),
        )

    # ------------------------------------------------------------------ step 3-4: frozen forward

    def frozen_forward(
        self, state: PromptState, batch: int, overrides: dict[str, torch.Tensor] | None = None
    ) -> FrozenRun:
        """Forward `batch` copies of the prompt with frozen patterns/scales and every site a fresh leaf.

        `overrides` maps a site hook to a replacement value `[pos, d_model]` (for explicit linear
        ablations); other sites hold their clean value. Gradients are enabled in here.
        """
        overrides = overrides or {}
        leaves: dict[str, torch.Tensor] = {}
        live: dict[str, torch.Tensor] = {}
        site_value = {s.hook: s.value for s in state.sites}
        attn_hooks = {d.hook_in for d in self.attn.values()}

        def leaf_hook(value: torch.Tensor, hook) -> torch.Tensor:
            if hook.name in attn_hooks:
                live[hook.name] = value  # attention SAE latents read the live (upstream-dependent) output
            base = overrides.get(hook.name, site_value[hook.name])
            leaf = base.detach().to(value.dtype).expand(batch, *base.shape[-2:]).clone().requires_grad_(True)
            leaves[hook.name] = leaf
            return leaf

        def frozen_hook(value: torch.Tensor, hook) -> torch.Tensor:
            return state.frozen[hook.name].expand_as(value)

        def live_hook(value: torch.Tensor, hook) -> torch.Tensor:
            live[hook.name] = value
            return value

        fwd_hooks = [(s.hook, leaf_hook) for s in state.sites]
        fwd_hooks += [(h, frozen_hook) for h in self._frozen_hooks]
        fwd_hooks += [(d.hook_in, live_hook) for d in self.transcoders.values()]
        tokens = state.tokens[None].expand(batch, -1)
        with (
            torch.enable_grad(),
            params_frozen([self.model, *[d.module for d in self.by_id.values()]]),
            self.model.hooks(fwd_hooks=fwd_hooks),
        ):
            resid = self.model(tokens, stop_at_layer=self.n_layers)  # [batch, pos, d_model]
            final = self.model.ln_final(resid)
        return FrozenRun(final, leaves, live, batch)

    def _logit(self, run: FrozenRun, row: int, position: int, token: int) -> torch.Tensor:
        u = self.model.unembed
        return run.final[row, position] @ u.W_U[:, token] + u.b_U[token]

    def target_values(self, run: FrozenRun, targets: list[Target]) -> torch.Tensor:
        """Value of target j read from row j of `run` (logit, logit difference or pre-activation): `[n]`."""
        if len(targets) > run.batch:
            raise ValueError(f"{len(targets)} targets for a run of batch {run.batch}")
        out: list[torch.Tensor] = [run.final.new_zeros(())] * len(targets)
        by_dict: dict[str, list[int]] = {}
        for j, t in enumerate(targets):
            if isinstance(t, LogitTarget):
                v = self._logit(run, j, t.position, t.token)
                if t.contrast is not None:
                    v = v - self._logit(run, j, t.position, t.contrast)
                out[j] = v
            else:
                by_dict.setdefault(t.dictionary, []).append(j)
        for dict_id, rows in by_dict.items():
            d = self.by_id[dict_id]
            rows_t = torch.tensor(rows, device=run.final.device)
            pos = torch.tensor([targets[j].position for j in rows], device=rows_t.device)
            lat = torch.tensor([targets[j].latent for j in rows], device=rows_t.device)  # type: ignore[union-attr]
            pre = pre_activation(d, run.live[d.hook_in][rows_t, pos], lat)
            for k, j in enumerate(rows):
                out[j] = pre[k]
        return torch.stack(out) if out else run.final.new_zeros(0)

    def clean_target_value(self, state: PromptState, target: Target) -> float:
        """The target's value on the clean prompt (logit or logit difference, or latent pre-activation)."""
        if isinstance(target, LogitTarget):
            v = state.logits[target.position, target.token]
            if target.contrast is not None:
                v = v - state.logits[target.position, target.contrast]
            return float(v)
        with torch.no_grad():
            run = self.frozen_forward(state, 1)
            return float(self.target_values(run, [target])[0])

    def target_node(self, state: PromptState, target: Target, value: float) -> NodeInfo:
        """The graph node of a trace's target; `value` is its clean value (logit, difference or pre-activation)."""
        if isinstance(target, LogitTarget):
            label = target.node_id.split(":", 1)[1]
            return NodeInfo("logit", self.n_layers, target.position, None, value, None, label)
        d = self.by_id[target.dictionary]
        kind = "attn" if d.kind == "attn" else "transcoder"
        return NodeInfo(kind, d.layer, target.position, target.latent, value, d.id, state.token_strs[target.position])

    # ------------------------------------------------------------------ checks

    @torch.no_grad()
    def replacement_logits(self, state: PromptState) -> torch.Tensor:
        """Logits `[pos, d_vocab]` of the replacement model run for real: at every dictionary site the
        output is the dictionary's reconstruction from the current input plus the prompt's error
        node vectors (no freezing). Equal to the model's logits up to float error."""
        errors = {s.hook: s.residual for s in state.sites if s.dictionary is not None}
        inputs: dict[str, torch.Tensor] = {}

        def read_in(value: torch.Tensor, hook) -> torch.Tensor:
            inputs[hook.name] = value
            return value

        def write_out(value: torch.Tensor, hook) -> torch.Tensor:
            s = next(s for s in state.sites if s.hook == hook.name)
            d = s.dictionary
            assert d is not None
            x = inputs.get(d.hook_in, value)
            acts = d.encode(x)
            acts[:, 0] = 0.0
            return d.decode(acts) + errors[hook.name][None]

        hooks = [(d.hook_in, read_in) for d in self.transcoders.values()]
        hooks += [(s.hook, write_out) for s in state.sites if s.dictionary is not None]
        return self.model.run_with_hooks(state.tokens[None], fwd_hooks=hooks)[0].float()


def logit_target(
    rm: ReplacementModel, tokens: torch.Tensor, target: str, contrast: str | None = None, position: int = -1
) -> LogitTarget:
    """A LogitTarget for the strings `target` (and `contrast`) at `position` (default: the last)."""
    pos = position % int(tokens.shape[0])
    return LogitTarget(
        token=rm.token_id(target),
        position=pos,
        contrast=rm.token_id(contrast) if contrast is not None else None,
        token_str=target,
        contrast_str=contrast or "",
    )


def _site_nodes(
    site: Site, token_strs: list[str], latent_index: dict[tuple[str, int, int], int], first: int
) -> list[NodeInfo]:
    """The nodes of one site, numbered from `first`: its active latents (also entered in
    `latent_index` by (dictionary, position, latent)), then one residual (error) node per position."""
    d, layer = site.dictionary, site.layer
    nodes: list[NodeInfo] = []
    if d is not None:
        latent_kind: NodeKind = "attn" if site.kind == "attn" else "transcoder"
        for p, i, a in zip(site.feat_pos.tolist(), site.feat_latent.tolist(), site.feat_act.tolist(), strict=True):
            latent_index[(d.id, p, i)] = first + len(nodes)
            nodes.append(NodeInfo(latent_kind, layer, p, i, a, d.id, token_strs[p]))
    for p, norm in enumerate(site.residual.norm(dim=-1).tolist()):
        nodes.append(NodeInfo(_RESIDUAL_NODE_KIND[site.kind], layer, p, None, norm, d.id if d else None, token_strs[p]))
    return nodes
