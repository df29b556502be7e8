"""Score metrics as pure numpy functions: balanced accuracy, AUROC, Pearson correlation.

All take 1-D arrays over examples (or tokens) and return a float, or NaN when the metric is undefined
(e.g. AUROC with only one class); callers store NaN-valued scores as failures, never as numbers.
"""

from __future__ import annotations

import numpy as np


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the true-positive rate and the true-negative rate. `pred, truth: [n]` bools (or 0/1).

    A perfect classifier scores 1.0, an inverted one 0.0, a constant one 0.5. NaN if a class is absent.
    """
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    pos, neg = truth.sum(), (~truth).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    tpr = (pred & truth).sum() / pos
    tnr = (~pred & ~truth).sum() / neg
    return float((tpr + tnr) / 2)


def auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve of `score: [n]` for separating `truth: [n]` (bool) positives from negatives.

    Computed as the Mann–Whitney U statistic with tied scores counting one half:
    P(score of a random positive > score of a random negative). NaN if a class is absent.
    """
    score = np.asarray(score, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(score)  # 1-based, ties share their average rank
    u = ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of `x, y: [n]`; NaN if either is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0 or not np.isfinite(den):
        return float("nan")
    return float((xc * yc).sum() / den)
