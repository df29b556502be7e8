"""Which parts of a default build's model carry IOI, on training and on held-out introductions.

    python bench/ioi_attribution_probe.py ROOT [--items N]

For IOI items with the generalisation names (`core.build.generalisation`), with v1's training actions and
either v1's training introductions or one held-out introduction at a time, splits the final logit
difference logit(IO) - logit(S) into direct contributions: each attention head, each MLP, the embeddings
and biases (LayerNorm folded, its final scale frozen per item; the parts sum to the difference). Prompts
are tokenised as `evaluate-default` does. Last line: one JSON object, per frame the accuracy, the mean
logit difference, the sum over heads, each MLP and the three heads of largest mean contribution.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def frame_attribution(model, items) -> dict:
    """Mean direct contributions to logit(correct) - logit(incorrect) over `items` (one row per item)."""
    import torch

    from core.build.evaluate import encode_prompts
    from core.subjects.tokens import single_token_id

    tok, cfg = model.tokenizer, model.cfg
    heads = torch.zeros(cfg.n_layers, cfg.n_heads)
    mlps = torch.zeros(cfg.n_layers)
    total, unexplained, right = 0.0, 0.0, 0
    for item in items:
        tokens, _ = encode_prompts(tok, [item.prompt], tok.bos_token_id)  # [1, pos]
        right_id, wrong_id = single_token_id(tok, item.correct), single_token_id(tok, item.incorrect)
        logits, cache = model.run_with_cache(tokens)
        diff = float(logits[0, -1, right_id] - logits[0, -1, wrong_id])
        direction = (model.W_U[:, right_id] - model.W_U[:, wrong_id]) / cache["ln_final.hook_scale"][0, -1]
        parts = float((cache["hook_embed"][0, -1] + cache["hook_pos_embed"][0, -1]) @ direction)
        parts += float(model.b_U[right_id] - model.b_U[wrong_id])
        for layer in range(cfg.n_layers):
            by_head = cache[f"blocks.{layer}.attn.hook_result"][0, -1] @ direction  # [n_heads]
            mlp = float(cache[f"blocks.{layer}.hook_mlp_out"][0, -1] @ direction)
            heads[layer] += by_head
            mlps[layer] += mlp
            parts += float(by_head.sum()) + mlp + float(model.blocks[layer].attn.b_O @ direction)
        total += diff
        unexplained += abs(diff - parts)
        right += diff > 0
    n = len(items)
    heads, mlps = heads / n, mlps / n
    ranked = sorted(
        (
            (f"L{layer}H{head}", float(heads[layer, head]))
            for layer in range(cfg.n_layers)
            for head in range(cfg.n_heads)
        ),
        key=lambda pair: -abs(pair[1]),
    )
    return {
        "accuracy": round(right / n, 3),
        "logit_difference": round(total / n, 3),
        "heads": round(float(heads.sum()), 3),
        "mlps": [round(float(x), 3) for x in mlps],
        "top_heads": {name: round(value, 3) for name, value in ranked[:3]},
        "mean_unexplained": round(unexplained / n, 4),
    }


def main() -> int:
    import torch

    from core.build import generalisation as gen
    from core.build.tasks import IOI_ACTIONS_TRAIN, IOI_INTROS_TRAIN
    from core.subjects.models import load_default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--items", type=int, default=40)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_default_model(args.root)
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    model.set_use_attn_result(True)
    tok = model.tokenizer
    names = gen.single_token_names(tok)
    frames = {"training introductions": IOI_INTROS_TRAIN} | {intro: (intro,) for intro in gen.GEN_IOI_INTROS}
    result = {}
    for label, intros in frames.items():
        rng = random.Random(0)
        items = [gen._ioi(rng, names, intros, IOI_ACTIONS_TRAIN) for _ in range(args.items)]
        result[label] = frame_attribution(model, items)
        print(label, json.dumps(result[label]), flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
