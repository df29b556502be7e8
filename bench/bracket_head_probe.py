"""Why a built model loses an open bracket over long spans, and what a planted bracket head changes.

    python bench/bracket_head_probe.py ROOT [--items 200]

For the model stage of a default build at ROOT (`build-default --out ROOT`, stopped after its model):
- `by_span`: for one bracket open over 4-55 words (validation text, 40 items each), the accuracy of `)`
  over `.` at the end and the attention of the head that attends most to the "(" from there; for a build
  with a bracket head built in (v12, `plant_bracket_columns`), also that head's attention on the brackets,
  what it writes into its "depth" column and the accuracy with its output zeroed;
- `planted`: the bracket generalisation sets and the held-out figures before and after replacing each
  head of layer 0 but the first (the planted previous-token head of v6 on) with
  `core.build.bracket_init`'s bracket head, without any training (`--items` items each).
- `built_in_gains` (a build with a built-in head, `--built-in-gains 0,1,4,16`): the same figures with that
  head's output multiplied by each gain, without any training: do the layers above read it at all?
`--spans-only` stops after `by_span` (and `built_in_gains`). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPANS = (4, 12, 20, 30, 40, 55)
SETS = ("brackets_nested_inner_closed", "brackets_long_span", "brackets_span_over_60")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--spans-only", action="store_true", help="only the accuracy by span")
    parser.add_argument("--built-in-gains", default="", help="comma-separated gains for a built-in head's output")
    args = parser.parse_args()

    import torch

    from core.build.bracket_init import BUILT_IN_HEAD, bracket_token_ids, calibration_rows, plant_bracket_head
    from core.build.evaluate import task_accuracy
    from core.build.generalisation import generalisation_items, words_from
    from core.build.tasks import TaskSplit, evaluation_items
    from core.build.train_model import load_default_data
    from core.subjects.dictionaries import read_manifest
    from core.subjects.models import load_default_model
    from core.subjects.tokens import single_token_id

    torch.set_num_threads(2)
    manifest = read_manifest(args.root)
    split = TaskSplit.from_json(manifest["task_split"])
    data = load_default_data(args.root, split)
    model = load_default_model(args.root).eval()
    tok = model.tokenizer
    opens, closes = bracket_token_ids(tok)
    close_id, dot_id = single_token_id(tok, ")"), single_token_id(tok, ".")
    sentences = data.validation_sentences
    built_in = manifest["model_training"].get("plant_bracket_head", False)
    bracket_ids = torch.tensor(opens + closes)

    def zero_built_in_head(z: torch.Tensor, hook) -> torch.Tensor:
        z[:, :, BUILT_IN_HEAD] = 0.0  # [batch, pos, heads, d_head]
        return z

    rng = random.Random(0)
    by_span = {}
    for span in SPANS:
        right, zeroed, attention, tokens, on_brackets, depth = [], [], [], [], [], []
        for _ in range(40):
            text = f"{words_from(rng, sentences, rng.randint(2, 4))} ({words_from(rng, sentences, span)}"
            ids = ([tok.bos_token_id] + tok.encode(text, add_special_tokens=False))[: model.cfg.n_ctx]
            row = torch.tensor([ids])
            with torch.no_grad():
                logits, cache = model.run_with_cache(
                    row, names_filter=lambda n: n.endswith("pattern") or n == "blocks.0.attn.hook_z"
                )
            right.append(float(logits[0, -1, close_id] > logits[0, -1, dot_id]))
            at = next(i for i, t in enumerate(ids) if t in opens)
            layers = [cache[f"blocks.{layer}.attn.hook_pattern"][0, :, -1, at] for layer in range(model.cfg.n_layers)]
            attention.append(torch.stack(layers))  # [layers, heads]
            tokens.append(len(ids))
            if built_in:
                pattern = cache["blocks.0.attn.hook_pattern"][0, BUILT_IN_HEAD, -1]  # [k]
                on_brackets.append(float(pattern[torch.isin(row[0], bracket_ids)].sum()))
                z = cache["blocks.0.attn.hook_z"][0, -1, BUILT_IN_HEAD]  # [d_head]
                depth.append(float(z @ model.blocks[0].attn.W_O[BUILT_IN_HEAD][:, -1]))
                with torch.no_grad():
                    cut = model.run_with_hooks(row, fwd_hooks=[("blocks.0.attn.hook_z", zero_built_in_head)])
                zeroed.append(float(cut[0, -1, close_id] > cut[0, -1, dot_id]))
        mean = torch.stack(attention).mean(0)
        if built_in:
            mean[0, BUILT_IN_HEAD] = -1.0  # the best head of the model's own
        layer, head = divmod(int(mean.argmax()), mean.shape[1])
        by_span[span] = {
            "accuracy": round(sum(right) / len(right), 3),
            "mean_tokens": round(sum(tokens) / len(tokens), 1),
            "best_head": f"L{layer}H{head}",
            "attention_to_open": round(float(mean.max()), 3),
        }
        if built_in:
            by_span[span] |= {
                "built_in_attention_to_brackets": round(sum(on_brackets) / len(on_brackets), 3),
                "built_in_depth_written": round(sum(depth) / len(depth), 3),
                "accuracy_built_in_zeroed": round(sum(zeroed) / len(zeroed), 3),
            }
        print(span, json.dumps(by_span[span]), flush=True)

    def figures() -> dict[str, float]:
        out = {
            s: task_accuracy(model, generalisation_items(s, split, sentences, args.items, tokenizer=tok)) for s in SETS
        }
        for task in ("brackets", "ioi", "sva"):
            out[f"{task}_heldout"] = task_accuracy(model, evaluation_items(task, split, sentences, args.items))
        return {k: round(v, 3) for k, v in out.items()}

    result: dict = {"by_span": by_span}
    if built_in and args.built_in_gains:
        written = model.blocks[0].attn.W_O[BUILT_IN_HEAD].detach().clone()  # [d_head, d_model]
        result["built_in_gains"] = {}
        for gain in (float(g) for g in args.built_in_gains.split(",")):
            with torch.no_grad():
                model.blocks[0].attn.W_O[BUILT_IN_HEAD] = written * gain
            result["built_in_gains"][gain] = figures()
            print(f"gain {gain}", json.dumps(result["built_in_gains"][gain]), flush=True)
        with torch.no_grad():
            model.blocks[0].attn.W_O[BUILT_IN_HEAD] = written
    if args.spans_only:
        print(json.dumps(result))
        return 0
    planted = {"before": figures()}
    print("before", json.dumps(planted["before"]), flush=True)
    rows = calibration_rows(tok, data.train_sentences)
    for head in range(1, model.cfg.n_heads):
        model = load_default_model(args.root).eval()
        plant_bracket_head(model, rows, opens, closes, layer=0, head=head)
        planted[f"L0H{head}"] = figures()
        print(f"L0H{head}", json.dumps(planted[f"L0H{head}"]), flush=True)
    print(json.dumps(result | {"planted": planted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
