"""Latency of loading a latent card from a workspace holding at least 10 million stored activations.

    python bench/latent_query.py [--tokens 12288] [--queries 200] [--workspace data/_build/bench_latent_query.duckdb]

The workspace is built by the real caching job (`run_cache`) over Brown training text, for the
default model's dictionaries plus neuron baselines (random sparse SAEs of the trained ones' shape
before those exist; see bench/cache_subject.py). Nothing is synthesised. It is kept under
data/_build/ and reused by later runs (rerunning the cache job on it does nothing).

A query is `latent_card(workspace, dictionary, latent)` from a fresh call: a read session on the
DuckDB file, the latent's statistics row, its activations from the dictionary's Parquet file, top-10
and 3-per-decile examples (32-token windows with per-token activations), their context tokens and
token texts. Latents are drawn uniformly from all live latents of all dictionaries, seeded.
The last line printed is one JSON object: p95_ms, p50_ms, max_ms (wall clock), p95_cpu_ms (this
process's CPU time, which a busy machine inflates less), load_average, rows (stored activations), queries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MIN_ROWS = 10_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=12288)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", help="default build folder (default data/default)")
    ap.add_argument(
        "--workspace", default=None, help="workspace to build or reuse (default data/_build/bench_latent_query.duckdb)"
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from core import store
    from core.latents.cards import latent_card
    from core.paths import BUILD_CACHE_DIR

    ws = Path(args.workspace) if args.workspace else BUILD_CACHE_DIR / "bench_latent_query.duckdb"
    label = "reused workspace"
    if not ws.exists() or store.cache_status(ws):
        from cache_subject import load_subject_model, subject_dictionaries

        from core.cache.plan import CacheParams, plan_corpus_contexts
        from core.cache.run import run_cache
        from core.paths import default_paths

        root = Path(args.root) if args.root else None
        model, mroot = load_subject_model(root)
        plan = plan_corpus_contexts(
            model.tokenizer, args.tokens, min(128, model.cfg.n_ctx), default_paths(mroot)["corpus"]
        )
        dicts, label = subject_dictionaries(model, root, torch.from_numpy(plan.tokens[:16].astype(np.int64)))
        t = time.perf_counter()
        run_cache(model, dicts, ws, plan, CacheParams(n_tokens=args.tokens, ctx_len=plan.ctx_len), model_name="default")
        print(f"built {ws} in {time.perf_counter() - t:.0f} s ({label})")

    recs = store.list_dictionaries(ws, ready_only=True)
    rows = sum(r.n_activations for r in recs)
    if label == "reused workspace":
        label = f"reused {ws}: " + "; ".join(sorted({r.source for r in recs}))
    if rows < MIN_ROWS:
        raise SystemExit(
            f"{ws} holds {rows:,} activations, fewer than {MIN_ROWS:,}; rerun with a larger --tokens and a new --workspace"
        )
    live = []
    with store.session(ws) as con:
        for r in recs:
            lat = con.execute(
                "SELECT latent FROM latent_stats WHERE dict_idx = ? AND n_fires > 0", [r.index]
            ).fetchnumpy()["latent"]
            live += [(r.id, int(x)) for x in lat]
    rng = np.random.default_rng(args.seed)
    picks = [live[i] for i in rng.choice(len(live), size=args.queries + 5, replace=True)]
    for dict_id, latent in picks[:5]:  # warm-up: imports, first file opens
        latent_card(ws, dict_id, latent)
    times, cpu, loaded = [], [], []
    for dict_id, latent in picks[5:]:
        t, c = time.perf_counter(), time.process_time()
        card = latent_card(ws, dict_id, latent)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        loaded.append(card.n_rows)
    t_ms = np.asarray(times)
    load = os.getloadavg()[0]
    print(f"workspace {ws}: {rows:,} activations in {len(recs)} dictionaries; {len(live):,} live latents")
    print(
        f"latent card: p50 {np.percentile(t_ms, 50):.1f} ms, p95 {np.percentile(t_ms, 95):.1f} ms, max {t_ms.max():.1f} ms; "
        f"activations per card median {int(np.median(loaded)):,}, max {max(loaded):,}; "
        f"CPU time p95 {np.percentile(cpu, 95):.1f} ms; load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(
        json.dumps(
            {
                "p95_ms": round(float(np.percentile(t_ms, 95)), 1),
                "p50_ms": round(float(np.percentile(t_ms, 50)), 1),
                "max_ms": round(float(t_ms.max()), 1),
                "p95_cpu_ms": round(float(np.percentile(cpu, 95)), 1),
                "load_average": round(load, 2),
                "rows": rows,
                "queries": args.queries,
                "synthesized": False,
                "subject": label,
            }
        )
    )


if __name__ == "__main__":
    main()
