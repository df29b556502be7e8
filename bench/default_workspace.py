"""Time to build the app's default workspace from scratch, as on the app's first start.

    python bench/default_workspace.py [--tokens N] [--root data/default] [--keep DIR]

Calls `core.cache.workspace.ensure_default_workspace` (what the app calls) on a new workspace in a temporary
folder: loading the model and dictionaries (imports included), caching every default dictionary plus
the neuron baselines over the default number of Brown training tokens, finalising. Reports the
wall time of each phase, the bytes on disk, the stored activations, and for each dictionary kind the
share of live latents with at least 10 activations per decile (what latent cards and quantile
sampling draw from). The last line printed is one JSON object: seconds, tokens, bytes, rows, ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from dataclasses import replace

    from core.cache.workspace import DEFAULT_WORKSPACE_PARAMS, ensure_default_workspace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=DEFAULT_WORKSPACE_PARAMS.n_tokens)
    ap.add_argument("--root", help="default build folder (default data/default)")
    ap.add_argument("--keep", help="build here instead of a temporary folder (must not hold a workspace yet)")
    args = ap.parse_args()
    params = replace(DEFAULT_WORKSPACE_PARAMS, n_tokens=args.tokens)
    root = Path(args.root) if args.root else None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        ws = folder / "workspace.duckdb"
        if ws.exists():
            raise SystemExit(f"{ws} exists; --keep needs an empty folder")
        first_seen: dict[str, float] = {}
        t0, c0 = time.perf_counter(), time.process_time()

        def progress(phase: str, done: int, total: int) -> None:
            first_seen.setdefault(phase, time.perf_counter() - t0)

        ensure_default_workspace(progress, path=ws, root=root, params=params)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        load = os.getloadavg()[0]
        nbytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.startswith("workspace"))
        nbytes += sum(p.stat().st_size for p in (folder / "workspace.duckdb.data").rglob("*") if p.is_file())
        from core import store

        with store.session(ws) as con:
            corpus = store.get_info(con, "corpus")
            recs = store.dictionaries(con)
            fires = con.execute(
                "SELECT d.kind, s.n_fires FROM latent_stats s JOIN dictionaries d USING (dict_idx)"
            ).fetchall()
    rows = sum(r.n_activations for r in recs)
    coverage: dict[str, list[int]] = {}
    for kind, n in fires:
        if n > 0:
            coverage.setdefault(kind, []).append(n)
    share = {k: round(sum(n >= 100 for n in v) / len(v), 3) for k, v in sorted(coverage.items())}
    marks = sorted(first_seen.items(), key=lambda kv: kv[1]) + [("done", seconds)]
    phases = {a: round(t1 - t0_, 1) for (a, t0_), (_, t1) in zip(marks, marks[1:], strict=False)}
    print(
        f"built {len(recs)} dictionaries over {corpus['n_tokens']:,} tokens in {seconds:.0f} s "
        f"(CPU {cpu:.0f} s; load average {load:.1f} on {os.cpu_count()} cores); phases: "
        + ", ".join(f"{k} {v} s" for k, v in phases.items())
    )
    print(
        f"{rows:,} activations, {nbytes / 1e6:.0f} MB ({nbytes / rows:.2f} B/activation); live latents with >= 10 "
        "activations per decile: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items())
    )
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "tokens": corpus["n_tokens"],
                "bytes": nbytes,
                "rows": rows,
                "cpu_seconds": round(cpu, 1),
                "load_average": round(load, 2),
                "phases_s": phases,
                "dictionaries": len(recs),
                "share_live_with_10_per_decile": share,
                "goal_seconds": 300,
            }
        )
    )


if __name__ == "__main__":
    main()
