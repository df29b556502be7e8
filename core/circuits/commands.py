"""CLI: graph JSON for Neuronpedia and circuit-tracer (`core.circuits.interop`).

    python -m core export-graph --workspace W --circuit NAME [--version N] --out FILE
                                [--slug SLUG] [--node-threshold X] [--no-probability]
    python -m core inspect-graph FILE

`export-graph` writes a saved circuit version (default the latest: its pruned graph, pinned nodes,
supernodes, and node annotations or else explanations as labels) as graph JSON, and prints one JSON
line (path, slug, counts). It loads the circuit's model, when this app can, for the target token's
probability in the logit's label. `inspect-graph` reads a graph JSON (ours, circuit-tracer's or
Neuronpedia's), validates it, and prints one JSON line: its source, model, counts, whether
faithfulness and steering can run on it and why not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export-graph` and `inspect-graph`."""
    p = sub.add_parser("export-graph", help="write a saved circuit as graph JSON for Neuronpedia / circuit-tracer")
    p.add_argument("--workspace", type=Path, required=True, help="workspace folder holding the circuit")
    p.add_argument("--circuit", required=True, help="name of the saved circuit")
    p.add_argument("--version", type=int, default=None, help="circuit version (default: the latest)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--slug", default=None, help="graph slug (default: from the circuit's name and version)")
    p.add_argument(
        "--node-threshold",
        type=float,
        default=None,
        help="default of the viewers' pruning slider, a cumulative-influence share in (0, 1] (default: no slider)",
    )
    p.add_argument(
        "--no-probability",
        action="store_true",
        help="do not load the model for the target token's probability (the logit label says p=nan)",
    )
    p.set_defaults(run=run_export)
    q = sub.add_parser("inspect-graph", help="validate a graph JSON (ours, circuit-tracer's, Neuronpedia's)")
    q.add_argument("file", type=Path, help="graph JSON file")
    q.set_defaults(run=run_inspect)


def slugify(text: str) -> str:
    """A URL-safe slug: lower-case letters and digits joined by '-' ('graph' if none)."""
    keep = "".join(c.lower() if c.isalnum() else "-" for c in text[:60])
    return "-".join(p for p in keep.split("-") if p) or "graph"


def circuit_export(
    workspace: Path,
    name: str,
    version: int | None = None,
    slug: str | None = None,
    node_threshold: float | None = None,
    target_prob: float | None = None,
) -> dict:
    """Graph JSON of version `version` (default the latest) of saved circuit `name`: its graph, pinned nodes
    and supernodes that are still in it, node annotations (else explanations) as labels, and its model id."""
    from core.circuits import saved as C
    from core.circuits.interop import to_graph_json

    v = C.load_circuit(workspace, name, version)
    G = v.graph
    model_id = next((c.model for c in C.list_circuits(workspace) if c.name == name), None) or "default"
    labels = {k: e.text for k, e in C.node_explanations(workspace, G).items()}
    labels.update({k: a.text for k, a in v.node_annotations.items()})
    groups = []
    for s in getattr(v.pruning, "supernodes", ()) or ():
        members = [m for m in s.members if m in G]
        if members:
            groups.append([s.label, *members])
    return to_graph_json(
        G,
        slug=slug or slugify(f"{name}-v{v.version}"),
        model_id=model_id,
        pinned=[p for p in v.pruning.pinned if p in G],
        supernodes=groups,
        node_threshold=node_threshold,
        labels=labels,
        target_prob=target_prob,
    )


def _probability(workspace: Path, name: str, version: int | None) -> float | None:
    """The target token's probability on the circuit's model, or None (with a note) if it cannot be loaded."""
    from core.circuits import saved as C
    from core.circuits.interop import LOADABLE_MODELS, target_probability

    model_id = next((c.model for c in C.list_circuits(workspace) if c.name == name), None) or "default"
    if model_id not in LOADABLE_MODELS:
        return None
    try:
        from core.subjects.models import load_model

        model = load_model(model_id, device="cpu")
    except Exception as exc:  # a model that cannot load only costs the label its probability
        print(f"note: model {model_id!r} not loaded ({exc}); the logit label says p=nan", file=sys.stderr)
        return None
    return target_probability(model, C.load_circuit(workspace, name, version).graph)


def run_export(args: argparse.Namespace) -> int:
    """`export-graph`: write the JSON file and print one JSON line about it."""
    from core.circuits.interop import dumps

    prob = None if args.no_probability else _probability(args.workspace, args.circuit, args.version)
    data = circuit_export(args.workspace, args.circuit, args.version, args.slug, args.node_threshold, prob)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(data))
    print(
        json.dumps(
            {
                "out": str(args.out),
                "slug": data["metadata"]["slug"],
                "model_id": data["metadata"]["scan"],
                "n_nodes": len(data["nodes"]),
                "n_links": len(data["links"]),
                "pinned": len(data["qParams"]["pinnedIds"]),
                "supernodes": len(data["qParams"]["supernodes"]),
            }
        )
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """`inspect-graph`: validate the file and print one JSON line about it."""
    from core.circuits.interop import from_graph_json

    G, info = from_graph_json(args.file.read_bytes())
    kinds: dict[str, int] = {}
    for _, a in G.nodes(data=True):
        kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
    out = info.summary()
    out.update({"n_nodes": G.number_of_nodes(), "n_links": G.number_of_edges(), "nodes_by_kind": kinds})
    print(json.dumps(out))
    return 0
