"""The analysis pages' reads are cached per workspace state (ui.analysis_view, ui.delphi_metrics_view): a changed
workspace shows its new numbers; and the narrow reads behind them agree with the full score frame."""

from __future__ import annotations

from pathlib import Path

import analysis_workspace
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.autointerp.delphi_metrics import OURS, conventions_table, weighted_auc
from core.autointerp.metrics import auroc

ROOT = Path(__file__).resolve().parent.parent
SCORES, DECILES = (str(ROOT / "pages" / n) for n in ("2_Scores.py", "3_Deciles.py"))


@pytest.fixture
def analysed(tmp_path) -> Path:
    from core.analysis import analyses as analysis

    ws = analysis_workspace.build(tmp_path / "ws.duckdb", overlaps=False)
    analysis.analyze_workspace(ws)
    return ws


def _page(path: str, ws: Path) -> AppTest:
    at = AppTest.from_file(path, default_timeout=120)
    at.session_state["workspace"] = str(ws)
    return at.run()


def _conventions(at: AppTest):
    return next(d.value for d in at.dataframe if OURS in d.value.columns)


def _captions(at: AppTest) -> str:
    return " ".join(str(c.value) for c in at.caption)


def test_a_changed_workspace_shows_its_new_numbers(analysed):
    from core import store

    before = _page(SCORES, analysed)
    assert not before.exception and not before.warning
    assert _page(SCORES, analysed).caption[0].value == before.caption[0].value  # a second session: same page
    with store.session(analysed, write=True) as con:
        one, other = con.execute(
            "SELECT score_id FROM scores WHERE status = 'ok' AND scorer = 'detection' ORDER BY score_id LIMIT 2"
        ).fetchall()
        con.execute("UPDATE scores SET value = 1 - value WHERE score_id = ?", [one[0]])
        con.execute("DELETE FROM score_examples WHERE score_id = ?", [other[0]])
        con.execute("DELETE FROM scores WHERE score_id = ?", [other[0]])
    after = _page(SCORES, analysed)
    assert not after.exception
    assert "Scores changed since" in " ".join(str(w.value) for w in after.warning)  # the stored analyses are stale
    assert after.caption[0].value != before.caption[0].value  # provenance counts one score fewer
    assert not _conventions(after).equals(_conventions(before))
    assert _conventions(after).equals(conventions_table(analysed))  # what a fresh computation gives
    deciles = _page(DECILES, analysed)
    assert "Scores changed since" in " ".join(str(w.value) for w in deciles.warning)


def test_narrow_reads_agree_with_the_score_frame(analysed):
    from core import store
    from core.analysis import analyses as analysis

    frame = store.scores_frame(analysed, status=None)
    assert analysis.workspace_fingerprint(analysed) == analysis.inputs_fingerprint(frame)
    real = frame[(frame["status"] == "ok") & frame["baseline"].isna()]
    prov = analysis.provenance(analysed)
    assert prov.n_scores == len(real) > 0
    assert prov.n_latents == len(real[["dictionary", "latent"]].drop_duplicates())
    assert prov.explainers == {e: bool(b) for e, b in real.groupby("explainer")["is_baseline"].all().items()}
    assert prov.scorer_models == {k: sorted(v.unique()) for k, v in real.groupby("scorer")["scorer_model"]}


def test_weighted_auc_is_auroc_of_the_repeated_examples():
    rng = np.random.default_rng(0)
    for trial in range(300):
        k = int(rng.integers(1, 10))
        pred = rng.choice([0.0, 0.25, 0.5, 1.0], size=k) if trial % 2 else rng.random(k)
        truth = rng.random(k) < 0.5
        count = rng.integers(0, 3000 if trial % 3 else 4, size=k)
        want = auroc(np.repeat(pred, count), np.repeat(truth, count))
        got = weighted_auc(pred, truth, count)
        assert got == want or (np.isnan(got) and np.isnan(want)), (pred, truth, count)


def test_conventions_are_stored_with_the_analyses_until_the_scores_change(analysed):
    import pandas as pd

    from core import store
    from core.autointerp import delphi_metrics

    stored = delphi_metrics._stored_rows(analysed)  # analyze_workspace stored them
    assert stored is not None and len(stored) > 0
    pd.testing.assert_frame_equal(
        delphi_metrics.stored_conventions_table(analysed), conventions_table(analysed), check_exact=True
    )
    with store.session(analysed, write=True) as con:
        con.execute(
            "UPDATE scores SET status = 'failed', value = NULL WHERE score_id = (SELECT min(score_id) FROM scores WHERE scorer = 'fuzzing')"
        )
    assert delphi_metrics._stored_rows(analysed) is None  # a stored table of other scores is not shown
    fresh = delphi_metrics.stored_conventions_table(analysed)
    pd.testing.assert_frame_equal(fresh, conventions_table(analysed), check_exact=True)
    assert int(fresh["failed (ours)"].sum()) == sum(r.n_failed_ours for r in stored) + 1
