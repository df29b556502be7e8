"""Per-latent statistics of cached activations, as pure array functions.

For each latent, over the tokens where it is positive ("fires"):
    n_fires, frequency = n_fires / tokens cached, max, mean (over firing tokens),
    quantile_edges [11]: min, q10, ..., q90, max of its non-zero activations, by the nearest-rank
        rule `sorted_ascending[floor(i * (n - 1) / 10)]` (numpy's `quantile(..., method="lower")`),
    hist_counts [bins]: equal-width histogram over (0, max],
    top activating tokens: the token ids at its `top_rows` highest activations, with counts.
And from weights alone: the tokens its decoder direction promotes and suppresses most through the
unembedding (`W_dec[latent] @ W_U`, no final LayerNorm, as in a logit lens).

Deciles number 1 (weakest tenth of a latent's activations) to 10 (strongest): an activation `v`
is in decile `1 + #{i in 1..9 : v > edges[i]}`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_DECILES = 10
HIST_BINS = 32
TOP_ROWS = 20
N_OUTPUT_TOKENS = 10


def decile_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Decile (1..10) of each activation `values: [n]` given a latent's `edges: [11]`."""
    return np.searchsorted(np.asarray(edges[1:N_DECILES]), np.asarray(values), side="left").astype(np.int64) + 1


def sort_by_latent_then_value(latent: np.ndarray, value: np.ndarray) -> np.ndarray:
    """A stable permutation `[n]` ordering rows by latent ascending, then value descending.

    `latent: [n]` non-negative ints below 2**31, `value: [n]` positive float32. Packs both into one
    int64 key (positive floats order like their bit patterns) so one sort does it.
    """
    import torch

    bits = np.ascontiguousarray(value, dtype=np.float32).view(np.int32).astype(np.int64)
    key = (latent.astype(np.int64) << 32) | (0xFFFFFFFF - bits)
    return torch.sort(torch.from_numpy(key), stable=True).indices.numpy()


@dataclass
class RangeStats:
    """Statistics of latents `first .. first + m - 1`: arrays over those `m` latents."""

    first: int
    n_fires: np.ndarray  # [m] int64
    max_activation: np.ndarray  # [m] float32
    mean_activation: np.ndarray  # [m] float32
    quantile_edges: np.ndarray  # [m, 11] float32
    hist_counts: np.ndarray  # [m, bins] int64
    top_latent: np.ndarray  # [p] latent of each (latent, token, n) triple
    top_token: np.ndarray  # [p]
    top_n: np.ndarray  # [p]


def _top_rows_exact(seg: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest values of `seg`, largest first, ties by index (= a stable descending sort's first k)."""
    if len(seg) <= k:
        return np.argsort(-seg, kind="stable")
    t = np.partition(seg, len(seg) - k)[len(seg) - k]  # the k-th largest value
    above = np.flatnonzero(seg > t)
    equal = np.flatnonzero(seg == t)[: k - len(above)]
    idx = np.concatenate([above, equal])
    return idx[np.lexsort((idx, -seg[idx]))]


def range_stats(
    latent: np.ndarray,
    value: np.ndarray,
    token_id: np.ndarray,
    first: int,
    m: int,
    hist_bins: int = HIST_BINS,
    top_rows: int = TOP_ROWS,
    big: int = 512,
) -> RangeStats:
    """Statistics of every latent in `[first, first + m)` from all of their rows.

    `latent, value, token_id: [n]`: the latent, its activation (> 0), and the token id it fired on;
    cheapest when rows come grouped by latent (as the cache's merge produces them), any order works.
    Latents with no rows get zeros. Order statistics of latents with more than `big` rows come from
    `np.partition` one latent at a time (linear); the rest from one vectorised sort.
    """
    local = latent.astype(np.int64) - first
    value = np.asarray(value, dtype=np.float32)
    token_id = np.asarray(token_id, dtype=np.int64)
    if len(local) > 1 and np.any(local[1:] < local[:-1]):
        order = np.argsort(local, kind="stable")
        local, value, token_id = local[order], value[order], token_id[order]
    counts = np.bincount(local, minlength=m).astype(np.int64)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    fired = counts > 0
    n_f = counts[fired]

    max_act = np.zeros(m, dtype=np.float32)
    mean = np.zeros(m, dtype=np.float32)
    if fired.any():
        max_act[fired] = np.maximum.reduceat(value, starts[:-1][fired])
        mean[fired] = np.add.reduceat(value.astype(np.float64), starts[:-1][fired]) / n_f

    hist = np.zeros((m, hist_bins), dtype=np.int64)
    if len(value):
        b = np.minimum((value / max_act[local] * hist_bins).astype(np.int64), hist_bins - 1)
        hist = np.bincount(local * hist_bins + b, minlength=m * hist_bins).reshape(m, hist_bins)

    edges = np.zeros((m, N_DECILES + 1), dtype=np.float32)
    asc_frac = np.arange(N_DECILES + 1)
    top_l: list[np.ndarray] = []
    top_t: list[np.ndarray] = []
    # small latents: one sort of all their rows by (latent, value desc)
    small = fired & (counts <= big)
    if small.any():
        rows = np.flatnonzero(small[local])
        order = rows[sort_by_latent_then_value(local[rows], value[rows])]
        lat_s, v_s = local[order], value[order]
        s_starts = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.where(small, counts, 0), out=s_starts[1:])
        n_s = counts[small]
        asc = (asc_frac[None, :] * (n_s[:, None] - 1)) // N_DECILES
        edges[small] = v_s[s_starts[:-1][small][:, None] + (n_s[:, None] - 1 - asc)]
        keep = np.arange(len(order)) - s_starts[lat_s] < top_rows
        top_l.append(lat_s[keep])
        top_t.append(token_id[order][keep])
    # big latents: linear selection, one latent at a time
    for lat in np.flatnonzero(fired & ~small):
        s, e = starts[lat], starts[lat + 1]
        seg = value[s:e]
        kth = (asc_frac * (len(seg) - 1)) // N_DECILES
        edges[lat] = np.partition(seg, kth)[kth]
        top = _top_rows_exact(seg, top_rows)
        top_l.append(np.full(len(top), lat, dtype=np.int64))
        top_t.append(token_id[s:e][top])

    pair = np.concatenate(top_l) * (1 << 32) + np.concatenate(top_t) if top_l else np.zeros(0, np.int64)
    uniq, n = np.unique(pair, return_counts=True)
    return RangeStats(
        first=first,
        n_fires=counts,
        max_activation=max_act,
        mean_activation=mean,
        quantile_edges=edges,
        hist_counts=hist,
        top_latent=(uniq >> 32) + first,
        top_token=uniq & 0xFFFFFFFF,
        top_n=n,
    )


def output_token_logits(W_dec, W_U, k: int = N_OUTPUT_TOKENS, batch: int | None = None) -> dict[str, np.ndarray]:
    """Top-`k` promoted and suppressed tokens of each latent's decoder direction through the unembedding.

    `W_dec: [d_sae, d_model]`, `W_U: [d_model, d_vocab]` (torch tensors). Returns arrays `[d_sae, k]`:
    top_output_tokens/logits (largest first) and bottom_output_tokens/logits (most negative first).
    Processed `batch` latents at a time so memory stays near `batch * d_vocab` floats.
    """
    import torch

    d_sae = W_dec.shape[0]
    d_vocab = W_U.shape[1]
    k = min(k, d_vocab)
    batch = batch or max(1, (1 << 24) // d_vocab)
    out = {
        "top_output_tokens": np.zeros((d_sae, k), np.int32),
        "top_output_logits": np.zeros((d_sae, k), np.float32),
        "bottom_output_tokens": np.zeros((d_sae, k), np.int32),
        "bottom_output_logits": np.zeros((d_sae, k), np.float32),
    }
    with torch.inference_mode():
        W_U = W_U.detach().float()
        for s in range(0, d_sae, batch):
            logits = W_dec[s : s + batch].detach().float().to(W_U.device) @ W_U  # [b, d_vocab]
            top = logits.topk(k, dim=-1)
            bottom = logits.topk(k, dim=-1, largest=False)
            out["top_output_tokens"][s : s + batch] = top.indices.cpu().numpy()
            out["top_output_logits"][s : s + batch] = top.values.cpu().numpy()
            out["bottom_output_tokens"][s : s + batch] = bottom.indices.cpu().numpy()
            out["bottom_output_logits"][s : s + batch] = bottom.values.cpu().numpy()
    return out


def no_output_tokens(d_sae: int) -> dict[str, np.ndarray]:
    """Empty output-token arrays `[d_sae, 0]` for dictionaries whose decoder does not write to the residual stream."""
    return {
        "top_output_tokens": np.zeros((d_sae, 0), np.int32),
        "top_output_logits": np.zeros((d_sae, 0), np.float32),
        "bottom_output_tokens": np.zeros((d_sae, 0), np.int32),
        "bottom_output_logits": np.zeros((d_sae, 0), np.float32),
    }
