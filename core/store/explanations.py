"""Explanations, their scores and scored examples, and the embeddings of windows and explanations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.store.cache import _list_array
from core.store.schema import _insert_arrow, _json_or_none, session

# ---------------------------------------------------------------------------------------------
# Explanations and scores (migration 2). Each function opens its own short session; writes are one
# transaction each and replace rows with the same id, so a rerun that redoes work stays consistent.


@dataclass(frozen=True)
class ExplanationRecord:
    """One explanation of a latent (see the `explanations` table for each column's meaning)."""

    explanation_id: str
    dictionary: str
    latent: int
    explainer: str
    is_baseline: bool
    baseline: str | None
    strategy: str
    text: str | None
    prompt_version: str
    params: dict
    status: str = "ok"
    error: str | None = None
    raw: str | None = None
    transient: bool = False
    source_explanation_id: str | None = None
    created_at: object = None


@dataclass(frozen=True)
class ScoreRecord:
    """One score of an explanation by one scorer (see the `scores` table)."""

    score_id: str
    explanation_id: str
    scorer: str
    scorer_model: str
    value: float | None
    prompt_version: str
    params: dict
    status: str = "ok"
    error: str | None = None
    failures: list | None = None
    transient: bool = False
    n_examples: int = 0
    created_at: object = None


@dataclass(frozen=True)
class ScoreExampleRecord:
    """One example of a score: its decile (0 = non-activating), kind, the scorer's prediction and the truth."""

    example: int
    decile: int
    kind: str
    prediction: float | None
    truth: float
    context: int | None = None
    start: int | None = None
    length: int | None = None
    activation: float | None = None
    detail: dict | None = None


_EXPL_COLS = (
    "explanation_id, dictionary, latent, explainer, is_baseline, baseline, strategy, text, prompt_version, params, "
    "status, error, raw, transient, source_explanation_id, created_at"
)


_SCORE_COLS = "score_id, explanation_id, scorer, scorer_model, value, prompt_version, params, status, error, failures, transient, n_examples, created_at"


_EXAMPLE_COLS = "example, decile, kind, prediction, truth, context, start, length, activation, detail"


def _explanation_record(row: tuple) -> ExplanationRecord:
    r = list(row)
    r[9] = json.loads(r[9]) if r[9] else {}
    return ExplanationRecord(*r)


def _score_record(row: tuple) -> ScoreRecord:
    r = list(row)
    r[6] = json.loads(r[6]) if r[6] else {}
    r[9] = json.loads(r[9]) if r[9] else None
    return ScoreRecord(*r)


def write_explanations(workspace: Path, records: list[ExplanationRecord]) -> None:
    """Store explanations, replacing any with the same id (one transaction)."""
    if not records:
        return
    data = pa.table(
        {
            "explanation_id": [r.explanation_id for r in records],
            "dictionary": [r.dictionary for r in records],
            "latent": pa.array([r.latent for r in records], pa.int32()),
            "explainer": [r.explainer for r in records],
            "is_baseline": pa.array([r.is_baseline for r in records], pa.bool_()),
            "baseline": pa.array([r.baseline for r in records], pa.string()),
            "strategy": [r.strategy for r in records],
            "text": pa.array([r.text for r in records], pa.string()),
            "prompt_version": [r.prompt_version for r in records],
            "params": [json.dumps(r.params, sort_keys=True) for r in records],
            "status": [r.status for r in records],
            "error": pa.array([r.error for r in records], pa.string()),
            "raw": pa.array([r.raw for r in records], pa.string()),
            "transient": pa.array([r.transient for r in records], pa.bool_()),
            "source_explanation_id": pa.array([r.source_explanation_id for r in records], pa.string()),
        }
    )
    with session(workspace, write=True) as con:
        con.execute(
            "DELETE FROM explanations WHERE explanation_id IN (SELECT unnest(?::VARCHAR[]))",
            [[r.explanation_id for r in records]],
        )
        con.register("_expl_in", data)
        try:
            con.execute(
                f"INSERT INTO explanations ({_EXPL_COLS}) SELECT {_EXPL_COLS.replace('created_at', 'now()')} FROM _expl_in"
            )
        finally:
            con.unregister("_expl_in")


def write_scores(workspace: Path, scores: list[tuple[ScoreRecord, list[ScoreExampleRecord]]]) -> None:
    """Store scores with their per-example rows, replacing any score with the same id (one transaction)."""
    if not scores:
        return
    recs = [s for s, _ in scores]
    score_table = pa.table(
        {
            "score_id": [r.score_id for r in recs],
            "explanation_id": [r.explanation_id for r in recs],
            "scorer": [r.scorer for r in recs],
            "scorer_model": [r.scorer_model for r in recs],
            "value": pa.array([r.value for r in recs], pa.float64()),
            "prompt_version": [r.prompt_version for r in recs],
            "params": [json.dumps(r.params, sort_keys=True) for r in recs],
            "status": [r.status for r in recs],
            "error": pa.array([r.error for r in recs], pa.string()),
            "failures": pa.array([_json_or_none(r.failures) for r in recs], pa.string()),
            "transient": pa.array([r.transient for r in recs], pa.bool_()),
            "n_examples": pa.array([r.n_examples for r in recs], pa.int32()),
        }
    )
    ex_rows = [(s.score_id, e) for s, exs in scores for e in exs]
    ex_table = pa.table(
        {
            "score_id": [sid for sid, _ in ex_rows],
            "example": pa.array([e.example for _, e in ex_rows], pa.int32()),
            "decile": pa.array([e.decile for _, e in ex_rows], pa.int16()),
            "kind": [e.kind for _, e in ex_rows],
            "prediction": pa.array([e.prediction for _, e in ex_rows], pa.float64()),
            "truth": pa.array([float(e.truth) for _, e in ex_rows], pa.float64()),
            "context": pa.array([e.context for _, e in ex_rows], pa.int32()),
            "start": pa.array([e.start for _, e in ex_rows], pa.int32()),
            "length": pa.array([e.length for _, e in ex_rows], pa.int16()),
            "activation": pa.array([e.activation for _, e in ex_rows], pa.float64()),
            "detail": pa.array([_json_or_none(e.detail) for _, e in ex_rows], pa.string()),
        }
    )
    ids = [r.score_id for r in recs]
    with session(workspace, write=True) as con:
        con.execute("DELETE FROM score_examples WHERE score_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        con.execute("DELETE FROM scores WHERE score_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        con.register("_scores_in", score_table)
        try:
            con.execute(
                f"INSERT INTO scores ({_SCORE_COLS}) SELECT {_SCORE_COLS.replace('created_at', 'now()')} FROM _scores_in"
            )
        finally:
            con.unregister("_scores_in")
        if ex_rows:
            _insert_arrow(con, "score_examples", "score_id, " + _EXAMPLE_COLS, ex_table)


def done_ids(workspace: Path, table: str, ids: list[str]) -> dict[str, tuple[str, bool]]:
    """Of `ids` (explanation or score ids, `table` 'explanations' | 'scores'), those stored: id -> (status, transient)."""
    if table not in ("explanations", "scores"):
        raise ValueError(table)
    if not ids or not Path(workspace).exists():
        return {}
    col = "explanation_id" if table == "explanations" else "score_id"
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {col}, status, transient FROM {table} WHERE {col} IN (SELECT unnest(?::VARCHAR[]))", [list(ids)]
        ).fetchall()
    return {r[0]: (r[1], bool(r[2])) for r in rows}


def list_explanations(
    workspace: Path,
    dictionary: str | None = None,
    latents: list[int] | None = None,
    explainer: str | None = None,
    baseline: str | None | bool = None,
    status: str | None = "ok",
) -> list[ExplanationRecord]:
    """Stored explanations, filtered. `baseline`: None = real explanations only (baseline IS NULL), a kind
    ('random-explanation' | 'random-latent') = only those, True = all rows."""
    sql = f"SELECT {_EXPL_COLS} FROM explanations WHERE true"
    args: list = []
    if dictionary is not None:
        sql += " AND dictionary = ?"
        args.append(dictionary)
    if latents is not None:
        sql += " AND latent IN (SELECT unnest(?::INTEGER[]))"
        args.append([int(x) for x in latents])
    if explainer is not None:
        sql += " AND explainer = ?"
        args.append(explainer)
    if baseline is None:
        sql += " AND baseline IS NULL"
    elif baseline is not True:
        sql += " AND baseline = ?"
        args.append(baseline)
    if status is not None:
        sql += " AND status = ?"
        args.append(status)
    with session(workspace) as con:
        return [
            _explanation_record(r)
            for r in con.execute(sql + " ORDER BY dictionary, latent, created_at", args).fetchall()
        ]


def explanations_for_latent(workspace: Path, dictionary: str, latent: int) -> list[ExplanationRecord]:
    """Every stored explanation of one latent (all explainers, strategies and statuses; random-latent rows excluded)."""
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {_EXPL_COLS} FROM explanations WHERE dictionary = ? AND latent = ? AND (baseline IS NULL OR baseline <> 'random-latent') "
            "ORDER BY is_baseline, created_at",
            [dictionary, int(latent)],
        ).fetchall()
    return [_explanation_record(r) for r in rows]


def scores_for_explanations(workspace: Path, explanation_ids: list[str]) -> list[ScoreRecord]:
    """Every stored score of the given explanations."""
    if not explanation_ids:
        return []
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {_SCORE_COLS} FROM scores WHERE explanation_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY scorer, created_at",
            [list(explanation_ids)],
        ).fetchall()
    return [_score_record(r) for r in rows]


def score_examples(workspace: Path, score_id: str) -> list[ScoreExampleRecord]:
    """The per-example rows of one score, in example order."""
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {_EXAMPLE_COLS} FROM score_examples WHERE score_id = ? ORDER BY example", [score_id]
        ).fetchall()
    return [ScoreExampleRecord(*r[:-1], json.loads(r[-1]) if r[-1] else None) for r in rows]


def scores_frame(
    workspace: Path, dictionary: str | None = None, scorer: str | None = None, status: str | None = "ok"
):  # -> pandas.DataFrame
    """One row per score joined with its explanation: dictionary, latent, explainer, is_baseline, baseline,
    strategy, explanation text, scorer, scorer_model, value, status, prompt versions, ids. Baseline rows included."""
    sql = """SELECT e.dictionary, e.latent, e.explainer, e.is_baseline, e.baseline, e.strategy, e.text,
                    e.prompt_version AS explainer_prompt_version, s.scorer, s.scorer_model, s.value, s.status,
                    s.error, s.prompt_version AS scorer_prompt_version, s.n_examples, s.explanation_id, s.score_id, s.params
             FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id WHERE true"""
    args: list = []
    if dictionary is not None:
        sql += " AND e.dictionary = ?"
        args.append(dictionary)
    if scorer is not None:
        sql += " AND s.scorer = ?"
        args.append(scorer)
    if status is not None:
        sql += " AND s.status = ?"
        args.append(status)
    with session(workspace) as con:
        return con.execute(sql + " ORDER BY e.dictionary, e.latent, s.scorer", args).df()


def score_examples_frame(
    workspace: Path, scorer: str | None = None, dictionary: str | None = None
):  # -> pandas.DataFrame
    """Per-example rows of ok scores joined with their score and explanation (for decile curves):
    dictionary, latent, explainer, is_baseline, baseline, strategy, scorer, scorer_model, score_id, example,
    decile, kind, prediction, truth, activation."""
    sql = """SELECT e.dictionary, e.latent, e.explainer, e.is_baseline, e.baseline, e.strategy, s.scorer, s.scorer_model,
                    x.score_id, x.example, x.decile, x.kind, x.prediction, x.truth, x.activation
             FROM score_examples x JOIN scores s ON s.score_id = x.score_id JOIN explanations e ON e.explanation_id = s.explanation_id
             WHERE s.status = 'ok'"""
    args: list = []
    if scorer is not None:
        sql += " AND s.scorer = ?"
        args.append(scorer)
    if dictionary is not None:
        sql += " AND e.dictionary = ?"
        args.append(dictionary)
    with session(workspace) as con:
        return con.execute(sql, args).df()


def explain_score_summary(workspace: Path) -> tuple:  # -> (pandas.DataFrame, pandas.DataFrame)
    """Who produced a workspace's explanations and scores: (explanations counted by explainer, is_baseline,
    baseline, strategy, status; scores counted by scorer, scorer_model, status with the mean value of ok ones)."""
    with session(workspace) as con:
        explanations = con.execute(
            """SELECT explainer, is_baseline, baseline, strategy, status, count(*) AS n, count(DISTINCT dictionary || ':' || latent) AS latents
               FROM explanations GROUP BY ALL ORDER BY is_baseline, explainer, baseline NULLS FIRST, strategy, status"""
        ).df()
        scores = con.execute(
            """SELECT s.scorer, s.scorer_model, e.is_baseline OR e.baseline IS NOT NULL AS of_baseline, s.status, count(*) AS n,
                      avg(s.value) FILTER (WHERE s.status = 'ok') AS mean_value
               FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id
               GROUP BY ALL ORDER BY s.scorer, s.scorer_model, of_baseline, s.status"""
        ).df()
    return explanations, scores


def read_window_embeddings(workspace: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Every stored window embedding of `model`: (keys `[n, 3]` int64 of context, start, length; vectors `[n, dim]` float32)."""
    if not Path(workspace).exists():
        return np.zeros((0, 3), np.int64), np.zeros((0, 0), np.float32)
    with session(workspace) as con:
        res = con.execute(
            "SELECT context, start, length, vector FROM window_embeddings WHERE model = ? ORDER BY context, start, length",
            [model],
        ).fetchall()
    if not res:
        return np.zeros((0, 3), np.int64), np.zeros((0, 0), np.float32)
    keys = np.asarray([r[:3] for r in res], dtype=np.int64)
    return keys, np.asarray([r[3] for r in res], dtype=np.float32)


def write_window_embeddings(workspace: Path, model: str, keys: np.ndarray, vectors: np.ndarray) -> None:
    """Store window embeddings: `keys [n, 3]` (context, start, length), `vectors [n, dim]` (existing keys are kept)."""
    if len(keys) == 0:
        return
    keys = np.asarray(keys, dtype=np.int64)
    table = pa.table(
        {
            "model": pa.array([model] * len(keys), pa.string()),
            "context": pa.array(keys[:, 0].astype(np.int32)),
            "start": pa.array(keys[:, 1].astype(np.int32)),
            "length": pa.array(keys[:, 2].astype(np.int16)),
            "vector": _list_array(np.asarray(vectors, dtype=np.float32), pa.float32()),
        }
    )
    with session(workspace, write=True) as con:
        con.register("_win_in", table)
        try:
            con.execute("INSERT INTO window_embeddings SELECT * FROM _win_in ON CONFLICT DO NOTHING")
        finally:
            con.unregister("_win_in")


def write_explanation_embeddings(workspace: Path, model: str, explanation_ids: list[str], vectors: np.ndarray) -> None:
    """Store explanation embeddings `vectors [n, dim]` (replacing those of the same explanation and model)."""
    if not explanation_ids:
        return
    table = pa.table(
        {
            "explanation_id": pa.array(list(explanation_ids), pa.string()),
            "model": pa.array([model] * len(explanation_ids), pa.string()),
            "vector": _list_array(np.asarray(vectors, dtype=np.float32), pa.float32()),
        }
    )
    with session(workspace, write=True) as con:
        con.execute(
            "DELETE FROM explanation_embeddings WHERE model = ? AND explanation_id IN (SELECT unnest(?::VARCHAR[]))",
            [model, list(explanation_ids)],
        )
        con.register("_eemb_in", table)
        try:
            con.execute("INSERT INTO explanation_embeddings SELECT * FROM _eemb_in")
        finally:
            con.unregister("_eemb_in")


def read_explanation_embeddings(
    workspace: Path, model: str, explanation_ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """(explanation ids, vectors `[n, dim]` float32) of stored explanation embeddings of `model` (all, or those of `explanation_ids`)."""
    sql = "SELECT explanation_id, vector FROM explanation_embeddings WHERE model = ?"
    args: list = [model]
    if explanation_ids is not None:
        sql += " AND explanation_id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(list(explanation_ids))
    with session(workspace) as con:
        rows = con.execute(sql + " ORDER BY explanation_id", args).fetchall()
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    return [r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.float32)


def explanations_by_id(workspace: Path, explanation_ids: list[str]) -> list[ExplanationRecord]:
    """The stored explanations with the given ids (any status), in no particular order."""
    if not explanation_ids:
        return []
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {_EXPL_COLS} FROM explanations WHERE explanation_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(explanation_ids)],
        ).fetchall()
    return [_explanation_record(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Pooled counts for delphi's metrics (core.autointerp.delphi_metrics)

_NEGATIVES_SQL = "coalesce(json_extract_string(s.params, '$.negatives'), 'random+hard')"
# a scorer's variant (fuzzing's 'delphi') is part of its name here, so variants are never pooled together
_SCORER_SQL = "s.scorer || coalesce(' (' || json_extract_string(s.params, '$.variant') || ')', '')"


def score_prediction_counts(workspace: Path):  # -> pandas.DataFrame
    """Examples with a prediction counted per (dictionary, strategy, baseline, scorer, scorer_model, negatives,
    prediction, truth): column `n`, plus `latents`, the distinct latents of the group without prediction/truth.
    Failed scores are included (delphi pools every example that got a prediction); `negatives` is the score's
    `params.negatives`, 'random+hard' for rows written before that option existed; `scorer` carries a variant,
    e.g. 'fuzzing (delphi)'."""
    sql = f"""WITH x AS (
                SELECT e.dictionary, e.strategy, e.baseline, {_SCORER_SQL} AS scorer, s.scorer_model, {_NEGATIVES_SQL} AS negatives,
                       e.latent, x.prediction, x.truth
                FROM score_examples x JOIN scores s ON s.score_id = x.score_id
                JOIN explanations e ON e.explanation_id = s.explanation_id
                WHERE x.prediction IS NOT NULL AND NOT isnan(x.prediction)),
              c AS (SELECT dictionary, strategy, baseline, scorer, scorer_model, negatives, prediction, truth, count(*) AS n
                    FROM x GROUP BY ALL),
              l AS (SELECT dictionary, strategy, baseline, scorer, scorer_model, negatives, count(DISTINCT latent) AS latents
                    FROM x GROUP BY ALL)
              SELECT c.*, l.latents FROM c JOIN l USING (dictionary, strategy, scorer, scorer_model, negatives)
              WHERE c.baseline IS NOT DISTINCT FROM l.baseline
              ORDER BY ALL"""
    with session(workspace) as con:
        return con.execute(sql).df()


def score_groups_frame(workspace: Path):  # -> pandas.DataFrame
    """One row per score (every status): dictionary, strategy, baseline, scorer, scorer_model, negatives, status, value."""
    sql = f"""SELECT e.dictionary, e.strategy, e.baseline, {_SCORER_SQL} AS scorer, s.scorer_model, {_NEGATIVES_SQL} AS negatives,
                     s.status, s.value
              FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id"""
    with session(workspace) as con:
        return con.execute(sql).df()
