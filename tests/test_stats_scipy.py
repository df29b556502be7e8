"""The statistics moved onto scipy.stats give the values of the hand-written versions they replaced."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.analysis import analyses as an
from core.autointerp import metrics


def _old_bootstrap_mean_ci(values, n_boot=an.BOOTSTRAP, seed=an.SEED, level=0.95):
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _old_spearman(x, y):
    rx, ry = an.rank(x), an.rank(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


def _old_auroc(score, truth):
    score = np.asarray(score, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    _, first, counts = np.unique(score[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


SAMPLE = np.random.default_rng(7)
X = SAMPLE.integers(0, 6, 40).astype(float)  # many ties
Y = X + SAMPLE.normal(size=40)


@pytest.mark.parametrize("values", [X, Y, Y[:2], np.array([1.0, 1.0, 1.0])])
def test_bootstrap_mean_ci_matches_the_hand_written_one(values):
    assert an.bootstrap_mean_ci(values) == pytest.approx(_old_bootstrap_mean_ci(values), abs=1e-12)
    assert an.bootstrap_mean_ci(values, seed=3) == an.bootstrap_mean_ci(values, seed=3)  # deterministic
    assert np.isnan(an.bootstrap_mean_ci(values[:1])).all()


def test_spearman_matches_the_hand_written_one_and_is_nan_for_constant_input():
    assert an.spearman(X, Y) == pytest.approx(_old_spearman(X, Y), abs=1e-12)
    assert an.spearman(X[:5], -X[:5]) == pytest.approx(_old_spearman(X[:5], -X[:5]), abs=1e-12)
    assert math.isnan(an.spearman(np.ones(6), Y[:6]))
    lo, hi = an.bootstrap_spearman_ci(X, Y)
    assert lo < an.spearman(X, Y) < hi


def test_auroc_matches_the_hand_written_one_with_ties():
    truth = Y > np.median(Y)
    assert metrics.auroc(X, truth) == pytest.approx(_old_auroc(X, truth), abs=1e-12)
    assert metrics.auroc(Y, truth) == 1.0
    assert math.isnan(metrics.auroc(X, np.zeros(40, bool)))
