"""Hungarian layer overlap: known permutations, random dictionaries, dense vs sparse, mismatches refused."""

from __future__ import annotations

import types

import numpy as np
import pytest

from core.analysis import overlap as ov


def _rand_unit(n: int, d: int, seed: int) -> np.ndarray:
    return ov.unit_rows(np.random.default_rng(seed).standard_normal((n, d)))


def _fake_dict(W: np.ndarray, kind: str = "resid", layer: int = 0, d_in: int | None = None):
    return types.SimpleNamespace(
        id=f"{kind}:blocks.{layer}.x",
        kind=kind,
        layer=layer,
        d_in=d_in or W.shape[1],
        d_out=W.shape[1],
        d_sae=W.shape[0],
        W_dec=W,
    )


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_matching_recovers_a_known_permutation(method):
    a = _rand_unit(300, 32, 0)
    perm = np.random.default_rng(1).permutation(300)
    b = a[perm]  # row perm[i] of a is row i of b
    m = ov.match(a, b, method, k=4)
    assert np.array_equal(b[m.cols], a[m.rows])
    assert np.array_equal(perm[m.cols], m.rows)
    assert m.similarity.mean() == pytest.approx(1.0, abs=1e-6)
    assert ov.frobenius_overlap(a, b, m) == pytest.approx(1.0, abs=1e-6)


def test_random_dictionaries_have_low_overlap():
    a, b = _rand_unit(256, 64, 0), _rand_unit(256, 64, 1)
    r = ov.decoder_overlap(_fake_dict(a, layer=0), _fake_dict(b, layer=1))
    # Independent random directions in 64-d: the best matching still finds pairs with cos ~0.3, far from 1.
    assert r.mean_similarity < 0.45
    assert r.frobenius == pytest.approx(r.mean_similarity, abs=1e-5)  # unit rows, square: the two forms agree
    # Random dictionaries sit at the chance level.
    assert r.params["chance"] == pytest.approx(r.mean_similarity, abs=0.03)
    noisy = ov.unit_rows(a + 0.3 * np.random.default_rng(2).standard_normal(a.shape) / 8)
    assert ov.decoder_overlap(_fake_dict(a), _fake_dict(noisy, layer=1)).mean_similarity > 0.8


def test_dense_matching_is_optimal_against_brute_force():
    from itertools import permutations

    sim = np.random.default_rng(3).uniform(-1, 1, (6, 6))
    best = max(sum(sim[i, p[i]] for i in range(6)) for p in permutations(range(6)))
    assert ov.match_dense(sim).total == pytest.approx(best)


def test_sparse_matching_agrees_with_dense_and_is_certified():
    # Structured like real dictionaries: half the rows of b are noisy copies of rows of a.
    rng = np.random.default_rng(4)
    a = _rand_unit(400, 24, 5)
    b = _rand_unit(400, 24, 6)
    idx = rng.permutation(400)[:200]
    b[:200] = ov.unit_rows(a[idx] + 0.5 * rng.standard_normal((200, 24)) / 5)
    dense = ov.match(a, b, "dense")
    for k in (1, 3, 16):  # k=1 leaves most optimal pairs out of the first graph: the certificate must add them
        sparse = ov.match_sparse(a, b, k=k, block_rows=64)
        assert sparse.total == pytest.approx(dense.total, abs=1e-4)
        assert np.array_equal(sparse.rows, np.arange(400))
        assert len(set(sparse.cols.tolist())) == 400


def test_candidate_pairs_hold_each_rows_and_columns_best():
    a, b = _rand_unit(50, 8, 7), _rand_unit(50, 8, 8)
    rows, cols = ov.candidate_pairs(a, b, k=3, block_rows=7)
    got = set(zip(rows.tolist(), cols.tolist(), strict=True))
    sim = a @ b.T
    for i in range(50):
        assert {(i, int(j)) for j in np.argsort(-sim[i])[:3]} <= got
        assert {(int(j), i) for j in np.argsort(-sim[:, i])[:3]} <= got
        assert (i, i) in got
    assert len(got) == len(rows)


def test_frobenius_form_weights_by_norm():
    a = np.array([[2.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    m = ov.match(a, b, "dense")
    assert m.cols.tolist() == [1, 0]
    # <A, PB>_F = 2*1 + 1*1 = 3; ||A||_F = sqrt(5), ||B||_F = sqrt(2)
    assert ov.frobenius_overlap(a, b, m) == pytest.approx(3 / np.sqrt(10))
    assert m.similarity.mean() == pytest.approx(1.0)


def test_mismatched_dictionaries_are_refused():
    a = _rand_unit(64, 16, 0)
    with pytest.raises(ov.OverlapError, match="equal width"):
        ov.decoder_overlap(_fake_dict(a), _fake_dict(a[:32], layer=1))
    with pytest.raises(ov.OverlapError, match="different models"):
        ov.decoder_overlap(_fake_dict(a), _fake_dict(_rand_unit(64, 8, 1), layer=1))
    with pytest.raises(ov.OverlapError, match="one kind"):
        ov.decoder_overlap(_fake_dict(a), _fake_dict(a, kind="attn", layer=1))
    with pytest.raises(ov.OverlapError, match="one model"):
        ov.decoder_overlap(_fake_dict(a), _fake_dict(a, layer=1), model_a="default", model_b="gpt2")


def test_embedding_overlap_maps_rows_back_to_latents_and_handles_unequal_counts():
    e = _rand_unit(10, 12, 9)
    r = ov.embedding_overlap(
        "resid:a", np.arange(100, 110), e, "resid:b", np.arange(200, 206), e[[3, 1, 4, 0, 9, 2]], "resid", 0, 1
    )
    assert r.n_matched == 6
    assert sorted(zip(r.latent_a.tolist(), r.latent_b.tolist(), strict=True)) == [
        (100, 203),
        (101, 201),
        (102, 205),
        (103, 200),
        (104, 202),
        (109, 204),
    ]
    assert r.mean_similarity == pytest.approx(1.0, abs=1e-6)
    assert r.frobenius == pytest.approx(6 / np.sqrt(60), abs=1e-6)  # unmatched rows of A count as zero
    with pytest.raises(ov.OverlapError, match="different embedding models"):
        ov.embedding_overlap("a", np.arange(3), e[:3], "b", np.arange(3), e[:3, :6], "resid", 0, 1)


def test_layer_matrix_is_symmetric_with_unit_diagonal():
    dicts = {f"L{i}": _fake_dict(_rand_unit(40, 8, i), layer=i) for i in range(3)}
    results = ov.all_decoder_overlaps(dicts, kinds=("resid",))
    assert [(r.layer_a, r.layer_b) for r in results] == [(0, 1), (0, 2), (1, 2)]
    layers, mat = ov.layer_matrix(results, "resid")
    assert layers == [0, 1, 2]
    assert np.allclose(mat, mat.T) and np.allclose(np.diag(mat), 1.0)
    assert mat[0, 2] == pytest.approx(results[1].mean_similarity)


def test_chance_level_is_the_one_stored_level_of_a_kind():
    """The page and the report mark one chance level per kind: none when unknown or when widths differ."""
    from types import SimpleNamespace

    from core.analysis.overlap import chance_level

    def rec(kind, chance, similarity="decoder"):
        return SimpleNamespace(kind=kind, similarity=similarity, params={} if chance is None else {"chance": chance})

    records = [rec("resid", 0.2), rec("resid", 0.2), rec("attn", 0.2), rec("attn", 0.3), rec("transcoder", None)]
    assert chance_level(records, "resid") == 0.2
    assert chance_level(records, "attn") is None  # two widths, two levels
    assert chance_level(records, "transcoder") is None
    assert chance_level(records, "resid", "explanation") is None
