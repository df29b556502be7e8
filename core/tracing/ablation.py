"""Faithfulness of circuits by ablation on the real model (not on the frozen linearisation).

Method, step by step:
1. A circuit is a set of latents `(dictionary id, position, latent)`. Error nodes and embeddings are
   never ablated (they stay part of the model), and neither is the BOS position (its activations
   are the same for every prompt). Every attention SAE and transcoder of the replacement model is
   spliced in: at `hook_out` the output becomes `decode(a') + error`, where `a` are the latents
   encoded from the *current* run's `hook_in`, `error = output - decode(a)` is recomputed in the
   current run, and `a'` is `a` with some latents replaced by their mean (or zero). With nothing
   replaced the spliced model is the real model exactly; attention patterns and LayerNorms are
   recomputed in every run (nothing frozen).
2. Means: each latent's activation averaged over corpus text (every position but BOS of `n_windows`
   windows of `ctx` tokens), position-averaged, one vector `[d_sae]` per dictionary. Computed by
   `latent_means`, cached on disk by `load_or_compute_means`, or injected by the caller (e.g. from
   the activation cache) as `{dictionary id: [d_sae]}`.
3. Metric m: the trace target on the real model: the logit (difference) at the target position,
   or a latent's pre-activation.
4. Four runs per prompt set: m(M) the model; m(∅) every latent ablated; m(C) only the circuit's
   latents kept (sufficiency); m(M\\C) the circuit's latents ablated (necessity). With
   `active_only`, latents inactive in the current run are left at 0 rather than set to their mean.
5. Marks et al.: faithfulness F(C) = (m(C) - m(∅)) / (m(M) - m(∅)), with m averaged over prompts
   before the ratio; completeness is judged by the faithfulness of the complement,
   F(M\\C) = (m(M\\C) - m(∅)) / (m(M) - m(∅)): near 0 means the circuit holds all of the mechanism.
Each phase's time is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from core.progress import Progress
from core.subjects.dictionaries import Dictionary
from core.tracing.nodes import LatentTarget, LogitTarget, Target
from core.tracing.replacement import pre_activation
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

Feature = tuple[str, int, int]  # (dictionary id, position, latent)
Circuit = frozenset[Feature]
AblationKind = Literal["mean", "zero"]
Mode = Literal["keep", "ablate"]


@dataclass
class FaithfulnessResult:
    """Ablation results for one circuit per prompt over a set of prompts (means over prompts)."""

    metric_full: float  # m(M): the real model
    metric_empty: float  # m(∅): every latent ablated
    metric_circuit: float  # m(C): only the circuit's latents kept (sufficiency)
    metric_complement: float  # m(M\C): the circuit's latents ablated (necessity)
    faithfulness: float  # (m(C) - m(∅)) / (m(M) - m(∅)); 1 = sufficient
    complement_faithfulness: float  # (m(M\C) - m(∅)) / (m(M) - m(∅)); 0 = complete (Marks et al.)
    n_latents: float  # circuit size, mean over prompts
    n_prompts: int
    ablation: str

    def to_json(self) -> dict:
        """Plain-JSON form (NaN as None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def faithfulness_ratio(m_circuit: float, m_full: float, m_empty: float) -> float:
    """(m(C) - m(∅)) / (m(M) - m(∅)); NaN when the model and the empty circuit agree (|difference| < 1e-6)."""
    denom = m_full - m_empty
    if abs(denom) < 1e-6:
        return float("nan")
    return (m_circuit - m_empty) / denom


def metric_values(
    model,
    dictionaries: Sequence[Dictionary],
    tokens: torch.Tensor,
    targets: Sequence[Target],
    circuits: Sequence[Iterable[Feature]] | None,
    mode: Mode,
    means: dict[str, torch.Tensor] | None = None,
    ablation: AblationKind = "mean",
    batch_size: int = 16,
    active_only: bool = False,
) -> torch.Tensor:
    """m for each prompt on the spliced real model (steps 1, 3): `[n_prompts]`.

    `tokens: [n_prompts, pos]` (BOS first, right-padded); `targets[b]` is read at its own
    position; `circuits[b]` the circuit of prompt b (None = empty for all). `mode='keep'` keeps
    only circuit latents (others ablated), `mode='ablate'` ablates only circuit latents.
    `active_only=True` ablates only latents active in the current run: inactive ones stay at 0
    instead of being set to their mean (Marks et al. ablate every latent; with sparse
    dictionaries the means of thousands of inactive latents add up to a large shift).
    """
    dicts = [d for d in dictionaries if d.kind in ("attn", "transcoder")]
    by_id = {d.id: d for d in dicts}
    if ablation == "mean":
        missing = [d.id for d in dicts if means is None or d.id not in means]
        if missing:
            raise ValueError(
                f"no latent means for {', '.join(missing)}; compute them with load_or_compute_means or use ablation='zero'"
            )
    n = tokens.shape[0]
    circuits = list(circuits) if circuits is not None else [()] * n
    if len(circuits) != n or len(targets) != n:
        raise ValueError(f"{n} prompts but {len(targets)} targets and {len(circuits)} circuits")
    device = next(model.parameters()).device
    out = []
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        out.append(
            _metric_batch(
                model,
                dicts,
                by_id,
                tokens[sl].to(device),
                list(targets[sl]),
                list(circuits[sl]),
                mode,
                means,
                ablation,
                active_only,
            )
        )
    return torch.cat(out)


@torch.no_grad()
def _metric_batch(model, dicts, by_id, tokens, targets, circuits, mode, means, ablation, active_only) -> torch.Tensor:
    B, P = tokens.shape
    masks: dict[str, torch.Tensor] = {}
    for b, circ in enumerate(circuits):
        for dict_id, p, i in circ:
            if dict_id not in by_id:
                raise ValueError(f"circuit names dictionary {dict_id!r}, not among {', '.join(by_id)}")
            if dict_id not in masks:
                masks[dict_id] = torch.zeros(B, P, by_id[dict_id].d_sae, dtype=torch.bool, device=tokens.device)
            if p < P:
                masks[dict_id][b, p, i] = True
    inputs: dict[str, torch.Tensor] = {}

    def read_in(value: torch.Tensor, hook) -> torch.Tensor:
        inputs[hook.name] = value
        return value

    def make_out(d: Dictionary):
        def write_out(value: torch.Tensor, hook) -> torch.Tensor:
            x = inputs[d.hook_in] if d.hook_in != d.hook_out else value
            if d.hook_in == d.hook_out:
                inputs[d.hook_in] = value
            acts = d.encode(x)
            err = value - d.decode(acts)
            mask = masks.get(d.id)
            if mask is None:
                mask = torch.zeros_like(acts, dtype=torch.bool)
            replace = ~mask if mode == "keep" else mask
            replace[:, 0] = False  # BOS is never ablated
            if active_only:
                replace &= acts != 0
            if not bool(replace.any()):
                return value
            fill = (
                means[d.id].to(acts.dtype)
                if ablation == "mean"
                else torch.zeros(d.d_sae, dtype=acts.dtype, device=acts.device)
            )
            new = torch.where(replace, fill.expand_as(acts), acts)
            return d.decode(new) + err

        return write_out

    hooks = [(d.hook_in, read_in) for d in dicts if d.hook_in != d.hook_out]
    hooks += [(d.hook_out, make_out(d)) for d in dicts]
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    vals = []
    for b, t in enumerate(targets):
        if isinstance(t, LogitTarget):
            v = logits[b, t.position, t.token]
            if t.contrast is not None:
                v = v - logits[b, t.position, t.contrast]
        else:
            d = by_id[t.dictionary]
            x = inputs[d.hook_in][b, t.position][None]
            v = pre_activation(d, x, torch.tensor([t.latent], device=x.device))[0]
        vals.append(v.float())
    return torch.stack(vals).cpu()


def circuit_faithfulness(
    model,
    dictionaries: Sequence[Dictionary],
    tokens: torch.Tensor,
    targets: Sequence[Target],
    circuits: Sequence[Iterable[Feature]],
    means: dict[str, torch.Tensor] | None = None,
    ablation: AblationKind = "mean",
    reference: tuple[float, float] | None = None,
    active_only: bool = False,
) -> FaithfulnessResult:
    """Faithfulness and complement faithfulness of `circuits[b]` for prompt b (steps 4-5).

    `reference = (m(M), m(∅))` skips the two reference runs when they are already known.
    """
    circuits = [frozenset(c) for c in circuits]
    timings: dict[str, float] = {}
    if reference is None:
        with phase("reference runs (model, empty circuit)", timings, log):
            m_full = float(
                metric_values(
                    model, dictionaries, tokens, targets, None, "ablate", means, ablation, active_only=active_only
                ).mean()
            )
            m_empty = float(
                metric_values(
                    model, dictionaries, tokens, targets, None, "keep", means, ablation, active_only=active_only
                ).mean()
            )
    else:
        m_full, m_empty = reference
    with phase("circuit runs (keep, ablate)", timings, log):
        m_c = float(
            metric_values(
                model, dictionaries, tokens, targets, circuits, "keep", means, ablation, active_only=active_only
            ).mean()
        )
        m_mc = float(
            metric_values(
                model, dictionaries, tokens, targets, circuits, "ablate", means, ablation, active_only=active_only
            ).mean()
        )
    return FaithfulnessResult(
        metric_full=m_full,
        metric_empty=m_empty,
        metric_circuit=m_c,
        metric_complement=m_mc,
        faithfulness=faithfulness_ratio(m_c, m_full, m_empty),
        complement_faithfulness=faithfulness_ratio(m_mc, m_full, m_empty),
        n_latents=sum(len(c) for c in circuits) / max(1, len(circuits)),
        n_prompts=len(circuits),
        ablation=ablation + (" (active latents only)" if active_only else ""),
    )


def faithfulness_of_sets(
    model,
    dictionaries: Sequence[Dictionary],
    tokens: torch.Tensor,
    targets: Sequence[Target],
    circuit_sets: Sequence[Sequence[Iterable[Feature]]],
    means: dict[str, torch.Tensor] | None,
    ablation: AblationKind,
    reference: tuple[float, float],
    active_only: bool = False,
) -> list[FaithfulnessResult]:
    """`circuit_faithfulness` of each set of per-prompt circuits (e.g. one per random seed), against one
    known `reference = (m(M), m(∅))`."""
    return [
        circuit_faithfulness(
            model, dictionaries, tokens, targets, cs, means, ablation, reference=reference, active_only=active_only
        )
        for cs in circuit_sets
    ]


# ---------------------------------------------------------------------------------------------
# Latent means over corpus text (step 2)


def corpus_windows(tokenizer, texts: Sequence[str], n_windows: int = 64, ctx: int = 64) -> torch.Tensor:
    """Up to `n_windows` windows `[n, ctx]` of consecutive tokens from `texts`, each starting with BOS."""
    bos = tokenizer.bos_token_id
    stream: list[int] = []
    for text in texts:
        stream += tokenizer.encode(text, add_special_tokens=False)
        if len(stream) >= n_windows * (ctx - 1):
            break
    n = min(n_windows, len(stream) // (ctx - 1))
    if n == 0:
        raise ValueError(f"the corpus text has {len(stream)} tokens, fewer than one window of {ctx - 1}")
    body = torch.tensor(stream[: n * (ctx - 1)], dtype=torch.long).view(n, ctx - 1)
    return torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], dim=1)


@torch.no_grad()
def latent_means(
    model,
    dictionaries: Sequence[Dictionary],
    windows: torch.Tensor,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Each latent's mean activation over every non-BOS position of `windows: [n, ctx]`: `{id: [d_sae]}`."""
    dicts = [d for d in dictionaries if d.kind in ("attn", "transcoder")]
    hooks = {d.hook_in for d in dicts}
    sums = {d.id: torch.zeros(d.d_sae, dtype=torch.float64) for d in dicts}
    count = 0
    device = next(model.parameters()).device
    stop = 1 + max(d.layer for d in dicts) if dicts else 0
    timings: dict[str, float] = {}
    with phase("latent_means", timings, log):
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(device)
            _, cache = model.run_with_cache(batch, names_filter=lambda n: n in hooks, stop_at_layer=stop)
            for d in dicts:
                acts = d.encode(cache[d.hook_in][:, 1:].float())  # [b, ctx-1, d_sae]
                sums[d.id] += acts.sum(dim=(0, 1)).double().cpu()
            count += batch.shape[0] * (batch.shape[1] - 1)
            report(progress, "latent means", (start + batch.shape[0]) / windows.shape[0])
    return {k: (v / max(1, count)).float().to(device) for k, v in sums.items()}


def _fingerprint(model, dictionaries: Sequence[Dictionary], extra: dict) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items())[:64]:
        if p.is_floating_point():
            h.update(f"{name}:{float(p.double().sum()):.6e}".encode())
    for d in sorted(dictionaries, key=lambda d: d.id):
        h.update(
            f"{d.id}:{d.d_sae}:{float(d.W_enc.detach().double().sum()):.6e}:{float(d.b_enc.detach().double().sum()):.6e}".encode()
        )
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_or_compute_means(
    model,
    dictionaries: Sequence[Dictionary],
    corpus_path: Path,
    cache_dir: Path | None = None,
    n_windows: int = 64,
    ctx: int = 64,
    progress: Progress | None = None,
) -> dict[str, torch.Tensor]:
    """Latent means over the validation split of the corpus at `corpus_path`, cached in `cache_dir` by a fingerprint of model, dictionaries and settings."""
    from safetensors.torch import load_file, save_file

    from core.build.corpus import read_corpus

    dicts = [d for d in dictionaries if d.kind in ("attn", "transcoder")]
    ctx = min(ctx, model.cfg.n_ctx)
    key = _fingerprint(model, dicts, {"corpus": str(corpus_path), "n_windows": n_windows, "ctx": ctx})
    path = cache_dir / f"latent-means-{key}.safetensors" if cache_dir is not None else None
    device = next(model.parameters()).device
    if path is not None and path.exists():
        loaded = load_file(str(path))
        if all(d.id in loaded for d in dicts):
            return {k: v.to(device) for k, v in loaded.items()}
    docs = read_corpus(corpus_path, split="validation") or read_corpus(corpus_path)
    windows = corpus_windows(model.tokenizer, [d.text for d in docs], n_windows, ctx)
    means = latent_means(model, dicts, windows, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.cpu().contiguous() for k, v in means.items()}, str(path))
    return means


def all_latent_circuit(dictionaries: Sequence[Dictionary], n_positions: int) -> Circuit:
    """Every latent of every traced dictionary at every non-BOS position (the whole model as a circuit)."""
    return frozenset(
        (d.id, p, i)
        for d in dictionaries
        if d.kind in ("attn", "transcoder")
        for p in range(1, n_positions)
        for i in range(d.d_sae)
    )


def target_for_prompt(target: Target, position: int) -> Target:
    """`target` moved to `position` (e.g. each padded prompt's last index)."""
    if isinstance(target, LogitTarget):
        return LogitTarget(target.token, position, target.contrast, target.token_str, target.contrast_str)
    return LatentTarget(target.dictionary, position, target.latent)
