"""Can the default's training loop teach a small model to copy in context? Induction rows only.

    python bench/induction_sanity.py [--layers 2] [--d-model 128] [--vocab 8192] [--row-vocab 8192] [--steps 600]

Trains a fresh model of the default's architecture (tied embeddings, `core.build.train_model`'s optimiser
and learning-rate schedule) on `core.build.train_model.induction_row` rows only, ids drawn from the first
`--row-vocab` ids, one thread. Every 100 steps it prints the loss on a row's first 8 tokens (unpredictable:
about ln(row vocab)) and on positions 60-127 (repeats: near 0 once an induction head works). Last line:
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import numpy as np
    import torch

    from core.build.train_model import ModelTrainingConfig, _lr_at, _new_model, _optimizer, induction_row

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--row-vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = ModelTrainingConfig(
        n_layers=args.layers,
        d_model=args.d_model,
        n_heads=max(1, args.d_model // 32),
        d_mlp=4 * args.d_model,
        vocab_size=args.vocab,
        steps=args.steps,
        tie_embeddings=True,
        weight_decay=args.weight_decay,
    )
    model = _new_model(cfg, None)
    optimiser = _optimizer(model, cfg)
    rng = np.random.default_rng(0)
    curve = []
    t0 = time.time()
    for step in range(cfg.steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(cfg, step)
        rows = torch.from_numpy(np.stack([induction_row(rng, cfg.n_ctx, args.row_vocab, 0) for _ in range(16)])).long()
        loss = model(rows, return_type="loss", loss_per_token=True)  # [16, n_ctx - 1]
        loss.mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        if (step + 1) % 100 == 0:
            point = {
                "step": step + 1,
                "loss_first_8": round(float(loss[:, :8].mean().detach()), 3),
                "loss_repeats": round(float(loss[:, 60:].mean().detach()), 3),
            }
            curve.append(point)
            print(point, f"{time.time() - t0:.0f} s", flush=True)
    print(json.dumps({"uniform_loss": round(math.log(args.row_vocab - 1), 3), "curve": curve, **vars(args)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
