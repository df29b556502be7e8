"""delphi's classification metrics beside ours, computed from the stored per-example rows.

Two conventions for one number, "how well do explanations classify examples":

    ours    mean over latents of each latent's balanced accuracy (the stored score value); a latent whose
            examples miss a class (no activating or no non-activating example with a prediction) has no
            balanced accuracy and is stored as a failed score, so it is left out of the mean.
    delphi  every latent's confusion matrix summed into one (pooled), then balanced accuracy, precision,
            recall, F1 and AUC of the pooled matrix (`delphi/log/result_analysis.py`); a rate whose
            denominator is 0 counts as 0, so nothing is left out.

Steps: (1) `store.score_prediction_counts` counts examples per (units, group, scorer, scorer model,
negatives, prediction, truth), failed scores included; (2) `conventions` pools them per group into a
`Confusion` and pairs it with the mean of the ok score values of the same group. Only the scorers whose stored
value is a balanced accuracy of yes/no predictions (detection, fuzzing and its variants) are compared; with yes/no predictions
the pooled AUC equals the pooled balanced accuracy (one threshold), as in delphi when no probabilities are stored.
(3) `store_conventions` (called by `core.analysis.analyses.analyze_workspace`) stores the table with the analyses,
keyed on `store.scores_state`; `stored_conventions_table` reads it back while the scores are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from core.autointerp.metrics import auroc

DEFAULT_NEGATIVES = "random+hard"  # what non-activating examples were before the option existed

OURS = "mean of per-latent balanced accuracy (ours)"
POOLED = "pooled balanced accuracy (delphi)"
COLUMNS = {  # table column -> `ConventionRow` field; the two conventions side by side first
    "units": "units",
    "group": "group",
    "scorer": "scorer",
    "negatives": "negatives",
    OURS: "mean_balanced_accuracy",
    POOLED: "pooled_balanced_accuracy",
    "precision (delphi)": "precision",
    "recall (delphi)": "recall",
    "F1 (delphi)": "f1",
    "AUC (delphi)": "auc",
    "latents (ours)": "n_latents_ours",
    "failed (ours)": "n_failed_ours",
    "latents (delphi)": "n_latents_pooled",
    "examples (delphi)": "n_examples",
    "scorer model": "scorer_model",
}


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix at threshold 0.5: predictions ≥ 0.5 count as 'activating'."""

    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def positives(self) -> int:
        """Activating examples."""
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        """Non-activating examples."""
        return self.tn + self.fp

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.tn + other.tn, self.fp + other.fp, self.fn + other.fn)


def confusion(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> Confusion:
    """The confusion matrix of `pred: [n]` (floats; NaN = no prediction, skipped) against `truth: [n]` (bool)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    ok = ~np.isnan(pred)
    yes, t = pred[ok] >= threshold, truth[ok]
    return Confusion(int((yes & t).sum()), int((~yes & ~t).sum()), int((yes & ~t).sum()), int((~yes & t).sum()))


def _rate(num: int, den: int) -> float:
    return num / den if den > 0 else 0.0  # delphi: an empty class counts as a rate of 0


def classification_metrics(c: Confusion) -> dict[str, float]:
    """delphi's metrics of one confusion matrix: balanced accuracy, precision, recall, F1, TPR, TNR (0 when undefined)."""
    tpr, tnr = _rate(c.tp, c.positives), _rate(c.tn, c.negatives)
    precision = _rate(c.tp, c.tp + c.fp)
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr > 0 else 0.0
    return {
        "balanced_accuracy": (tpr + tnr) / 2,
        "precision": precision,
        "recall": tpr,
        "f1": f1,
        "true_positive_rate": tpr,
        "true_negative_rate": tnr,
    }


def pooled_metrics(per_latent: list[Confusion]) -> dict[str, float]:
    """delphi's headline numbers over many latents: the metrics of the sum of their confusion matrices."""
    total = sum(per_latent, Confusion(0, 0, 0, 0))
    return classification_metrics(total)


def weighted_auc(pred: np.ndarray, truth: np.ndarray, count: np.ndarray) -> float:
    """AUROC of predictions `pred: [k]` against `truth: [k]` where each (pred, truth) pair occurs `count: [k]` times; NaN if a class is absent.

    `auroc` of the repeated examples, computed from the counts: the examples of the j-th smallest distinct prediction
    share the average rank (examples before it) + (its examples + 1) / 2. Every rank is a half-integer, so the sums are
    exact in float64 and the result is the same number `auroc` gives, without expanding the examples (or importing scipy)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, bool)
    count = np.asarray(count, dtype=np.int64)
    if np.isnan(pred[count > 0]).any():  # auroc's (scipy's) NaN handling
        return auroc(np.repeat(pred, count), np.repeat(truth, count))
    n_pos, n_neg = int(count[truth].sum()), int(count[~truth].sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse = np.unique(pred, return_inverse=True)
    per_value = np.zeros(len(values), np.int64)
    pos_per_value = np.zeros(len(values), np.int64)
    np.add.at(per_value, inverse, count)
    np.add.at(pos_per_value, inverse, np.where(truth, count, 0))
    average_rank = (np.cumsum(per_value) - per_value) + (per_value + 1) / 2.0
    u = float((pos_per_value * average_rank).sum()) - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass
class ConventionRow:
    """One scorer's numbers in one group under both conventions (see the module docstring)."""

    units: str
    group: str
    scorer: str
    scorer_model: str
    negatives: str
    n_latents_ours: int
    n_failed_ours: int
    mean_balanced_accuracy: float
    n_latents_pooled: int
    n_examples: int
    pooled_balanced_accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float
    tp: int
    tn: int
    fp: int
    fn: int


_KEYS = ["units", "group", "scorer", "scorer_model", "negatives"]
BALANCED_ACCURACY_SCORERS = ("detection", "fuzzing")  # their stored value is a per-latent balanced accuracy


def _binary(pred: np.ndarray) -> bool:
    p = pred[~np.isnan(pred)]
    return bool(len(p)) and bool(np.isin(p, (0.0, 1.0)).all())


def _score_group_stats(scores) -> dict[tuple, tuple[int, float, int]]:
    """Per `_KEYS` group of `scores`: (ok scores with a value, their mean value (NaN if none), scores not ok)."""
    if not len(scores):
        return {}
    status = scores["status"].to_numpy(object)
    value = scores["value"].to_numpy(np.float64, na_value=np.nan)
    is_ok = status == "ok"
    out = {}
    for key, rows in scores.groupby(_KEYS, dropna=False).indices.items():
        v = value[rows][is_ok[rows] & ~np.isnan(value[rows])]
        # sum / count as pandas' Series.mean computes it, so the number shown is the same to the last digit
        out[key] = (len(v), float(v.sum() / len(v)) if len(v) else float("nan"), int((~is_ok[rows]).sum()))
    return out


def conventions(counts, scores) -> list[ConventionRow]:
    """Both conventions per (units, group, scorer, scorer model, negatives) of yes/no scorers.

    `counts`: a frame with the `_KEYS` columns, `latents` (distinct latents with a prediction), `prediction`,
    `truth`, `n` (examples with that prediction and truth; failed scores included), as
    `store.score_prediction_counts` returns. `scores`: a frame with the `_KEYS` columns, `status` and `value`
    (one row per score). Only `BALANCED_ACCURACY_SCORERS` with all-0/1 predictions are compared.
    """
    out = []
    if counts is None or len(counts) == 0:
        return out
    score_groups = _score_group_stats(scores)
    for key, g in counts.groupby(_KEYS, dropna=False):
        pred = g["prediction"].to_numpy(np.float64)
        if key[2].split(" (")[0] not in BALANCED_ACCURACY_SCORERS or not _binary(pred):
            continue
        truth = g["truth"].to_numpy(np.float64) >= 0.5
        n = g["n"].to_numpy(np.int64)
        yes = pred >= 0.5
        c = Confusion(
            int(n[yes & truth].sum()),
            int(n[~yes & ~truth].sum()),
            int(n[yes & ~truth].sum()),
            int(n[~yes & truth].sum()),
        )
        m = classification_metrics(c)
        n_ok, mean_ok, n_failed = score_groups.get(key, (0, float("nan"), 0))
        out.append(
            ConventionRow(
                *key,
                n_latents_ours=n_ok,
                n_failed_ours=n_failed,
                mean_balanced_accuracy=mean_ok,
                n_latents_pooled=int(g["latents"].iloc[0]),
                n_examples=int(n.sum()),
                pooled_balanced_accuracy=m["balanced_accuracy"],
                precision=m["precision"],
                recall=m["recall"],
                f1=m["f1"],
                auc=weighted_auc(pred, truth, n),
                tp=c.tp,
                tn=c.tn,
                fp=c.fp,
                fn=c.fn,
            )
        )
    return out


def grouped(counts, scores):  # -> (counts, scores) pandas.DataFrames
    """Add `units` (latents, neurons, ...) and `group` (strategy or baseline kind) to the store's frames, the counts
    summed over the dictionaries of a units kind (latents summed too: distinct per dictionary)."""
    from core.analysis.analyses import explanation_group, unit_group

    def per_pair(frame, cols: list[str], f) -> np.ndarray:
        # f once per distinct pair of values (a few dozen), not once per row (one per score)
        codes = frame.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()
        firsts = np.unique(codes, return_index=True)[1]
        labels = [f(a, b) for a, b in zip(*(frame[c].iloc[firsts] for c in cols), strict=True)]
        return np.array(labels, dtype=object)[codes] if len(labels) else np.array([], dtype=object)

    def label(frame):
        frame = frame.copy()
        frame["units"] = per_pair(frame, ["dictionary", "baseline"], unit_group)
        frame["group"] = per_pair(frame, ["strategy", "baseline"], explanation_group)
        return frame

    if len(counts) == 0:
        return counts, scores
    counts, scores = label(counts), label(scores)
    latents = (
        counts.drop_duplicates([*_KEYS, "dictionary"]).groupby(_KEYS, dropna=False)["latents"].sum().rename("latents")
    )
    summed = counts.groupby([*_KEYS, "prediction", "truth"], dropna=False)["n"].sum().reset_index()
    return summed.join(latents, on=_KEYS), scores


CONVENTIONS_ANALYSIS = "conventions"  # its name among the stored analyses (units "all")


def _frame(rows: list[ConventionRow]):  # -> pandas.DataFrame
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=list(COLUMNS))
    frame = pd.DataFrame([asdict(r) for r in rows])
    return frame[list(COLUMNS.values())].set_axis(list(COLUMNS), axis=1)


def _rows(workspace) -> list[ConventionRow]:
    from core.store.explanations import score_groups_frame, score_prediction_counts

    return conventions(*grouped(score_prediction_counts(workspace), score_groups_frame(workspace)))


def store_conventions(workspace) -> int:
    """Compute the conventions table (`conventions_table`) and store it with the workspace's analyses, keyed on
    `store.scores_state`, so that pages read it instead of computing it; returns its number of rows."""
    from core.store.analyses import AnalysisRecord, scores_state, write_analysis

    state = scores_state(workspace)
    rows = _rows(workspace)
    write_analysis(
        workspace,
        AnalysisRecord(
            CONVENTIONS_ANALYSIS,
            "all",
            {"columns": [f.name for f in fields(ConventionRow)]},
            {"rows": [{k: None if v != v else v for k, v in asdict(r).items()} for r in rows]},  # NaN: JSON null
            sum(r.n_latents_pooled for r in rows),
            state,
        ),
    )
    return len(rows)


def _stored_rows(workspace) -> list[ConventionRow] | None:
    """The stored conventions rows if they were computed from the workspace's present scores, else None."""
    from core.store.analyses import read_analyses, scores_state

    records = read_analyses(workspace, name=CONVENTIONS_ANALYSIS, units="all")
    if not records or records[0].params.get("columns") != [f.name for f in fields(ConventionRow)]:
        return None
    if records[0].inputs != scores_state(workspace):
        return None
    floats = {f.name for f in fields(ConventionRow) if f.type == "float"}
    return [
        ConventionRow(**{k: math.nan if v is None and k in floats else v for k, v in r.items()})
        for r in records[0].result["rows"]
    ]


def conventions_table(workspace):  # -> pandas.DataFrame
    """The workspace's scores under both conventions, one row per (units, group, scorer, model, negatives),
    columns named as in `COLUMNS` (each says whose convention it is). Empty frame when nothing is scored."""
    return _frame(_rows(workspace))


def stored_conventions_table(workspace):  # -> pandas.DataFrame
    """`conventions_table`, read from the stored analyses when `store_conventions` stored it from the present
    scores (milliseconds), else computed."""
    rows = _stored_rows(workspace)
    return _frame(rows if rows is not None else _rows(workspace))
