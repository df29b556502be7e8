"""The random-latent baseline: random directions made to look like latents of a dictionary.

A random latent `r` of dictionary D is a seeded random unit direction `u_r` in D's input space. Its
activation on a cached token is `max(0, (x − mean x) · u_r − θ_r)`, `x` the activation at D's
`hook_in`, with the threshold `θ_r` set so the direction fires on the same fraction of tokens as
D's median live latent (a random direction has no natural zero; matching the firing rate makes its
examples comparable to a real latent's). Its decoder direction (for intervention scoring) is an
independent seeded random unit vector in D's output space. Examples, explanations and scores are
then made exactly as for real latents, and every row is marked `baseline = 'random-latent'`, with
`latent` the direction's index. With neighbour negatives (`--negatives neighbours:<method>`) a random latent's
non-activating windows come from its nearest live latents of D (`random_latent_neighbours`), recorded on each
score row's params like a real latent's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.latents.sampling import LatentActivations

RANDOM_LATENT_SEED = 1234


@dataclass
class RandomLatents:
    """`n` random-direction latents over a workspace's cached contexts (see the module docstring)."""

    dictionary: str
    hook_in: str
    hook_out: str
    n_contexts: int
    ctx_len: int
    frequency: float
    seed: int
    values: list[np.ndarray]  # per direction: [k] activations (> 0), rows sorted by (context, position)
    contexts: list[np.ndarray]
    positions: list[np.ndarray]
    decoders: np.ndarray  # [n, d_out]

    @property
    def n(self) -> int:
        """Number of random latents."""
        return len(self.values)

    def activations(self, r: int) -> LatentActivations:
        """Random latent `r` as a LatentActivations (decile edges from its own non-zero values)."""
        v = self.values[r]
        edges = (
            np.quantile(v, np.linspace(0, 1, 11), method="lower").astype(np.float32)
            if len(v)
            else np.zeros(11, np.float32)
        )
        return LatentActivations(
            self.dictionary, int(r), self.contexts[r], self.positions[r], v, edges, self.n_contexts, self.ctx_len
        )

    def max_activation(self, r: int) -> float:
        """The largest activation of random latent `r`."""
        return float(self.values[r].max()) if len(self.values[r]) else 0.0


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """`n` seeded random unit vectors `[n, d]` float32."""
    u = np.random.default_rng(seed).standard_normal((n, d))
    return (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)


def random_latent_activations(
    x: np.ndarray, directions: np.ndarray, frequency: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For `x: [n_contexts, ctx_len, d]` (position 0 = BOS, never used) and unit `directions: [n, d]`: per direction,
    (flat token index `[k]` into positions 1.., activation `[k]`) firing on a `frequency` share of tokens."""
    n_ctx, ctx_len, d = x.shape
    flat = x[:, 1:].reshape(-1, d).astype(np.float32)
    flat = flat - flat.mean(axis=0, keepdims=True)
    proj = flat @ directions.T  # [tokens, n]
    k = max(1, int(round(frequency * len(flat))))
    out = []
    for r in range(directions.shape[0]):
        col = proj[:, r]
        kk = len(col) - k - 1  # the (kk)-th smallest value: exactly k values lie above it (ties aside)
        theta = np.partition(col, kk)[kk] if kk >= 0 else col.min() - 1
        idx = np.flatnonzero(col > theta)
        out.append((idx, (col[idx] - theta).astype(np.float32)))
    return out


def build_random_latents(
    model,
    tokens: np.ndarray,
    dictionary: str,
    hook_in: str,
    hook_out: str,
    d_out: int,
    frequency: float,
    n: int,
    seed: int = RANDOM_LATENT_SEED,
    batch: int = 32,
) -> RandomLatents:
    """Run the subject `model` over every cached context `tokens: [n_contexts, ctx_len]`, read `hook_in`, and make `n` random latents."""
    import torch

    layer = int(hook_in.split(".")[1])
    chunks = []
    with torch.inference_mode():
        for a in range(0, len(tokens), batch):
            _, cache = model.run_with_cache(
                torch.from_numpy(np.asarray(tokens[a : a + batch], dtype=np.int64)),
                names_filter=[hook_in],
                stop_at_layer=layer + 1,
            )
            chunks.append(cache[hook_in].float().numpy())
    x = np.concatenate(chunks)  # [n_contexts, ctx_len, d_in]
    dirs = random_directions(n, x.shape[-1], seed)
    n_ctx, ctx_len = tokens.shape
    values, contexts, positions = [], [], []
    for idx, val in random_latent_activations(x, dirs, frequency):
        contexts.append((idx // (ctx_len - 1)).astype(np.int64))
        positions.append((idx % (ctx_len - 1) + 1).astype(np.int64))
        values.append(val)
    return RandomLatents(
        dictionary,
        hook_in,
        hook_out,
        n_ctx,
        ctx_len,
        frequency,
        seed,
        values,
        contexts,
        positions,
        random_directions(n, d_out, seed + 1),
    )


def random_latent_neighbours(
    rl: RandomLatents,
    method: str,
    n: int,
    live: np.ndarray,
    fires: tuple[np.ndarray, np.ndarray] | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """`[rl.n, n]` ids of the dictionary's live latents nearest each random latent (nearest first, -1 padded), so
    random latents get neighbour negatives like real ones: windows where those real latents fire and it does not.

    method 'encoder': cosine of the random direction `u_r` (input space) with the rows of `weights: [d_sae, d_in]`
    (the encoder directions); 'decoder': cosine of its random decoder vector with `weights: [d_sae, d_out]` (the
    decoder directions: unrelated by construction, so these neighbours are as good as random ones, which is the
    baseline's point); 'cooccurrence': Jaccard index of its firing positions with each real latent's, from
    `fires = (latent [n_acts], key [n_acts])`, key = context · ctx_len + position. `live: [d_sae]` bool."""
    from core.latents.neighbours import _top

    live = np.asarray(live, bool)
    if method in ("encoder", "decoder"):
        if weights is None:
            raise ValueError(f"{method} neighbours of random latents need the dictionary's {method} weights")
        own = random_directions(rl.n, weights.shape[1], rl.seed) if method == "encoder" else rl.decoders
        if own.shape[1] != weights.shape[1]:
            raise ValueError(f"random latents have width {own.shape[1]}, the {method} weights {weights.shape[1]}")
        w = np.asarray(weights, np.float32)
        w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        sim = own.astype(np.float32) @ w.T  # [rl.n, d_sae]; own rows are unit vectors
        sim[:, ~live] = -np.inf  # only live real latents are candidates
        ids, _ = _top(sim, n)
        return ids
    if method == "cooccurrence":
        if fires is None:
            raise ValueError("co-occurrence neighbours of random latents need the dictionary's firing positions")
        from scipy import sparse

        latent, key = np.asarray(fires[0], np.int64), np.asarray(fires[1], np.int64)
        r_latent = np.concatenate([np.full(len(v), r, np.int64) for r, v in enumerate(rl.values)])
        r_key = np.concatenate([c * rl.ctx_len + p for c, p in zip(rl.contexts, rl.positions, strict=True)])
        keys, col = np.unique(np.concatenate([key, r_key.astype(np.int64)]), return_inverse=True)
        real = sparse.csr_matrix(
            (np.ones(len(key), np.float32), (latent, col[: len(key)])), shape=(len(live), len(keys))
        )
        rand = sparse.csr_matrix(
            (np.ones(len(r_key), np.float32), (r_latent, col[len(key) :])), shape=(rl.n, len(keys))
        )
        real.data[:] = 1.0
        rand.data[:] = 1.0
        co = (rand @ real.T).toarray()  # [rl.n, d_sae] shared positions
        union = np.asarray(rand.sum(axis=1)) + np.asarray(real.sum(axis=1)).T - co
        jac = np.divide(co, union, out=np.zeros_like(co), where=union > 0)
        jac[(co <= 0) | ~live[None, :]] = -np.inf
        ids, _ = _top(jac, n)
        return ids
    raise ValueError(f"unknown neighbour method {method!r}")
