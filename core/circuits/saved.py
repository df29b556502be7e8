"""Saved circuits: named, versioned, pruned and annotated attribution graphs in a workspace.

A circuit starts as one traced graph (`core.tracing.api.trace_prompt`) saved under a name: that is
version 1, and it never changes. Every edit (pruning, annotations, a new faithfulness measurement;
by hand or by an LLM) is saved as a new version. A version stores
    graph             its graph, `prune_graph(version 1, pruning)` (graph_to_json format)
    pruning           what was taken out of version 1 (`Pruning`: removed nodes and edges, node and
                      edge thresholds, pinned nodes) and its supernodes (labelled groups of
                      nodes, `core.circuits.supernodes`; absent in rows saved before them)
    node_annotations  {node id: Annotation(text, author)}
    annotation        the circuit-level annotation or summary, Annotation(text, author)
    faithfulness      ablation results of its latents on the real model (FaithfulnessResult.to_json)
    created_by        'hand' or the litellm model id that made it
    created_at, parent_version, note

Pruning, step by step (`prune_graph`, pure; thresholds are computed on version 1):
1. Edge share: an edge's |direct effect| as a share of its target node's total |direct effect|
   (`total_abs_effect` as the trace recorded it, over every parent kept or not; the sum over the
   graph's in-edges when absent). The same quantity `TraceParams.edge_threshold` thresholds.
2. Influence on the target: `core.tracing.influence.graph_influence` (circuit-tracer's influence
   over the graph's edge shares of step 1; 1 for the target, at most 1 for the others).
3. Remove the listed edges and every edge whose share is below `edge_threshold`; remove the listed
   nodes and every node whose influence is below `node_threshold`, except pinned nodes.
4. Drop orphans: nodes with no remaining path to the target, except pinned nodes.
The target is never removed; an explicit removal of a pinned node wins over its pin.

Faithfulness of a version (`measure_faithfulness`) ablates its latents on the real model with
`core.tracing.ablation.circuit_faithfulness`, using the prompt's token ids and the target spec that
`save_circuit` stores in the graph's metadata (`graph.graph["target_spec"]`).

API (used by pages/5_Circuits.py and by LLM pruning):
    save_circuit(workspace, name, graph, target=None, ...) -> CircuitVersion   version 1
    save_version(workspace, name, pruning, ..., expected_circuit_id=...) -> CircuitVersion   the next version
    load_circuit(workspace, name, version=None) -> CircuitVersion             latest by default
    load_with_original(workspace, name, version) -> (CircuitVersion, version 1 graph), read together
    list_circuits(workspace) -> [CircuitInfo]; list_versions(workspace, name) -> [CircuitVersion] (graph None)
    delete_circuit(workspace, name) -> number of versions deleted
    prune_graph(G, pruning); edge_shares(G); graph_influence(G) and target_node(G) (from core.tracing)
    measure_faithfulness(model, dictionaries, G, means, ablation, ...) -> FaithfulnessResult
    with_target(G, target): record a TraceResult's target in its graph (before measure_faithfulness)
    export_json(version) -> dict (a graph JSON whose metadata["circuit"] holds the version)
Writes raise `CircuitError` (bad name, unknown circuit) or `core.store.schema.WorkspaceError` (e.g. the
workspace is locked); a failed write changes nothing.

Stale saves: every loaded or saved CircuitVersion carries `circuit_id`, a fingerprint of the stored
circuit (`store.circuit_identity`: its creation time and version 1 graph). A page passes it back as
`save_version(..., expected_circuit_id=...)`, which checks it in the same write transaction as the
insert and raises `CircuitChangedError` if the circuit was deleted, or deleted and saved again with
another graph, since it was loaded; otherwise the edits would land on someone else's circuit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import networkx as nx

from core import store
from core.circuits.supernodes import Supernode, SupernodeError, check_supernodes
from core.errors import UserError
from core.tracing.graph import graph_from_json, graph_to_json, latent_nodes, target_node
from core.tracing.influence import graph_influence
from core.tracing.nodes import LATENT_KINDS, LatentTarget, LogitTarget, Target

MAX_NAME_CHARS = 120
T = TypeVar("T")
HAND = "hand"  # `created_by` / `author` of what a person made in the app


class CircuitError(UserError):
    """A circuit operation that cannot be done as asked (printed without a traceback)."""


class CircuitChangedError(CircuitError):
    """A save based on a circuit that was deleted (`deleted` True) or replaced since it was loaded; nothing was saved."""

    def __init__(self, message: str, name: str, deleted: bool) -> None:
        super().__init__(message)
        self.name = name
        self.deleted = deleted


def join_sentences(*parts: str) -> str:
    """`parts` as one text: each part capitalised and ended with '.', unless it already ends with
    '.', '!', '?' or '…', joined by spaces; empty parts are skipped. For messages built from pieces
    (an exception's text, then what to do), which otherwise run together."""
    out = []
    for part in parts:
        text = str(part).strip()
        if not text:
            continue
        if text[0].islower():
            text = text[0].upper() + text[1:]
        if text[-1] not in ".!?…":
            text += "."
        out.append(text)
    return " ".join(out)


@dataclass(frozen=True)
class Annotation:
    """A note on a node or on a whole circuit, and who wrote it ('hand' or a litellm model id)."""

    text: str
    author: str = HAND

    def to_json(self) -> dict[str, str]:
        """{"text", "author"}."""
        return {"text": self.text, "author": self.author}


@dataclass(frozen=True)
class Pruning:
    """What a version takes out of version 1's graph (see the module docstring for the order).

    `removed_edges` are (source id, target id) pairs; thresholds are shares in [0, 1]
    (`node_threshold` on influence, `edge_threshold` on edge share); 0 keeps everything.
    """

    removed_nodes: tuple[str, ...] = ()
    removed_edges: tuple[tuple[str, str], ...] = ()
    node_threshold: float = 0.0
    edge_threshold: float = 0.0
    pinned: tuple[str, ...] = ()
    supernodes: tuple[Supernode, ...] = ()  # labelled groups of nodes (a view: they prune nothing)

    def __post_init__(self) -> None:
        for name in ("node_threshold", "edge_threshold"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be a share in [0, 1], got {v!r}")
        # Canonical order, so equal prunings compare and hash equal.
        object.__setattr__(self, "removed_nodes", tuple(sorted(set(self.removed_nodes))))
        object.__setattr__(self, "removed_edges", tuple(sorted({(str(u), str(v)) for u, v in self.removed_edges})))
        object.__setattr__(self, "pinned", tuple(sorted(set(self.pinned))))
        groups = {s.id: s for s in (g if isinstance(g, Supernode) else Supernode.from_json(g) for g in self.supernodes)}
        object.__setattr__(self, "supernodes", tuple(groups[k] for k in sorted(groups)))
        object.__setattr__(self, "node_threshold", float(self.node_threshold))
        object.__setattr__(self, "edge_threshold", float(self.edge_threshold))

    @property
    def is_empty(self) -> bool:
        """True if this pruning keeps version 1 as it is (and groups no nodes)."""
        return not (
            self.removed_nodes or self.removed_edges or self.node_threshold or self.edge_threshold or self.supernodes
        )

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (edges as [source, target] lists); "supernodes" ([{"label", "members"}]) only when there are some,
        so a pruning without them has the same JSON (and `key`) as before supernodes existed."""
        out: dict[str, Any] = {
            "removed_nodes": list(self.removed_nodes),
            "removed_edges": [list(e) for e in self.removed_edges],
            "node_threshold": self.node_threshold,
            "edge_threshold": self.edge_threshold,
            "pinned": list(self.pinned),
        }
        if self.supernodes:
            out["supernodes"] = [s.to_json() for s in self.supernodes]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> Pruning:
        """Inverse of `to_json` (missing keys take their defaults)."""
        obj = obj or {}
        return cls(
            removed_nodes=tuple(obj.get("removed_nodes", ())),
            removed_edges=tuple((e[0], e[1]) for e in obj.get("removed_edges", ())),
            node_threshold=float(obj.get("node_threshold", 0.0)),
            edge_threshold=float(obj.get("edge_threshold", 0.0)),
            pinned=tuple(obj.get("pinned", ())),
            supernodes=tuple(Supernode.from_json(s) for s in obj.get("supernodes") or ()),
        )

    def key(self) -> str:
        """A short stable hash of what this pruning keeps (e.g. to cache a faithfulness result per pruning);
        supernodes group nodes without removing any, so they do not change it."""
        kept = {k: v for k, v in self.to_json().items() if k != "supernodes"}
        return hashlib.blake2b(json.dumps(kept, sort_keys=True).encode(), digest_size=8).hexdigest()


@dataclass
class CircuitVersion:
    """One version of a saved circuit. `graph` is None in `list_versions` (loaded without graphs)."""

    name: str
    version: int
    graph: nx.DiGraph | None
    pruning: Pruning
    node_annotations: dict[str, Annotation] = field(default_factory=dict)
    annotation: Annotation | None = None
    faithfulness: dict | None = None
    created_by: str = HAND
    created_at: datetime.datetime | None = None
    parent_version: int | None = None
    note: str = ""
    n_nodes: int = 0
    n_edges: int = 0
    n_latents: int = 0
    circuit_id: str | None = None  # store.circuit_identity of the stored circuit; None for an unsaved version


CircuitInfo = store.CircuitRecord
"""A saved circuit as listed: name, prompt, target (JSON) and target_label, model, method, created_at,
n_versions, latest_version, updated_at (the store's record; `list_circuits` returns these)."""


# ---------------------------------------------------------------------------------------------
# Targets as JSON (so a stored graph knows exactly what to ablate against)


def target_to_json(target: Target) -> dict[str, Any]:
    """Plain-JSON form of a trace target (token ids included, so no tokenizer is needed to rebuild it)."""
    if isinstance(target, LogitTarget):
        return {
            "type": "logit",
            "token": target.token,
            "position": target.position,
            "contrast": target.contrast,
            "token_str": target.token_str,
            "contrast_str": target.contrast_str,
        }
    return {"type": "latent", "dictionary": target.dictionary, "position": target.position, "latent": target.latent}


def target_from_json(obj: Mapping[str, Any]) -> Target:
    """Inverse of `target_to_json`."""
    if obj.get("type") == "logit":
        return LogitTarget(
            int(obj["token"]),
            int(obj["position"]),
            None if obj.get("contrast") is None else int(obj["contrast"]),
            obj.get("token_str", ""),
            obj.get("contrast_str", ""),
        )
    if obj.get("type") == "latent":
        return LatentTarget(str(obj["dictionary"]), int(obj["position"]), int(obj["latent"]))
    raise ValueError(f"not a trace target: {obj!r}")


def with_target(G: nx.DiGraph, target: Target) -> nx.DiGraph:
    """`G` with `target` recorded in its metadata (`G.graph["target_spec"]`, in place), so that
    `measure_faithfulness` and `save_circuit` can rebuild the exact target later. Returns `G`."""
    G.graph["target_spec"] = target_to_json(target)
    return G


def graph_target(G: nx.DiGraph) -> Target:
    """The trace target of graph `G` (from `target_spec`, or for a latent target from `G.graph['target']`)."""
    spec = G.graph.get("target_spec")
    if spec:
        return target_from_json(spec)
    t = G.graph.get("target") or {}
    if t.get("kind") in LATENT_KINDS:
        return LatentTarget(t["dictionary"], int(t["position"]), int(t["latent"]))
    raise ValueError(
        "the graph does not record its target's token ids; save it with save_circuit(..., target=result.target)"
    )


# ---------------------------------------------------------------------------------------------
# Pruning (pure)


def edge_shares(G: nx.DiGraph) -> dict[tuple[str, str], float]:
    """Each edge's |weight| as a share of its target's total |direct effect| (step 1): {(u, v): share in [0, 1]}."""
    totals: dict[str, float] = {}
    for v in G.nodes:
        total = G.nodes[v].get("total_abs_effect")
        if total is None or not total > 0:
            total = sum(abs(_weight(d)) for _, _, d in G.in_edges(v, data=True))
        totals[v] = float(total)
    return {(u, v): (abs(_weight(d)) / totals[v] if totals[v] > 0 else 0.0) for u, v, d in G.edges(data=True)}


def _weight(d: Mapping[str, Any]) -> float:
    w = d.get("weight", 0.0)
    return 0.0 if w is None or (isinstance(w, float) and math.isnan(w)) else float(w)


def check_pruning(G: nx.DiGraph, pruning: Pruning) -> None:
    """Raise ValueError if `pruning` names nodes or edges that `G` lacks, or removes the target."""
    missing = [n for n in (*pruning.removed_nodes, *pruning.pinned) if n not in G]
    if missing:
        raise ValueError(f"pruning names nodes that are not in the graph: {', '.join(missing[:5])}")
    missing_e = [f"{u} -> {v}" for u, v in pruning.removed_edges if not G.has_edge(u, v)]
    if missing_e:
        raise ValueError(f"pruning names edges that are not in the graph: {', '.join(missing_e[:5])}")
    if target_node(G) in pruning.removed_nodes:
        raise ValueError("the target node cannot be removed")
    try:
        check_supernodes(G, pruning.supernodes)
    except SupernodeError as exc:
        raise ValueError(str(exc)) from exc


def prune_graph(G: nx.DiGraph, pruning: Pruning, influence: Mapping[str, float] | None = None) -> nx.DiGraph:
    """A pruned copy of `G` (steps 1-4); `G` is untouched. The copy's metadata records the pruning.

    The copy keeps every node and edge attribute; `G.graph['faithfulness']` (which measured `G`)
    is dropped from the copy, since it no longer describes it. `influence`: `graph_influence(G)` if
    the caller holds it already (a page that prunes on every click); computed here otherwise.
    """
    check_pruning(G, pruning)
    tgt = target_node(G)
    shares = edge_shares(G)
    influence = graph_influence(G) if influence is None else influence
    pinned = set(pruning.pinned)
    H = G.copy()
    H.remove_edges_from(pruning.removed_edges)
    H.remove_edges_from([e for e, s in shares.items() if s < pruning.edge_threshold and H.has_edge(*e)])
    H.remove_nodes_from(pruning.removed_nodes)
    H.remove_nodes_from(
        [v for v in list(H.nodes) if v != tgt and v not in pinned and influence[v] < pruning.node_threshold]
    )
    reach = nx.ancestors(H, tgt) | {tgt}
    H.remove_nodes_from([v for v in list(H.nodes) if v not in reach and v not in pinned])
    H.graph.pop("faithfulness", None)
    H.graph["pruning"] = pruning.to_json()
    # The numbers the page shows are `G`'s (before pruning), as in circuit-tracer: keep them with the copy
    # so exports of the pruned graph carry the same influence as the sliders and tooltips.
    for v in H.nodes:
        H.nodes[v]["influence"] = float(influence[v])
    H.graph["original_influence"] = {str(v): float(x) for v, x in influence.items()}
    return H


def pruning_counts(original: nx.DiGraph, pruned: nx.DiGraph) -> dict[str, int]:
    """Nodes, edges and latents kept and removed: {"nodes", "edges", "latents", "removed_nodes", ...}."""
    n_lat, m_lat = len(latent_nodes(original)), len(latent_nodes(pruned))
    return {
        "nodes": pruned.number_of_nodes(),
        "edges": pruned.number_of_edges(),
        "latents": m_lat,
        "removed_nodes": original.number_of_nodes() - pruned.number_of_nodes(),
        "removed_edges": original.number_of_edges() - pruned.number_of_edges(),
        "removed_latents": n_lat - m_lat,
    }


# ---------------------------------------------------------------------------------------------
# Faithfulness on the real model


def measure_faithfulness(
    model,
    dictionaries: Sequence,
    G: nx.DiGraph,
    means: dict | None = None,
    ablation: str = "mean",
    active_only: bool = False,
    reference: tuple[float, float] | None = None,
):
    """Faithfulness, sufficiency and necessity of `G`'s latents on the real model (a FaithfulnessResult).

    Ablates every latent of the traced dictionaries that `G` does not keep (sufficiency, m(C)), and
    only `G`'s latents (necessity, m(M\\C)); faithfulness F = (m(C) - m(∅)) / (m(M) - m(∅)) and the
    complement's F(M\\C) (0 = complete). `reference = (m(M), m(∅))` skips the two reference runs
    (they depend only on the prompt, target and ablation, not on the pruning).
    """
    import torch

    from core.tracing.ablation import circuit_faithfulness
    from core.tracing.graph import circuit_features

    ids = G.graph.get("prompt_token_ids")
    if not ids:
        raise ValueError("the graph does not record its prompt's token ids")
    tokens = torch.tensor(ids, dtype=torch.long)[None]
    return circuit_faithfulness(
        model,
        dictionaries,
        tokens,
        [graph_target(G)],
        [circuit_features(G)],
        means,
        ablation,
        reference=reference,
        active_only=active_only,
    )


def reference_of(faithfulness: Mapping[str, Any] | None, ablation: str) -> tuple[float, float] | None:
    """(m(M), m(∅)) from a stored faithfulness result if it used the same ablation, else None."""
    if not faithfulness or faithfulness.get("ablation") != ablation:
        return None
    full, empty = faithfulness.get("metric_full"), faithfulness.get("metric_empty")
    return None if full is None or empty is None else (float(full), float(empty))


# ---------------------------------------------------------------------------------------------
# Store


def check_name(name: str) -> str:
    """The circuit name stripped; raises CircuitError if it is empty or longer than MAX_NAME_CHARS."""
    name = (name or "").strip()
    if not name:
        raise CircuitError("a circuit needs a name")
    if len(name) > MAX_NAME_CHARS:
        raise CircuitError(f"circuit names are at most {MAX_NAME_CHARS} characters (got {len(name)})")
    return name


def _version_record(
    name: str,
    version: int,
    parent: int | None,
    graph: nx.DiGraph,
    pruning: Pruning,
    node_annotations: Mapping[str, Annotation] | None,
    annotation: Annotation | None,
    faithfulness: Any,
    created_by: str,
    note: str,
) -> store.CircuitVersionRecord:
    notes = {k: (a.text, a.author) for k, a in (node_annotations or {}).items() if a.text.strip()}
    unknown = [k for k in notes if k not in graph]
    if unknown:
        raise CircuitError(f"annotations name nodes that are not in this version's graph: {', '.join(unknown[:5])}")
    if faithfulness is not None and hasattr(faithfulness, "to_json"):
        faithfulness = faithfulness.to_json()
    has_note = annotation is not None and annotation.text.strip()
    return store.CircuitVersionRecord(
        name=name,
        version=version,
        parent_version=parent,
        graph=graph_to_json(graph),
        pruning=pruning.to_json(),
        annotation_text=annotation.text if has_note else None,
        annotation_author=annotation.author if has_note else None,
        faithfulness=faithfulness,
        created_by=created_by or HAND,
        note=note or "",
        n_nodes=graph.number_of_nodes(),
        n_edges=graph.number_of_edges(),
        n_latents=len(latent_nodes(graph)),
        created_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
        node_annotations=notes,
    )


def save_circuit(
    workspace: Path,
    name: str,
    graph: nx.DiGraph,
    target: Target | None = None,
    model: str = "default",
    created_by: str = HAND,
    note: str = "",
    timeout: float | None = None,
) -> CircuitVersion:
    """Save a traced graph as version 1 of a new circuit `name`; raises CircuitError if the name is taken.

    `target` is the trace's target (`TraceResult.target`); it is stored in the graph's metadata so
    the circuit's faithfulness can be measured again later. The graph's own faithfulness result
    (`graph.graph['faithfulness']`, set by trace_prompt) becomes version 1's faithfulness.
    """
    name = check_name(name)
    G = graph.copy()
    if target is not None:
        with_target(G, target)
    spec = target_to_json(graph_target(G))  # raises if the target cannot be rebuilt
    G.graph["target_spec"] = spec
    tgt = target_node(G)
    rec = _version_record(name, 1, None, G, Pruning(), None, None, G.graph.get("faithfulness"), created_by, note)
    with store.session(workspace, write=True, timeout=timeout) as con:
        if store.circuit_record(con, name) is not None:
            raise CircuitError(
                f"a circuit named {name!r} already exists in {workspace}; load it to add a version, or choose another name"
            )
        store.insert_circuit(
            con, name, str(G.graph.get("prompt", "")), spec, tgt, model, str(G.graph.get("method", ""))
        )
        store.insert_circuit_version(con, rec)
        circuit_id = store.circuit_identity(con, name)
    return _from_record(rec, G, circuit_id)


def save_version(
    workspace: Path,
    name: str,
    pruning: Pruning,
    node_annotations: Mapping[str, Annotation] | None = None,
    annotation: Annotation | None = None,
    faithfulness: Any = None,
    created_by: str = HAND,
    parent_version: int | None = None,
    note: str = "",
    timeout: float | None = None,
    expected_circuit_id: str | None = None,
) -> CircuitVersion:
    """Save a new version of circuit `name`: version 1's graph pruned by `pruning`, with annotations.

    `faithfulness` (a FaithfulnessResult or its JSON) must have been measured on this pruning
    (`measure_faithfulness(..., prune_graph(original, pruning))`); pass None if it was not.
    Annotations of nodes the pruning removes raise CircuitError. Earlier versions are never changed.
    `expected_circuit_id` (the `circuit_id` of the version the edits were made on) is checked in the
    write transaction: CircuitChangedError if the circuit was deleted or replaced since; nothing is saved.
    """
    name = check_name(name)
    if not Path(workspace).exists():
        raise CircuitError(f"circuit {name!r} is not in workspace {workspace}; nothing was saved")
    with store.session(workspace, write=True, timeout=timeout) as con:
        # One transaction from the check to the insert: no other writer can delete or replace the circuit between.
        circuit_id = store.circuit_identity(con, name)
        _check_unchanged(workspace, name, circuit_id, expected_circuit_id)
        first = store.circuit_version_record(con, name, 1)
        try:
            G = prune_graph(graph_from_json(first.graph), pruning)
        except ValueError as exc:
            raise CircuitError(f"{exc}; nothing was saved") from exc
        version = store.next_circuit_version(con, name)
        parent = parent_version if parent_version is not None else version - 1
        if not 1 <= parent < version:
            raise CircuitError(
                f"circuit {name!r} has no version {parent} to base version {version} on; nothing was saved"
            )
        rec = _version_record(
            name, version, parent, G, pruning, node_annotations, annotation, faithfulness, created_by, note
        )
        store.insert_circuit_version(con, rec)
    return _from_record(rec, G, circuit_id)


def _check_unchanged(workspace: Path, name: str, circuit_id: str | None, expected: str | None) -> None:
    """Raise unless circuit `name` exists and (when `expected` is given) is still the one with id `expected`."""
    if circuit_id is not None and (expected is None or circuit_id == expected):
        return
    if expected is None:
        raise CircuitError(f"circuit {name!r} is not in workspace {workspace}; nothing was saved")
    if circuit_id is None:
        raise CircuitChangedError(
            f"circuit {name!r} was deleted from the workspace after these edits were loaded; nothing was saved",
            name,
            deleted=True,
        )
    raise CircuitChangedError(
        f"circuit {name!r} was replaced after these edits were loaded: it was deleted and a circuit was saved "
        "again under the same name, so these edits would land on a different circuit; nothing was saved",
        name,
        deleted=False,
    )


def _from_record(
    rec: store.CircuitVersionRecord, graph: nx.DiGraph | None, circuit_id: str | None = None
) -> CircuitVersion:
    annotation = Annotation(rec.annotation_text, rec.annotation_author or HAND) if rec.annotation_text else None
    return CircuitVersion(
        name=rec.name,
        version=rec.version,
        graph=graph,
        pruning=Pruning.from_json(rec.pruning),
        node_annotations={k: Annotation(t, a) for k, (t, a) in rec.node_annotations.items()},
        annotation=annotation,
        faithfulness=rec.faithfulness,
        created_by=rec.created_by,
        created_at=rec.created_at,
        parent_version=rec.parent_version,
        note=rec.note,
        n_nodes=rec.n_nodes,
        n_edges=rec.n_edges,
        n_latents=rec.n_latents,
        circuit_id=circuit_id,
    )


def load_circuit(
    workspace: Path, name: str, version: int | None = None, timeout: float | None = None
) -> CircuitVersion:
    """Version `version` (default the latest) of circuit `name`, with its graph; CircuitError if there is none."""
    return load_with_original(workspace, name, version, timeout)[0]


def load_with_original(
    workspace: Path, name: str, version: int | None = None, timeout: float | None = None
) -> tuple[CircuitVersion, nx.DiGraph]:
    """Version `version` (default the latest) of circuit `name` and its version 1 graph (what the version
    prunes), read in one session so both belong to the same stored circuit; CircuitError if there is none."""

    def query(con) -> tuple[Any, Any, str | None]:
        rec = store.circuit_version_record(con, name, version)
        first = rec if rec is None or rec.version == 1 else store.circuit_version_record(con, name, 1)
        return rec, first, store.circuit_identity(con, name)

    rec = first = circuit_id = None
    if Path(workspace).exists():
        rec, first, circuit_id = _read(workspace, timeout, query)
    if rec is None or first is None:
        what = f"version {version} of circuit {name!r}" if version is not None else f"circuit {name!r}"
        raise CircuitError(f"{what} is not in workspace {workspace}")
    graph = graph_from_json(rec.graph)
    return _from_record(rec, graph, circuit_id), graph if first is rec else graph_from_json(first.graph)


def list_circuits(workspace: Path, timeout: float | None = None) -> list[CircuitInfo]:
    """Every circuit saved in `workspace`, most recently changed first ([] if the workspace does not exist yet)."""
    if not Path(workspace).exists():
        return []
    return _read(workspace, timeout, store.circuit_records)


def list_versions(workspace: Path, name: str, timeout: float | None = None) -> list[CircuitVersion]:
    """Every version of circuit `name`, oldest first, without graphs (CircuitError if there is no such circuit)."""
    recs: list[store.CircuitVersionRecord] = []
    if Path(workspace).exists():
        recs = _read(workspace, timeout, lambda con: store.circuit_version_records(con, name))
    if not recs:
        raise CircuitError(f"circuit {name!r} is not in workspace {workspace}")
    return [_from_record(r, None) for r in recs]


def delete_circuit(workspace: Path, name: str, timeout: float | None = None) -> int:
    """Delete circuit `name` with all its versions; returns how many versions were deleted (CircuitError if none)."""
    if not Path(workspace).exists():
        raise CircuitError(f"circuit {name!r} is not in workspace {workspace}")
    with store.session(workspace, write=True, timeout=timeout) as con:
        n = store.delete_circuit_records(con, name)
    if n == 0:
        raise CircuitError(f"circuit {name!r} is not in workspace {workspace}")
    return n


def _read(workspace: Path, timeout: float | None, query: Callable[[Any], T]) -> T:
    """`query(con)` in a read session; a workspace cached before circuits existed is migrated first."""
    try:
        with store.session(workspace, timeout=timeout) as con:
            return query(con)
    except store.WorkspaceOutdatedError:
        store.migrate(workspace)
    with store.session(workspace, timeout=timeout) as con:
        return query(con)


# ---------------------------------------------------------------------------------------------
# Export


def export_json(version: CircuitVersion, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The version as one JSON object: its graph in graph_to_json format (node annotations as `clerp`
    labels, else `labels[node id]`), with `metadata["circuit"]` = name, version, pruning, annotations,
    faithfulness, created_by, created_at. `graph_from_json` reads it back."""
    if version.graph is None:
        raise ValueError("this version was listed without its graph; load it with load_circuit")
    G = version.graph.copy()
    for node in G.nodes:
        note = version.node_annotations.get(node)
        text = note.text if note else (labels or {}).get(node)
        if text:
            G.nodes[node]["label"] = text
    out = graph_to_json(G)
    out["metadata"]["circuit"] = {
        "name": version.name,
        "version": version.version,
        "parent_version": version.parent_version,
        "pruning": version.pruning.to_json(),
        "annotation": version.annotation.to_json() if version.annotation else None,
        "node_annotations": {k: a.to_json() for k, a in sorted(version.node_annotations.items())},
        "faithfulness": version.faithfulness,
        "created_by": version.created_by,
        "created_at": version.created_at.isoformat() if version.created_at else None,
        "note": version.note,
    }
    return out


def unsaved_version(
    name: str,
    original: nx.DiGraph,
    pruning: Pruning,
    node_annotations: Mapping[str, Annotation] | None = None,
    annotation: Annotation | None = None,
    faithfulness: Any = None,
    created_by: str = HAND,
    pruned: nx.DiGraph | None = None,
) -> CircuitVersion:
    """A CircuitVersion (version 0, not stored) of `original` pruned by `pruning`, e.g. to export what is on screen.

    `pruned`: `prune_graph(original, pruning)` if the caller has it already (a page redrawn on every click)."""
    G = prune_graph(original, pruning) if pruned is None else pruned
    if faithfulness is not None and hasattr(faithfulness, "to_json"):
        faithfulness = faithfulness.to_json()
    notes = {k: a for k, a in (node_annotations or {}).items() if k in G and a.text.strip()}
    return CircuitVersion(
        name=name,
        version=0,
        graph=G,
        pruning=pruning,
        node_annotations=notes,
        annotation=annotation,
        faithfulness=faithfulness,
        created_by=created_by,
        n_nodes=G.number_of_nodes(),
        n_edges=G.number_of_edges(),
        n_latents=len(latent_nodes(G)),
    )


def latent_keys(G: nx.DiGraph) -> list[tuple[str, int]]:
    """(dictionary id, latent) of every latent node of `G`, sorted and without duplicates (for explanation look-ups)."""
    return sorted({(a["dictionary"], int(a["latent"])) for _, a in G.nodes(data=True) if a.get("kind") in LATENT_KINDS})


def annotations_from(obj: Iterable[tuple[str, str]] | Mapping[str, str], author: str = HAND) -> dict[str, Annotation]:
    """{node id: Annotation} from {node id: text} (or pairs), dropping empty texts."""
    items = obj.items() if isinstance(obj, Mapping) else obj
    return {k: Annotation(t.strip(), author) for k, t in items if t and t.strip()}


@dataclass(frozen=True)
class NodeExplanation:
    """A latent node's explanation from the workspace and who made it (the explainer: a litellm
    model id, or a baseline explainer such as `baseline:token-stats`)."""

    text: str
    explainer: str

    @property
    def label(self) -> str:
        """ "text [explainer]" on one line: how LLM pruning prompts show it."""
        return f"{' '.join(self.text.split())} [{self.explainer}]"


def node_explanations(workspace: Path, G: nx.DiGraph, explainer: str | None = None) -> dict[str, NodeExplanation]:
    """{node id: NodeExplanation} for the latent nodes of `G` that have an explanation in `workspace`.

    With `explainer`, only that explainer's; otherwise per latent the newest successful
    explanation by an explainer model, else the newest by a baseline explainer (whose name, e.g.
    `baseline:token-stats`, says so); never the random baselines of scoring. {} when the workspace
    does not exist, cannot be read, or has no explanations (pages then label nodes by dictionary
    and latent).
    """
    if not Path(workspace).exists():
        return {}
    by_dict: dict[str, list[int]] = {}
    for d, latent in latent_keys(G):
        by_dict.setdefault(d, []).append(latent)
    best: dict[tuple[str, int], tuple[bool, NodeExplanation]] = {}
    try:
        for d, latents in by_dict.items():
            for rec in store.list_explanations(workspace, dictionary=d, latents=latents, explainer=explainer):
                # oldest first: a later one of the same rank wins
                key = (rec.dictionary, int(rec.latent))
                if rec.text and (key not in best or best[key][0] or not rec.is_baseline):
                    best[key] = (rec.is_baseline, NodeExplanation(rec.text, rec.explainer))
    except store.WorkspaceError:
        return {}
    return {
        v: best[(a["dictionary"], int(a["latent"]))][1]
        for v, a in G.nodes(data=True)
        if a.get("kind") in LATENT_KINDS and (a["dictionary"], int(a["latent"])) in best
    }


# ---------------------------------------------------------------------------------------------
# Saving a page's edits


def zero_latent_warning(what: str) -> str:
    """The warning for a circuit (`what`, e.g. "Version 3") that keeps no latent."""
    return join_sentences(
        f"{what} keeps no latents: only embeddings, error nodes and the target are left, so it explains nothing "
        "about the SAE or transcoder latents",
        "Lower the node or edge threshold, or take nodes out of Remove nodes, to keep some",
    )


def save_refused(exc: CircuitChangedError, name: str) -> str:
    """The message for a save refused because the circuit it was loaded from changed; how to keep the edits."""
    if exc.deleted:
        how = (
            f"Press Save again to save this page's graph and edits as a new circuit named {name!r}, "
            "or type another name first"
        )
    else:
        how = (
            "To keep them, type a new name and press Save: this page's graph and edits become a new circuit. "
            f"To see the other {name!r}, load it from the sidebar (this page's edits are then replaced)"
        )
    return join_sentences(f"Not saved: {exc}", "Your edits are still on this page", how)


SAVE_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError)


@dataclass
class SaveOutcome:
    """What `save_edits` did. `source` is what the edits now belong to ({"name", "version", "circuit_id"},
    None: no stored circuit, e.g. after a refused save); `messages` are (kind, text) pairs to show
    literally in order, kind one of 'success', 'warning', 'error'; `version` the last version stored."""

    source: dict[str, Any] | None
    version: CircuitVersion | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)


def save_edits(
    workspace: Path,
    name: str,
    original: nx.DiGraph,
    target: Target | None,
    source: Mapping[str, Any] | None,
    pruning: Pruning,
    node_annotations: Mapping[str, Annotation] | None = None,
    annotation: Annotation | None = None,
    faithfulness: Any = None,
    note: str = "",
    timeout: float | None = None,
) -> SaveOutcome:
    """Save a page's edits of `original` (version 1) as the next version of the circuit they came from,
    or as a new circuit. Never raises for bad input: the outcome's messages say what happened.

    `source` is the saved circuit the edits were loaded from ({"name", "version", "circuit_id"}, or None).
    If it has this `name`, the edits become its next version (based on source["version"], refused with
    CircuitChangedError's message if that circuit was deleted or replaced since). Otherwise `original`
    is saved as version 1 of a new circuit `name`, and the edits (if any) as its version 2; if only the
    first write succeeds, the outcome's source is version 1 and the message says the edits were not saved.
    A stored version that keeps no latents comes with `zero_latent_warning`.
    """
    current = dict(source) if source else None
    first = None  # version 1, when this call saves a new circuit
    try:
        name = check_name(name)
        if current and current["name"] == name:
            v = save_version(
                workspace,
                name,
                pruning,
                node_annotations,
                annotation,
                faithfulness,
                note=note,
                parent_version=current["version"],
                timeout=timeout,
                expected_circuit_id=current.get("circuit_id"),
            )
        else:
            first = v = save_circuit(workspace, name, original, target, timeout=timeout)
            current = {"name": name, "version": v.version, "circuit_id": v.circuit_id}
            if not pruning.is_empty or node_annotations or annotation:
                v = save_version(
                    workspace,
                    name,
                    pruning,
                    node_annotations,
                    annotation,
                    faithfulness,
                    note=note,
                    timeout=timeout,
                    expected_circuit_id=v.circuit_id,
                )
    except CircuitChangedError as exc:
        # No stored circuit holds these edits any more: the next save makes a new one.
        return SaveOutcome(None, None, [("error", save_refused(exc, name))])
    except SAVE_ERRORS as exc:
        if first:  # the new circuit's version 1 was stored, the version with the edits was not
            text = join_sentences(
                f"Saved {name!r} version 1 (the traced graph), but not your edits: {exc}",
                "Your edits are still on this page; press Save again to add them as the next version",
            )
        else:
            text = join_sentences(
                f"Not saved: {exc}", "Your edits are still on this page", "Nothing stored was changed"
            )
        return SaveOutcome(current, first, [("error", text)])
    out = SaveOutcome({"name": name, "version": v.version, "circuit_id": v.circuit_id}, v)
    out.messages.append(("success", f"Saved {name!r} version {v.version} ({v.n_latents} latents) in {workspace}."))
    if v.n_latents == 0:
        out.messages.append(("warning", zero_latent_warning(f"Version {v.version}")))
    return out
