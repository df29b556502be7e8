"""Per-latent statistics against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest

from core.cache.stats import decile_of, output_token_logits, range_stats


def test_range_stats_match_brute_force():
    rng = np.random.default_rng(0)
    first, m = 100, 40
    n = 5000
    latent = rng.integers(first, first + m, n)
    latent[latent == first + 7] = first + 8  # latent 7 never fires
    value = rng.exponential(2.0, n).astype(np.float32)
    value[:50] = 1.5  # ties
    token = rng.integers(0, 30, n)
    rs = range_stats(latent, value, token, first, m, hist_bins=16, top_rows=5)
    for i in range(m):
        sel = latent == first + i
        v = value[sel]
        assert rs.n_fires[i] == sel.sum()
        if not sel.any():
            assert rs.max_activation[i] == 0 and rs.hist_counts[i].sum() == 0
            continue
        assert rs.max_activation[i] == v.max()
        assert rs.mean_activation[i] == pytest.approx(v.mean(), rel=1e-5)
        np.testing.assert_array_equal(rs.quantile_edges[i], np.quantile(v, np.linspace(0, 1, 11), method="lower"))
        np.testing.assert_array_equal(rs.hist_counts[i], np.histogram(v, bins=16, range=(0, v.max()))[0])
        idx = np.flatnonzero(sel)
        top = idx[np.argsort(-value[idx], kind="stable")][:5]
        want = dict(zip(*np.unique(token[top], return_counts=True), strict=True))
        got = {
            int(t): int(c) for lat, t, c in zip(rs.top_latent, rs.top_token, rs.top_n, strict=True) if lat == first + i
        }
        assert got == {int(k): int(v) for k, v in want.items()}
    assert rs.n_fires[7] == 0


def test_decile_of_edges():
    edges = np.arange(11, dtype=np.float32)  # 0..10
    assert decile_of(np.array([0.0, 0.5, 1.0, 1.01, 9.0, 9.5, 10.0]), edges).tolist() == [1, 1, 1, 2, 9, 10, 10]


def test_output_token_logits_match_full_product():
    import torch

    torch.manual_seed(0)
    W_dec, W_U = torch.randn(37, 8), torch.randn(8, 60)
    out = output_token_logits(W_dec, W_U, k=5, batch=7)
    full = (W_dec @ W_U).numpy()
    np.testing.assert_array_equal(out["top_output_tokens"], np.argsort(-full, 1)[:, :5])
    np.testing.assert_array_equal(out["bottom_output_tokens"], np.argsort(full, 1)[:, :5])
    np.testing.assert_allclose(out["top_output_logits"], -np.sort(-full, 1)[:, :5], rtol=1e-5)
