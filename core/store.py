"""The workspace store: the one module that speaks SQL.

A workspace is a DuckDB file `NAME.duckdb` plus a sibling folder `NAME.duckdb.data/` for bulk files
(see `core.activation_files`). The DuckDB file holds the catalog and every table a page joins:
which model, corpus slice and dictionaries built it, the contexts (token ids), the vocabulary,
per-latent statistics, the cache runs and their committed chunks. Sparse activations live in one
Parquet file per dictionary in the data folder, sorted by latent, which DuckDB also reads.

Concurrency. DuckDB lets one process write a file, and no process read it meanwhile. So nobody keeps
the file open: every access is a short *session* that attaches the file to a process-wide in-memory
DuckDB instance (attaching costs under a millisecond; opening a new instance costs ~30 ms), runs its
queries and detaches. A writer's session is one transaction. A session that meets another process's
lock retries with backoff until its timeout, then fails naming the process that holds the lock. A
cache job therefore holds the file for milliseconds per chunk, and the app keeps reading while it runs.
So that back-to-back readers can't starve a writer, a writer that finds the file locked raises a
write-intent flag (`NAME.duckdb.data/write-intent`) until it gets in, and readers pause while the
flag is fresh (a dead writer's flag goes stale after a few seconds and is ignored).

Schema. `MIGRATIONS` is an append-only list; `schema_migrations` records which have been applied.
Write sessions apply the missing ones first. Later issues add their tables by appending a migration.
"""

from __future__ import annotations

import datetime
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
import numpy as np
import pyarrow as pa

from core.cli import UserError


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
            """CREATE TABLE llm_usage (               -- one row per call made through core.llm (cache hits included, cost 0)
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
                target JSON NOT NULL,              -- core.circuits.target_to_json: what was traced
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
                pruning JSON NOT NULL,             -- core.circuits.Pruning relative to version 1
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
                result JSON NOT NULL,              -- core.analysis result dataclass as JSON
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


@dataclass(frozen=True)
class LockHolder:
    """The process holding a lock: its id, command line and start of holding (each None when unknown)."""

    pid: int | None
    command: str | None = None
    since: str | None = None

    @property
    def this_process(self) -> bool:
        """True if the holder is this process (e.g. another thread: another browser session of the same app)."""
        return self.pid == os.getpid()

    def describe(self) -> str:
        """E.g. "process 4242 (`python -m core cache --workspace w.duckdb`), holding it since 14:03:02"."""
        if self.pid is None:
            return "another process (it did not record its id)"
        text = f"process {self.pid}" + (f" (`{self.command}`)" if self.command else "")
        return text + (f", holding it since {self.since}" if self.since else "")

    def what_to_do(self) -> str:
        """What the user can do about it."""
        stop = f"stop it (`kill {self.pid}`)" if self.pid is not None else "stop it"
        return f"wait for it to finish, or {stop}"


def process_command(pid: int) -> str | None:
    """The command line of process `pid` (Linux /proc; the program's path shortened to its name), or None."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not args:
        return None
    text = re.sub(r"\s+", " ", " ".join([Path(args[0]).name, *args[1:]])).strip()
    return text if len(text) <= 200 else text[:199] + "…"


def holder_record() -> str:
    """What a lock file records about this process once it holds the lock (see `lock_file_holder`)."""
    command = process_command(os.getpid()) or "?"
    return f"process {os.getpid()} ({command}) since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _flock_pid(path: Path) -> int | None:
    """The process holding a flock() on `path`, from /proc/locks (Linux), or None."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].lstrip("-").isdigit():
            return int(fields[4]) if int(fields[4]) > 0 else None
    return None


def lock_file_holder(path: Path, recorded: str = "") -> LockHolder:
    """Who holds the flock() on lock file `path`: the kernel's answer (/proc/locks) if it has one, with what
    the holder recorded in the file (`holder_record`; it can lag the kernel by a moment, or be an older holder's)."""
    match = re.match(r"process (\d+) \((.*)\) since (.+)$", recorded.strip())
    rec = LockHolder(int(match.group(1)), match.group(2), match.group(3)) if match else None
    pid = _flock_pid(path)
    if pid is None:
        return rec or LockHolder(None)
    if rec is not None and rec.pid == pid:
        return rec
    return LockHolder(pid, process_command(pid))


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
    """Per-latent statistics as stored (see `core.stats` for how each is computed)."""

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


def context_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many contexts the workspace holds."""
    return con.execute("SELECT count(*) FROM contexts").fetchone()[0]


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


def context_tokens(con: duckdb.DuckDBPyConnection, contexts: np.ndarray) -> np.ndarray:
    """Token ids `[len(contexts), ctx_len]` of the given context ids (in the given order)."""
    ids = np.unique(np.asarray(contexts, dtype=np.int64))
    if len(ids) == 0:
        return np.zeros((0, 0), dtype=np.int32)
    got = con.execute(
        "SELECT context, tokens FROM contexts WHERE context IN (SELECT unnest(?::INTEGER[])) ORDER BY context",
        [ids.tolist()],
    ).fetchall()
    if len(got) != len(ids):
        raise WorkspaceError("the workspace lacks some contexts its activations refer to; rebuild it")
    table = np.asarray([r[1] for r in got], dtype=np.int32)
    return table[np.searchsorted(ids, np.asarray(contexts, dtype=np.int64))]


def all_context_tokens(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Every context's token ids `[n_contexts, ctx_len]` (int32)."""
    rel = con.execute("SELECT flatten(list(tokens ORDER BY context)), count(*) FROM contexts").fetchone()
    flat = np.asarray(rel[0] or [], dtype=np.int32)
    n = rel[1]
    return flat.reshape(n, -1) if n else np.zeros((0, 0), dtype=np.int32)


def positions_of_tokens(con: duckdb.DuckDBPyConnection, token_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(context, position) arrays of every occurrence of any of `token_ids` in the stored contexts."""
    if not token_ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    res = con.execute(
        """SELECT context, pos FROM (
               SELECT context, unnest(tokens) AS tok, unnest(range(len(tokens))) AS pos FROM contexts)
           WHERE tok IN (SELECT unnest(?::INTEGER[])) ORDER BY context, pos""",
        [list(map(int, token_ids))],
    ).fetchnumpy()
    return res["context"].astype(np.int64), res["pos"].astype(np.int64)


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


def _json_or_none(v) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True)


def _explanation_record(row: tuple) -> ExplanationRecord:
    r = list(row)
    r[9] = json.loads(r[9]) if r[9] else {}
    return ExplanationRecord(*r)


def _score_record(row: tuple) -> ScoreRecord:
    r = list(row)
    r[6] = json.loads(r[6]) if r[6] else {}
    r[9] = json.loads(r[9]) if r[9] else None
    return ScoreRecord(*r)


def _insert_arrow(con: duckdb.DuckDBPyConnection, table_name: str, columns: str, data: pa.Table) -> None:
    name = f"_in_{table_name}"
    con.register(name, data)
    try:
        con.execute(f"INSERT INTO {table_name} ({columns}) SELECT {columns} FROM {name}")
    finally:
        con.unregister(name)


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


JOURNAL_MARK = "llm-journal/"  # workspace_info key prefix: a core.llm write-ahead file whose rows are stored


def write_llm_records(
    workspace: Path, responses: list[dict], usage: list[dict], journals: list[Path] | None = None
) -> bool:
    """Store new cached replies (ignoring keys already stored) and usage rows, in one transaction.

    `journals`: the write-ahead files of `core.llm` these rows were read from. The same transaction
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


def dictionary_top_tokens(con: duckdb.DuckDBPyConnection, dictionary: DictionaryRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latent, token, n) arrays of `latent_top_tokens` for one dictionary: the tokens at each latent's highest activations."""
    res = con.execute(
        "SELECT latent, token, n FROM latent_top_tokens WHERE dict_idx = ? ORDER BY latent, n DESC, token", [dictionary.index]
    ).fetchnumpy()
    return res["latent"].astype(np.int64), res["token"].astype(np.int64), res["n"].astype(np.int64)


def explanations_by_id(workspace: Path, explanation_ids: list[str]) -> list[ExplanationRecord]:
    """The stored explanations with the given ids (any status), in no particular order."""
    if not explanation_ids:
        return []
    with session(workspace) as con:
        rows = con.execute(
            f"SELECT {_EXPL_COLS} FROM explanations WHERE explanation_id IN (SELECT unnest(?::VARCHAR[]))", [list(explanation_ids)]
        ).fetchall()
    return [_explanation_record(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Circuits (migration 3): named circuits with immutable versions; `core.circuits` is the API over these.


@dataclass(frozen=True)
class CircuitRecord:
    """A saved circuit: what was traced, and how many versions it has."""

    name: str
    prompt: str
    target: dict
    target_label: str
    model: str
    method: str
    created_at: datetime.datetime
    n_versions: int
    latest_version: int
    updated_at: datetime.datetime


@dataclass(frozen=True)
class CircuitVersionRecord:
    """One stored version of a circuit; `graph` is None when listed without graphs."""

    name: str
    version: int
    parent_version: int | None
    graph: dict | None
    pruning: dict
    annotation_text: str | None
    annotation_author: str | None
    faithfulness: dict | None
    created_by: str
    note: str
    n_nodes: int
    n_edges: int
    n_latents: int
    created_at: datetime.datetime
    node_annotations: dict[str, tuple[str, str]]  # node id -> (text, author)


def circuit_record(con: duckdb.DuckDBPyConnection, name: str) -> CircuitRecord | None:
    """The circuit called `name`, or None."""
    rows = _circuit_rows(con, "WHERE c.name = ?", [name])
    return rows[0] if rows else None


def circuit_records(con: duckdb.DuckDBPyConnection) -> list[CircuitRecord]:
    """Every saved circuit, most recently changed first."""
    return _circuit_rows(con, "", [])


def _circuit_rows(con: duckdb.DuckDBPyConnection, where: str, params: list) -> list[CircuitRecord]:
    rows = con.execute(
        f"""SELECT c.name, c.prompt, c.target, c.target_label, c.model, c.method, c.created_at,
                   count(v.version), max(v.version), max(v.created_at)
            FROM circuits c JOIN circuit_versions v ON v.name = c.name {where}
            GROUP BY ALL ORDER BY max(v.created_at) DESC, c.name""",
        params,
    ).fetchall()
    return [CircuitRecord(r[0], r[1], json.loads(r[2]), *r[3:]) for r in rows]


def insert_circuit(
    con: duckdb.DuckDBPyConnection, name: str, prompt: str, target: dict, target_label: str, model: str, method: str
) -> None:
    """Register a new circuit (its versions are added with `insert_circuit_version`)."""
    con.execute(
        "INSERT INTO circuits VALUES (?, ?, ?, ?, ?, ?, now())",
        [name, prompt, json.dumps(target), target_label, model, method],
    )


def next_circuit_version(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """The number the next version of circuit `name` gets (1 for a circuit without versions)."""
    return con.execute("SELECT coalesce(max(version), 0) + 1 FROM circuit_versions WHERE name = ?", [name]).fetchone()[
        0
    ]


def insert_circuit_version(con: duckdb.DuckDBPyConnection, rec: CircuitVersionRecord) -> None:
    """Store one version and its node annotations (versions are never updated in place)."""
    con.execute(
        "INSERT INTO circuit_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            rec.name,
            rec.version,
            rec.parent_version,
            json.dumps(rec.graph),
            json.dumps(rec.pruning),
            rec.annotation_text,
            rec.annotation_author,
            json.dumps(rec.faithfulness) if rec.faithfulness is not None else None,
            rec.created_by,
            rec.note,
            rec.n_nodes,
            rec.n_edges,
            rec.n_latents,
            rec.created_at,
        ],
    )
    if rec.node_annotations:
        con.executemany(
            "INSERT INTO circuit_node_annotations VALUES (?, ?, ?, ?, ?)",
            [
                [rec.name, rec.version, node, text, author]
                for node, (text, author) in sorted(rec.node_annotations.items())
            ],
        )


_VERSION_COLS = (
    "version, parent_version, pruning, annotation_text, annotation_author, faithfulness, created_by, note, "
    "n_nodes, n_edges, n_latents, created_at"
)


def _version_record(
    name: str, row: tuple, graph: dict | None, notes: dict[str, tuple[str, str]]
) -> CircuitVersionRecord:
    return CircuitVersionRecord(
        name,
        row[0],
        row[1],
        graph,
        json.loads(row[2]),
        row[3],
        row[4],
        json.loads(row[5]) if row[5] is not None else None,
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        notes,
    )


def circuit_version_record(
    con: duckdb.DuckDBPyConnection, name: str, version: int | None = None
) -> CircuitVersionRecord | None:
    """Version `version` (default the latest) of circuit `name` with its graph and node annotations, or None."""
    if version is None:
        version = con.execute("SELECT max(version) FROM circuit_versions WHERE name = ?", [name]).fetchone()[0]
        if version is None:
            return None
    row = con.execute(
        f"SELECT {_VERSION_COLS}, graph FROM circuit_versions WHERE name = ? AND version = ?", [name, version]
    ).fetchone()
    if row is None:
        return None
    notes = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            "SELECT node_id, text, author FROM circuit_node_annotations WHERE name = ? AND version = ? ORDER BY node_id",
            [name, version],
        ).fetchall()
    }
    return _version_record(name, row[:-1], json.loads(row[-1]), notes)


def circuit_version_records(con: duckdb.DuckDBPyConnection, name: str) -> list[CircuitVersionRecord]:
    """Every version of circuit `name`, oldest first, without graphs (node annotations included)."""
    rows = con.execute(
        f"SELECT {_VERSION_COLS} FROM circuit_versions WHERE name = ? ORDER BY version", [name]
    ).fetchall()
    notes: dict[int, dict[str, tuple[str, str]]] = {}
    for v, node, text, author in con.execute(
        "SELECT version, node_id, text, author FROM circuit_node_annotations WHERE name = ? ORDER BY version, node_id",
        [name],
    ).fetchall():
        notes.setdefault(v, {})[node] = (text, author)
    return [_version_record(name, r, None, notes.get(r[0], {})) for r in rows]


def delete_circuit_records(con: duckdb.DuckDBPyConnection, name: str) -> int:
    """Delete circuit `name` with every version and annotation; returns how many versions were deleted."""
    n = con.execute("SELECT count(*) FROM circuit_versions WHERE name = ?", [name]).fetchone()[0]
    con.execute("DELETE FROM circuit_node_annotations WHERE name = ?", [name])
    con.execute("DELETE FROM circuit_versions WHERE name = ?", [name])
    con.execute("DELETE FROM circuits WHERE name = ?", [name])
    return n


def circuit_identity(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """A fingerprint of the circuit now stored as `name` (None if there is none): a hash of its creation
    time and its version 1 graph. Versions are immutable, so it changes only when the circuit is deleted
    and a circuit is saved again under the same name; a save checks it to refuse edits made on the old one."""
    row = con.execute(
        """SELECT md5(strftime(c.created_at, '%Y-%m-%dT%H:%M:%S.%f') || '|' || CAST(v.graph AS VARCHAR))
            FROM circuits c JOIN circuit_versions v ON v.name = c.name AND v.version = 1
            WHERE c.name = ?""",
        [name],
    ).fetchone()
    return row[0] if row else None


# Analysis results and layer overlap (migration 4). Each function opens its own short session.


@dataclass(frozen=True)
class AnalysisRecord:
    """A stored analysis result (see `core.analysis`): its name, unit group, parameters and JSON result."""

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
            [rec.name, rec.units, json.dumps(rec.params, sort_keys=True), json.dumps(rec.result), rec.n_latents, rec.inputs],
        )


def _equal_filters(**columns) -> tuple[str, list]:
    """(" AND col = ?" clauses, their arguments) for the columns given a value (None: no filter)."""
    chosen = {c: v for c, v in columns.items() if v is not None}
    return "".join(f" AND {c} = ?" for c in chosen), list(chosen.values())


def read_analyses(workspace: Path, name: str | None = None, units: str | None = None) -> list[AnalysisRecord]:
    """Stored analysis results, optionally of one name and unit group."""
    where, args = _equal_filters(name=name, units=units)
    sql = "SELECT name, units, params, result, n_latents, inputs, created_at FROM analysis_results WHERE true" + where
    with session(workspace) as con:
        rows = con.execute(sql + " ORDER BY name, units", args).fetchall()
    return [AnalysisRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5], r[6]) for r in rows]


@dataclass(frozen=True)
class OverlapRecord:
    """A stored overlap of two dictionaries (see `core.overlap.OverlapResult`; pairs are in `overlap_pairs`)."""

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


def write_overlap(workspace: Path, rec: OverlapRecord, latent_a: np.ndarray, latent_b: np.ndarray, similarity: np.ndarray) -> None:
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
            [rec.overlap_id, rec.similarity, rec.kind, rec.dict_a, rec.dict_b, rec.layer_a, rec.layer_b, rec.n_a, rec.n_b,
             rec.n_matched, rec.mean_similarity, rec.frobenius, rec.method, rec.seconds, json.dumps(rec.params, sort_keys=True)],
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


def read_overlap_pairs(workspace: Path, overlap_id: str, limit: int | None = None, offset: int = 0, most_similar_first: bool = True):  # -> pandas.DataFrame
    """Matched pairs of one overlap (latent_a, latent_b, similarity), most similar first (or least)."""
    order = "DESC" if most_similar_first else "ASC"
    sql = f"SELECT latent_a, latent_b, similarity FROM overlap_pairs WHERE overlap_id = ? ORDER BY similarity {order}, latent_a"
    args: list = [overlap_id]
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [int(limit), int(offset)]
    with session(workspace) as con:
        return con.execute(sql, args).df()
