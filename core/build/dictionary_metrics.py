"""How good a dictionary is: sparsity, reconstruction and the loss of the model with it spliced in.

For a dictionary `d` reading `hook_in` and reconstructing `hook_out` (the same hook for an SAE;
`blocks.L.ln2.hook_normalized` -> `blocks.L.hook_mlp_out` for a transcoder), over token rows
`[n_rows, n_ctx]` that each begin with BOS:

1. Clean run, caching `hook_in` and `hook_out`: the clean loss, and the activations `x` and `y`.
2. `latents = d.encode(x)`, `recon = d.decode(latents)`; accumulate L0 (non-zero latents per
   token) and the squared error and variance of `y` in float64, so FVU is exact over all tokens.
3. Spliced run: `hook_out` replaced by the dictionary's reconstruction (`splice_hooks`).
4. Zero-ablated run: `hook_out` set to zero.
   ce_loss_recovered = (loss_zero_ablated - loss_spliced) / (loss_zero_ablated - loss_clean).

Position 0 holds BOS in every row. In a causal model its activations are the same constant in
every context (it attends only to itself), so the dictionaries are neither trained on it nor
spliced there, and it is left out of every statistic here (its loss term is identical in the
three runs and cancels in the ratio). Every function runs under `no_grad`, in batches of rows,
so memory is bounded by one batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from core.subjects.dictionaries import Dictionary

log = logging.getLogger(__name__)

HookFn = Callable[[torch.Tensor, object], torch.Tensor]


@dataclass
class DictionaryMetrics:
    """Quality figures of one dictionary on one set of token rows (see the module docstring)."""

    id: str
    hook: str  # hook_out: where the reconstruction is compared and spliced
    hook_in: str
    kind: str
    layer: int
    d_sae: int
    l0: float  # mean number of non-zero latents per token (position 0 excluded)
    fvu: float  # fraction of variance of hook_out left unexplained by the reconstruction
    ce_loss_recovered: float
    loss_clean: float  # mean next-token loss, nats
    loss_spliced: float
    loss_zero_ablated: float
    dead_fraction: float  # share of latents that never fired on these tokens
    n_tokens: int


def _positions(skip_first_position: bool) -> slice:
    return slice(1, None) if skip_first_position else slice(None)


def reconstruct(d: Dictionary, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents `[..., d_sae]`, reconstruction `[..., d_out]`) of activations `x: [..., d_in]` at `d.hook_in`."""
    latents = d.encode(x)
    return latents, d.decode(latents).to(x.dtype)


def splice_hooks(
    dictionaries: Iterable[Dictionary], use_error_term: bool, skip_first_position: bool = True
) -> list[tuple[str, HookFn]]:
    """TransformerLens forward hooks that replace each dictionary's `hook_out` by its reconstruction.

    Use as `model.run_with_hooks(tokens, fwd_hooks=splice_hooks(...))`. Each reconstruction is
    computed from the activations of the run itself, so with several dictionaries spliced at once
    a downstream dictionary reads the upstream reconstructions (the replacement model). With
    `use_error_term` the error `hook_out - reconstruction` is added back, so the run's logits equal
    the clean logits while the latents are still computed. Position 0 (BOS) is left as it is when
    `skip_first_position`.
    """
    pos = _positions(skip_first_position)
    hooks: list[tuple[str, HookFn]] = []
    for d in dictionaries:
        if d.hook_in == d.hook_out:

            def replace_same(act: torch.Tensor, hook, d: Dictionary = d) -> torch.Tensor:
                x = act[:, pos]  # [batch, pos, d_in]
                _, recon = reconstruct(d, x)
                out = act.clone()
                out[:, pos] = recon + (x - recon) if use_error_term else recon
                return out

            hooks.append((d.hook_out, replace_same))
        else:
            saved: dict[str, torch.Tensor] = {}

            def save_input(act: torch.Tensor, hook, saved: dict = saved) -> torch.Tensor:
                saved["x"] = act[:, pos]  # [batch, pos, d_in]
                return act

            def replace_out(act: torch.Tensor, hook, d: Dictionary = d, saved: dict = saved) -> torch.Tensor:
                if "x" not in saved:
                    raise RuntimeError(f"{d.id}: {d.hook_in} did not run before {d.hook_out}")
                _, recon = reconstruct(d, saved.pop("x"))
                out = act.clone()
                out[:, pos] = recon + (act[:, pos] - recon) if use_error_term else recon
                return out

            hooks.append((d.hook_in, save_input))
            hooks.append((d.hook_out, replace_out))
    return hooks


def zero_ablation_hooks(hook_names: Iterable[str], skip_first_position: bool = True) -> list[tuple[str, HookFn]]:
    """Forward hooks that set each of `hook_names` to zero (position 0 kept when `skip_first_position`)."""
    pos = _positions(skip_first_position)

    def zero(act: torch.Tensor, hook) -> torch.Tensor:
        out = act.clone()
        out[:, pos] = 0.0
        return out

    return [(h, zero) for h in hook_names]


def _loss_per_token(model, tokens: torch.Tensor, fwd_hooks: list[tuple[str, HookFn]]) -> torch.Tensor:
    """Per-token next-token loss `[batch, ctx-1]` of a run with `fwd_hooks`."""
    return model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=fwd_hooks)


@dataclass
class _Accumulator:
    """Running float64 sums of one dictionary's statistics over batches."""

    d_sae: int
    n: int = 0
    l0_sum: float = 0.0
    sq_err: float = 0.0
    y_sq: float = 0.0
    y_sum: torch.Tensor | None = None
    fired: torch.Tensor | None = None
    loss_spliced: float = 0.0
    loss_zero: float = 0.0

    def add_reconstruction(self, latents: torch.Tensor, y: torch.Tensor, recon: torch.Tensor) -> None:
        latents = latents.reshape(-1, latents.shape[-1])
        y = y.reshape(-1, y.shape[-1]).double()
        recon = recon.reshape(-1, recon.shape[-1]).double()
        active = latents != 0
        self.n += y.shape[0]
        self.l0_sum += float(active.sum())
        self.sq_err += float((y - recon).pow(2).sum())
        self.y_sq += float(y.pow(2).sum())
        self.y_sum = y.sum(0) if self.y_sum is None else self.y_sum + y.sum(0)
        fired = active.any(0)
        self.fired = fired if self.fired is None else self.fired | fired


@torch.no_grad()
def evaluate_dictionaries(
    model,
    dictionaries: Sequence[Dictionary],
    tokens: torch.Tensor,
    batch_size: int = 16,
    skip_first_position: bool = True,
    progress: bool = False,
) -> list[dict]:
    """Metrics (see `DictionaryMetrics`) of each dictionary on token rows `tokens: [n_rows, n_ctx]`.

    One clean forward per batch serves every dictionary; each dictionary then costs a spliced and
    a zero-ablated forward per batch.
    """
    from tqdm import tqdm

    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [n_rows, n_ctx] with n_ctx >= 2, got shape {tuple(tokens.shape)}")
    device = next(model.parameters()).device
    pos = _positions(skip_first_position)
    names = sorted({h for d in dictionaries for h in (d.hook_in, d.hook_out)})
    accs = [_Accumulator(d_sae=d.d_sae) for d in dictionaries]
    loss_clean, n_loss = 0.0, 0
    t0 = time.time()
    for start in tqdm(range(0, len(tokens), batch_size), desc="dictionary metrics", disable=not progress):
        batch = tokens[start : start + batch_size].to(device)
        clean, cache = model.run_with_cache(batch, return_type="loss", loss_per_token=True, names_filter=names)
        loss_clean += float(clean.double().sum())
        n_loss += clean.numel()
        for d, acc in zip(dictionaries, accs, strict=True):
            latents, recon = reconstruct(d, cache[d.hook_in][:, pos])
            acc.add_reconstruction(latents, cache[d.hook_out][:, pos], recon)
            acc.loss_spliced += float(
                _loss_per_token(model, batch, splice_hooks([d], False, skip_first_position)).double().sum()
            )
            acc.loss_zero += float(
                _loss_per_token(model, batch, zero_ablation_hooks([d.hook_out], skip_first_position)).double().sum()
            )
        del cache
    log.info("metrics of %d dictionaries on %d tokens: %.1f s", len(dictionaries), tokens.numel(), time.time() - t0)

    out = []
    lc = loss_clean / n_loss
    for d, acc in zip(dictionaries, accs, strict=True):
        assert acc.y_sum is not None and acc.fired is not None
        total_var = acc.y_sq - float(acc.y_sum.pow(2).sum()) / acc.n
        ls, lz = acc.loss_spliced / n_loss, acc.loss_zero / n_loss
        denom = lz - lc
        out.append(
            asdict(
                DictionaryMetrics(
                    id=d.id,
                    hook=d.hook_out,
                    hook_in=d.hook_in,
                    kind=d.kind,
                    layer=d.layer,
                    d_sae=d.d_sae,
                    l0=acc.l0_sum / acc.n,
                    fvu=acc.sq_err / total_var if total_var > 0 else float("nan"),
                    ce_loss_recovered=(lz - ls) / denom if denom != 0 else float("nan"),
                    loss_clean=lc,
                    loss_spliced=ls,
                    loss_zero_ablated=lz,
                    dead_fraction=1.0 - float(acc.fired.float().mean()),
                    n_tokens=acc.n,
                )
            )
        )
    return out


def dictionary_metrics(model, dictionary: Dictionary, tokens: torch.Tensor, batch_size: int = 16) -> dict:
    """Metrics of one dictionary on token rows `tokens: [n_rows, n_ctx]` (each beginning with BOS).

    Keys: id, hook (= hook_out), hook_in, kind, layer, d_sae, l0, fvu, ce_loss_recovered,
    loss_clean, loss_spliced, loss_zero_ablated, dead_fraction, n_tokens.
    """
    return evaluate_dictionaries(model, [dictionary], tokens, batch_size=batch_size)[0]
