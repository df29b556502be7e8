"""How a built model's IOI moves when training goes on with another task text: a cheap probe of task texts.

    python bench/ioi_finetune_probe.py ROOT --variant NAME [--steps 800] [--lr 1e-3]

Loads the model stage of a default build at ROOT (`build-default --out ROOT`, stopped after its model),
ties its unembedding again and trains it `--steps` more steps on a mix of Brown windows, task text of the
chosen variant and induction rows (20%), with the build's optimiser and a cosine schedule from `--lr`.
Every `--every` steps it reports held-out IOI, the generalisation sets and both head scores (200 items
each), so a task text's effect on IOI can be read in minutes instead of a full build. Variants:
- `same`: the build's own task text (the control: does training longer move IOI?);
- `random_names`: v4's text over the same split (half of IOI and copy sentences named with random
  capitalised vocabulary words);
- `random_names_all`: the same with every IOI and copy sentence so named;
- `brown_actions`: v9's text (v4's, with half of the IOI actions taken from Brown);
- `brown_intros`: v10's text (v9's, with IOI introductions and connectors taken from Brown as well).
`--ioi-weight`, `--bracket-weight` and `--bracket-budgets` change the mix of any variant;
`--plant-bracket-head H` replaces layer 0's head H with `core.build.bracket_init`'s bracket head first
(calibrated on training words), and the first point is measured after it.
(`random_names` over a build of v2's or v7's text is what task text v8 changes: v4's text, trained as v7.
A first v8, with half of IOI in generic frames of any training verb and preposition, was probed as
`v8` in commit 4c25b3a and dropped: worse than `random_names` at every point to step 400.)
Last line: one JSON object (the curve).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument(
        "--variant",
        choices=("same", "random_names", "random_names_all", "brown_actions", "brown_intros"),
        default="same",
    )
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ioi-weight", type=float, default=None, help="IOI's task weight (default: the build's)")
    parser.add_argument(
        "--bracket-weight", type=float, default=None, help="brackets' task weight (default: the build's)"
    )
    parser.add_argument(
        "--bracket-budgets",
        default=None,
        help="v2 bracket budgets' weights for 12, 30 and 60 words, e.g. 0.2,0.3,0.5 (default: the text's)",
    )
    parser.add_argument("--plant-bracket-head", type=int, default=None, help="layer 0's head to replace (none)")
    parser.add_argument("--task-share", type=float, default=0.5)
    parser.add_argument("--induction-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--save", type=Path, default=None, help="write the tuned model here (untied)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from core.build import tasks_v2
    from core.build.evaluate import repeated_tokens_accuracy, task_accuracy
    from core.build.generalisation import generalisation_items
    from core.build.induction_init import model_induction_heads
    from core.build.tasks import TaskSplit, evaluation_items, random_name_pool
    from core.build.tasks_v2 import vocabulary_words
    from core.build.train_model import (
        ModelTrainingConfig,
        _build_rows,
        _lr_at,
        _optimizer,
        _training_step,
        load_default_data,
        tie_unembedding,
        untie_unembedding,
    )
    from core.subjects.dictionaries import read_manifest
    from core.subjects.models import load_default_model, save_model

    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    manifest = read_manifest(args.root)
    built = manifest["model_training"]
    split = TaskSplit.from_json(manifest["task_split"])
    data = load_default_data(args.root, split)
    if args.variant != "same":
        text = {"brown_actions": "v9", "brown_intros": "v10"}.get(args.variant, "v4")
        words = random_name_pool(vocabulary_words(data.bpe), split.train_names + split.heldout_names)
        split = dataclasses.replace(split, task_text=text, vocabulary_words=tuple(words))
        if args.variant == "random_names_all":
            tasks_v2.V4_RANDOM_NAME_SHARE = 1.0
    weights = dict(built["task_weights"])
    if args.ioi_weight is not None:
        weights["ioi"] = args.ioi_weight
    if args.bracket_weight is not None:
        weights["brackets"] = args.bracket_weight
    if args.bracket_budgets:
        tasks_v2.V2_BRACKET_BUDGETS = (
            tasks_v2.V2_BRACKET_BUDGETS[0],
            tuple(map(float, args.bracket_budgets.split(","))),
        )
    cfg = ModelTrainingConfig(
        **{k: v for k, v in built.items() if k in ("vocab_size", "n_layers", "d_model", "n_heads", "d_mlp", "n_ctx")},
        seed=args.seed,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=50,
        task_share_start=args.task_share,
        task_share_end=args.task_share,
        task_weights=weights,
        ioi_curriculum=(),
        induction_rows=((args.steps, args.induction_share),) if args.induction_share else (),
        task_text=split.task_text,
    )
    t0 = time.time()
    rows = _build_rows(cfg, data.bpe, data.brown_train_ids, split, data.train_sentences)
    print(f"rows in {time.time() - t0:.0f} s", flush=True)

    model = load_default_model(args.root)
    tokenizer = model.tokenizer
    tie_unembedding(model)
    if args.plant_bracket_head is not None:
        from core.build.bracket_init import bracket_token_ids, calibration_rows, plant_bracket_head

        rows_in = calibration_rows(tokenizer, data.train_sentences)
        plant_bracket_head(model, rows_in, *bracket_token_ids(tokenizer), head=args.plant_bracket_head)
    val_sentences = data.validation_sentences
    sets = {
        "ioi_heldout": evaluation_items("ioi", split, val_sentences, 200),
        "sva_heldout": evaluation_items("sva", split, val_sentences, 200),
        "brackets_heldout": evaluation_items("brackets", split, val_sentences, 200),
        **{
            s: generalisation_items(s, split, val_sentences, 200, tokenizer=tokenizer)
            for s in (
                "ioi_new_names",
                "ioi_new_frames",
                "ioi_at_actions",
                "sva_new_nouns",
                "brackets_nested_inner_closed",
                "brackets_long_span",
                "brackets_span_over_60",
            )
        },
    }

    def point(step: int) -> dict:
        model.eval()
        p = {"step": step, "seconds": round(time.time() - t0)}
        p.update({k: round(task_accuracy(model, v), 3) for k, v in sets.items()})
        p.update(model_induction_heads(model))
        p["copy_repeated_tokens"] = round(repeated_tokens_accuracy(model), 3)
        model.train()
        print(json.dumps(p), flush=True)
        return p

    curve = [point(0)]
    opt = _optimizer(model, cfg)
    model.train()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        batch = torch.from_numpy(rows[step * cfg.batch_size : (step + 1) * cfg.batch_size].astype(np.int64))
        _training_step(model, opt, batch)
        if (step + 1) % args.every == 0:
            curve.append(point(step + 1))
    if args.save:
        model.eval()
        untie_unembedding(model)
        save_model(model, args.save)
    print(json.dumps({"variant": args.variant, "args": {k: str(v) for k, v in vars(args).items()}, "curve": curve}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
