"""Raw-neuron storage per slice: the row-order scan + concatenate + sort by latent against the scan by latent.

    python bench/neuron_scan.py [--rows 1016] [--width 3072] [--slices 8] [--repeats 3]

One thread, GELU outputs of shifted Gaussians at several positive shares (10-44%); best of `--repeats`
per path. It sets `core.cache.compute.BY_LATENT_MIN_SHARE` (docs/benchmarks.md). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import numpy as np
    import torch

    from core.cache.compute import positive_entries, positive_entries_by_latent
    from core.cache.files import group_by_latent

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1016)
    ap.add_argument("--width", type=int, default=3072)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    row_token = np.arange(args.rows, dtype=np.uint32)
    out = {}
    for shift in (1.28, 0.84, 0.52, 0.15):  # about 10, 20, 30 and 44% positive
        pieces = [torch.nn.functional.gelu(torch.randn(args.rows, args.width) - shift) for _ in range(args.slices)]
        row_order = by_latent = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            got = []
            for p in pieces:
                cnt, lat, val = positive_entries(p, args.width)
                got.append((np.repeat(row_token, cnt), lat, val))
            token, latent, value = (np.concatenate([g[i] for g in got]) for i in range(3))
            group_by_latent(latent, token, value, args.width)
            row_order = min(row_order, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for p in pieces:
                positive_entries_by_latent(p, row_token, args.width)
            by_latent = min(by_latent, time.perf_counter() - t0)
        share = len(value) / (args.slices * args.rows * args.width)
        print(f"positive {share:.2f}: row order {row_order * 1e3:.0f} ms, by latent {by_latent * 1e3:.0f} ms")
        out[f"share_{share:.2f}"] = {
            "row_order_ms": round(row_order * 1e3, 1),
            "by_latent_ms": round(by_latent * 1e3, 1),
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
