"""Sampling strategies on synthetic activations: counts, deciles, disjointness, seeding, negatives."""

from __future__ import annotations

import numpy as np
import pytest

from core.cache.stats import decile_of
from core.latents.sampling import (
    ArrayTokens,
    LatentActivations,
    WindowSpec,
    sample_hard_negatives,
    sample_quantiles,
    sample_random,
    sample_random_negatives,
    sample_test,
    sample_top,
    typical_tokens,
)

N_CTX, CTX_LEN, VOCAB = 300, 64, 50


def _make(density: float = 0.05, seed: int = 0) -> tuple[LatentActivations, ArrayTokens, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(N_CTX, CTX_LEN)).astype(np.int32)
    tokens[:, 0] = 0
    dense = np.where(rng.random((N_CTX, CTX_LEN)) < density, rng.exponential(1.0, (N_CTX, CTX_LEN)), 0.0).astype(
        np.float32
    )
    dense[tokens == 7] = rng.uniform(5, 6, (tokens == 7).sum())  # token 7 is "typical": fires strongly
    dense[:, 0] = 0
    # contexts 0-99 hold token 7 without firing: hard negatives exist
    dense[:100][tokens[:100] == 7] = 0
    ctx, pos = np.nonzero(dense)
    v = dense[ctx, pos]
    edges = np.quantile(v, np.linspace(0, 1, 11), method="lower").astype(np.float32)
    acts = LatentActivations("test:dict", 0, ctx.astype(np.int64), pos.astype(np.int64), v, edges, N_CTX, CTX_LEN)
    return acts, ArrayTokens(tokens), dense


def _no_overlap(examples) -> bool:
    spans = sorted((e.context, e.start, e.start + len(e.tokens)) for e in examples)
    return all(not (a[0] == b[0] and b[1] < a[2]) for a, b in zip(spans, spans[1:], strict=False))


def _check_windows(examples, tokens: ArrayTokens, dense: np.ndarray, length: int) -> None:
    for e in examples:
        assert len(e.tokens) == length and 1 <= e.start <= CTX_LEN - length
        np.testing.assert_array_equal(e.tokens, tokens.tokens[e.context, e.start : e.start + length])
        np.testing.assert_array_equal(e.activations, dense[e.context, e.start : e.start + length])


def test_top_returns_the_highest_activations_in_order():
    acts, tokens, dense = _make()
    top = sample_top(acts, tokens, 15)
    assert len(top) == 15 and _no_overlap(top)
    values = [e.activation for e in top]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(dense.max())
    assert all(e.decile == 10 and e.strategy == "top" for e in top)
    _check_windows(top, tokens, dense, 32)
    assert all(e.center == 32 - 1 - 8 or e.start in (1, CTX_LEN - 32) for e in top)  # 23 tokens before, 8 after


def test_random_is_seeded_and_activating():
    acts, tokens, dense = _make()
    a = sample_random(acts, tokens, 20, seed=1)
    b = sample_random(acts, tokens, 20, seed=1)
    c = sample_random(acts, tokens, 20, seed=2)
    assert [(e.context, e.start) for e in a] == [(e.context, e.start) for e in b]
    assert [(e.context, e.start) for e in a] != [(e.context, e.start) for e in c]
    assert len(a) == 20 and _no_overlap(a) and all(e.activation > 0 for e in a)
    _check_windows(a, tokens, dense, 32)


def test_quantiles_give_k_per_decile_with_correct_deciles():
    acts, tokens, dense = _make()
    ex = sample_quantiles(acts, tokens, 4, seed=0, window=WindowSpec(length=16))
    assert len(ex) == 40 and _no_overlap(ex)
    counts = np.bincount([e.decile for e in ex], minlength=11)[1:]
    assert counts.tolist() == [4] * 10
    for e in ex:
        assert e.decile == decile_of(np.array([e.activation]), acts.edges)[0]
        assert acts.edges[e.decile - 1] <= e.activation <= acts.edges[e.decile]
    _check_windows(ex, tokens, dense, 16)


def test_test_examples_are_disjoint_from_training_examples():
    acts, tokens, dense = _make()
    train = sample_quantiles(acts, tokens, 5, seed=0)
    test = sample_test(acts, tokens, 5, seed=0, exclude=train)
    assert np.bincount([e.decile for e in test], minlength=11)[1:].tolist() == [5] * 10
    assert _no_overlap(train + test)  # no test window shares a token with a training window
    assert all(e.strategy == "test" for e in test)


def test_deciles_partition_the_activations_into_tenths():
    acts, _, _ = _make(density=0.2)
    counts = np.bincount(acts.deciles(), minlength=11)[1:]
    assert counts.sum() == acts.n
    assert counts.min() >= acts.n // 10 - 2 and counts.max() <= acts.n // 10 + 2


def test_random_negatives_never_fire():
    acts, tokens, dense = _make()
    neg = sample_random_negatives(acts, tokens, 12, seed=3, window=WindowSpec(length=8))
    assert len(neg) == 12 and _no_overlap(neg)
    assert all(e.decile == 0 and e.activations.max() == 0 for e in neg)
    _check_windows(neg, tokens, dense, 8)
    assert [e.context for e in neg] == [
        e.context for e in sample_random_negatives(acts, tokens, 12, seed=3, window=WindowSpec(length=8))
    ]


def test_hard_negatives_hold_typical_tokens_but_do_not_fire():
    acts, tokens, dense = _make()
    assert typical_tokens(acts, tokens, n=1) == [7]
    typical = set(typical_tokens(acts, tokens))
    neg = sample_hard_negatives(acts, tokens, 10, seed=0, window=WindowSpec(length=8))
    assert len(neg) == 10 and _no_overlap(neg)
    for e in neg:
        assert e.tokens[e.center] in typical and e.activations.max() == 0 and e.strategy == "hard_negative"
    _check_windows(neg, tokens, dense, 8)
    only7 = sample_hard_negatives(acts, tokens, 10, seed=0, window=WindowSpec(length=8), token_ids=[7])
    assert len(only7) == 10 and all(e.tokens[e.center] == 7 and e.context < 100 for e in only7)


def test_sparse_latent_returns_fewer_examples_not_duplicates():
    acts, tokens, _ = _make(density=0.0)
    rare = LatentActivations("d", 1, acts.context[:3], acts.position[:3], acts.value[:3], acts.edges, N_CTX, CTX_LEN)
    assert len(sample_top(rare, tokens, 10)) <= 3
    assert len(sample_quantiles(rare, tokens, 2, seed=0)) <= 3


def test_unsorted_rows_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        LatentActivations("d", 0, np.array([2, 1]), np.array([1, 1]), np.ones(2, np.float32), np.zeros(11), 5, 8)


def test_top_on_a_dense_latent_matches_a_full_sort():
    acts, tokens, _ = _make(density=0.3)
    assert acts.n > 4000  # takes the partial-sort path
    got = [(e.context, e.start, e.activation) for e in sample_top(acts, tokens, 5, window=WindowSpec(length=16))]
    want, taken = [], {}
    for r in np.argsort(-acts.value, kind="stable"):
        c, p = int(acts.context[r]), int(acts.position[r])
        s = min(max(p - 11, 1), CTX_LEN - 16)
        if any(abs(s - t) < 16 for t in taken.get(c, [])):
            continue
        taken.setdefault(c, []).append(s)
        want.append((c, s, float(acts.value[r])))
        if len(want) == 5:
            break
    assert got == want
