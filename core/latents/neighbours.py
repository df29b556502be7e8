"""Each latent's nearest other latents, for drawing non-activating examples that resemble its activating ones.

Three notions of near (as in delphi's `latents/neighbours.py`):
    decoder         cosine of decoder directions `W_dec: [d_sae, d_out]`
    encoder         cosine of encoder directions (`W_enc.T: [d_sae, d_in]`)
    cooccurrence    Jaccard index of the token positions where two latents fire in the cache:
                    |A ∩ B| / |A ∪ B|; latents that never fire together are never neighbours
Only live latents (those that fire in the cache) can be neighbours: a dead one gives no windows.
Each function returns `(ids [d_sae, n] int64, similarity [d_sae, n] float32)`, nearest first, padded with -1 / NaN
where a latent has fewer than n neighbours.
"""

from __future__ import annotations

import numpy as np

from core.errors import UserError

METHODS = ("decoder", "encoder", "cooccurrence")


def _top(sim: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `sim: [b, d]` (-inf = not a candidate): the n largest, descending, -1/NaN where fewer."""
    k = min(n, sim.shape[1])
    idx = (
        np.argpartition(-sim, k - 1, axis=1)[:, :k]
        if k < sim.shape[1]
        else np.tile(np.arange(sim.shape[1]), (len(sim), 1))
    )
    val = np.take_along_axis(sim, idx, axis=1)
    order = np.argsort(-val, axis=1, kind="stable")
    idx, val = np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)
    ids = np.full((len(sim), n), -1, dtype=np.int64)
    out = np.full((len(sim), n), np.nan, dtype=np.float32)
    ok = np.isfinite(val)
    ids[:, :k] = np.where(ok, idx, -1)
    out[:, :k] = np.where(ok, val, np.nan)
    return ids, out


def cosine_neighbours(
    weights: np.ndarray, n: int, live: np.ndarray | None = None, batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The `n` live latents whose rows of `weights: [d_sae, d]` have the highest cosine with each latent's row (itself excluded)."""
    w = np.asarray(weights, dtype=np.float32)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
    cand = np.ones(len(w), bool) if live is None else np.asarray(live, bool)
    ids, sims = [], []
    for a in range(0, len(w), batch):
        sim = w[a : a + batch] @ w.T  # [b, d_sae]
        sim[:, ~cand] = -np.inf
        rows = np.arange(len(sim))
        sim[rows, a + rows] = -np.inf
        i, s = _top(sim, n)
        ids.append(i)
        sims.append(s)
    return np.concatenate(ids), np.concatenate(sims)


def cooccurrence_neighbours(
    latent: np.ndarray, key: np.ndarray, d_sae: int, n: int, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """The `n` latents with the highest Jaccard index of firing positions with each latent.

    `latent, key: [n_acts]`: which latent fired, and where (a unique id of the token position, e.g. context · ctx_len + position).
    """
    from scipy import sparse

    keys, col = np.unique(np.asarray(key, np.int64), return_inverse=True)
    a = sparse.csr_matrix(
        (np.ones(len(col), np.float32), (np.asarray(latent, np.int64), col)), shape=(d_sae, len(keys))
    )
    a.data[:] = 1.0  # duplicates (should be none) count once
    count = np.asarray(a.sum(axis=1)).ravel()  # [d_sae] positions each latent fires at
    at = a.T.tocsc()
    ids, sims = [], []
    for s in range(0, d_sae, batch):
        co = (a[s : s + batch] @ at).toarray()  # [b, d_sae] shared positions
        union = count[s : s + batch, None] + count[None, :] - co
        jac = np.divide(co, union, out=np.zeros_like(co), where=union > 0)
        jac[co <= 0] = -np.inf
        rows = np.arange(len(co))
        jac[rows, s + rows] = -np.inf
        i, v = _top(jac, n)
        ids.append(i)
        sims.append(v)
    return np.concatenate(ids), np.concatenate(sims)


def check_enough(n: int, method: str, dictionary: str, n_live: int) -> None:
    """UserError when the dictionary has fewer live latents than the `n` neighbours asked for."""
    if n_live - 1 < n:
        raise UserError(
            f"dictionary {dictionary} has {n_live} live latents, too few for {n} {method} neighbours each; "
            f"ask for fewer (--neighbours {max(1, n_live - 1)}) or use --negatives random+hard"
        )
