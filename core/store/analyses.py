"""Stored analyses of scores and overlaps between dictionaries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.store.schema import _equal_filters, session

# Analysis results and layer overlap (migration 4). Each function opens its own short session.


@dataclass(frozen=True)
class AnalysisRecord:
    """A stored analysis result (see `core.analysis.analyses`): its name, unit group, parameters and JSON result."""

    name: str
    units: str
    params: dict
    result: dict
    n_latents: int
    inputs: str
    created_at: object = None


def write_analysis(workspace: Path, rec: AnalysisRecord) -> None:
    """Store an analysis result, replacing the previous one of the same name and units."""
    with session(workspace, write=True) as con:
        con.execute("DELETE FROM analysis_results WHERE name = ? AND units = ?", [rec.name, rec.units])
        con.execute(
            "INSERT INTO analysis_results VALUES (?, ?, ?, ?, ?, ?, now())",
            [
                rec.name,
                rec.units,
                json.dumps(rec.params, sort_keys=True),
                json.dumps(rec.result),
                rec.n_latents,
                rec.inputs,
            ],
        )


def read_analyses(workspace: Path, name: str | None = None, units: str | None = None) -> list[AnalysisRecord]:
    """Stored analysis results, optionally of one name and unit group."""
    where, args = _equal_filters(name=name, units=units)
    sql = "SELECT name, units, params, result, n_latents, inputs, created_at FROM analysis_results WHERE true" + where
    with session(workspace) as con:
        rows = con.execute(sql + " ORDER BY name, units", args).fetchall()
    return [AnalysisRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6]) for r in rows]


@dataclass(frozen=True)
class OverlapRecord:
    """A stored overlap of two dictionaries (see `core.analysis.overlap.OverlapResult`; pairs are in `overlap_pairs`)."""

    overlap_id: str
    similarity: str
    kind: str
    dict_a: str
    dict_b: str
    layer_a: int
    layer_b: int
    n_a: int
    n_b: int
    n_matched: int
    mean_similarity: float
    frobenius: float
    method: str
    seconds: float
    params: dict
    created_at: object = None


_OVERLAP_COLS = (
    "overlap_id, similarity, kind, dict_a, dict_b, layer_a, layer_b, n_a, n_b, n_matched, mean_similarity, frobenius, "
    "method, seconds, params, created_at"
)


def write_overlap(
    workspace: Path, rec: OverlapRecord, latent_a: np.ndarray, latent_b: np.ndarray, similarity: np.ndarray
) -> None:
    """Store one overlap result with its matched pairs `[n_matched]` each, replacing any with the same id (one transaction)."""
    pairs = pa.table(
        {
            "overlap_id": pa.array([rec.overlap_id] * len(latent_a), pa.string()),
            "latent_a": pa.array(np.asarray(latent_a, dtype=np.int32)),
            "latent_b": pa.array(np.asarray(latent_b, dtype=np.int32)),
            "similarity": pa.array(np.asarray(similarity, dtype=np.float32)),
        }
    )
    with session(workspace, write=True) as con:
        con.execute("DELETE FROM overlap_pairs WHERE overlap_id = ?", [rec.overlap_id])
        con.execute("DELETE FROM overlap_results WHERE overlap_id = ?", [rec.overlap_id])
        con.execute(
            f"INSERT INTO overlap_results ({_OVERLAP_COLS}) VALUES ({', '.join(['?'] * 15)}, now())",
            [
                rec.overlap_id,
                rec.similarity,
                rec.kind,
                rec.dict_a,
                rec.dict_b,
                rec.layer_a,
                rec.layer_b,
                rec.n_a,
                rec.n_b,
                rec.n_matched,
                rec.mean_similarity,
                rec.frobenius,
                rec.method,
                rec.seconds,
                json.dumps(rec.params, sort_keys=True),
            ],
        )
        con.register("_pairs_in", pairs)
        try:
            con.execute("INSERT INTO overlap_pairs SELECT * FROM _pairs_in")
        finally:
            con.unregister("_pairs_in")


def read_overlaps(workspace: Path, similarity: str | None = None, kind: str | None = None) -> list[OverlapRecord]:
    """Stored overlap results (no pairs), by kind and layers."""
    where, args = _equal_filters(similarity=similarity, kind=kind)
    sql = f"SELECT {_OVERLAP_COLS} FROM overlap_results WHERE true" + where
    with session(workspace) as con:
        rows = con.execute(sql + " ORDER BY similarity, kind, layer_a, layer_b", args).fetchall()
    return [OverlapRecord(*r[:14], json.loads(r[14]), r[15]) for r in rows]


def read_overlap_pairs(
    workspace: Path, overlap_id: str, limit: int | None = None, offset: int = 0, most_similar_first: bool = True
):  # -> pandas.DataFrame
    """Matched pairs of one overlap (latent_a, latent_b, similarity), most similar first (or least)."""
    order = "DESC" if most_similar_first else "ASC"
    sql = f"SELECT latent_a, latent_b, similarity FROM overlap_pairs WHERE overlap_id = ? ORDER BY similarity {order}, latent_a"
    args: list = [overlap_id]
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [int(limit), int(offset)]
    with session(workspace) as con:
        return con.execute(sql, args).df()


# Narrow reads for the analysis pages: what `core.analysis.analyses` needs without the full score frame.


def ok_score_values(workspace: Path):  # -> pandas.DataFrame
    """The ok scores with a value (not NULL, not NaN) of explanations in the workspace: columns score_id, value."""
    sql = """SELECT s.score_id, s.value FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id
             WHERE s.status = 'ok' AND s.value IS NOT NULL AND NOT isnan(s.value)"""
    with session(workspace) as con:
        return con.execute(sql).df()


def real_score_summary(workspace: Path) -> tuple[list, list, int, int]:
    """Who made the workspace's ok scores of real (not baseline-kind) explanations, counted in SQL:
    ([(explainer, every row a baseline explainer)], [(scorer, scorer_model)] distinct, n scores, n latents)."""
    base = """FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id
              WHERE s.status = 'ok' AND e.baseline IS NULL"""
    with session(workspace) as con:
        explainers = con.execute(
            f"SELECT e.explainer, bool_and(e.is_baseline) {base} AND e.explainer IS NOT NULL GROUP BY e.explainer"
        ).fetchall()
        models = con.execute(
            f"SELECT DISTINCT s.scorer, s.scorer_model {base} AND s.scorer IS NOT NULL AND s.scorer_model IS NOT NULL"
        ).fetchall()
        n_scores, n_latents = con.execute(
            f"SELECT count(*), count(DISTINCT (e.dictionary, e.latent)) {base}"
        ).fetchone()
    return explainers, models, int(n_scores), int(n_latents)


def workspace_stamp(workspace: Path) -> tuple:
    """What changes whenever the workspace's tables change: (resolved path, (inode, size, mtime_ns) of the
    DuckDB file and of its write-ahead log, or None for a missing one). A key for caches of what is read from it."""
    path = Path(workspace).resolve()

    def stat(p: Path):
        try:
            s = p.stat()
        except OSError:
            return None
        return (s.st_ino, s.st_size, s.st_mtime_ns)

    return (str(path), stat(path), stat(Path(str(path) + ".wal")))


def scores_state(workspace: Path) -> str:
    """A cheap fingerprint of every score and scored example of the workspace, computed in SQL: it changes when a
    score is added, removed or rewritten (status, value, time) or examples are added or removed. It keys results
    computed from all scores, failed ones included (e.g. the delphi conventions table); a DuckDB whose `hash`
    differs gives another fingerprint, which only means the result is computed again."""
    with session(workspace) as con:
        n, h = con.execute(
            """SELECT count(*), coalesce(bit_xor(hash(s.score_id, s.status, s.value, s.created_at, e.explanation_id)), 0)
               FROM scores s JOIN explanations e ON e.explanation_id = s.explanation_id"""
        ).fetchone()
        (n_examples,) = con.execute("SELECT count(*) FROM score_examples").fetchone()
    return f"{n}:{n_examples}:{int(h):016x}"
