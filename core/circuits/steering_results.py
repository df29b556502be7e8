"""Steering results saved with a circuit version: who made them ('user' in the app, 'cli'), when, the
interventions, the attention mode and the outputs before and after (`core.tracing.steering.SteeringResult`).

The SQL lives in `core.store.circuits` (table `circuit_steering`, migration 5). Saved runs are never
changed; deleting a circuit deletes its steering runs.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from core import store
from core.circuits.saved import CircuitError
from core.store import circuits as circuit_store
from core.tracing.steering import SteeringResult

USER = "user"  # `created_by` of a run saved from the app
CLI = "cli"  # `created_by` of a run saved by `python -m core steer`


@dataclass(frozen=True)
class SavedSteering:
    """One steering run saved with version `version` of circuit `name`."""

    name: str
    version: int
    steering_id: int
    result: SteeringResult
    created_by: str
    created_at: datetime.datetime


def save_steering(
    workspace: Path,
    name: str,
    version: int,
    result: SteeringResult,
    created_by: str,
    circuit_id: str | None = None,
    timeout: float | None = None,
) -> SavedSteering:
    """Store `result` with version `version` of circuit `name`; CircuitError if that version does not exist,
    or (with `circuit_id`, from `CircuitVersion.circuit_id`) if the circuit was deleted or replaced meanwhile."""
    if not created_by or not created_by.strip():
        raise CircuitError("say who made this steering run (created_by: 'user' or 'cli')")
    if not Path(workspace).exists():
        raise CircuitError(f"workspace {workspace} does not exist")
    with store.session(workspace, write=True, timeout=timeout) as con:
        if store.circuit_version_record(con, name, version) is None:
            raise CircuitError(f"circuit {name!r} has no version {version} in workspace {workspace}")
        if circuit_id is not None and store.circuit_identity(con, name) != circuit_id:
            raise CircuitError(
                f"circuit {name!r} was deleted or replaced since it was loaded; load it again to save steering with it"
            )
        data = result.to_json()
        sid = circuit_store.insert_steering_record(
            con, name, version, data["interventions"], result.attention, result.n_tokens, data, created_by.strip()
        )
        rec = circuit_store.steering_records(con, name, version)[-1]
    return SavedSteering(name, version, sid, result, rec.created_by, rec.created_at)


def load_steering(
    workspace: Path, name: str, version: int | None = None, timeout: float | None = None
) -> list[SavedSteering]:
    """The steering runs saved with circuit `name` (only version `version` if given), oldest first; [] if none
    or the workspace does not exist. A workspace made before steering results existed is upgraded first."""
    if not Path(workspace).exists():
        return []
    try:
        with store.session(workspace, timeout=timeout) as con:
            recs = circuit_store.steering_records(con, name, version)
    except store.WorkspaceOutdatedError:
        store.migrate(workspace)
        with store.session(workspace, timeout=timeout) as con:
            recs = circuit_store.steering_records(con, name, version)
    return [
        SavedSteering(r.name, r.version, r.steering_id, SteeringResult.from_json(r.result), r.created_by, r.created_at)
        for r in recs
    ]
