"""Saved circuits and their versions."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import duckdb

# ---------------------------------------------------------------------------------------------
# Circuits (migration 3): named circuits with immutable versions; `core.circuits.saved` is the API over these.


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
    con.execute("DELETE FROM circuit_steering WHERE name = ?", [name])  # steering results go with their circuit
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


# ---------------------------------------------------------------------------------------------
# Steering results (migration 5): steering runs saved with a circuit version; `core.circuits.steering_results`
# is the API over these.


@dataclass(frozen=True)
class SteeringRecord:
    """One stored steering run of a circuit version."""

    name: str
    version: int
    steering_id: int
    interventions: list[dict]
    attention: str
    n_tokens: int
    result: dict
    created_by: str
    created_at: datetime.datetime


def insert_steering_record(
    con: duckdb.DuckDBPyConnection,
    name: str,
    version: int,
    interventions: list[dict],
    attention: str,
    n_tokens: int,
    result: dict,
    created_by: str,
) -> int:
    """Store one steering run with version `version` of circuit `name`; returns its steering_id (1, 2, ...)."""
    sid = con.execute(
        "SELECT coalesce(max(steering_id), 0) + 1 FROM circuit_steering WHERE name = ? AND version = ?", [name, version]
    ).fetchone()[0]
    con.execute(
        "INSERT INTO circuit_steering VALUES (?, ?, ?, ?, ?, ?, ?, ?, now())",
        [name, version, sid, json.dumps(interventions), attention, n_tokens, json.dumps(result), created_by],
    )
    return sid


def steering_records(con: duckdb.DuckDBPyConnection, name: str, version: int | None = None) -> list[SteeringRecord]:
    """The steering runs saved with circuit `name` (only version `version` if given), oldest first."""
    where, params = "WHERE name = ?", [name]
    if version is not None:
        where, params = where + " AND version = ?", [name, version]
    rows = con.execute(
        "SELECT name, version, steering_id, interventions, attention, n_tokens, result, created_by, created_at "
        f"FROM circuit_steering {where} ORDER BY version, steering_id",
        params,
    ).fetchall()
    return [SteeringRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], json.loads(r[6]), r[7], r[8]) for r in rows]
