"""Hungarian layer overlap: time for two 2,048-latent dictionaries, and how the cost scales toward GPT-2 small's 24,576.

    python bench/overlap.py [--sizes 2048 4096 8192] [--d 768]      (--sizes with no value: the 2,048 figure only)

1. The figure: the default model's residual SAEs at layers 1 and 2 (2,048 latents, d 256), matched on
   decoder cosine by dense Hungarian (`scipy.optimize.linear_sum_assignment`) and by the certified
   sparse method (`core.analysis.overlap.match_sparse`); both are timed end to end (cosine matrix included)
   and must find the same total similarity.
2. Scaling: synthetic decoder pairs of GPT-2 small's width (d 768) shaped like adjacent layers (half
   of B's rows are noisy copies of rows of A, half unrelated), at each size; dense and sparse are
   timed, their totals compared, and log-log slopes fitted to extrapolate to 24,576 latents. Dense
   memory is the float32 similarity plus scipy's float64 cost matrix, 12 n^2 bytes (the process's peak
   RSS is reported too).
Wall time and this process's CPU time are both reported (the machine is shared; CPU time is
inflated less by other jobs), with the load average. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

TARGET = 24_576


def timed(fn):
    """(result, wall seconds, CPU seconds of this process) of `fn()`."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def synthetic_pair(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Decoders A, B `[n, d]` with unit rows: half of B's rows are noisy copies of A's rows (permuted), half random."""
    from core.analysis.overlap import unit_rows

    rng = np.random.default_rng(seed)
    a = unit_rows(rng.standard_normal((n, d)))
    b = unit_rows(rng.standard_normal((n, d)))
    half = n // 2
    src = rng.permutation(n)[:half]
    b[:half] = unit_rows(a[src] + 1.2 * rng.standard_normal((half, d)) / np.sqrt(d))  # cosine ~0.64 with its source
    return a, b[rng.permutation(n)]


def fit(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """(exponent, seconds at TARGET) of a power law fitted to the largest three sizes."""
    x, y = np.log(sizes[-3:]), np.log(seconds[-3:])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(np.exp(intercept + slope * np.log(TARGET)))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--sizes", type=int, nargs="*", default=[2048, 4096, 8192], help="scaling sizes (none: the 2,048 figure only)"
    )
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--k", type=int, default=8, help="candidates per latent for the sparse method")
    args = p.parse_args()
    import scipy.optimize  # noqa: F401  (imports outside the timings)
    import scipy.sparse.csgraph  # noqa: F401
    import threadpoolctl  # noqa: F401

    from core.analysis import overlap
    from core.subjects.dictionaries import load_default_dictionaries

    ids = ["resid:blocks.1.hook_resid_pre", "resid:blocks.2.hook_resid_pre"]
    dicts = load_default_dictionaries(ids=ids)
    a, b = (overlap.decoder_matrix(dicts[i]) for i in ids)
    dense, dw, dc = timed(lambda: overlap.match(a, b, "dense"))
    sparse, sw, sc = timed(lambda: overlap.match(a, b, "sparse", args.k))
    print(
        f"default resid L1~L2 (2048 x 256): dense {dw:.2f} s wall / {dc:.2f} s CPU, sparse {sw:.2f} s / {sc:.2f} s; "
        f"totals {dense.total:.4f} vs {sparse.total:.4f}; same pairs {np.mean(dense.cols == sparse.cols):.4f}",
        flush=True,
    )
    out: dict = {
        "seconds": round(dw, 2),
        "cpu_seconds": round(dc, 2),
        "sparse_seconds": round(sw, 2),
        "sparse_cpu_seconds": round(sc, 2),
        "mean_similarity": round(float(dense.similarity.mean()), 4),
        "sparse_total_minus_dense": float(sparse.total - dense.total),
        "same_pairs_fraction": float(np.mean(dense.cols == sparse.cols)),
        "load_average_start": os.getloadavg()[0],
    }

    rows = []
    for n in args.sizes:
        a, b = synthetic_pair(n, args.d)
        dm, dw, dc = timed(lambda a=a, b=b: overlap.match(a, b, "dense"))
        peak = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        )  # GB (Linux reports kB); sizes ascend, so this is dense's peak
        sm, sw, sc = timed(lambda a=a, b=b: overlap.match(a, b, "sparse", args.k))
        rows.append(
            {
                "n": n,
                "dense_wall": round(dw, 2),
                "dense_cpu": round(dc, 2),
                "sparse_wall": round(sw, 2),
                "sparse_cpu": round(sc, 2),
                "sparse_minus_dense": float(sm.total - dm.total),
                "peak_rss_gb": round(peak, 2),
                "dense_matrix_gb": round(n * n * 12 / 1e9, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out["load_average_end"] = os.getloadavg()[0]
    if len(rows) < 3:
        print(json.dumps(out))
        return 0
    sizes = [r["n"] for r in rows]
    de, dt = fit(sizes, [r["dense_cpu"] for r in rows])
    se, st = fit(sizes, [r["sparse_cpu"] for r in rows])
    out.update(
        {
            "scaling": rows,
            "dense_exponent": round(de, 2),
            "sparse_exponent": round(se, 2),
            "estimated_dense_cpu_seconds_24576": round(dt),
            "estimated_sparse_cpu_seconds_24576": round(st),
            "dense_memory_gb_24576": round(TARGET * TARGET * 12 / 1e9, 1),
            "sparse_memory_gb_24576": round(2 * overlap.BLOCK_ROWS * TARGET * 4 / 1e9, 2),
            "available_memory_gb": round(overlap.available_memory() / 1e9, 1),
            # what method='auto' picks for 24,576 latents on this machine (dense is faster; sparse needs far less memory)
            "auto_method_24576_here": "dense"
            if overlap.DENSE_BYTES_PER_CELL * TARGET * TARGET <= overlap.DENSE_MEMORY_SHARE * overlap.available_memory()
            else "sparse",
        }
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
