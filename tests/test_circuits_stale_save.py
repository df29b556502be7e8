"""core.circuits.saved: a save carries the identity of the circuit it was loaded from and is refused, with nothing
stored, when that circuit was deleted (and maybe saved again under the same name) meanwhile; message helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_graph_view import small_graph

from core import store
from core.circuits import saved as C
from core.tracing.nodes import LogitTarget

TARGET = LogitTarget(3, 3, None, ")")


def saved_rows(ws: Path, name: str) -> list[tuple]:
    """Every stored row of circuit `name` (versions with their graphs, and node annotations), for before/after checks."""
    with store.session(ws) as con:
        versions = con.execute("SELECT * FROM circuit_versions WHERE name = ? ORDER BY version", [name]).fetchall()
        notes = con.execute("SELECT * FROM circuit_node_annotations WHERE name = ? ORDER BY ALL", [name]).fetchall()
        circuit = con.execute("SELECT * FROM circuits WHERE name = ?", [name]).fetchall()
    return [*circuit, *versions, *notes]


def test_a_save_on_a_replaced_circuit_is_refused(tmp_path):
    """The issue's sequence: A loads 'race1'; B deletes it and saves another prompt as 'race1'; A saves."""
    ws = tmp_path / "w.duckdb"
    C.save_circuit(ws, "race1", small_graph(), TARGET)
    a_version, a_original = C.load_with_original(ws, "race1", 1)  # A's page
    assert a_version.circuit_id and a_original.graph["prompt"] == "a (b c"

    C.delete_circuit(ws, "race1")  # B
    b_graph = small_graph(" other")
    b_graph.graph["prompt"] = "a different prompt"
    b = C.save_circuit(ws, "race1", b_graph, TARGET)
    assert b.circuit_id != a_version.circuit_id
    before = saved_rows(ws, "race1")

    a_notes = {"transcoder.1/7@3": C.Annotation("A's note")}
    with pytest.raises(C.CircuitChangedError) as info:
        C.save_version(
            ws,
            "race1",
            C.Pruning(edge_threshold=0.1),
            a_notes,
            C.Annotation("A's summary"),
            parent_version=a_version.version,
            expected_circuit_id=a_version.circuit_id,
        )
    assert not info.value.deleted and info.value.name == "race1"
    assert "'race1' was replaced after these edits were loaded" in str(info.value)
    assert "nothing was saved" in str(info.value)
    assert saved_rows(ws, "race1") == before  # B's circuit is exactly as B saved it
    assert [v.version for v in C.list_versions(ws, "race1")] == [1]
    assert C.load_circuit(ws, "race1").graph.graph["prompt"] == "a different prompt"
    # B's own save, on B's identity, still works.
    assert C.save_version(ws, "race1", C.Pruning(), a_notes, expected_circuit_id=b.circuit_id).version == 2


def test_a_save_on_a_deleted_circuit_is_refused(tmp_path):
    ws = tmp_path / "w.duckdb"
    v1 = C.save_circuit(ws, "gone", small_graph(), TARGET)
    C.save_circuit(ws, "other", small_graph(), TARGET)
    C.delete_circuit(ws, "gone")
    before = saved_rows(ws, "other")
    with pytest.raises(C.CircuitChangedError, match="'gone' was deleted from the workspace after these edits") as info:
        C.save_version(ws, "gone", C.Pruning(), parent_version=1, expected_circuit_id=v1.circuit_id)
    assert info.value.deleted
    assert [c.name for c in C.list_circuits(ws)] == ["other"] and saved_rows(ws, "other") == before
    # Saved afresh under the free name, the page's graph becomes a new circuit.
    assert C.save_circuit(ws, "gone", small_graph(), TARGET).circuit_id != v1.circuit_id


def test_circuit_id_is_stable_across_versions_and_loads(tmp_path):
    ws = tmp_path / "w.duckdb"
    v1 = C.save_circuit(ws, "c", small_graph(), TARGET)
    v2 = C.save_version(ws, "c", C.Pruning(edge_threshold=0.2), expected_circuit_id=v1.circuit_id)
    assert v1.circuit_id == v2.circuit_id == C.load_circuit(ws, "c", 1).circuit_id == C.load_circuit(ws, "c").circuit_id
    assert C.unsaved_version("c", small_graph(), C.Pruning()).circuit_id is None
    with pytest.raises(C.CircuitError, match="has no version 7"):
        C.save_version(ws, "c", C.Pruning(), parent_version=7, expected_circuit_id=v1.circuit_id)
    assert [v.version for v in C.list_versions(ws, "c")] == [1, 2]


def test_join_sentences_ends_each_part_with_punctuation():
    text = C.join_sentences("Not saved: a circuit needs a name", "your edits are still on this page", "", "Done!")
    assert text == "Not saved: a circuit needs a name. Your edits are still on this page. Done!"
    assert C.join_sentences("circuit 'x' exists (choose another name)") == "Circuit 'x' exists (choose another name)."


def test_an_llm_pruning_on_a_replaced_circuit_is_refused(tmp_path):
    from core.circuits.llm_pruning import AppliedPruning, save_pruned_version

    ws = tmp_path / "w.duckdb"
    C.save_circuit(ws, "c", small_graph(), TARGET)
    base = C.load_circuit(ws, "c")  # what the LLM's suggestion was made on
    C.delete_circuit(ws, "c")
    C.save_circuit(ws, "c", small_graph(" other"), TARGET)
    before = saved_rows(ws, "c")
    provenance = {
        "model": "scripted/pruner",
        "prompt_version": "v1",
        "mode": "single",
        "verdicts": {"accept": 1, "edit": 0, "reject": 0},
        "summary_verdict": "reject",
        "suggested_keep": 1,
        "suggested_drop": 1,
    }
    applied = AppliedPruning(["attn.0/2@1"], {}, None, "scripted/pruner", provenance)
    with pytest.raises(C.CircuitChangedError, match="was replaced"):
        save_pruned_version(ws, "c", applied, base=base)
    assert saved_rows(ws, "c") == before
