"""Time of `export-neuronpedia` for a sample of 1,000 latents: written in Neuronpedia's bulk format and read back.

    python bench/neuronpedia_export.py [--workspace data/_build/bench_latent_query.duckdb] [--sample 1000] [--examples 20]

The workspace (default: the one bench/latent_query.py builds from real text, 10M+ stored activations) is copied to a
temporary folder and upgraded there (the original is never written). In the copy the sampled latents of the dictionary
with the most live latents get offline baseline explanations, each scored by detection (judge), so the export carries
explanations and scores too; that preparation is not timed. Timed: `export_neuronpedia(..., sample=N)` of that
dictionary, which ends by reading every file back and checking it (`read_export`).
The last line printed is one JSON object: seconds, latents, activations, explanations, scores, mb (bytes written), goal_s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_S = 30.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=None, help="default data/_build/bench_latent_query.duckdb")
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--no-scores", action="store_true", help="skip the (untimed) explanations and scores")
    args = ap.parse_args()

    from core import store
    from core.autointerp.engine import RunSpec, run
    from core.autointerp.neuronpedia_export import export_neuronpedia
    from core.paths import BUILD_CACHE_DIR

    src = Path(args.workspace) if args.workspace else BUILD_CACHE_DIR / "bench_latent_query.duckdb"
    if not src.exists():
        sys.exit(f"error: {src} does not exist; build it with `python bench/latent_query.py`")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / src.name
        shutil.copy2(src, ws)
        shutil.copytree(store.data_dir(src), store.data_dir(ws))
        store.migrate(ws)
        live = {
            d.id: int((store.latent_stats_frame(ws, d.id)["n_fires"] > 0).sum())
            for d in store.list_dictionaries(ws, ready_only=True)
        }
        dictionary = max(live, key=live.get)
        n = min(args.sample, live[dictionary])
        if not args.no_scores:
            run(ws, [dictionary], RunSpec(scorers=("detection",), random_explanations=False), sample=n)
        out = Path(tmp) / "export"
        t0 = time.perf_counter()
        summary = export_neuronpedia(ws, out, dictionaries=[dictionary], sample=n, n_examples=args.examples)
        seconds = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"{dictionary}: {summary.features} latents exported and read back in {seconds:.1f} s ({os.cpu_count()} CPUs)")
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "latents": summary.features,
                "activations": summary.activations,
                "explanations": summary.explanations,
                "scores": summary.scores,
                "mb": round(mb, 1),
                "goal_s": GOAL_S,
            }
        )
    )


if __name__ == "__main__":
    main()
