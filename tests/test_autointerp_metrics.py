"""Metric math with known answers, and each metric against a second way of computing it."""

from __future__ import annotations

import itertools

import numpy as np

from core.autointerp.metrics import auroc, balanced_accuracy, pearson


def test_balanced_accuracy_known_answers():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    assert balanced_accuracy(truth, truth) == 1.0  # perfect judge
    assert balanced_accuracy(~truth, truth) == 0.0  # inverted judge
    assert balanced_accuracy(np.ones(10, bool), truth) == 0.5  # always yes
    assert balanced_accuracy(np.zeros(10, bool), truth) == 0.5  # always no
    assert np.isnan(balanced_accuracy(np.ones(3, bool), np.ones(3, bool)))  # one class only: undefined


def test_auroc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 40).astype(float)  # many ties
    truth = rng.random(40) < 0.4
    pos, neg = score[truth], score[~truth]
    pairs = sum((p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)) / (len(pos) * len(neg))
    assert abs(auroc(score, truth) - pairs) < 1e-12
    assert auroc(truth.astype(float), truth) == 1.0 and auroc(-truth.astype(float), truth) == 0.0


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert abs(pearson(x, y) - np.corrcoef(x, y)[0, 1]) < 1e-12
    assert np.isnan(pearson(np.ones(5), np.arange(5)))
