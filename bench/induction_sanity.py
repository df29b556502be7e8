"""Can the default's training loop teach a small model to copy in context? Induction rows only.

    python bench/induction_sanity.py [--layers 2] [--d-model 128] [--vocab 8192] [--row-vocab 8192] [--steps 600]
        [--lr 2e-3] [--batch 16] [--pos-init gpt2|sinusoidal] [--pos-scale 1] [--plant-prev] [--plant-induction]
        [--copy-init]

Trains a fresh model of the default's architecture (tied embeddings, `core.build.train_model`'s optimiser
and learning-rate schedule) on `core.build.train_model.induction_row` rows only, ids drawn from the first
`--row-vocab` ids, one thread. Every 100 steps it prints the loss on a row's first 8 tokens (unpredictable:
about ln(row vocab)) and on positions 60-127 (repeats: near 0 once an induction head works), and the two
heads an induction circuit needs (`core.build.induction_init.head_scores` on fixed rows repeating every
20 tokens): the best previous-token head and the best induction head after layer 0. Uniform attention
scores about 0.04 and 0.017.

Initialisations: sinusoidal positions (`--pos-init`, scaled by `--pos-scale`), a previous-token head
planted in layer 0 (`--plant-prev`), heads after layer 0 starting as copiers (`--copy-init`, OV ~
identity), and the whole planted induction circuit the v6 build starts from (`--plant-induction`,
`core.build.induction_init`). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def sinusoidal_positions(n_ctx: int, d_model: int):
    """The Transformer's sinusoidal position table `[n_ctx, d_model]`: sin in even columns, cos in odd."""
    import torch

    pos = torch.arange(n_ctx, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    table = torch.zeros(n_ctx, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


def main() -> int:
    import numpy as np
    import torch

    from core.build.induction_init import (
        SCORE_PERIOD,
        head_scores,
        plant_induction_circuit,
        plant_previous_token_head,
        repeated_rows,
    )
    from core.build.train_model import ModelTrainingConfig, _lr_at, _new_model, _optimizer, induction_row

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--row-vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--pos-init", choices=["gpt2", "sinusoidal"], default="gpt2")
    ap.add_argument("--pos-scale", type=float, default=1.0, help="multiply the initial positional embeddings")
    ap.add_argument("--plant-prev", action="store_true", help="layer 0 head 0 starts as a previous-token head")
    ap.add_argument("--plant-induction", action="store_true", help="plant a whole induction circuit")
    ap.add_argument("--copy-init", action="store_true", help="heads after layer 0 start as copiers (OV ~ I)")
    ap.add_argument("--batch", type=int, default=16)
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
        lr=args.lr,
    )
    model = _new_model(cfg, None)
    probe = repeated_rows(np.random.default_rng(1), 8, cfg.n_ctx, args.row_vocab, SCORE_PERIOD, 0)
    with torch.no_grad():
        if args.pos_init == "sinusoidal":
            table = sinusoidal_positions(cfg.n_ctx, cfg.d_model)
            model.pos_embed.W_pos.copy_(table * (model.cfg.initializer_range / table.std()))
        model.pos_embed.W_pos.mul_(args.pos_scale)
    if args.plant_prev:
        plant_previous_token_head(model)
    if args.plant_induction:
        plant_induction_circuit(model, bos=0)
    if args.copy_init:
        with torch.no_grad():
            for block in model.blocks[1:]:
                attn = block.attn  # W_V [n_heads, d_model, d_head], W_O [n_heads, d_head, d_model]
                basis = torch.linalg.qr(torch.randn(cfg.d_model, cfg.d_model))[0]  # orthonormal columns
                for h in range(attn.W_V.shape[0]):
                    cols = basis[:, h * attn.W_V.shape[2] : (h + 1) * attn.W_V.shape[2]]
                    attn.W_V[h].copy_(cols)
                    attn.W_O[h].copy_(cols.T)
    optimiser = _optimizer(model, cfg)
    rng = np.random.default_rng(0)
    curve = []
    with torch.no_grad():
        start = model(probe, return_type="loss", loss_per_token=True)  # [8, n_ctx - 1]
    print(
        {
            "step": 0,
            "probe_loss_repeats": round(float(start[:, 60:].mean()), 3),
            **head_scores(model, probe, SCORE_PERIOD),
        },
        flush=True,
    )
    t0 = time.time()
    for step in range(cfg.steps):
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(cfg, step)
        rows = torch.from_numpy(
            np.stack([induction_row(rng, cfg.n_ctx, args.row_vocab, 0) for _ in range(args.batch)])
        ).long()
        loss = model(rows, return_type="loss", loss_per_token=True)  # [16, n_ctx - 1]
        loss.mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        if (step + 1) % 100 == 0:
            point = {
                "step": step + 1,
                "loss_first_8": round(float(loss[:, :8].mean().detach()), 3),
                "loss_repeats": round(float(loss[:, 60:].mean().detach()), 3),
                **head_scores(model, probe, SCORE_PERIOD),
            }
            curve.append(point)
            print(point, f"{time.time() - t0:.0f} s", flush=True)
    print(json.dumps({"uniform_loss": round(math.log(args.row_vocab - 1), 3), "curve": curve, **vars(args)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
