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


FINE_BINS = 1024  # bins per latent used to locate order statistics (see `_block_stats`)
BLOCK_CELLS = 1 << 21  # latents per block x FINE_BINS: bounds the per-block tables (~16 MB each)


def _segment_positions(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Position of each element within its run, for `group: [n]` sorted ascending (0, 1, 2, ... per group)."""
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(group, minlength=n_groups), out=starts[1:])
    return np.arange(len(group), dtype=np.int64) - starts[group]


def _block_stats(counts: np.ndarray, value: np.ndarray, token_id: np.ndarray, hist_bins: int, top_rows: int):
    """`range_stats` of latents 0..m-1 with `counts: [m]` rows each, `value, token_id: [n]` grouped by latent.

    Order statistics without sorting every row (radix selection): a float32 > 0 orders like its bit
    pattern, so each latent's span of bit patterns is cut into FINE_BINS bins (a monotone map, so
    equal values share a bin and the bins of larger values are no lower). The cumulative counts tell
    which bin holds each wanted rank; only the rows in those bins are sorted.
    """
    n = len(value)
    m = len(counts)
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    fired = counts > 0
    fl = np.flatnonzero(fired)
    max_act = np.zeros(m, dtype=np.float32)
    mean = np.zeros(m, dtype=np.float32)
    edges = np.zeros((m, N_DECILES + 1), dtype=np.float32)
    hist = np.zeros((m, hist_bins), np.int64)
    if n == 0:
        return max_act, mean, edges, hist, np.zeros(0, np.int64), np.zeros(0, np.int64)
    first_rows = starts[:-1][fired]
    max_act[fired] = np.maximum.reduceat(value, first_rows)
    mean[fired] = np.add.reduceat(value.astype(np.float64), first_rows) / counts[fired]

    hist = _histogram(value, max_act, counts, hist_bins)

    bits = value.view(np.int32)
    lo = np.zeros(m, np.int64)
    lo[fired] = np.minimum.reduceat(bits, first_rows)
    span = np.ones(m, np.int64)
    span[fired] = np.maximum.reduceat(bits, first_rows) - lo[fired] + 1
    F = int(min(FINE_BINS, max(16, 1 << int(np.ceil(np.log2(max(1.0, n / max(1, len(fl)) / 4)))))))  # ~4 rows a bin
    # float32 rounding is monotone too, and the clamp keeps the top value in the last bin
    fine = (
        (bits - np.repeat(lo.astype(np.int32), counts)).astype(np.float32)
        * np.repeat((F / span).astype(np.float32), counts)
    ).astype(np.int64)
    np.minimum(fine, F - 1, out=fine)
    fine += np.repeat(np.arange(m, dtype=np.int64) * F, counts)  # cell (latent, fine bin)
    cell_counts = np.bincount(fine, minlength=m * F)
    cum = np.cumsum(cell_counts.reshape(m, F), axis=1)  # [m, F] rows of latent l in bins <= b

    # ascending ranks wanted: the 11 decile edges (nearest-rank lower) and the first of the top rows
    ranks = (np.arange(N_DECILES + 1)[None, :] * np.maximum(counts - 1, 0)[:, None]) // N_DECILES  # [m, 11]
    wanted = np.concatenate([ranks, np.maximum(counts - top_rows, 0)[:, None]], axis=1)  # [m, 12]
    # bin holding rank r of latent l = number of its bins whose cumulative count is <= r
    step = np.arange(m, dtype=np.int64)[:, None]
    bins = np.searchsorted((cum + step * (n + 1)).reshape(-1), wanted + step * (n + 1), side="right") - step * F
    before = np.where(bins > 0, np.take_along_axis(cum, np.minimum(np.maximum(bins - 1, 0), F - 1), axis=1), 0)

    # decile edges: sort the rows of the (at most 11) bins that hold one, by (latent, value)
    sel = np.zeros(m * F, dtype=bool)
    e_bins = bins[fl, : N_DECILES + 1]
    sel[(fl[:, None] * F + e_bins).reshape(-1)] = True
    cand = np.flatnonzero(sel[fine])
    order = cand[np.argsort(fine[cand] << 32 | bits[cand], kind="stable")]
    sel_counts = np.where(sel, cell_counts, 0).reshape(m, F)
    sel_before = np.cumsum(sel_counts, axis=1) - sel_counts  # candidates of latent l in its bins < b
    cstart = np.concatenate([[0], np.cumsum(sel_counts.sum(axis=1))])
    pos = (
        cstart[fl][:, None]
        + np.take_along_axis(sel_before[fl], e_bins, axis=1)
        + ranks[fl]
        - before[fl, : N_DECILES + 1]
    )
    edges[fl] = value[order[pos]]

    first_cell = np.arange(m, dtype=np.int64) * F + np.minimum(bins[:, N_DECILES + 1], F - 1)  # [m]
    top_latent, top_token = _top_rows(fine, first_cell, counts, starts, bits, token_id, top_rows)
    return max_act, mean, edges, hist, top_latent, top_token


def _histogram(value: np.ndarray, max_act: np.ndarray, counts: np.ndarray, hist_bins: int) -> np.ndarray:
    """`[m, hist_bins]` counts of each latent's `value` rows in equal-width bins over (0, max_act]."""
    m = len(counts)
    coarse = (value / np.repeat(max_act, counts) * hist_bins).astype(np.int32)
    np.minimum(coarse, hist_bins - 1, out=coarse)
    coarse += np.repeat(np.arange(m, dtype=np.int32) * hist_bins, counts)
    return np.bincount(coarse, minlength=m * hist_bins).reshape(m, hist_bins)


def _top_rows(
    fine: np.ndarray,
    first_cell: np.ndarray,
    counts: np.ndarray,
    starts: np.ndarray,
    bits: np.ndarray,
    token_id: np.ndarray,
    top_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(latent, token id) `[p]` of each latent's `top_rows` highest rows, highest first, ties in row order.

    Candidates are the rows whose cell `fine: [n]` is at or above their latent's `first_cell: [m]` (the
    cell of its first top row); they are sorted by value (`bits`, int32 view) descending with a stable
    sort, and the first `top_rows` of each latent kept.
    """
    m = len(counts)
    cand = np.flatnonzero(fine >= np.repeat(first_cell, counts))
    lat_c = np.searchsorted(starts, cand, side="right") - 1
    sort = np.argsort(lat_c << 32 | (0x7FFFFFFF - bits[cand]), kind="stable")
    keep = _segment_positions(lat_c[sort], m) < top_rows
    return lat_c[sort][keep], np.asarray(token_id)[cand[sort][keep]].astype(np.int64)


def range_stats(
    latent: np.ndarray,
    value: np.ndarray,
    token_id: np.ndarray,
    first: int,
    m: int,
    hist_bins: int = HIST_BINS,
    top_rows: int = TOP_ROWS,
    token_table: np.ndarray | None = None,
) -> RangeStats:
    """Statistics of every latent in `[first, first + m)` from all of their rows.

    `latent, value, token_id: [n]`: the latent, its activation (> 0), and the token id it fired on
    (or, if `token_table` is given, an index into it: only the top rows' token ids are then looked up);
    cheapest when rows come grouped by latent (as the cache's merge produces them), any order works.
    Latents with no rows get zeros. Exact and vectorised: a fine histogram per latent locates each
    order statistic's bin, and only the rows in those bins are sorted (a few percent of all rows).
    """
    local = np.asarray(latent).astype(np.int64) - first
    value = np.ascontiguousarray(value, dtype=np.float32)
    token_id = np.asarray(token_id)
    if len(local) > 1 and np.any(local[1:] < local[:-1]):
        order = np.argsort(local, kind="stable")
        value, token_id = value[order], token_id[order]
    return grouped_stats(np.bincount(local, minlength=m), value, token_id, first, hist_bins, top_rows, token_table)


def grouped_stats(
    counts: np.ndarray,
    value: np.ndarray,
    token_id: np.ndarray,
    first: int = 0,
    hist_bins: int = HIST_BINS,
    top_rows: int = TOP_ROWS,
    token_table: np.ndarray | None = None,
) -> RangeStats:
    """`range_stats` of latents `first .. first + m - 1` given `counts: [m]` and rows `value, token_id: [n]` grouped by latent."""
    m = len(counts)
    counts = np.asarray(counts, dtype=np.int64)
    value = np.ascontiguousarray(value, dtype=np.float32)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    max_act = np.zeros(m, np.float32)
    mean = np.zeros(m, np.float32)
    edges = np.zeros((m, N_DECILES + 1), np.float32)
    hist = np.zeros((m, hist_bins), np.int64)
    top_l: list[np.ndarray] = []
    top_t: list[np.ndarray] = []
    block = max(1, BLOCK_CELLS // FINE_BINS)
    for a in range(0, m, block):
        b = min(a + block, m)
        s, e = starts[a], starts[b]
        mx, mn, ed, h, tl, tt = _block_stats(counts[a:b], value[s:e], token_id[s:e], hist_bins, top_rows)
        max_act[a:b], mean[a:b], edges[a:b], hist[a:b] = mx, mn, ed, h
        top_l.append(tl + a)
        top_t.append(tt)
    top_tok = np.concatenate(top_t) if top_t else np.zeros(0, np.int64)
    if token_table is not None:
        top_tok = np.asarray(token_table)[top_tok].astype(np.int64)
    pair = (np.concatenate(top_l) << 32) + top_tok if top_l else np.zeros(0, np.int64)
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
    Processed `batch` latents at a time so memory stays near `batch * d_vocab` floats (by default
    8 MB, or 256 latents for large vocabularies: 51 MB at GPT-2's, where fewer rows made the product
    ~30% slower; either way reused from the allocator's heap rather than mapped afresh each time).
    """
    import torch

    d_sae = W_dec.shape[0]
    d_vocab = W_U.shape[1]
    k = min(k, d_vocab)
    batch = batch or max(256, (1 << 21) // d_vocab)
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
