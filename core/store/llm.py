"""The LLM reply cache and usage log (written by core/llm/client.py only)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from core.store.schema import _json_or_none, session, set_info


def read_llm_responses(workspace: Path, keys: list[str]) -> dict[str, dict]:
    """Cached LLM replies by key (only keys that are stored)."""
    if not keys:
        return {}
    with session(workspace) as con:
        rows = con.execute(
            "SELECT key, model, text, finish_reason, logprobs, prompt_tokens, completion_tokens, cost FROM llm_responses "
            "WHERE key IN (SELECT unnest(?::VARCHAR[]))",
            [list(keys)],
        ).fetchall()
    names = ("key", "model", "text", "finish_reason", "logprobs", "prompt_tokens", "completion_tokens", "cost")
    out = {}
    for r in rows:
        d = dict(zip(names, r, strict=True))
        d["logprobs"] = json.loads(d["logprobs"]) if d["logprobs"] else None
        out[d["key"]] = d
    return out


JOURNAL_MARK = "llm-journal/"  # workspace_info key prefix: a core.llm.client write-ahead file whose rows are stored


REPLY_COLUMNS: dict[str, pa.DataType] = {
    "key": pa.string(),
    "model": pa.string(),
    "request": pa.string(),
    "text": pa.string(),
    "finish_reason": pa.string(),
    "logprobs": pa.string(),  # JSON
    "prompt_tokens": pa.int32(),
    "completion_tokens": pa.int32(),
    "cost": pa.float64(),
}
USAGE_COLUMNS: dict[str, pa.DataType] = {
    "key": pa.string(),
    "model": pa.string(),
    "purpose": pa.string(),
    "dictionary": pa.string(),
    "latent": pa.int32(),
    "cached": pa.bool_(),
    "prompt_tokens": pa.int32(),
    "completion_tokens": pa.int32(),
    "cost": pa.float64(),
    "latency_s": pa.float64(),
    "error": pa.string(),
}


def _rows_table(rows: list[dict], columns: dict[str, pa.DataType]) -> pa.Table:
    """`rows` (dicts with at least `columns`' keys) as an Arrow table of those columns and types."""
    return pa.table({name: pa.array([r[name] for r in rows], dtype) for name, dtype in columns.items()})


def _insert_table(con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str) -> None:
    """Run `sql`, which reads the registered view `_rows_in`, over `table`."""
    con.register("_rows_in", table)
    try:
        con.execute(sql).fetchall()  # consume the row count: DuckDB refuses a register() while a result is pending
    finally:
        con.unregister("_rows_in")


def write_llm_records(
    workspace: Path, responses: list[dict], usage: list[dict], journals: list[Path] | None = None
) -> bool:
    """Store new cached replies (ignoring keys already stored) and usage rows, in one transaction.

    `journals`: the write-ahead files of `core.llm.client` these rows were read from. The same transaction
    marks them stored (`workspace_info` key `llm-journal/NAME`), so a file left behind by a crash
    between this commit and its removal is never stored twice: if any of them is marked already,
    nothing is written and False is returned. Marks of files that no longer exist are dropped.
    Returns True when the rows were written.
    """
    with session(workspace, write=True) as con:
        marks = [JOURNAL_MARK + Path(p).name for p in journals or []]
        if marks:
            stored = con.execute(
                "SELECT count(*) FROM workspace_info WHERE key IN (SELECT unnest(?::VARCHAR[]))", [marks]
            ).fetchall()[0][0]
            if stored:
                return False
        first: dict[str, dict] = {}
        for r in responses:
            first.setdefault(r["key"], r)
        unique = [{**r, "logprobs": _json_or_none(r["logprobs"])} for r in first.values()]
        if unique:
            cols = ", ".join(REPLY_COLUMNS)
            _insert_table(
                con,
                _rows_table(unique, REPLY_COLUMNS),
                f"INSERT OR IGNORE INTO llm_responses SELECT {cols}, now() FROM _rows_in",
            )
        if usage:
            cols = ", ".join(USAGE_COLUMNS)
            _insert_table(
                con,
                _rows_table(usage, USAGE_COLUMNS),
                f"INSERT INTO llm_usage ({cols}, created_at) SELECT {cols}, now() FROM _rows_in",
            )
        if marks:
            _mark_journals_stored(con, marks, Path(journals[0]).parent, len(unique), len(usage))
    return True


def _mark_journals_stored(
    con: duckdb.DuckDBPyConnection, marks: list[str], folder: Path, n_replies: int, n_usage: int
) -> None:
    """Mark journal files stored, and drop the marks of files no longer in `folder`."""
    for mark in marks:
        set_info(con, mark, {"replies": n_replies, "usage": n_usage})
    # Listed inside the transaction: a writer removes its file only after committing its mark,
    # so a mark is dropped only once its file is gone for good.
    present = [JOURNAL_MARK + p.name for p in folder.glob("*")] if folder.exists() else []
    con.execute(
        "DELETE FROM workspace_info WHERE starts_with(key, ?) AND key NOT IN (SELECT unnest(?::VARCHAR[]))",
        [JOURNAL_MARK, present],
    ).fetchall()


def llm_usage_summary(workspace: Path, by: str = "purpose"):  # -> pandas.DataFrame
    """LLM calls, cache hits, tokens and cost grouped by `by` ('purpose' | 'model' | 'latent': per dictionary and latent)."""
    group = {"purpose": "model, purpose", "model": "model", "latent": "dictionary, latent"}[by]
    with session(workspace) as con:
        return con.execute(
            f"""SELECT {group}, count(*) AS calls, sum(cached::INT) AS cached, sum(prompt_tokens) AS prompt_tokens,
                       sum(completion_tokens) AS completion_tokens, sum(cost) AS cost, sum((error IS NOT NULL)::INT) AS errors
                FROM llm_usage GROUP BY {group} ORDER BY {group}"""
        ).df()
