"""A default build's model figures and two name-copy probes, for builds stopped after their model.

    python bench/name_copy_probe.py ROOT

Prints `evaluate_default(ROOT, dictionaries=False)` (what `python -m core evaluate-default --root ROOT
--model-only` prints) with two IOI-shaped probes added, 200 random name pairs each (BOS first; right when
the non-repeated name A outscores the repeated B):
- `probe_training_frame`: "Yesterday A and B went to the store. Then B gave the book to" (a training frame);
- `probe_new_frame`: "A and B came to the store. B said hello. Everyone looked at" (in no training text);
each with the split's training names, its vocabulary words (task texts that use them) and the
generalisation names, single-token ones only; and `ioi_by_frame`, IOI with the generalisation names split
by frame: each held-out introduction with v1's training actions (60 items), each held-out action with v1's
training introductions (40), and both training (100). Last line: one JSON object.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAINING_FRAME = "Yesterday {A} and {B} went to the store. Then {B} gave the book to"
NEW_FRAME = "{A} and {B} came to the store. {B} said hello. Everyone looked at"


def ioi_by_frame(model) -> dict[str, float]:
    """IOI accuracy with single-token generalisation names, by held-out introduction and by held-out action."""
    from core.build import generalisation as gen
    from core.build.evaluate import task_accuracy
    from core.build.tasks import IOI_ACTIONS_TRAIN, IOI_INTROS_TRAIN

    tok = model.tokenizer
    names = gen.single_token_names(tok)
    rng = random.Random(0)
    out = {}
    for intro in gen.GEN_IOI_INTROS:
        out[f"intro: {intro}"] = task_accuracy(
            model, [gen._ioi(rng, names, (intro,), IOI_ACTIONS_TRAIN) for _ in range(60)]
        )
    for action in gen.GEN_ACTIONS_TO + gen.GEN_ACTIONS_AT + gen.GEN_ACTIONS_OTHER:
        out[f"action:{action}"] = task_accuracy(
            model, [gen._ioi(rng, names, IOI_INTROS_TRAIN, (action,)) for _ in range(40)]
        )
    both = [gen._ioi(rng, names, IOI_INTROS_TRAIN, IOI_ACTIONS_TRAIN) for _ in range(100)]
    out["training introductions and actions"] = task_accuracy(model, both)
    return {k: round(v, 3) for k, v in out.items()}


def main() -> int:
    import torch

    from core.build.generalisation import GEN_NAMES
    from core.build.pipeline import evaluate_default
    from core.build.tasks import TaskSplit
    from core.subjects.dictionaries import read_manifest
    from core.subjects.models import load_default_model

    root = Path(sys.argv[1])
    result = evaluate_default(root, progress=False, dictionaries=False)
    model = load_default_model(root)
    split = TaskSplit.from_json(read_manifest(root)["task_split"])
    tokenizer = model.tokenizer
    bos = tokenizer.bos_token_id or 0

    def token_of(name: str) -> list[int]:
        return tokenizer.encode(" " + name, add_special_tokens=False)

    def accuracy(names: list[str], frame: str, n: int = 200, seed: int = 0) -> float:
        rng = random.Random(seed)
        right = 0
        for _ in range(n):
            a, b = rng.sample(names, 2)
            ids = [bos] + tokenizer.encode(frame.format(A=a, B=b), add_special_tokens=False)
            with torch.no_grad():
                logits = model(torch.tensor([ids]))[0, -1]  # [d_vocab]
            right += int(logits[token_of(a)[0]] > logits[token_of(b)[0]])
        return right / n

    groups = {
        "training": split.train_names,
        "vocabulary_words": split.vocabulary_words[:400],
        "generalisation": GEN_NAMES,
    }
    groups = {k: [n for n in v if len(token_of(n)) == 1] for k, v in groups.items()}
    for key, frame in (("probe_training_frame", TRAINING_FRAME), ("probe_new_frame", NEW_FRAME)):
        result[key] = {k: accuracy(v, frame) for k, v in groups.items() if len(v) > 1}
    result["ioi_by_frame"] = ioi_by_frame(model)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
