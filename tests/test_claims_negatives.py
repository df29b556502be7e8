"""The claims table once per kind of non-activating examples (random vs neighbour negatives), and which verdicts move."""

from __future__ import annotations

import analysis_workspace
import numpy as np

from core import store
from core.analysis.claims import claims_by_negatives, negatives_of, verdict_moves
from core.store.explanations import ScoreRecord

NEIGHBOURS = "neighbours:decoder"
RANDOM_CLAIM = "Explanations score higher than random explanations (another latent's)"


def test_neighbour_negatives_get_their_own_table_and_a_moved_verdict_is_named(tmp_path):
    ws = analysis_workspace.build(tmp_path / "ws.duckdb", examples=False, overlaps=False)
    frame = store.scores_frame(ws, status=None)
    rng = np.random.default_rng(1)
    harder = []
    for r in frame[frame["scorer"].isin(["detection", "fuzzing"])].itertuples():
        # with hard negatives every explanation scores like a random one: the paper's claim no longer holds
        v = float(np.clip(0.5 + rng.normal(0, 0.05), 0, 1))
        harder.append(
            (
                ScoreRecord(
                    r.score_id + ":nb", r.explanation_id, r.scorer, r.scorer_model, v, "v1", {"negatives": NEIGHBOURS}
                ),
                [],
            )
        )
    store.write_scores(ws, harder)
    before = store.scores_frame(ws, status=None)

    tables = claims_by_negatives(ws, ("random+hard", NEIGHBOURS))
    rows = {r["claim"]: r for r in verdict_moves(tables)}
    assert rows[RANDOM_CLAIM]["random+hard"]["verdict"] == "confirmed"
    assert rows[RANDOM_CLAIM][NEIGHBOURS]["verdict"] != "confirmed" and rows[RANDOM_CLAIM]["moved"]
    assert "0.5" in rows[RANDOM_CLAIM][NEIGHBOURS]["ours"]  # the neighbour table reads only the neighbour rows
    assert not rows["Larger explainer models give better explanations (Llama 70b ≈ Claude Sonnet 3.5)"]["moved"]
    assert len(store.scores_frame(ws, status=None)) == len(before)  # computed in memory: nothing stored
    assert negatives_of(None) == "random+hard" and negatives_of('{"negatives": "x"}') == "x"
