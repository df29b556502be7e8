"""Direct effects between nodes of the frozen replacement model, by batched backward passes.

Method, step by step:
1. One frozen forward (`ReplacementModel.frozen_forward`) over B copies of the prompt, where B is
   the batch size: every site's output is a leaf, patterns and LayerNorm scales are fixed, so each
   target (a logit, a logit difference or a latent pre-activation) is an affine function of the
   leaves. The graph is kept (`retain_graph=True`) and reused by every backward pass.
2. For a batch of up to B targets, row j of the batch computes target j; one backward pass of the
   sum gives, in row j of every leaf's gradient `g_site: [B, pos, d_model]`, the gradient of
   target j alone (rows do not interact).
3. Direct effect of a source node on target j = the source's activation times the gradient along
   the frozen linear path:
     latent i at (site, p):   a_i * (g_site[j, p] . W_dec[i])
     error / embedding at p:  g_site[j, p] . v_p   (the node's vector; its "activation" is 1)
   Computed per position as `g[:, p] @ W_dec[active latents at p].T`, so only active latents are
   touched, never a [n_latents, n_latents] matrix.
4. Because the frozen map is affine, the direct effects of all sources plus the contribution of the
   constants (biases) sum to the target's value; `tests/test_tracing_attribution.py` checks each
   effect against an explicit linear ablation (remove the node's vector, rerun the frozen model).
Each phase's time is logged at INFO and counted in `Attributor.timings`.
"""

from __future__ import annotations

import logging
import time

import torch

from core.tracing.nodes import Target
from core.tracing.replacement import FrozenRun, PromptState, ReplacementModel
from core.tracing.timing import phase

log = logging.getLogger(__name__)


def effects_from_gradients(state: PromptState, grads: dict[str, torch.Tensor | None], n_rows: int) -> torch.Tensor:
    """Direct effects `[n_rows, n_nodes]` from leaf gradients `{site hook: [B, pos, d_model]}` (step 3)."""
    device = state.tokens.device
    out = torch.zeros(n_rows, state.n_nodes, device=device)
    for site in state.sites:
        g = grads.get(site.hook)
        if g is None:  # the targets do not depend on this site (it is downstream of them)
            continue
        g = g[:n_rows].float()  # [n_rows, pos, d_model]
        off = site.node_offset
        for p, start, end in site.pos_slices:
            dots = g[:, p] @ site.feat_dec[start:end].T  # [n_rows, n_p]
            out[:, off + start : off + end] = dots * site.feat_act[start:end]
        nf = site.n_features
        out[:, off + nf : off + nf + site.value.shape[0]] = (g * site.residual).sum(-1)
    return out


class Attributor:
    """Direct effects of every source node on batches of targets, over one retained frozen forward.

    `effects(targets)` returns `[n_targets, n_nodes]`; `n_backward` counts the backward passes and
    `timings` the seconds of each phase.
    """

    def __init__(self, rm: ReplacementModel, state: PromptState, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.rm = rm
        self.state = state
        self.batch_size = batch_size
        self.n_backward = 0
        self.n_forward = 0
        self.timings: dict[str, float] = {}
        self._run: FrozenRun | None = None

    def _forward(self) -> FrozenRun:
        if self._run is None:
            with phase("frozen_forward", self.timings, log):
                self._run = self.rm.frozen_forward(self.state, self.batch_size)
            self.n_forward += 1
        return self._run

    def effects(self, targets: list[Target]) -> torch.Tensor:
        """Direct effects `[len(targets), n_nodes]` of every source node on each target (steps 2-3)."""
        if not targets:
            return torch.zeros(0, self.state.n_nodes, device=self.state.tokens.device)
        for t in targets:
            self.rm.check_target(t, self.state.n_positions)
        run = self._forward()
        hooks = list(run.leaves)
        leaves = [run.leaves[h] for h in hooks]
        rows = []
        for start in range(0, len(targets), self.batch_size):
            chunk = targets[start : start + self.batch_size]
            t0 = time.perf_counter()
            with torch.enable_grad():
                values = self.rm.target_values(run, chunk)
                grads = torch.autograd.grad(values.sum(), leaves, retain_graph=True, allow_unused=True)
            self.timings["backward"] = self.timings.get("backward", 0.0) + time.perf_counter() - t0
            self.n_backward += 1
            t1 = time.perf_counter()
            rows.append(effects_from_gradients(self.state, dict(zip(hooks, grads, strict=True)), len(chunk)))
            self.timings["effects"] = self.timings.get("effects", 0.0) + time.perf_counter() - t1
        log.debug("%d targets in %d backward passes", len(targets), -(-len(targets) // self.batch_size))
        return torch.cat(rows)

    def release(self) -> None:
        """Drop the retained forward graph (frees memory; the next `effects` call runs a new forward)."""
        self._run = None


def direct_effects(
    rm: ReplacementModel, state: PromptState, targets: list[Target], batch_size: int = 32
) -> torch.Tensor:
    """Direct effects `[len(targets), n_nodes]` of every source node of `state` on each target."""
    return Attributor(rm, state, batch_size).effects(targets)


def target_for_node(state: PromptState, index: int) -> Target:
    """The LatentTarget of latent node `index` (its pre-activation)."""
    from core.tracing.nodes import LatentTarget

    n = state.nodes[index]
    if not n.is_latent:
        raise ValueError(f"node {n.node_id} is a {n.kind} node: only latents have parents to trace")
    assert n.dictionary is not None and n.latent is not None
    return LatentTarget(n.dictionary, n.position, n.latent)
