"""Throughput of the whole caching job against the forward pass and encoders alone.

    python bench/cache_throughput.py [--tokens 65536] [--threads CORES] [--root data/default]
    python bench/cache_throughput.py --subject gpt2-small-shape [--layers 6] --tokens 131072

Defaults: the default workspace's size (65k tokens; 73.0M activations on the current default build) and the cache command's threads.

Measured in one run, on the same batches of Brown training text:
- base: model forward (up to the last hook needed) + every dictionary's encoder, nothing kept;
  timed before and after the job and averaged, so a drifting background load cancels out.
- job: `run_cache` into a fresh workspace, start to finish: fingerprints, contexts, extraction of
  positive activations, scratch chunks, merge into per-dictionary Parquet files, statistics
  (deciles, histograms, top tokens) and commits. The output tokens (W_dec @ W_U, weights only) are
  a separate step after the job (`core.cache.outputs`), timed on their own as output_tokens_s.
ratio = (tokens/s of the job) / (tokens/s of base), by wall clock. The job's storage work runs
on one thread per core between forward passes, and finalisation two dictionaries at a time. cpu_ratio = CPU seconds of base / CPU seconds of the job (all threads):
the same figure without parallelism, and nearly unaffected by other processes. Check load_average: wall-clock
figures taken while other jobs compete for the cores understate the job.
The last line printed is one JSON object.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def bare_forward_and_encoders(model, dicts, plan, params) -> tuple[float, float]:
    """(wall s, CPU s) of the cache ratio's base: the model forward and every dictionary's encoder over `plan`'s
    contexts in the caching job's batches (`params.batch_contexts`), storing nothing."""
    import numpy as np
    import torch

    from core.cache.compute import dictionary_input, encode_slices, forward_hooks, source_hooks

    hooks = source_hooks(dicts)
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for b0 in range(0, plan.n_contexts, params.batch_contexts):
            toks = torch.from_numpy(plan.tokens[b0 : b0 + params.batch_contexts].astype(np.int64))
            cache = forward_hooks(model, toks, hooks)
            for d in dicts:
                for _ in encode_slices(d, dictionary_input(d, cache)):
                    pass
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=65_536)
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: as the cache command)"
    )
    ap.add_argument("--root", help="default build folder (default data/default)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-raw-neurons", action="store_true", help="leave out the raw (dense-ish) neuron baselines")
    ap.add_argument(
        "--subject",
        choices=["default", "gpt2-small-shape"],
        default="default",
        help="the embedded default, or GPT-2 small's shape with random weights (bench/cache_subject.py)",
    )
    ap.add_argument("--layers", default="6", help="gpt2-small-shape: comma-separated layers given dictionaries")
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cache_subject import gpt2_small_shape_subject, load_subject_model, subject_dictionaries

    from core.cache.compute import dictionary_input, encode_slices, forward_hooks, reuse_freed_memory, source_hooks
    from core.cache.outputs import add_output_tokens
    from core.cache.plan import CacheParams, plan_corpus_contexts
    from core.cache.run import run_cache
    from core.paths import default_paths

    root = Path(args.root) if args.root else None
    if args.subject == "gpt2-small-shape":
        model, dicts, label = gpt2_small_shape_subject([int(x) for x in args.layers.split(",")], root)
        plan = plan_corpus_contexts(model.tokenizer, args.tokens, 128, default_paths(root)["corpus"])
    else:
        model, mroot = load_subject_model(root)
        plan = plan_corpus_contexts(
            model.tokenizer, args.tokens, min(128, model.cfg.n_ctx), default_paths(mroot)["corpus"]
        )
        dicts, label = subject_dictionaries(model, root, torch.from_numpy(plan.tokens[:16].astype(np.int64)))
    if args.no_raw_neurons:
        dicts = [d for d in dicts if d.kind != "neurons"]
    params = CacheParams(n_tokens=args.tokens, ctx_len=plan.ctx_len, batch_contexts=args.batch_size)
    hooks = source_hooks(dicts)
    reuse_freed_memory()  # the job sets this allocator option; base gets it too, before its first run

    with torch.inference_mode():  # warm-up
        cache = forward_hooks(model, torch.from_numpy(plan.tokens[:2].astype(np.int64)), hooks)
        for d in dicts:
            for _ in encode_slices(d, dictionary_input(d, cache)):
                pass
    (t_base1, c_base1) = bare_forward_and_encoders(model, dicts, plan, params)
    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), time.process_time()
        ws = Path(tmp) / "bench.duckdb"
        result = run_cache(model, dicts, ws, plan, params, model_name="default", output_tokens=False)
        t_job, c_job = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        add_output_tokens(ws, model, dicts, params.n_output_tokens)  # after the job: weights only
        t_outputs = time.perf_counter() - t
        ws_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    (t_base2, c_base2) = bare_forward_and_encoders(model, dicts, plan, params)
    t_base, c_base = (t_base1 + t_base2) / 2, (c_base1 + c_base2) / 2
    load = os.getloadavg()[0]
    n = plan.n_cached_tokens
    rows = sum(result.rows.values())
    act_bytes = sum(result.file_bytes.values())
    print(f"subject: {label}")
    print(
        f"load average {load:.1f} on {os.cpu_count()} cores; CPU seconds (all threads): base {c_base:.1f}, job {c_job:.1f} ("
        + ", ".join(f"{k} {v:.1f}" for k, v in result.cpu_seconds.items())
        + ")"
    )
    print(
        f"tokens {n:,}; base {t_base1:.1f} s / {t_base2:.1f} s; job {t_job:.1f} s; phases "
        + ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    )
    print(
        f"activations stored {rows:,} ({rows / n:.0f} per token); Parquet {act_bytes / rows:.2f} B/activation, "
        f"whole workspace {ws_bytes / rows:.2f} B/activation"
    )
    print(
        json.dumps(
            {
                "ratio": round(t_base / t_job, 3),
                "cpu_ratio": round(c_base / c_job, 3),
                "load_average": round(load, 2),
                "tokens": n,
                "tokens_per_s_job": round(n / t_job, 1),
                "tokens_per_s_base": round(n / t_base, 1),
                "output_tokens_s": round(t_outputs, 2),
                "activations": rows,
                "bytes_per_activation": round(act_bytes / rows, 3),
                "workspace_bytes_per_activation": round(ws_bytes / rows, 3),
                "dictionaries": len(dicts),
                "threads": args.threads,
                "subject": label,
            }
        )
    )


if __name__ == "__main__":
    main()
