"""Baselines for circuit discovery at a given size: attribution patching (Marks et al.) and random latents.

Method, step by step:
1. Attribution patching (AtP), node selection as in Sparse Feature Circuits: one forward and one
   backward pass of the *real* model (no freezing). A zero tensor `delta` is added at every
   dictionary's `hook_out`, so the gradient of the metric m with respect to `delta` is the total
   derivative of m through everything downstream. For latent i at position p, the linear estimate
   of the effect of mean-ablating it is
       IE[p, i] = (mean_i - a_i[p]) * (dm/d hook_out[p] . W_dec[i]),
   computed densely per position as `grad @ W_dec.T` (every latent, active or not, can score).
   The BOS position is excluded. A circuit of size n is the n latents with the largest |IE|;
   when only active latents are ablated (`active_only`), the n largest among the prompt's active
   latents, since setting an inactive latent aside then changes nothing.
2. Random: n latents drawn uniformly from the prompt's active latents (non-BOS positions), with a
   seeded generator.
The time of each phase is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from core.subjects.dictionaries import Dictionary
from core.tracing.ablation import Circuit, Feature
from core.tracing.nodes import LatentTarget, LogitTarget, Target
from core.tracing.replacement import PromptState, params_frozen, pre_activation
from core.tracing.timing import phase

log = logging.getLogger(__name__)


def attribution_patching_scores(
    model,
    dictionaries: Sequence[Dictionary],
    tokens: torch.Tensor,
    target: Target,
    means: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """AtP estimate of each latent's mean-ablation effect on the target (step 1): `{dictionary id: [pos, d_sae]}`.

    `tokens: [pos]` (BOS first); `means` as in `ablation.py` (None = zero ablation).
    """
    dicts = [d for d in dictionaries if d.kind in ("attn", "transcoder")]
    timings: dict[str, float] = {}
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    inputs: dict[str, torch.Tensor] = {}
    deltas: dict[str, torch.Tensor] = {}

    def read_in(value: torch.Tensor, hook) -> torch.Tensor:
        inputs[hook.name] = value.detach()
        return value

    def add_delta(value: torch.Tensor, hook) -> torch.Tensor:
        inputs.setdefault(hook.name, value.detach())  # an attention SAE reads its own hook
        delta = torch.zeros_like(value, requires_grad=True)
        deltas[hook.name] = delta
        return value + delta

    hooks = [(d.hook_in, read_in) for d in dicts if d.hook_in != d.hook_out]
    hooks += [(h, add_delta) for h in {d.hook_out for d in dicts}]
    with (
        phase("atp_forward_backward", timings, log),
        torch.enable_grad(),
        params_frozen([model, *[d.module for d in dicts]]),
    ):
        live: dict[str, torch.Tensor] = {}

        def live_in(value: torch.Tensor, hook) -> torch.Tensor:
            live[hook.name] = value
            return value

        extra = []
        if isinstance(target, LatentTarget):
            d_t = next(d for d in dicts if d.id == target.dictionary)
            extra = [(d_t.hook_in, live_in)]
        logits = model.run_with_hooks(tokens[None], fwd_hooks=extra + hooks)
        if isinstance(target, LogitTarget):
            m = logits[0, target.position, target.token]
            if target.contrast is not None:
                m = m - logits[0, target.position, target.contrast]
        else:
            x = live[d_t.hook_in][0, target.position][None]
            m = pre_activation(d_t, x, torch.tensor([target.latent], device=device))[0]
        names = list(deltas)
        grads = torch.autograd.grad(m, [deltas[n] for n in names], allow_unused=True)
    grad_by_hook = dict(zip(names, grads, strict=True))
    scores: dict[str, torch.Tensor] = {}
    with phase("atp_scores", timings, log), torch.no_grad():
        for d in dicts:
            x = inputs[d.hook_in]
            acts = d.encode(x[0].float())  # [pos, d_sae]
            g = grad_by_hook.get(d.hook_out)
            if g is None:
                scores[d.id] = torch.zeros_like(acts)
                continue
            fill = means[d.id].to(acts.dtype) if means is not None else torch.zeros(d.d_sae, device=acts.device)
            ie = (fill[None] - acts) * (g[0].float() @ d.W_dec.detach().float().T)
            ie[0] = 0.0
            scores[d.id] = ie
    return scores


def top_features(scores: dict[str, torch.Tensor], n: int, among: Sequence[Feature] | None = None) -> Circuit:
    """The `n` latents with the largest |score| across dictionaries (scores `{id: [pos, d_sae]}`).

    With `among` (e.g. a prompt's `active_features`), only those latents are ranked, and at most
    `len(among)` are returned.
    """
    if n <= 0:
        return frozenset()
    if among is not None:
        cands = list(among)
        if not cands:
            return frozenset()
        vals = torch.stack([scores[d][p, i].abs() for d, p, i in cands])
        top = torch.topk(vals, min(n, len(cands))).indices.tolist()
        return frozenset(cands[j] for j in top)
    ids = list(scores)
    flat = torch.cat([scores[i].abs().flatten() for i in ids])
    n = min(n, int(flat.numel()))
    top = torch.topk(flat, n).indices.tolist()
    out: list[Feature] = []
    sizes = [scores[i].numel() for i in ids]
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    for j in top:
        k = next(k for k in range(len(ids)) if bounds[k] <= j < bounds[k + 1])
        local = j - bounds[k]
        d_sae = scores[ids[k]].shape[1]
        out.append((ids[k], local // d_sae, local % d_sae))
    return frozenset(out)


def active_features(state: PromptState) -> list[Feature]:
    """Every active latent of a prepared prompt (non-BOS positions) as (dictionary id, position, latent)."""
    return [(n.dictionary, n.position, n.latent) for n in state.nodes if n.is_latent]  # type: ignore[misc]


def random_features(candidates: Sequence[Feature], n: int, generator: torch.Generator) -> Circuit:
    """`n` latents drawn uniformly without replacement from `candidates` (step 2)."""
    n = min(n, len(candidates))
    idx = torch.randperm(len(candidates), generator=generator)[:n].tolist()
    return frozenset(candidates[i] for i in idx)
