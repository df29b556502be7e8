"""CLI command: `python -m core example-circuits [--workspace W]` saves the example circuits
(`core.circuits.examples`) in a workspace and lists them; a second run keeps what is there.

    python -m core example-circuits                       # the default workspace
    python -m core example-circuits --workspace my.duckdb --json
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def run_example_circuits(args) -> int:
    """`example-circuits`: build the missing examples, then print each one's latest version."""
    import torch

    from core.cache.workspace import DEFAULT_WORKSPACE
    from core.circuits import saved as C
    from core.circuits.examples import EXAMPLES, MADE_BY, build_example_circuits

    torch.set_num_threads(args.threads)
    workspace = Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE
    t0 = time.perf_counter()
    names = build_example_circuits(workspace, root=Path(args.root) if args.root else None)
    seconds = time.perf_counter() - t0
    rows = []
    for name in names:
        v = C.load_circuit(workspace, name)
        f = v.faithfulness or {}
        rows.append(
            {
                "name": name,
                "version": v.version,
                "prompt": v.graph.graph.get("prompt") if v.graph is not None else None,
                "target": (v.graph.graph.get("target") or {}).get("node_id") if v.graph is not None else None,
                "n_latents": v.n_latents,
                "faithfulness": f.get("faithfulness"),
                "created_by": v.created_by,
            }
        )
    skipped = [s.name for s in EXAMPLES if s.name not in names]
    if args.json:
        print(
            json.dumps(
                {"workspace": str(workspace), "circuits": rows, "skipped": skipped, "seconds": round(seconds, 2)}
            )
        )
        return 0
    for r in rows:
        faith = "n/a" if r["faithfulness"] is None else f"{r['faithfulness']:.3f}"
        print(
            f"{r['name']} v{r['version']}: {r['n_latents']} latents, faithfulness {faith}; {r['prompt']!r} -> {r['target']}"
        )
    for name in skipped:
        print(f"skipped {name!r}: a circuit of that name exists that the {MADE_BY} did not make")
    print(f"{len(rows)} example circuit(s) in {workspace} ({seconds:.1f} s)")
    return 0


def register(subparsers) -> None:
    """Add the `example-circuits` command."""
    p = subparsers.add_parser(
        "example-circuits",
        help="save example circuits (IOI, agreement, brackets) traced on the default in a workspace",
    )
    p.add_argument("--workspace", help="workspace file (default: the default workspace, data/default/workspace.duckdb)")
    p.add_argument("--root", help="folder of the default build (default data/default)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run_example_circuits)
