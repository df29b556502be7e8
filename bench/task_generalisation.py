"""Where does the default fail to generalise: held-out names/nouns, held-out templates, or both?

    python bench/task_generalisation.py [--root data/default] [--items 500]

IOI and SVA accuracy of a default build on four item sets each: training or held-out
names (IOI) / subject nouns (SVA), crossed with training or held-out templates. The evaluation
figure of `evaluate-default` is the held-out × held-out cell. Then the generalisation sets of
`core.build.generalisation` (names, nouns, frames and bracket shapes no task text has; also in
`evaluate-default` under `generalisation`), `--items` each. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.build.evaluate import task_accuracy  # noqa: E402
from core.build.pipeline import generalisation_figures, validation_data  # noqa: E402
from core.build.tasks import TaskSplit, ioi_item, sva_item  # noqa: E402
from core.subjects.dictionaries import read_manifest  # noqa: E402
from core.subjects.models import load_default_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="folder of a default build (default: data/default)")
    ap.add_argument("--items", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root) if args.root else None
    split = TaskSplit.from_json(read_manifest(root)["task_split"])
    model = load_default_model(root, device="cpu")
    all_nouns = split.train_nouns + split.heldout_nouns
    result: dict = {}
    for who in ("train", "heldout"):
        names = split.train_names if who == "train" else split.heldout_names
        nouns = split.train_nouns if who == "train" else split.heldout_nouns
        for templates in ("train", "heldout"):
            rng = random.Random(7)
            held = templates == "heldout"
            ioi = [ioi_item(rng, names, held) for _ in range(args.items)]
            sva = [sva_item(rng, nouns, all_nouns, held) for _ in range(args.items)]
            result[f"ioi_{who}_names_{templates}_templates"] = round(task_accuracy(model, ioi), 3)
            result[f"sva_{who}_nouns_{templates}_templates"] = round(task_accuracy(model, sva), 3)
            print(
                who,
                templates,
                result[f"ioi_{who}_names_{templates}_templates"],
                result[f"sva_{who}_nouns_{templates}_templates"],
                flush=True,
            )
    _, sentences, _ = validation_data(root)
    result["generalisation"] = generalisation_figures(model, split, sentences, args.items)
    print(json.dumps(result["generalisation"]), flush=True)
    print(json.dumps({"root": str(root or "data/default"), "items": args.items, **result}))


if __name__ == "__main__":
    main()
