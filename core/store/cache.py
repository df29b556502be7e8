"""The activation cache's tables: contexts, vocabulary, dictionaries, runs, chunks, latent statistics.

Also the token lookups the latent pages run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from core.store.schema import WorkspaceError, _applied_version, get_info, session

# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class DictionaryRecord:
    """A dictionary as the workspace knows it; `index` is the small integer used in tables and file names."""

    index: int
    id: str
    kind: str
    layer: int
    hook_in: str
    hook_out: str
    d_in: int
    d_sae: int
    d_out: int
    topk: int | None
    source: str
    fingerprint: str
    run_id: str
    status: str
    activations_file: str | None = None
    n_activations: int | None = None
    file_bytes: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """A cache run: its parameters, dictionaries, chunk count and status."""

    run_id: str
    params: dict
    dictionary_ids: list[str]
    n_chunks: int
    status: str
    committed_chunks: int


@dataclass(frozen=True)
class LatentStatsRecord:
    """Per-latent statistics as stored (see `core.cache.stats` for how each is computed)."""

    dictionary: str
    latent: int
    n_fires: int
    frequency: float
    max_activation: float
    mean_activation: float
    quantile_edges: np.ndarray  # [11] float32
    hist_counts: np.ndarray  # [n_bins] int
    row_start: int
    top_output_tokens: list[int]
    top_output_logits: list[float]
    bottom_output_tokens: list[int]
    bottom_output_logits: list[float]


_DICT_COLS = (
    "dict_idx, id, kind, layer, hook_in, hook_out, d_in, d_sae, d_out, topk, source, fingerprint, run_id, status, "
    "activations_file, n_activations, file_bytes"
)


def _dictionary_record(row: tuple) -> DictionaryRecord:
    return DictionaryRecord(*row)


def store_vocab(con: duckdb.DuckDBPyConnection, texts: list[str]) -> None:
    """Store the decoded text of every token id `0..len(texts)-1` (replacing the table)."""
    con.execute("DELETE FROM vocab")
    table = pa.table({"token": pa.array(np.arange(len(texts), dtype=np.int32)), "text": pa.array(texts, pa.string())})
    con.register("_vocab_in", table)
    try:
        con.execute("INSERT INTO vocab SELECT token, text FROM _vocab_in")
    finally:
        con.unregister("_vocab_in")


def store_contexts(con: duckdb.DuckDBPyConnection, tokens: np.ndarray, docs: list[str], offsets: np.ndarray) -> None:
    """Store contexts `tokens: [n_contexts, ctx_len]` with their document names and stream offsets (replacing the table)."""
    n, ctx_len = tokens.shape
    con.execute("DELETE FROM contexts")
    flat = pa.array(np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1))
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * ctx_len + 1, ctx_len, dtype=np.int32)), flat)
    table = pa.table(
        {
            "context": pa.array(np.arange(n, dtype=np.int32)),
            "doc": pa.array(docs, pa.string()),
            "stream_offset": pa.array(np.asarray(offsets, dtype=np.int64)),
            "tokens": lists,
        }
    )
    con.register("_contexts_in", table)
    try:
        con.execute("INSERT INTO contexts SELECT context, doc, stream_offset, tokens FROM _contexts_in")
    finally:
        con.unregister("_contexts_in")


def dictionaries(con: duckdb.DuckDBPyConnection) -> list[DictionaryRecord]:
    """Every dictionary registered in the workspace, by index."""
    return [
        _dictionary_record(r)
        for r in con.execute(f"SELECT {_DICT_COLS} FROM dictionaries ORDER BY dict_idx").fetchall()
    ]


def register_dictionary(con: duckdb.DuckDBPyConnection, desc: dict, fingerprint: str, run_id: str) -> DictionaryRecord:
    """Add a dictionary (or reset an unfinished one) with status 'caching' for `run_id`; returns its record.

    `desc` is `Dictionary.describe()`.
    """
    row = con.execute("SELECT dict_idx FROM dictionaries WHERE id = ?", [desc["id"]]).fetchone()
    if row is None:
        idx = con.execute("SELECT coalesce(max(dict_idx) + 1, 0) FROM dictionaries").fetchone()[0]
        con.execute(
            "INSERT INTO dictionaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'caching', NULL, NULL, NULL, NULL)",
            [
                idx,
                desc["id"],
                desc["kind"],
                desc["layer"],
                desc["hook_in"],
                desc["hook_out"],
                desc["d_in"],
                desc["d_sae"],
                desc["d_out"],
                desc["topk"],
                desc["source"],
                fingerprint,
                run_id,
            ],
        )
    else:
        idx = row[0]
        con.execute(
            "UPDATE dictionaries SET fingerprint = ?, run_id = ?, status = 'caching', activations_file = NULL, "
            "n_activations = NULL, file_bytes = NULL, finished_at = NULL, source = ? WHERE dict_idx = ?",
            [fingerprint, run_id, desc["source"], idx],
        )
    return _dictionary_record(
        con.execute(f"SELECT {_DICT_COLS} FROM dictionaries WHERE dict_idx = ?", [idx]).fetchone()
    )


def unfinished_runs(con: duckdb.DuckDBPyConnection) -> list[RunRecord]:
    """Cache runs that started but did not finish (killed, failed, or running now)."""
    return [r for r in runs(con) if r.status != "finished"]


def runs(con: duckdb.DuckDBPyConnection) -> list[RunRecord]:
    """Every cache run, oldest first, with its number of committed chunks."""
    rows = con.execute(
        """SELECT r.run_id, r.params, r.dictionary_ids, r.n_chunks, r.status,
                  (SELECT count(*) FROM cache_chunks c WHERE c.run_id = r.run_id)
           FROM cache_runs r ORDER BY r.started_at"""
    ).fetchall()
    return [RunRecord(r[0], json.loads(r[1]), list(r[2]), r[3], r[4], r[5]) for r in rows]


def start_run(
    con: duckdb.DuckDBPyConnection, run_id: str, params: dict, dictionary_ids: list[str], n_chunks: int
) -> None:
    """Record a new cache run (status 'running')."""
    con.execute(
        "INSERT INTO cache_runs VALUES (?, ?, ?, ?, 'running', now(), NULL)",
        [run_id, json.dumps(params, sort_keys=True), dictionary_ids, n_chunks],
    )


def discard_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Forget an unfinished run: its chunks, its run row, and its dictionaries that are not ready."""
    con.execute("DELETE FROM cache_chunks WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM cache_runs WHERE run_id = ?", [run_id])
    idx = [
        r[0]
        for r in con.execute(
            "SELECT dict_idx FROM dictionaries WHERE run_id = ? AND status <> 'ready'", [run_id]
        ).fetchall()
    ]
    for i in idx:
        con.execute("DELETE FROM latent_stats WHERE dict_idx = ?", [i])
        con.execute("DELETE FROM latent_top_tokens WHERE dict_idx = ?", [i])
        con.execute("DELETE FROM dictionaries WHERE dict_idx = ?", [i])


def committed_chunks(con: duckdb.DuckDBPyConnection, run_id: str) -> set[int]:
    """Chunk numbers of `run_id` whose activations are safely on disk."""
    return {r[0] for r in con.execute("SELECT chunk FROM cache_chunks WHERE run_id = ?", [run_id]).fetchall()}


def commit_chunk(con: duckdb.DuckDBPyConnection, run_id: str, chunk: int, n_rows: int) -> None:
    """Record that chunk `chunk` of `run_id` is written (idempotent)."""
    con.execute("DELETE FROM cache_chunks WHERE run_id = ? AND chunk = ?", [run_id, chunk])
    con.execute("INSERT INTO cache_chunks VALUES (?, ?, ?, now())", [run_id, chunk, n_rows])


def finish_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Mark a run finished."""
    con.execute("UPDATE cache_runs SET status = 'finished', finished_at = now() WHERE run_id = ?", [run_id])


def _list_array(values: np.ndarray, dtype: pa.DataType) -> pa.Array:
    """A list column from a 2-D array `[rows, width]`."""
    rows, width = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width)  # width 0: empty lists
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values).reshape(-1), type=dtype))


def store_latent_stats(
    con: duckdb.DuckDBPyConnection,
    dict_idx: int,
    stats: dict[str, np.ndarray],
    top_tokens: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Replace the statistics of dictionary `dict_idx`.

    `stats` holds arrays over latents `[d_sae]` (n_fires, frequency, max_activation, mean_activation,
    row_start) and `[d_sae, k]` (quantile_edges, hist_counts, top/bottom_output_tokens/logits);
    `top_tokens` is (latent, token, n) triples for `latent_top_tokens`.
    """
    d_sae = len(stats["n_fires"])
    con.execute("DELETE FROM latent_stats WHERE dict_idx = ?", [dict_idx])
    con.execute("DELETE FROM latent_top_tokens WHERE dict_idx = ?", [dict_idx])
    table = pa.table(
        {
            "dict_idx": pa.array(np.full(d_sae, dict_idx, dtype=np.int16)),
            "latent": pa.array(np.arange(d_sae, dtype=np.int32)),
            "n_fires": pa.array(stats["n_fires"].astype(np.int64)),
            "frequency": pa.array(stats["frequency"].astype(np.float64)),
            "max_activation": pa.array(stats["max_activation"].astype(np.float32)),
            "mean_activation": pa.array(stats["mean_activation"].astype(np.float32)),
            "quantile_edges": _list_array(stats["quantile_edges"].astype(np.float32), pa.float32()),
            "hist_counts": _list_array(stats["hist_counts"].astype(np.int32), pa.int32()),
            "row_start": pa.array(stats["row_start"].astype(np.int64)),
            "top_output_tokens": _list_array(stats["top_output_tokens"].astype(np.int32), pa.int32()),
            "top_output_logits": _list_array(stats["top_output_logits"].astype(np.float32), pa.float32()),
            "bottom_output_tokens": _list_array(stats["bottom_output_tokens"].astype(np.int32), pa.int32()),
            "bottom_output_logits": _list_array(stats["bottom_output_logits"].astype(np.float32), pa.float32()),
        }
    )
    con.register("_stats_in", table)
    try:
        con.execute("INSERT INTO latent_stats SELECT * FROM _stats_in")
    finally:
        con.unregister("_stats_in")
    lat, tok, n = top_tokens
    tt = pa.table(
        {
            "dict_idx": pa.array(np.full(len(lat), dict_idx, dtype=np.int16)),
            "latent": pa.array(np.asarray(lat, dtype=np.int32)),
            "token": pa.array(np.asarray(tok, dtype=np.int32)),
            "n": pa.array(np.asarray(n, dtype=np.int32)),
        }
    )
    con.register("_top_in", tt)
    try:
        con.execute("INSERT INTO latent_top_tokens SELECT * FROM _top_in ORDER BY token, latent")
    finally:
        con.unregister("_top_in")


def mark_dictionary_ready(
    con: duckdb.DuckDBPyConnection, dict_idx: int, activations_file: str, n_activations: int, file_bytes: int
) -> None:
    """Point dictionary `dict_idx` at its finished Parquet file and mark it 'ready'."""
    con.execute(
        "UPDATE dictionaries SET status = 'ready', activations_file = ?, n_activations = ?, file_bytes = ?, "
        "finished_at = now() WHERE dict_idx = ?",
        [activations_file, n_activations, file_bytes, dict_idx],
    )


def store_output_tokens(con: duckdb.DuckDBPyConnection, dict_idx: int, out: dict[str, np.ndarray]) -> None:
    """Set the output-token columns of dictionary `dict_idx`'s stats rows from `[d_sae, k]` arrays
    (top/bottom_output_tokens/logits; see `core.cache.stats.output_token_logits`)."""
    d_sae = len(out["top_output_tokens"])
    table = pa.table(
        {
            "latent": pa.array(np.arange(d_sae, dtype=np.int32)),
            "tt": _list_array(out["top_output_tokens"].astype(np.int32), pa.int32()),
            "tl": _list_array(out["top_output_logits"].astype(np.float32), pa.float32()),
            "bt": _list_array(out["bottom_output_tokens"].astype(np.int32), pa.int32()),
            "bl": _list_array(out["bottom_output_logits"].astype(np.float32), pa.float32()),
        }
    )
    con.register("_outputs_in", table)
    try:
        con.execute(
            "UPDATE latent_stats SET top_output_tokens = o.tt, top_output_logits = o.tl, "
            "bottom_output_tokens = o.bt, bottom_output_logits = o.bl "
            "FROM _outputs_in o WHERE latent_stats.dict_idx = ? AND latent_stats.latent = o.latent",
            [dict_idx],
        ).fetchall()
    finally:
        con.unregister("_outputs_in")


def output_tokens_stored(con: duckdb.DuckDBPyConnection, dict_idx: int) -> bool:
    """Whether dictionary `dict_idx`'s stats rows hold output tokens (False before `store_output_tokens`)."""
    rows = con.execute(
        "SELECT count(*) FROM latent_stats WHERE dict_idx = ? AND len(top_output_tokens) = 0", [dict_idx]
    ).fetchall()
    return rows[0][0] == 0


# ---------------------------------------------------------------------------------------------
# Reads (each opens its own short read session unless given a connection)


def workspace_summary(workspace: Path) -> dict:
    """Model, corpus slice, schema version, dictionaries and unfinished runs of a workspace, as plain JSON."""
    with session(workspace) as con:
        return {
            "path": str(Path(workspace)),
            "schema_version": _applied_version(con),
            "model": get_info(con, "model"),
            "corpus": get_info(con, "corpus"),
            "dictionaries": [d.__dict__ for d in dictionaries(con)],
            "runs": [r.__dict__ for r in runs(con)],
        }


def list_dictionaries(workspace: Path, ready_only: bool = False) -> list[DictionaryRecord]:
    """The dictionaries of a workspace (only those whose activations are complete if `ready_only`)."""
    with session(workspace) as con:
        out = dictionaries(con)
    return [d for d in out if d.status == "ready"] if ready_only else out


def dictionary_record(con: duckdb.DuckDBPyConnection, dictionary: str, ready: bool = True) -> DictionaryRecord:
    """The record of dictionary id `dictionary`; raises a clear error if absent (or not ready when `ready`)."""
    row = con.execute(f"SELECT {_DICT_COLS} FROM dictionaries WHERE id = ?", [dictionary]).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT id FROM dictionaries ORDER BY dict_idx").fetchall()]
        raise WorkspaceError(
            f"dictionary {dictionary!r} is not in this workspace; it has: {', '.join(known) or 'none'}"
        )
    rec = _dictionary_record(row)
    if ready and rec.status != "ready":
        raise WorkspaceError(
            f"dictionary {dictionary!r} is still being cached (run {rec.run_id}); its activations are not ready yet"
        )
    return rec


_STATS_COLS = (
    "latent, n_fires, frequency, max_activation, mean_activation, quantile_edges, hist_counts, row_start, "
    "top_output_tokens, top_output_logits, bottom_output_tokens, bottom_output_logits"
)


def dictionary_and_latent(
    con: duckdb.DuckDBPyConnection, dictionary: str, latent: int
) -> tuple[DictionaryRecord, LatentStatsRecord]:
    """A ready dictionary's record and one latent's statistics in one query (clear errors if either is missing)."""
    cols = (
        ", ".join(f"d.{c.strip()}" for c in _DICT_COLS.split(","))
        + ", "
        + ", ".join(f"s.{c.strip()}" for c in _STATS_COLS.split(","))
    )
    row = con.execute(
        f"SELECT {cols} FROM dictionaries d JOIN latent_stats s ON s.dict_idx = d.dict_idx "
        "WHERE d.id = ? AND s.latent = ? AND d.status = 'ready'",
        [dictionary, latent],
    ).fetchone()
    if row is None:
        rec = dictionary_record(con, dictionary)  # raises the specific error
        return rec, latent_stats(con, rec, latent)
    n = len(_DICT_COLS.split(","))
    rec = _dictionary_record(row[:n])
    return rec, _stats_record(rec.id, row[n:])


def _stats_record(dictionary: str, row: tuple) -> LatentStatsRecord:
    return LatentStatsRecord(
        dictionary,
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        np.asarray(row[5], dtype=np.float32),
        np.asarray(row[6], dtype=np.int64),
        row[7],
        list(row[8]),
        list(row[9]),
        list(row[10]),
        list(row[11]),
    )


def latent_stats(con: duckdb.DuckDBPyConnection, dictionary: DictionaryRecord, latent: int) -> LatentStatsRecord:
    """The stored statistics of one latent."""
    if not 0 <= latent < dictionary.d_sae:
        raise WorkspaceError(f"latent {latent} is out of range for {dictionary.id} (0..{dictionary.d_sae - 1})")
    row = con.execute(
        f"SELECT {_STATS_COLS} FROM latent_stats WHERE dict_idx = ? AND latent = ?", [dictionary.index, latent]
    ).fetchone()
    if row is None:
        raise WorkspaceError(f"no statistics for latent {latent} of {dictionary.id}; rerun the cache command")
    return _stats_record(dictionary.id, row)


def latent_stats_frame(workspace: Path, dictionary: str):  # -> pandas.DataFrame
    """All latents of a dictionary with frequency, max, mean and n_fires (one row per latent), as a DataFrame."""
    with session(workspace) as con:
        rec = dictionary_record(con, dictionary)
        return con.execute(
            "SELECT latent, n_fires, frequency, max_activation, mean_activation FROM latent_stats WHERE dict_idx = ? ORDER BY latent",
            [rec.index],
        ).df()


def all_context_tokens(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Every context's token ids `[n_contexts, ctx_len]` (int32)."""
    rel = con.execute("SELECT flatten(list(tokens ORDER BY context)), count(*) FROM contexts").fetchone()
    flat = np.asarray(rel[0] or [], dtype=np.int32)
    n = rel[1]
    return flat.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.int32)


def token_texts(con: duckdb.DuckDBPyConnection, token_ids: np.ndarray | list[int]) -> dict[int, str]:
    """Decoded text of each token id (from the vocab table)."""
    ids = sorted({int(t) for t in np.asarray(token_ids).reshape(-1)})
    if not ids:
        return {}
    rows = con.execute("SELECT token, text FROM vocab WHERE token IN (SELECT unnest(?::INTEGER[]))", [ids]).fetchall()
    return dict(rows)


def all_token_texts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Decoded text of every token id, indexed by id."""
    return [r[0] for r in con.execute("SELECT text FROM vocab ORDER BY token").fetchall()]


def tokens_for_text(con: duckdb.DuckDBPyConnection, text: str) -> list[int]:
    """Token ids whose decoded text equals `text`, or equals it after stripping spaces."""
    rows = con.execute(
        "SELECT token FROM vocab WHERE text = ? OR trim(text) = trim(?) ORDER BY token", [text, text]
    ).fetchall()
    return [r[0] for r in rows]


def top_activating_tokens(
    con: duckdb.DuckDBPyConnection, dict_idx: int, latent: int, limit: int = 10
) -> list[tuple[int, int]]:
    """(token, count) pairs: the tokens most often at the latent's highest activations."""
    rows = con.execute(
        "SELECT token, n FROM latent_top_tokens WHERE dict_idx = ? AND latent = ? ORDER BY n DESC, token LIMIT ?",
        [dict_idx, latent, limit],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


@dataclass(frozen=True)
class TokenMatch:
    """A latent whose highest activations fall on a token: how many of its top activations do."""

    dictionary: str
    latent: int
    token: int
    n_top: int
    frequency: float
    max_activation: float


def latents_by_token(
    con: duckdb.DuckDBPyConnection, token_ids: list[int], dictionary: str | None = None, limit: int = 50
) -> list[TokenMatch]:
    """Latents whose top activations are on any of `token_ids`, most such activations first."""
    if not token_ids:
        return []
    sql = """SELECT d.id, t.latent, t.token, t.n, s.frequency, s.max_activation
             FROM latent_top_tokens t
             JOIN dictionaries d ON d.dict_idx = t.dict_idx AND d.status = 'ready'
             JOIN latent_stats s ON s.dict_idx = t.dict_idx AND s.latent = t.latent
             WHERE t.token IN (SELECT unnest(?::INTEGER[]))"""
    params: list = [list(map(int, token_ids))]
    if dictionary is not None:
        sql += " AND d.id = ?"
        params.append(dictionary)
    sql += " ORDER BY t.n DESC, s.max_activation DESC LIMIT ?"
    params.append(limit)
    return [TokenMatch(*r) for r in con.execute(sql, params).fetchall()]


def cache_status(workspace: Path, timeout: float | None = None) -> list[RunRecord]:
    """Unfinished cache runs with their committed chunk counts (for a progress display while a job writes);
    `timeout`: how long to wait for the writer's lock (default READ_TIMEOUT_S)."""
    with session(workspace, timeout=timeout) as con:
        return unfinished_runs(con)


def dictionary_latent_arrays(con: duckdb.DuckDBPyConnection, dictionary: DictionaryRecord) -> dict[str, np.ndarray]:
    """Per-latent arrays of one dictionary, indexed by latent: n_fires, row_start, frequency, max_activation `[d_sae]`
    and quantile_edges `[d_sae, 11]` (zeros for latents without statistics)."""
    res = con.execute(
        "SELECT latent, n_fires, row_start, frequency, max_activation, quantile_edges FROM latent_stats WHERE dict_idx = ? ORDER BY latent",
        [dictionary.index],
    ).fetchnumpy()
    d = dictionary.d_sae
    lat = res["latent"].astype(np.int64)
    out = {
        "n_fires": np.zeros(d, np.int64),
        "row_start": np.zeros(d, np.int64),
        "frequency": np.zeros(d, np.float64),
        "max_activation": np.zeros(d, np.float32),
        "quantile_edges": np.zeros((d, 11), np.float32),
    }
    for k in ("n_fires", "row_start", "frequency", "max_activation"):
        out[k][lat] = np.asarray(res[k])
    if len(lat):
        out["quantile_edges"][lat] = np.stack([np.asarray(e, dtype=np.float32) for e in res["quantile_edges"]])
    return out
