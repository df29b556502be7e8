"""A default build's model figures and two name-copy probes, for builds stopped after their model.

    python bench/name_copy_probe.py ROOT

Prints `evaluate_default(ROOT, dictionaries=False)` (what `python -m core evaluate-default --root ROOT
--model-only` prints) with two IOI-shaped probes added, 200 random name pairs each (BOS first; right when
the non-repeated name A outscores the repeated B):
- `probe_training_frame`: "Yesterday A and B went to the store. Then B gave the book to" (a training frame);
- `probe_new_frame`: "A and B came to the store. B said hello. Everyone looked at" (in no training text);
each with the split's training names, its vocabulary words (task texts that use them) and the
generalisation names, single-token ones only. Last line: one JSON object.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TRAINING_FRAME = "Yesterday {A} and {B} went to the store. Then {B} gave the book to"
NEW_FRAME = "{A} and {B} came to the store. {B} said hello. Everyone looked at"


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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
