"""Example sampling for one latent, one function per strategy, all seeded.

An *example* is a window of `WindowSpec.length` tokens (32 by default) of one cached context, placed
around one token: `after` tokens follow it (a quarter of the window by default) and the rest precede
it, shifted to fit inside the context. It carries the window's token ids, the latent's activation at
every token of the window, the index of the token it was chosen for, and that token's decile (1..10,
see `core.cache.stats`; 0 for non-activating examples).

Strategies (as in the seed paper and delphi):
    sample_top            the k highest activations
    sample_random         k activations drawn uniformly from all of the latent's activations
    sample_quantiles      k activations from each decile (training examples)
    sample_test           k per decile, never overlapping the windows given as `exclude` (the training set)
    sample_random_negatives   windows where the latent never fires
    sample_hard_negatives     windows around the latent's typical tokens where it does not fire
    sample_neighbour_negatives    windows where similar latents (`core.latents.neighbours`) fire and it does not
Within one call windows never overlap, so no two examples share a token; a strategy returns fewer
than asked when the latent has too few distinct activations.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.cache.stats import N_DECILES, TOP_ROWS, decile_of


@dataclass(frozen=True)
class WindowSpec:
    """Example window: `length` tokens, `after` of them after the chosen token (default `length // 4`)."""

    length: int = 32
    after: int | None = None

    def tokens_after(self) -> int:
        """Tokens after the chosen one."""
        return self.length // 4 if self.after is None else self.after


DEFAULT_WINDOW = WindowSpec()


@dataclass(frozen=True)
class LatentActivations:
    """Every cached activation of one latent: rows sorted by (context, position).

    `context, position: [n]` ints, `value: [n]` float32 (> 0), `edges: [11]` its decile edges;
    `n_contexts` and `ctx_len` describe the cache; positions below `first_position` (BOS) are never cached.
    """

    dictionary: str
    latent: int
    context: np.ndarray
    position: np.ndarray
    value: np.ndarray
    edges: np.ndarray
    n_contexts: int
    ctx_len: int
    first_position: int = 1

    def __post_init__(self) -> None:
        key = self.context.astype(np.int64) * self.ctx_len + self.position.astype(np.int64)
        if len(key) > 1 and np.any(np.diff(key) <= 0):
            raise ValueError("LatentActivations rows must be sorted by (context, position) without duplicates")
        object.__setattr__(self, "_key", key)

    @property
    def n(self) -> int:
        """Number of activations."""
        return len(self.value)

    def deciles(self) -> np.ndarray:
        """Decile (1..10) of every activation `[n]`."""
        return decile_of(self.value, self.edges)

    def window_values(self, context: int, start: int, length: int) -> np.ndarray:
        """The latent's activation at positions `start .. start + length - 1` of `context`: `[length]` float32."""
        key = self._key  # type: ignore[attr-defined]
        base = context * self.ctx_len
        lo, hi = np.searchsorted(key, [base + start, base + start + length])
        out = np.zeros(length, dtype=np.float32)
        out[self.position[lo:hi].astype(np.int64) - start] = self.value[lo:hi]
        return out

    def fires_in(self, context: int, start: int, length: int) -> bool:
        """Whether the latent fires anywhere in positions `start .. start + length - 1` of `context`."""
        key = self._key  # type: ignore[attr-defined]
        base = context * self.ctx_len
        lo, hi = np.searchsorted(key, [base + start, base + start + length])
        return bool(hi > lo)


class TokenSource(Protocol):
    """Where examples get their token ids: the cached contexts."""

    def get(self, contexts: np.ndarray) -> np.ndarray:
        """Token ids `[len(contexts), ctx_len]` of the given contexts."""
        ...

    def find(self, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(context, position) of every occurrence of any of `token_ids`."""
        ...


class ArrayTokens:
    """A TokenSource over an in-memory array of every context `[n_contexts, ctx_len]`."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = np.asarray(tokens)

    def get(self, contexts: np.ndarray) -> np.ndarray:
        """Token ids `[len(contexts), ctx_len]`."""
        return self.tokens[np.asarray(contexts, dtype=np.int64)]

    def find(self, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(context, position) of every occurrence of `token_ids`, in (context, position) order."""
        ctx, pos = np.nonzero(np.isin(self.tokens, np.asarray(token_ids)))
        return ctx.astype(np.int64), pos.astype(np.int64)


@dataclass(frozen=True)
class Example:
    """One window of a context around a chosen token, with the latent's activation at every token."""

    context: int
    start: int  # position of the window's first token in its context
    tokens: np.ndarray  # [length] token ids
    activations: np.ndarray  # [length] the latent's activation per token (0 where it does not fire)
    center: int  # index in the window of the token the example was chosen for
    decile: int  # 1..10 for the chosen token's activation; 0 for non-activating examples
    strategy: str

    @property
    def activation(self) -> float:
        """The latent's activation at the chosen token."""
        return float(self.activations[self.center])

    @property
    def max_activation(self) -> float:
        """The largest activation in the window."""
        return float(self.activations.max()) if len(self.activations) else 0.0


class _Occupied:
    """Windows already taken, per context, so new ones never overlap them."""

    def __init__(self, examples: list[Example] | None = None):
        self.by_context: dict[int, list[tuple[int, int]]] = {}
        for ex in examples or []:
            self.add(ex.context, ex.start, len(ex.tokens))

    def overlaps(self, context: int, start: int, length: int) -> bool:
        return any(s < start + length and start < s + n for s, n in self.by_context.get(context, ()))

    def add(self, context: int, start: int, length: int) -> None:
        self.by_context.setdefault(context, []).append((start, length))


def _geometry(acts: LatentActivations, window: WindowSpec) -> tuple[int, int]:
    """(length, after) of windows, shrunk to the usable part of a context."""
    usable = acts.ctx_len - acts.first_position
    length = min(window.length, usable)
    return length, min(window.tokens_after(), length - 1)


def _start_for(position: int, acts: LatentActivations, length: int, after: int) -> int:
    start = position - (length - 1 - after)
    return int(min(max(start, acts.first_position), acts.ctx_len - length))


def _pick(
    acts: LatentActivations, rows: np.ndarray, k: int, window: WindowSpec, occupied: _Occupied
) -> list[tuple[int, int, int]]:
    """Walk activation rows in the given order; keep the first k whose windows overlap nothing taken.

    Returns (context, start, position) triples and marks their windows taken.
    """
    length, after = _geometry(acts, window)
    chosen = []
    for r in rows:
        if len(chosen) >= k:
            break
        c, p = int(acts.context[r]), int(acts.position[r])
        s = _start_for(p, acts, length, after)
        if occupied.overlaps(c, s, length):
            continue
        occupied.add(c, s, length)
        chosen.append((c, s, p))
    return chosen


def _build(
    acts: LatentActivations,
    chosen: list[tuple[int, int, int]],
    tokens: TokenSource,
    window: WindowSpec,
    strategy: str,
    activating: bool,
) -> list[Example]:
    if not chosen:
        return []
    length, _ = _geometry(acts, window)
    ctx_tokens = tokens.get(np.asarray([c for c, _, _ in chosen], dtype=np.int64))
    out = []
    for (c, s, p), row in zip(chosen, ctx_tokens, strict=True):
        vals = acts.window_values(c, s, length)
        decile = int(decile_of(np.asarray([vals[p - s]]), acts.edges)[0]) if activating else 0
        out.append(Example(c, s, np.asarray(row[s : s + length], dtype=np.int32), vals, p - s, decile, strategy))
    return out


def sample_top(
    acts: LatentActivations,
    tokens: TokenSource,
    k: int,
    window: WindowSpec = DEFAULT_WINDOW,
    exclude: list[Example] | None = None,
) -> list[Example]:
    """The `k` highest activations as examples, strongest first (ties by context, position)."""
    n_cand = min(acts.n, max(64 * k, 1024))  # most latents need only a few candidates; avoid sorting them all
    if n_cand < acts.n:
        idx = np.argpartition(-acts.value, n_cand - 1)[:n_cand]
        chosen = _pick(acts, idx[np.lexsort((idx, -acts.value[idx]))], k, window, _Occupied(exclude))
        if len(chosen) == k:
            return _build(acts, chosen, tokens, window, "top", True)
    order = np.argsort(-acts.value, kind="stable")
    return _build(acts, _pick(acts, order, k, window, _Occupied(exclude)), tokens, window, "top", True)


def sample_random(
    acts: LatentActivations,
    tokens: TokenSource,
    k: int,
    seed: int,
    window: WindowSpec = DEFAULT_WINDOW,
    exclude: list[Example] | None = None,
) -> list[Example]:
    """`k` activations drawn uniformly (without replacement) from all of the latent's activations."""
    order = np.random.default_rng(seed).permutation(acts.n)
    return _build(acts, _pick(acts, order, k, window, _Occupied(exclude)), tokens, window, "random", True)


def _per_decile(
    acts: LatentActivations,
    tokens: TokenSource,
    k: int,
    rng: np.random.Generator,
    window: WindowSpec,
    occupied: _Occupied,
    strategy: str,
) -> list[Example]:
    deciles = acts.deciles()
    chosen: list[tuple[int, int, int]] = []
    for d in range(1, N_DECILES + 1):
        rows = np.flatnonzero(deciles == d)
        chosen += _pick(acts, rows[rng.permutation(len(rows))], k, window, occupied)
    return _build(acts, chosen, tokens, window, strategy, True)


def sample_quantiles(
    acts: LatentActivations,
    tokens: TokenSource,
    k_per_decile: int,
    seed: int,
    window: WindowSpec = DEFAULT_WINDOW,
    exclude: list[Example] | None = None,
) -> list[Example]:
    """`k_per_decile` random activations from each decile, decile 1 first (training examples)."""
    rng = np.random.default_rng([seed, 0])
    return _per_decile(acts, tokens, k_per_decile, rng, window, _Occupied(exclude), "quantile")


def sample_test(
    acts: LatentActivations,
    tokens: TokenSource,
    k_per_decile: int,
    seed: int,
    exclude: list[Example],
    window: WindowSpec = DEFAULT_WINDOW,
) -> list[Example]:
    """`k_per_decile` random activations from each decile whose windows overlap none of `exclude` (the training examples)."""
    rng = np.random.default_rng([seed, 1])
    return _per_decile(acts, tokens, k_per_decile, rng, window, _Occupied(exclude), "test")


def sample_random_negatives(
    acts: LatentActivations,
    tokens: TokenSource,
    k: int,
    seed: int,
    window: WindowSpec = DEFAULT_WINDOW,
    max_tries: int = 50,
) -> list[Example]:
    """`k` random windows in which the latent never fires (uniform over contexts and window starts)."""
    rng = np.random.default_rng([seed, 2])
    length, after = _geometry(acts, window)
    occupied = _Occupied()
    chosen: list[tuple[int, int, int]] = []
    for _ in range(max_tries * k):
        if len(chosen) >= k:
            break
        c = int(rng.integers(acts.n_contexts))
        s = int(rng.integers(acts.first_position, acts.ctx_len - length + 1))
        if acts.fires_in(c, s, length) or occupied.overlaps(c, s, length):
            continue
        occupied.add(c, s, length)
        chosen.append((c, s, s + length - 1 - after))
    return _build(acts, chosen, tokens, window, "random_negative", False)


def typical_tokens(acts: LatentActivations, tokens: TokenSource, n: int = 5, top_rows: int = TOP_ROWS) -> list[int]:
    """The `n` token ids most common among the latent's `top_rows` highest activations (most common first)."""
    order = np.argsort(-acts.value, kind="stable")[:top_rows]
    if len(order) == 0:
        return []
    ctx_tokens = tokens.get(acts.context[order])
    ids = ctx_tokens[np.arange(len(order)), acts.position[order].astype(np.int64)]
    return [int(t) for t, _ in Counter(ids.tolist()).most_common(n)]


def sample_hard_negatives(
    acts: LatentActivations,
    tokens: TokenSource,
    k: int,
    seed: int,
    window: WindowSpec = DEFAULT_WINDOW,
    token_ids: list[int] | None = None,
    exclude: list[Example] | None = None,
) -> list[Example]:
    """`k` windows centred on one of the latent's typical tokens (default: `typical_tokens`) where it does not fire at all,
    overlapping none of `exclude`."""
    rng = np.random.default_rng([seed, 3])
    token_ids = typical_tokens(acts, tokens) if token_ids is None else token_ids
    ctx, pos = tokens.find(token_ids)
    keep = pos >= acts.first_position
    ctx, pos = ctx[keep], pos[keep]
    length, after = _geometry(acts, window)
    occupied = _Occupied(exclude)
    chosen: list[tuple[int, int, int]] = []
    for i in rng.permutation(len(ctx)):
        if len(chosen) >= k:
            break
        c, p = int(ctx[i]), int(pos[i])
        s = _start_for(p, acts, length, after)
        if acts.fires_in(c, s, length) or occupied.overlaps(c, s, length):
            continue
        occupied.add(c, s, length)
        chosen.append((c, s, p))
    return _build(acts, chosen, tokens, window, "hard_negative", False)


def _strongest(value: np.ndarray, m: int) -> np.ndarray:
    """Indices of the `m` largest of `value: [n]`, largest first (ties by index)."""
    if len(value) > m:
        idx = np.argpartition(-value, m - 1)[:m]
        return idx[np.lexsort((idx, -value[idx]))]
    return np.argsort(-value, kind="stable")


def sample_neighbour_negatives(
    acts: LatentActivations,
    neighbours: list[LatentActivations],
    tokens: TokenSource,
    k: int,
    window: WindowSpec = DEFAULT_WINDOW,
    max_candidates: int = 4096,
) -> list[Example]:
    """`k` windows centred on the strongest activations of the latent's `neighbours` (nearest first) where it does not fire at all.

    Each neighbour offers its `max_candidates` strongest activations, strongest first.
    Round robin over the neighbours, each giving its next strongest window per round, so the negatives
    come from several neighbours rather than all from the nearest (delphi takes each neighbour's top windows).
    Returns fewer than `k` when the neighbours fire too rarely apart from the latent.
    """
    length, after = _geometry(acts, window)
    occupied = _Occupied()
    orders = [_strongest(nb.value, max_candidates) for nb in neighbours]
    pointers = [0] * len(neighbours)
    chosen: list[tuple[int, int, int]] = []
    while len(chosen) < k:
        progressed = False
        for j, nb in enumerate(neighbours):
            if len(chosen) >= k:
                break
            order = orders[j]
            while pointers[j] < len(order):
                r = order[pointers[j]]
                pointers[j] += 1
                c, p = int(nb.context[r]), int(nb.position[r])
                s = _start_for(p, acts, length, after)
                if acts.fires_in(c, s, length) or occupied.overlaps(c, s, length):
                    continue
                occupied.add(c, s, length)
                chosen.append((c, s, p))
                progressed = True
                break
        if not progressed:
            break
    return _build(acts, chosen, tokens, window, "neighbour_negative", False)
