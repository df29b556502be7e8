"""Migration 2: explanations, scores and their examples round-trip; rewrites replace, never duplicate."""

from __future__ import annotations

import numpy as np

from core import store
from core.store.explanations import ExplanationRecord, ScoreExampleRecord, ScoreRecord


def _expl(eid: str, latent: int, baseline: str | None = None, text: str = "the token ' the'") -> ExplanationRecord:
    return ExplanationRecord(
        eid,
        "resid:blocks.0.hook_resid_pre",
        latent,
        "baseline:token-stats",
        True,
        baseline,
        "top",
        text,
        "v1",
        {"k": 1},
    )


def test_explanations_and_scores_round_trip_and_replace(tmp_path):
    ws = tmp_path / "w.duckdb"
    store.write_explanations(
        ws, [_expl("e1", 3), _expl("e2", 3, "random-explanation"), _expl("e3", 0, "random-latent")]
    )
    real = store.list_explanations(ws)
    assert [e.explanation_id for e in real] == ["e1"] and real[0].params == {"k": 1} and real[0].is_baseline
    assert {e.explanation_id for e in store.list_explanations(ws, baseline=True)} == {"e1", "e2", "e3"}
    assert [e.explanation_id for e in store.explanations_for_latent(ws, "resid:blocks.0.hook_resid_pre", 3)] == [
        "e1",
        "e2",
    ]

    ex = [
        ScoreExampleRecord(0, 10, "activating", 1.0, 1.0, 5, 0, 32, 2.5),
        ScoreExampleRecord(1, 0, "random-negative", None, 0.0, 7, 3, 32, 0.0, {"raw": "?"}),
    ]
    s = ScoreRecord("s1", "e1", "detection", "judge:minilm-similarity", 0.75, "d1", {"n": 2}, n_examples=2)
    store.write_scores(ws, [(s, ex)])
    store.write_scores(ws, [(s, ex)])  # a redo replaces
    assert store.done_ids(ws, "scores", ["s1", "nope"]) == {"s1": ("ok", False)}
    got = store.score_examples(ws, "s1")
    assert got == ex
    frame = store.scores_frame(ws)
    assert len(frame) == 1 and frame["value"].iloc[0] == 0.75 and frame["latent"].iloc[0] == 3
    assert len(store.score_examples_frame(ws, scorer="detection")) == 2


def test_embeddings_round_trip(tmp_path):
    ws = tmp_path / "w.duckdb"
    keys = np.array([[0, 1, 32], [2, 5, 32]])
    vec = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    store.write_window_embeddings(ws, "m", keys, vec)
    store.write_window_embeddings(ws, "m", keys, vec)  # existing keys kept, no duplicates
    k, v = store.read_window_embeddings(ws, "m")
    assert np.array_equal(k, keys) and np.allclose(v, vec)
    store.write_explanation_embeddings(ws, "m", ["a", "b"], vec)
    ids, v2 = store.read_explanation_embeddings(ws, "m")
    assert ids == ["a", "b"] and np.allclose(v2, vec)
