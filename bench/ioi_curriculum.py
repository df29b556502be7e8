"""Does a names-and-templates curriculum let a small model learn IOI? Both arms in one run.

    python bench/ioi_curriculum.py [--steps 1050] [--threads 2]

A 2-layer d_model-128 HookedTransformer with the default's tokenizer is trained on IOI text only
(training names and templates of the default's task split), twice from the same initialisation:
- `flat`: every step draws from all training names and templates;
- `curriculum`: 4 names and 1 intro/1 action template for 150 steps, then 12/3/3, 40/10/8, then all.
Every 75 steps both are evaluated on the same 200 IOI items of training names and templates, and
on 200 held-out items (held-out names and templates, which never occur in this IOI-only text, so
those stay near chance by construction). Last line: one JSON object with both curves and the ratio
of training-name accuracy, curriculum / flat, at the final step.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.build.evaluate import task_accuracy  # noqa: E402
from core.build.tasks import IOI_ACTIONS_TRAIN, IOI_INTROS_TRAIN, TaskSplit, evaluation_items, ioi_item  # noqa: E402
from core.paths import default_paths  # noqa: E402

STAGES = ((150, 4, 1, 1), (300, 12, 3, 3), (450, 40, 10, 8))  # (until step, names, intros, actions)
BATCH, N_CTX, EVAL_EVERY = 16, 128, 75


def stage(step: int, curriculum: bool, n_names: int) -> tuple[int, int, int]:
    """(names, intro templates, action templates) in use at `step`."""
    if curriculum:
        for until, names, intros, actions in STAGES:
            if step < until:
                return names, intros, actions
    return n_names, len(IOI_INTROS_TRAIN), len(IOI_ACTIONS_TRAIN)


def ioi_text(rng: random.Random, names: tuple[str, ...], n_intros: int, n_actions: int, chars: int = 600) -> str:
    """Complete IOI sentences (prompt + answer) from the first templates, until `chars` characters."""
    sentences: list[str] = []
    while sum(len(s) for s in sentences) < chars:
        item = ioi_item(rng, names, False, n_intros, n_actions)
        sentences.append(f"{item.prompt}{item.correct}.")
    return " ".join(sentences)


def train_arm(curriculum: bool, steps: int, split: TaskSplit, tokenizer, bpe, evals: dict) -> list[dict]:
    """Train one arm from seed 0; returns the evaluation points."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=128,
        n_ctx=N_CTX,
        d_head=32,
        n_heads=4,
        d_mlp=512,
        d_vocab=len(tokenizer),
        act_fn="gelu_new",
        normalization_type="LN",
        device="cpu",
        seed=0,
    )
    torch.manual_seed(0)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = random.Random(0)
    points = []
    start = time.time()
    for step in range(steps + 1):
        if step % EVAL_EVERY == 0 or step == steps:
            model.eval()
            point = {"step": step, "seconds": round(time.time() - start, 1)}
            point.update({k: round(task_accuracy(model, items), 3) for k, items in evals.items()})
            points.append(point)
            print(("curriculum" if curriculum else "flat"), json.dumps(point), flush=True)
            model.train()
        if step == steps:
            break
        n_names, n_intros, n_actions = stage(step, curriculum, len(split.train_names))
        texts = [ioi_text(rng, split.train_names[:n_names], n_intros, n_actions) for _ in range(BATCH)]
        rows = np.zeros((BATCH, N_CTX), dtype=np.int64)
        for i, enc in enumerate(bpe.encode_batch(texts)):
            ids = [tokenizer.bos_token_id] + enc.ids[: N_CTX - 1]
            rows[i, : len(ids)] = ids
        loss = model(torch.from_numpy(rows), return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1050)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from core.build.tokenizer import load_bpe, load_tokenizer

    paths = default_paths()
    tokenizer = load_tokenizer(paths["tokenizer_dir"])
    bpe = load_bpe(paths["tokenizer_dir"])
    split = TaskSplit.from_json(json.loads(paths["manifest"].read_text())["task_split"])
    item_rng = random.Random(5)
    evals = {
        "train_names_templates": [ioi_item(item_rng, split.train_names, heldout_templates=False) for _ in range(200)],
        "heldout_names_templates": evaluation_items("ioi", split, [], 200),
    }
    flat = train_arm(False, args.steps, split, tokenizer, bpe, evals)
    curriculum = train_arm(True, args.steps, split, tokenizer, bpe, evals)
    final = "train_names_templates"
    print(
        json.dumps(
            {
                "steps": args.steps,
                "flat_final": flat[-1][final],
                "curriculum_final": curriculum[-1][final],
                "ratio": round(curriculum[-1][final] / max(flat[-1][final], 1e-9), 3),
                "flat": flat,
                "curriculum": curriculum,
            }
        )
    )


if __name__ == "__main__":
    main()
