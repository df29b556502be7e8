"""delphi's pooled metrics beside ours: hand-computed confusion matrices, scikit-learn, and a stored workspace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from core import store
from core.autointerp.delphi_metrics import (
    OURS,
    POOLED,
    Confusion,
    classification_metrics,
    confusion,
    conventions_table,
    pooled_metrics,
    weighted_auc,
)
from core.store.explanations import ExplanationRecord, ScoreExampleRecord, ScoreRecord

DICT = "resid:blocks.0.hook_resid_pre"


def test_confusion_and_metrics_by_hand():
    # latent A: truth 1 1 1 0 0, prediction 1 1 0 0 1 -> tp 2, fn 1, tn 1, fp 1 (NaN = no prediction, skipped)
    a = confusion(np.array([1, 1, 0, 0, 1, np.nan]), np.array([1, 1, 1, 0, 0, 1]))
    assert a == Confusion(tp=2, tn=1, fp=1, fn=1)
    m = classification_metrics(a)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    # latent B has no non-activating example: delphi counts its TNR as 0 instead of dropping it
    b = confusion(np.array([1.0, 0.0]), np.array([1, 1]))
    assert classification_metrics(b)["balanced_accuracy"] == pytest.approx(0.25)
    pooled = pooled_metrics([a, b])  # tp 3, fn 2, tn 1, fp 1
    assert pooled["balanced_accuracy"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert pooled["precision"] == pytest.approx(3 / 4)
    assert pooled["recall"] == pytest.approx(3 / 5)
    assert pooled["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    empty = classification_metrics(Confusion(0, 0, 0, 0))
    assert empty == {k: 0.0 for k in empty}


def test_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.random(500) < 0.3
    pred = (rng.random(500) < np.where(truth, 0.7, 0.2)).astype(float)
    m = classification_metrics(confusion(pred, truth))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(truth, pred > 0.5))
    assert m["precision"] == pytest.approx(skm.precision_score(truth, pred > 0.5))
    assert m["recall"] == pytest.approx(skm.recall_score(truth, pred > 0.5))
    assert m["f1"] == pytest.approx(skm.f1_score(truth, pred > 0.5))
    # AUC from (prediction, truth) counts, as the store gives them, equals sklearn's on the expanded examples
    probs = np.round(rng.random(500), 1)
    keys, n = np.unique(np.stack([probs, truth]), axis=1, return_counts=True)
    assert weighted_auc(keys[0], keys[1] > 0, n) == pytest.approx(skm.roc_auc_score(truth, probs))


def _store_two_latents(ws):
    """Latent 1 scored ok (BA 7/12); latent 2 failed for a missing class but has predictions; one embedding score."""
    expl = [
        ExplanationRecord(f"e{i}", DICT, i, "baseline:token-stats", True, None, "top", "x", "v1", {}) for i in (1, 2)
    ]
    store.write_explanations(ws, expl)

    def rows(pred, truth):
        return [
            ScoreExampleRecord(j, 5 if t else 0, "activating" if t else "random-negative", p, t)
            for j, (p, t) in enumerate(zip(pred, truth, strict=True))
        ]

    a = ScoreRecord("s1", "e1", "detection", "judge", 7 / 12, "d1", {"seed": 0}, n_examples=5)
    b = ScoreRecord(
        "s2", "e2", "detection", "judge", None, "d1", {"seed": 0}, status="failed", error="metric undefined"
    )
    c = ScoreRecord("s3", "e1", "embedding", "emb", 0.9, "m1", {}, n_examples=2)
    store.write_scores(
        ws,
        [
            (a, rows([1, 1, 0, 0, 1], [1, 1, 1, 0, 0])),
            (b, rows([1, 0], [1, 1])),
            (c, rows([0.3, 0.1], [1, 0])),
        ],
    )


def test_conventions_table_from_stored_scores(tmp_path):
    ws = tmp_path / "w.duckdb"
    _store_two_latents(ws)
    table = conventions_table(ws)
    assert list(table["scorer"]) == ["detection"]  # continuous predictions (embedding) have no confusion matrix
    row = table.iloc[0]
    assert row[OURS] == pytest.approx(7 / 12) and row["latents (ours)"] == 1 and row["failed (ours)"] == 1
    assert row[POOLED] == pytest.approx((3 / 5 + 1 / 2) / 2) and row["latents (delphi)"] == 2
    assert row["examples (delphi)"] == 7 and row["negatives"] == "random+hard"
    assert row["F1 (delphi)"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert row["AUC (delphi)"] == pytest.approx(row[POOLED])  # yes/no predictions: one threshold
    assert row["units"] == "latents" and row["group"] == "top"


def test_conventions_table_empty_workspace(tmp_path):
    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True):
        pass  # a new workspace, nothing scored
    table = conventions_table(ws)
    assert len(table) == 0 and OURS in table.columns and POOLED in table.columns
    assert math.isnan(weighted_auc(np.array([1.0]), np.array([True]), np.array([3])))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    import analysis_workspace

    return analysis_workspace.build(tmp_path_factory.mktemp("delphi") / "ws.duckdb", overlaps=False)


def test_scores_page_and_report_name_both_conventions(synthetic, tmp_path):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.analysis import report

    page = Path(__file__).resolve().parent.parent / "pages" / "2_Scores.py"
    at = AppTest.from_file(str(page), default_timeout=120)
    at.session_state["workspace"] = str(synthetic)
    at.run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert OURS in table.columns and POOLED in table.columns
    assert {"detection", "fuzzing"} <= set(table["scorer"])
    assert "embedding" not in set(table["scorer"])  # continuous scores have no confusion matrix
    text = report.write_report(synthetic, tmp_path / "out", images="html", overlap=False).read_text()
    assert "## Accuracy conventions: ours vs delphi" in text and OURS in text and POOLED in text


def test_variants_and_negatives_are_separate_rows(tmp_path):
    ws = tmp_path / "w.duckdb"
    store.write_explanations(ws, [ExplanationRecord("e1", DICT, 1, "x", True, None, "top", "x", "v1", {})])
    rows = [ScoreExampleRecord(0, 5, "activating", 1.0, 1.0), ScoreExampleRecord(1, 0, "neighbour-negative", 1.0, 0.0)]
    store.write_scores(
        ws,
        [
            (ScoreRecord("a", "e1", "fuzzing", "judge", 0.5, "f", {"negatives": "random+hard"}), rows),
            (ScoreRecord("b", "e1", "fuzzing", "judge", 0.5, "f", {"variant": "delphi"}), rows),
            (ScoreRecord("c", "e1", "fuzzing", "judge", 0.5, "f", {"negatives": "neighbours:decoder"}), rows),
        ],
    )
    table = conventions_table(ws).set_index(["scorer", "negatives"])
    assert set(table.index) == {
        ("fuzzing", "random+hard"),
        ("fuzzing (delphi)", "random+hard"),
        ("fuzzing", "neighbours:decoder"),
    }
    assert (table["examples (delphi)"] == 2).all() and (table[POOLED] == 0.5).all()
