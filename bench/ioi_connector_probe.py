"""Does a default build's model find IOI's subject by the words before it? Held-out introductions with their
connectors swapped.

    python bench/ioi_connector_probe.py ROOT [--items N]

Every held-out introduction (`core.build.generalisation.GEN_IOI_INTROS`) is a body ending in "{place}" and a
connector (", so", ". One morning"). With the generalisation names and v1's training actions, N items each
(BOS first, tokenised as `evaluate-default` does; right when the non-repeated name outscores the repeated one):
- `held_out`: each introduction as it is;
- `training_connector`: each body joined by v1's connectors ",", ". Then" and ", and" instead (mean of the three);
- `training_body`: v1's "When {A} and {B} went to the {place}" joined by each held-out connector;
- `leading_space`: the introductions that open with a name, with a space before it (a name at the very start
  of a prompt is another token than the same name after a space, which is also the answer's);
- `held_out_by_first_word`: `evaluate-default`'s held-out IOI items (1,000) by the prompt's first word: the
  answer's name, the repeated name, or no name; and all of them with a space before the prompt.
Last line: one JSON object with these, per introduction, and their means.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAINING_CONNECTORS = (",", ". Then", ", and")
TRAINING_BODY = "When {A} and {B} went to the {place}"


def split_intro(intro: str) -> tuple[str, str]:
    """An introduction's body (up to and with its last "{place}") and its connector."""
    cut = intro.rindex("{place}") + len("{place}")
    return intro[:cut], intro[cut:]


def accuracy(model, names: list[str], intro: str, n: int, prefix: str = "") -> float:
    """IOI accuracy of `model` on `n` items of one introduction with v1's training actions."""
    from core.build import generalisation as gen
    from core.build.evaluate import task_accuracy
    from core.build.tasks import IOI_ACTIONS_TRAIN, TaskItem

    rng = random.Random(0)
    items = [gen._ioi(rng, names, (intro,), IOI_ACTIONS_TRAIN) for _ in range(n)]
    items = [TaskItem(it.task, prefix + it.prompt, it.correct, it.incorrect) for it in items]
    return round(task_accuracy(model, items), 3)


def held_out_by_first_word(model, root: Path) -> dict[str, float]:
    """Held-out IOI accuracy by the prompt's first word, and with a space before every prompt."""
    from core.build.evaluate import logit_differences
    from core.build.pipeline import EVAL_ITEMS_PER_TASK, validation_data
    from core.build.tasks import TaskItem, TaskSplit, evaluation_items
    from core.subjects.dictionaries import read_manifest

    split = TaskSplit.from_json(read_manifest(root)["task_split"])
    _, sentences, _ = validation_data(root)
    items = evaluation_items("ioi", split, sentences, EVAL_ITEMS_PER_TASK)
    right = (logit_differences(model, items) > 0).tolist()
    groups: dict[str, list[bool]] = {"answer's name first": [], "repeated name first": [], "no name first": []}
    for item, ok in zip(items, right, strict=True):
        first = item.prompt.split()[0].strip(",")
        key = {item.correct.strip(): "answer's name first", item.incorrect.strip(): "repeated name first"}
        groups[key.get(first, "no name first")].append(ok)
    out = {f"{k} ({len(v)})": round(sum(v) / len(v), 3) for k, v in groups.items() if v}
    out["all"] = round(sum(right) / len(right), 3)
    spaced = [TaskItem(it.task, " " + it.prompt, it.correct, it.incorrect) for it in items]
    out["all, a space first"] = round(float((logit_differences(model, spaced) > 0).float().mean()), 3)
    return out


def main() -> int:
    import torch

    from core.build import generalisation as gen
    from core.subjects.models import load_default_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model = load_default_model(args.root)
    tok = model.tokenizer
    names = gen.single_token_names(tok)
    result: dict[str, dict[str, float]] = {"held_out": {}, "training_connector": {}, "training_body": {}}
    result["leading_space"] = {}
    for intro in gen.GEN_IOI_INTROS:
        body, connector = split_intro(intro)
        result["held_out"][intro] = accuracy(model, names, intro, args.items)
        swapped = [accuracy(model, names, body + c, args.items) for c in TRAINING_CONNECTORS]
        result["training_connector"][intro] = round(sum(swapped) / len(swapped), 3)
        result["training_body"][connector] = accuracy(model, names, TRAINING_BODY + connector, args.items)
        if intro.startswith("{A}"):
            result["leading_space"][intro] = accuracy(model, names, intro, args.items, prefix=" ")
        print(intro, {k: v.get(intro, v.get(connector)) for k, v in result.items()}, flush=True)
    means = {f"mean_{k}": round(sum(v.values()) / len(v), 3) for k, v in result.items()}
    by_first_word = held_out_by_first_word(model, args.root)
    print("held-out IOI by first word", by_first_word, flush=True)
    print(json.dumps({**result, **means, "held_out_by_first_word": by_first_word}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
