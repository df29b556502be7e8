"""The LLM reply cache and usage log (written by core/llm/client.py only)."""

from __future__ import annotations

import json
from pathlib import Path

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
        unique = list(first.values())
        if unique:
            replies = pa.table(
                {
                    "key": pa.array([r["key"] for r in unique], pa.string()),
                    "model": pa.array([r["model"] for r in unique], pa.string()),
                    "request": pa.array([r["request"] for r in unique], pa.string()),
                    "text": pa.array([r["text"] for r in unique], pa.string()),
                    "finish_reason": pa.array([r["finish_reason"] for r in unique], pa.string()),
                    "logprobs": pa.array([_json_or_none(r["logprobs"]) for r in unique], pa.string()),
                    "prompt_tokens": pa.array([r["prompt_tokens"] for r in unique], pa.int32()),
                    "completion_tokens": pa.array([r["completion_tokens"] for r in unique], pa.int32()),
                    "cost": pa.array([r["cost"] for r in unique], pa.float64()),
                }
            )
            con.register("_replies_in", replies)
            try:
                con.execute(
                    "INSERT OR IGNORE INTO llm_responses SELECT key, model, request, text, finish_reason, logprobs, "
                    "prompt_tokens, completion_tokens, cost, now() FROM _replies_in"
                ).fetchall()  # consume the row count: DuckDB refuses a register() while a result is pending
            finally:
                con.unregister("_replies_in")
        if usage:
            cols = (
                "key",
                "model",
                "purpose",
                "dictionary",
                "latent",
                "cached",
                "prompt_tokens",
                "completion_tokens",
                "cost",
                "latency_s",
                "error",
            )
            table = pa.table(
                {
                    "key": pa.array([u["key"] for u in usage], pa.string()),
                    "model": pa.array([u["model"] for u in usage], pa.string()),
                    "purpose": pa.array([u["purpose"] for u in usage], pa.string()),
                    "dictionary": pa.array([u["dictionary"] for u in usage], pa.string()),
                    "latent": pa.array([u["latent"] for u in usage], pa.int32()),
                    "cached": pa.array([u["cached"] for u in usage], pa.bool_()),
                    "prompt_tokens": pa.array([u["prompt_tokens"] for u in usage], pa.int32()),
                    "completion_tokens": pa.array([u["completion_tokens"] for u in usage], pa.int32()),
                    "cost": pa.array([u["cost"] for u in usage], pa.float64()),
                    "latency_s": pa.array([u["latency_s"] for u in usage], pa.float64()),
                    "error": pa.array([u["error"] for u in usage], pa.string()),
                }
            )
            con.register("_usage_in", table)
            try:
                con.execute(
                    f"INSERT INTO llm_usage ({', '.join(cols)}, created_at) SELECT {', '.join(cols)}, now() FROM _usage_in"
                ).fetchall()
            finally:
                con.unregister("_usage_in")
        if marks:
            for mark in marks:
                set_info(con, mark, {"replies": len(unique), "usage": len(usage)})
            # Listed inside the transaction: a writer removes its file only after committing its mark,
            # so a mark is dropped only once its file is gone for good.
            folder = Path(journals[0]).parent
            present = [JOURNAL_MARK + p.name for p in folder.glob("*")] if folder.exists() else []
            con.execute(
                "DELETE FROM workspace_info WHERE starts_with(key, ?) AND key NOT IN (SELECT unnest(?::VARCHAR[]))",
                [JOURNAL_MARK, present],
            ).fetchall()
    return True


def llm_usage_summary(workspace: Path, by: str = "purpose"):  # -> pandas.DataFrame
    """LLM calls, cache hits, tokens and cost grouped by `by` ('purpose' | 'model' | 'latent': per dictionary and latent)."""
    group = {"purpose": "model, purpose", "model": "model", "latent": "dictionary, latent"}[by]
    with session(workspace) as con:
        return con.execute(
            f"""SELECT {group}, count(*) AS calls, sum(cached::INT) AS cached, sum(prompt_tokens) AS prompt_tokens,
                       sum(completion_tokens) AS completion_tokens, sum(cost) AS cost, sum((error IS NOT NULL)::INT) AS errors
                FROM llm_usage GROUP BY {group} ORDER BY {group}"""
        ).df()
