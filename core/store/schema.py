"""Workspace files, sessions and schema migrations; helpers every table module shares."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from core.errors import UserError
from core.locks import LockHolder, holder_record, lock_file_holder, process_command  # noqa: F401 (core.store exports them)


class WorkspaceError(UserError):
    """A workspace is missing, locked, corrupt, or does not fit the command (printed without a traceback)."""


class WorkspaceLockedError(WorkspaceError):
    """Another process held the workspace file (or a job's lock on it) for longer than the caller waits;
    `holder` says which process, when it can be found."""

    def __init__(self, message: str, holder: LockHolder | None = None):
        super().__init__(message)
        self.holder = holder


class WorkspaceDamagedError(WorkspaceError):
    """The workspace file cannot be read: truncated, corrupt, or not a DuckDB file. Nothing in it is changed."""

    def __init__(self, message: str, path: Path | None = None, detail: str = ""):
        super().__init__(message)
        self.path = path
        self.detail = detail  # what is wrong with the file, e.g. "the file is cut short: ..."


class WorkspaceOutdatedError(WorkspaceError):
    """The workspace lacks schema migrations this code has (`migrate` applies them)."""


@dataclass(frozen=True)
class Migration:
    """One schema step: `version` (1, 2, ...), a name, and the statements that apply it."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "activation cache",
        (
            """CREATE TABLE workspace_info (key VARCHAR PRIMARY KEY, value JSON NOT NULL)""",
            """CREATE TABLE vocab (token INTEGER PRIMARY KEY, text VARCHAR NOT NULL)""",
            """CREATE TABLE contexts (
                context INTEGER PRIMARY KEY,
                doc VARCHAR NOT NULL,          -- corpus document of the context's first token
                stream_offset BIGINT NOT NULL,  -- offset of that token in the concatenated corpus stream
                tokens INTEGER[] NOT NULL       -- [ctx_len] token ids, BOS first
            )""",
            """CREATE TABLE dictionaries (
                dict_idx SMALLINT PRIMARY KEY,
                id VARCHAR NOT NULL UNIQUE,     -- e.g. resid:blocks.0.hook_resid_pre
                kind VARCHAR NOT NULL,
                layer SMALLINT NOT NULL,
                hook_in VARCHAR NOT NULL,
                hook_out VARCHAR NOT NULL,
                d_in INTEGER NOT NULL,
                d_sae INTEGER NOT NULL,
                d_out INTEGER NOT NULL,
                topk INTEGER,
                source VARCHAR,
                fingerprint VARCHAR NOT NULL,   -- hash of the weights the activations came from
                run_id VARCHAR NOT NULL,
                status VARCHAR NOT NULL,        -- 'caching' | 'ready'
                activations_file VARCHAR,       -- relative to the data folder
                n_activations BIGINT,
                file_bytes BIGINT,
                finished_at TIMESTAMP
            )""",
            """CREATE TABLE cache_runs (
                run_id VARCHAR PRIMARY KEY,
                params JSON NOT NULL,
                dictionary_ids VARCHAR[] NOT NULL,
                n_chunks INTEGER NOT NULL,
                status VARCHAR NOT NULL,        -- 'running' | 'finished'
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP
            )""",
            """CREATE TABLE cache_chunks (
                run_id VARCHAR NOT NULL,
                chunk INTEGER NOT NULL,
                n_rows BIGINT NOT NULL,
                committed_at TIMESTAMP NOT NULL,
                PRIMARY KEY (run_id, chunk)
            )""",
            """CREATE TABLE latent_stats (
                dict_idx SMALLINT NOT NULL,
                latent INTEGER NOT NULL,
                n_fires BIGINT NOT NULL,           -- tokens where the latent is > 0
                frequency DOUBLE NOT NULL,         -- n_fires / tokens cached
                max_activation FLOAT NOT NULL,
                mean_activation FLOAT NOT NULL,    -- mean over firing tokens
                quantile_edges FLOAT[] NOT NULL,   -- [11] deciles of non-zero activations: min, q10..q90, max
                hist_counts INTEGER[] NOT NULL,    -- equal-width bins over (0, max]
                row_start BIGINT NOT NULL,         -- first row of the latent in its Parquet file
                top_output_tokens INTEGER[] NOT NULL,
                top_output_logits FLOAT[] NOT NULL,
                bottom_output_tokens INTEGER[] NOT NULL,
                bottom_output_logits FLOAT[] NOT NULL
            )""",
            """CREATE TABLE latent_top_tokens (   -- tokens at each latent's highest activations
                dict_idx SMALLINT NOT NULL,
                latent INTEGER NOT NULL,
                token INTEGER NOT NULL,
                n INTEGER NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "explanations and scores",
        (
            """CREATE TABLE explanations (
                explanation_id VARCHAR PRIMARY KEY,  -- hash of everything that defines it (reruns find it)
                dictionary VARCHAR NOT NULL,         -- dictionary id, e.g. resid:blocks.0.hook_resid_pre
                latent INTEGER NOT NULL,             -- for baseline = 'random-latent': the random direction's index
                explainer VARCHAR NOT NULL,          -- litellm model id, or a baseline name like baseline:token-stats
                is_baseline BOOLEAN NOT NULL,        -- true for every baseline row (baseline explainer or baseline kind)
                baseline VARCHAR,                    -- NULL | 'random-explanation' | 'random-latent'
                strategy VARCHAR NOT NULL,           -- example sampling: 'top' | 'random' | 'quantile'
                text VARCHAR,                        -- NULL when status = 'failed'
                prompt_version VARCHAR NOT NULL,
                params JSON NOT NULL,
                status VARCHAR NOT NULL,             -- 'ok' | 'failed'
                error VARCHAR,
                raw VARCHAR,                         -- the explainer's reply as received
                transient BOOLEAN NOT NULL DEFAULT false,  -- failed on rate limits/timeouts: a rerun retries it
                source_explanation_id VARCHAR,       -- random-explanation: whose text was borrowed
                created_at TIMESTAMP NOT NULL
            )""",
            "CREATE INDEX explanations_latent ON explanations (dictionary, latent)",
            """CREATE TABLE scores (
                score_id VARCHAR PRIMARY KEY,        -- hash of (explanation, scorer, scorer_model, prompt_version, params)
                explanation_id VARCHAR NOT NULL,
                scorer VARCHAR NOT NULL,             -- detection | fuzzing | simulation | surprisal | embedding | intervention
                scorer_model VARCHAR NOT NULL,       -- litellm id, or a judge/LM name like judge:minilm-similarity
                value DOUBLE,                        -- balanced accuracy / AUROC / correlation; NULL when failed
                prompt_version VARCHAR NOT NULL,
                params JSON NOT NULL,
                status VARCHAR NOT NULL,             -- 'ok' | 'failed'
                error VARCHAR,
                failures JSON,                       -- [{prompt, error, raw}] of unusable replies
                transient BOOLEAN NOT NULL DEFAULT false,
                n_examples INTEGER NOT NULL,
                created_at TIMESTAMP NOT NULL
            )""",
            "CREATE INDEX scores_explanation ON scores (explanation_id)",
            """CREATE TABLE score_examples (
                score_id VARCHAR NOT NULL,
                example INTEGER NOT NULL,            -- index within the score
                decile SMALLINT NOT NULL,            -- 1..10 activating; 0 non-activating (and intervention rows)
                kind VARCHAR NOT NULL,               -- activating | random-negative | hard-negative | intervened | clean | other-latent
                prediction DOUBLE,                   -- the scorer's prediction; NULL if its reply was unusable
                truth DOUBLE NOT NULL,               -- 1/0 for classifiers; the target the prediction is scored against
                context INTEGER,                     -- the example's window in the cached contexts (NULL for generated text)
                start INTEGER,
                length SMALLINT,
                activation DOUBLE,                   -- the latent's largest activation in the window
                detail JSON                          -- scorer-specific extras (e.g. simulated per-token values, continuation text)
            )""",
            """CREATE TABLE llm_responses (
                key VARCHAR PRIMARY KEY,             -- sha256 of (model, messages, params without connection settings)
                model VARCHAR NOT NULL,
                request JSON NOT NULL,               -- model, messages and params; never API keys
                text VARCHAR,
                finish_reason VARCHAR,
                logprobs JSON,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cost DOUBLE,                         -- USD when litellm knows the price, else NULL
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE llm_usage (               -- one row per call made through core.llm.client (cache hits included, cost 0)
                key VARCHAR,
                model VARCHAR NOT NULL,
                purpose VARCHAR,                     -- explain | detection | fuzzing | simulation | ...
                dictionary VARCHAR,
                latent INTEGER,
                cached BOOLEAN NOT NULL,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cost DOUBLE,
                latency_s DOUBLE,
                error VARCHAR,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE explanation_embeddings (  -- for semantic search over explanations
                explanation_id VARCHAR NOT NULL,
                model VARCHAR NOT NULL,               -- e.g. all-MiniLM-L6-v2
                vector FLOAT[] NOT NULL,              -- unit norm
                PRIMARY KEY (explanation_id, model)
            )""",
            """CREATE TABLE window_embeddings (        -- example windows embedded once, reused by every latent
                model VARCHAR NOT NULL,
                context INTEGER NOT NULL,
                start INTEGER NOT NULL,
                length SMALLINT NOT NULL,
                vector FLOAT[] NOT NULL,              -- unit norm
                PRIMARY KEY (model, context, start, length)
            )""",
        ),
    ),
    Migration(
        3,
        "circuits",
        (
            """CREATE TABLE circuits (            -- a named circuit: one traced prompt and its versions
                name VARCHAR PRIMARY KEY,
                prompt VARCHAR NOT NULL,
                target JSON NOT NULL,              -- core.circuits.saved.target_to_json: what was traced
                target_label VARCHAR NOT NULL,     -- the target node's id, e.g. logit@20:')'-'.'
                model VARCHAR NOT NULL,            -- the model it was traced on, e.g. 'default'
                method VARCHAR NOT NULL,           -- e.g. 'hierarchical'
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE circuit_versions (    -- version 1 is the traced graph; later ones pruned/annotated copies
                name VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                parent_version INTEGER,            -- the version it was edited from (NULL for 1)
                graph JSON NOT NULL,               -- core.tracing.graph.graph_to_json of this version's graph
                pruning JSON NOT NULL,             -- core.circuits.saved.Pruning relative to version 1
                annotation_text VARCHAR,           -- the circuit-level annotation / summary
                annotation_author VARCHAR,
                faithfulness JSON,                 -- FaithfulnessResult.to_json of this version's latents
                created_by VARCHAR NOT NULL,       -- 'hand' | litellm model id
                note VARCHAR NOT NULL,
                n_nodes INTEGER NOT NULL,
                n_edges INTEGER NOT NULL,
                n_latents INTEGER NOT NULL,
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (name, version)
            )""",
            """CREATE TABLE circuit_node_annotations (
                name VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                node_id VARCHAR NOT NULL,          -- core.tracing.nodes node id, e.g. transcoder.2/88@5
                text VARCHAR NOT NULL,
                author VARCHAR NOT NULL,           -- 'hand' | litellm model id
                PRIMARY KEY (name, version, node_id)
            )""",
        ),
    ),
    Migration(
        4,
        "analysis",
        (
            """CREATE TABLE analysis_results (    -- one row per analysis and unit group; a rerun replaces it
                name VARCHAR NOT NULL,             -- distributions | deciles | spearman | units
                units VARCHAR NOT NULL,            -- which units' scores: latents | neurons | top-k neurons | all
                params JSON NOT NULL,
                result JSON NOT NULL,              -- core.analysis.analyses result dataclass as JSON
                n_latents INTEGER NOT NULL,
                inputs VARCHAR NOT NULL,           -- fingerprint of the scores it was computed from
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (name, units)
            )""",
            """CREATE TABLE overlap_results (     -- Hungarian overlap of two dictionaries of one kind
                overlap_id VARCHAR PRIMARY KEY,    -- similarity:dict_a~dict_b (a rerun replaces it)
                similarity VARCHAR NOT NULL,       -- decoder | explanation
                kind VARCHAR NOT NULL,
                dict_a VARCHAR NOT NULL,
                dict_b VARCHAR NOT NULL,
                layer_a SMALLINT NOT NULL,
                layer_b SMALLINT NOT NULL,
                n_a INTEGER NOT NULL,
                n_b INTEGER NOT NULL,
                n_matched INTEGER NOT NULL,
                mean_similarity DOUBLE NOT NULL,
                frobenius DOUBLE NOT NULL,         -- <A, P B>_F / (||A||_F ||B||_F)
                method VARCHAR NOT NULL,           -- dense | sparse
                seconds DOUBLE NOT NULL,
                params JSON NOT NULL,              -- fingerprints of the inputs, k, explainer/strategy/embedding model
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE overlap_pairs (
                overlap_id VARCHAR NOT NULL,
                latent_a INTEGER NOT NULL,
                latent_b INTEGER NOT NULL,
                similarity FLOAT NOT NULL
            )""",
        ),
    ),
    Migration(
        5,
        "steering results",
        (
            """CREATE TABLE circuit_steering (    -- steering runs saved with a circuit version
                name VARCHAR NOT NULL,             -- the circuit
                version INTEGER NOT NULL,          -- the circuit version it was saved with
                steering_id INTEGER NOT NULL,      -- 1, 2, ... within (name, version)
                interventions JSON NOT NULL,       -- [core.tracing.steering.Intervention.to_json]
                attention VARCHAR NOT NULL,        -- frozen | recomputed
                n_tokens INTEGER NOT NULL,         -- length of the greedy continuation
                result JSON NOT NULL,              -- core.tracing.steering.SteeringResult.to_json (before and after)
                created_by VARCHAR NOT NULL,       -- 'user' (the app) | 'cli'
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (name, version, steering_id)
            )""",
        ),
    ),
)


SCHEMA_VERSION = max(m.version for m in MIGRATIONS)


READ_TIMEOUT_S = 20.0


WRITE_TIMEOUT_S = 120.0


_instance: duckdb.DuckDBPyConnection | None = None


_instance_lock = threading.RLock()


_alias_ids = itertools.count()


def data_dir(workspace: Path) -> Path:
    """The folder of a workspace's bulk files: `NAME.duckdb` -> `NAME.duckdb.data/`."""
    return Path(str(Path(workspace)) + ".data")


def _db() -> duckdb.DuckDBPyConnection:
    global _instance
    if _instance is None:
        # One thread: sessions run small queries, and on a busy machine a query that waits for a
        # second worker thread is what makes latency spike.
        _instance = duckdb.connect(":memory:", config={"threads": 1, "memory_limit": "2GB"})
    return _instance


# ---------------------------------------------------------------------------------------------
# Who holds a lock: a page or command that meets one says which process and what to do at once.


def _duckdb_lock_holder(message: str) -> LockHolder | None:
    """The process named by DuckDB's "Conflicting lock is held in PROGRAM (PID N)" message."""
    match = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    if not match:
        return None
    pid = int(match.group(2))
    return LockHolder(pid, process_command(pid) or match.group(1))


def _intent_path(path: Path) -> Path:
    return data_dir(path) / "write-intent"


INTENT_FRESH_S = 3.0  # a write-intent flag older than this is a dead writer's and is ignored


def _wait_for_waiting_writer(intent: Path, max_wait: float) -> None:
    """Readers step aside while a writer waits for the file, so a busy reader can't starve a cache job."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        try:
            age = time.time() - intent.stat().st_mtime
        except FileNotFoundError:
            return
        if age > INTENT_FRESH_S:
            return
        time.sleep(0.005)


def _is_lock_error(msg: str) -> bool:
    return "Could not set lock" in msg or "Conflicting lock" in msg


# What DuckDB says when a file's bytes are not a database it can read: cut short, checksum failures, garbage.
_DAMAGE_SIGNS = (
    "Could not read enough bytes",
    "Corrupt database file",
    "checksum",
    "not a valid DuckDB database",
    "Serialization Error",
    "Failed to deserialize",
)


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.SerializationException) or any(s in str(exc) for s in _DAMAGE_SIGNS)


def _damaged(path: Path, detail: str) -> WorkspaceDamagedError:
    """The one message for an unreadable workspace: which file, what is wrong, that nothing was changed, the way out."""
    return WorkspaceDamagedError(
        f"{path} is not a readable DuckDB workspace: {detail}. Nothing in it was changed. "
        f"Set it aside (move or rename the file and its {data_dir(path).name} folder; keep them if they hold "
        f"results you want to recover) and rebuild it with `python -m core cache --workspace {path} ...`, "
        "or use another workspace.",
        path,
        detail,
    )


def _duckdb_detail(path: Path, exc: BaseException) -> str:
    text = str(exc).strip()
    msg = re.sub(r"^[A-Za-z ]*Error: ", "", text.splitlines()[0]) if text else type(exc).__name__
    named = re.search(r'"([^"]+)"', msg)
    if named and Path(named.group(1)).resolve() != path:  # e.g. an activations file in its data folder
        return f"its file {named.group(1)} is damaged or missing (DuckDB says: {msg})"
    return f"damaged, or another kind of file (DuckDB says: {msg})"


def _check_intact(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    """Refuse a workspace file cut short (by a full disk or an interrupted copy): one whose tables have
    blocks beyond its end.

    DuckDB reads a block only when a query needs it, so a truncated file opens and then fails query by
    query; this finds it at once, from the tables' storage metadata (tens of ms, no data read). Skipped
    while a write-ahead log is pending (its blocks can lie beyond the last checkpoint's end).
    """
    if Path(str(path) + ".wal").exists():
        return
    block_size, used = con.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = ?", [alias]
    ).fetchone() or (0, 0)
    if not block_size:
        return
    last = -1
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [alias]).fetchall()
    for (table,) in tables:
        qualified = f'{alias}."{table.replace(chr(34), chr(34) * 2)}"'
        row = con.execute(
            f"SELECT max(block_id) FROM pragma_storage_info('{_sql_str(qualified)}') WHERE block_id >= 0"
        ).fetchone()
        if row and row[0] is not None:
            last = max(last, int(row[0]))
    size = path.stat().st_size
    have = max(0, size - DUCKDB_HEADER_BYTES) // int(block_size)
    need = max(last + 1, int(used))
    if have < need:
        expected = DUCKDB_HEADER_BYTES + need * int(block_size)
        raise _damaged(
            path,
            f"the file is cut short: it has {size:,} bytes but its tables need at least {expected:,} "
            "(e.g. a copy that was interrupted, or a disk that filled up)",
        )


DUCKDB_HEADER_BYTES = 3 * 4096  # DuckDB's main header and its two database headers precede the blocks


def _attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str, read_only: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    mode = " (READ_ONLY)" if read_only else ""
    intent = _intent_path(path)
    flagged = False
    try:
        while True:
            if read_only:
                _wait_for_waiting_writer(intent, max_wait=min(INTENT_FRESH_S, max(0.0, deadline - time.monotonic())))
            try:
                con.execute(f"ATTACH '{_sql_str(str(path))}' AS {alias}{mode}")
                return
            except duckdb.IOException as exc:
                msg = str(exc)
                if _is_lock_error(msg) and time.monotonic() < deadline:
                    if not read_only:
                        intent.parent.mkdir(parents=True, exist_ok=True)
                        intent.write_text(str(os.getpid()))  # (re)touch: fresh while we wait
                        flagged = True
                    time.sleep(delay)
                    delay = min(delay * 2, 0.02 if not read_only else 0.1)
                    continue
                if _is_lock_error(msg):
                    holder = _duckdb_lock_holder(msg)
                    who = holder.describe() if holder else "another process"
                    todo = holder.what_to_do() if holder else "wait for it to finish or stop it"
                    raise WorkspaceLockedError(
                        f"workspace {path} is locked by {who}, which did not let go within {timeout:g} s "
                        f"(a cache job holds the file only briefly). {todo[0].upper()}{todo[1:]}, then try again.",
                        holder,
                    ) from exc
                if _is_damage(exc):
                    raise _damaged(path, _duckdb_detail(path, exc)) from exc
                raise WorkspaceError(f"cannot open workspace {path}: {msg}; nothing in it was changed") from exc
            except duckdb.Error as exc:
                if _is_damage(exc):
                    raise _damaged(path, _duckdb_detail(path, exc)) from exc
                raise WorkspaceError(f"cannot open workspace {path}: {exc}; nothing in it was changed") from exc
    finally:
        if flagged:
            intent.unlink(missing_ok=True)


def _sql_str(s: str) -> str:
    return s.replace("'", "''")


@contextmanager
def session(workspace: Path, write: bool = False, timeout: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short connection to `workspace` with its tables as the default schema.

    A write session is one transaction (committed on exit, rolled back on error) and first applies
    missing migrations; it creates the file if needed. A read session is read-only and fails if the
    file does not exist. Sessions are serialised within a process; don't nest them.
    """
    path = Path(workspace).resolve()
    if not write and not path.exists():
        raise WorkspaceError(
            f"workspace {path} does not exist; build it with `python -m core cache --workspace {workspace} ...`"
        )
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
    timeout = timeout if timeout is not None else (WRITE_TIMEOUT_S if write else READ_TIMEOUT_S)
    with _instance_lock:
        con = _db().cursor()
        alias = f"ws{next(_alias_ids)}"
        try:
            _attach(con, path, alias, read_only=not write, timeout=timeout)
            try:
                _ensure_intact(con, path, alias)  # before anything is read from, or written into, a damaged file
                con.execute(f"USE {alias}")
                if write:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        _migrate(con)
                        yield con
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                else:
                    stamp = _file_stamp(path)
                    if _checked.get(str(path)) != stamp:
                        _check_readable(con, path)
                        _checked[str(path)] = stamp
                    yield con
            finally:
                con.execute("USE memory")
                con.execute(f"DETACH {alias}")
            if write:  # what this session wrote was written by DuckDB into a file found intact
                _intact[str(path)] = _file_stamp(path)
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.IOException) and "No space left" in str(exc):
                raise WorkspaceError(
                    f"disk full while writing workspace {path}; the last transaction was rolled back, nothing stored was changed"
                ) from exc
            if isinstance(exc, duckdb.FatalException):
                _reset_instance()  # DuckDB invalidates an instance after a fatal error: the next session starts a new one
            if _is_damage(exc):  # a query met a damaged block (found only when read)
                raise _damaged(path, _duckdb_detail(path, exc)) from exc
            raise
        finally:
            con.close()


def _reset_instance() -> None:
    global _instance
    with _instance_lock:
        _instance = None


_checked: dict[str, tuple[int, int, int]] = {}  # path -> file stamp at the last successful schema check


_intact: dict[str, tuple[int, int, int]] = {}  # path -> file stamp at the last check that it is not cut short


def _ensure_intact(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    stamp = _file_stamp(path)
    if _intact.get(str(path)) != stamp:
        _check_intact(con, path, alias)
        _intact[str(path)] = stamp


def _file_stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _applied_versions(con: duckdb.DuckDBPyConnection) -> set[int] | None:
    """The migration versions recorded in the attached workspace (None if it has no schema_migrations table)."""
    has = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = 'schema_migrations'"
    ).fetchall()[0][0]  # fetchall: a half-fetched result would block a following con.register()
    if not has:
        return None
    return {r[0] for r in con.execute("SELECT version FROM schema_migrations").fetchall()}


def _applied_version(con: duckdb.DuckDBPyConnection) -> int | None:
    versions = _applied_versions(con)
    return None if versions is None else max(versions, default=0)


def _missing_migrations(applied: set[int]) -> list[Migration]:
    # By set, not by maximum: migrations are numbered by feature and may land out of order, so a
    # workspace already at v3 must still get v2 when v2 lands later.
    return [m for m in MIGRATIONS if m.version not in applied]


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    applied = _applied_versions(con)
    if applied is None:
        n_tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchone()[0]
        if n_tables:
            raise WorkspaceError(
                "this DuckDB file has tables but is not an SAE Circuit Explorer workspace; use another path"
            )
        con.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        applied = set()
    unknown = applied - {m.version for m in MIGRATIONS}
    if unknown:
        raise WorkspaceError(
            f"workspace schema v{max(applied)} is newer than this code (v{SCHEMA_VERSION}); update the code"
        )
    for m in _missing_migrations(applied):
        for stmt in m.statements:
            con.execute(stmt)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [m.version, m.name])


def _check_readable(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    applied = _applied_versions(con)
    if applied is None:
        raise WorkspaceError(f"{path} is not an SAE Circuit Explorer workspace (no schema_migrations table)")
    version = max(applied, default=0)
    if applied - {m.version for m in MIGRATIONS}:
        raise WorkspaceError(
            f"workspace {path} has schema v{version}, newer than this code (v{SCHEMA_VERSION}); update the code"
        )
    missing = _missing_migrations(applied)
    if missing:
        raise WorkspaceOutdatedError(
            f"workspace {path} has schema v{version} without migration(s) {', '.join(str(m.version) for m in missing)}; "
            f"this code needs v{SCHEMA_VERSION}. Upgrade it with `python -m core workspace-info --workspace {path} --migrate`"
        )


def migrate(workspace: Path, timeout: float | None = None) -> int:
    """Apply missing migrations to an existing workspace; returns the schema version. `timeout`: how long to
    wait for another process's lock on the file (default WRITE_TIMEOUT_S)."""
    if not Path(workspace).exists():
        raise WorkspaceError(f"workspace {workspace} does not exist")
    with session(workspace, write=True, timeout=timeout) as con:
        return _applied_version(con) or 0


def check_workspace(workspace: Path, timeout: float = READ_TIMEOUT_S) -> None:
    """Open `workspace` read-only once, waiting at most `timeout` s for another process's lock. Raises
    WorkspaceError (a subclass says which) if it is missing, locked, damaged (WorkspaceDamagedError), not a
    workspace, or made by older code (WorkspaceOutdatedError); nothing is written."""
    with session(workspace, timeout=timeout):
        pass


# ---------------------------------------------------------------------------------------------
# Writes (each takes an open write session)


def get_info(con: duckdb.DuckDBPyConnection, key: str) -> dict | None:
    """The JSON value stored under `key` in workspace_info, or None."""
    row = con.execute("SELECT value FROM workspace_info WHERE key = ?", [key]).fetchone()
    return json.loads(row[0]) if row else None


def set_info(con: duckdb.DuckDBPyConnection, key: str, value: dict) -> None:
    """Store `value` (JSON) under `key` in workspace_info, replacing any previous value."""
    con.execute("DELETE FROM workspace_info WHERE key = ?", [key])
    con.execute("INSERT INTO workspace_info VALUES (?, ?)", [key, json.dumps(value)])


def _json_or_none(v) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True)


def _insert_arrow(con: duckdb.DuckDBPyConnection, table_name: str, columns: str, data: pa.Table) -> None:
    name = f"_in_{table_name}"
    con.register(name, data)
    try:
        con.execute(f"INSERT INTO {table_name} ({columns}) SELECT {columns} FROM {name}")
    finally:
        con.unregister(name)


def _equal_filters(**columns) -> tuple[str, list]:
    """(" AND col = ?" clauses, their arguments) for the columns given a value (None: no filter)."""
    chosen = {c: v for c, v in columns.items() if v is not None}
    return "".join(f" AND {c} = ?" for c in chosen), list(chosen.values())
