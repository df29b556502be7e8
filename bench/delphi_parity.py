"""Our scores beside delphi's conventions on one sample of latents: random vs neighbour negatives, delphi's fuzzing,
intruder against random explanations, and the mean-of-latents vs pooled accuracy of the same scores.

    python bench/delphi_parity.py [--workspace data/_build/bench_latent_query.duckdb] [--sample 300] [--neighbours cooccurrence]

The workspace (default: the one bench/latent_query.py builds from real text) is copied to a temporary folder and
upgraded there; the original is never written. On the dictionary with the most live latents, a seeded sample of
latents gets the offline baseline explanations (`baseline:token-stats`) and random-explanation baselines, scored
offline (judge `judge:minilm-similarity`) by detection, fuzzing (ours and delphi's variant) and intruder, once with
random + typical-token negatives and once with neighbour negatives (`--neighbours`: cooccurrence, decoder or encoder;
decoder/encoder load the dictionary's weights). Everything is an offline baseline: no LLM takes part.
The last line printed is one JSON object: per negatives kind and scorer, the mean of per-latent values for the
explanations and for random explanations, and delphi's pooled balanced accuracy of the same scores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=None, help="default data/_build/bench_latent_query.duckdb")
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--neighbours", default="cooccurrence", choices=["cooccurrence", "decoder", "encoder"])
    args = ap.parse_args()

    from core import store
    from core.autointerp import delphi_metrics as dm
    from core.autointerp.engine import RunSpec, run
    from core.paths import BUILD_CACHE_DIR

    src = Path(args.workspace) if args.workspace else BUILD_CACHE_DIR / "bench_latent_query.duckdb"
    if not src.exists():
        sys.exit(f"error: {src} does not exist; build it with `python bench/latent_query.py`")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / src.name
        shutil.copy2(src, ws)
        shutil.copytree(store.data_dir(src), store.data_dir(ws))
        store.migrate(ws)
        live = {
            d.id: int((store.latent_stats_frame(ws, d.id)["n_fires"] > 0).sum())
            for d in store.list_dictionaries(ws, ready_only=True)
        }
        dictionary = max(live, key=live.get)
        scorers = ("detection", "fuzzing", "intruder")
        kinds = ("random+hard", f"neighbours:{args.neighbours}")
        for negatives in kinds:
            spec = RunSpec(scorers=scorers, negatives=negatives)
            run(ws, [dictionary], spec, sample=args.sample)
            delphi_fuzz = RunSpec(
                scorers=("fuzzing",), negatives=negatives, scorer_options={"fuzzing": {"variant": "delphi"}}
            )
            run(ws, [dictionary], delphi_fuzz, sample=args.sample)
        scores = store.scores_frame(ws, status=None)
        table = dm.conventions_table(ws)
    scores["negatives"] = scores["params"].map(lambda p: json.loads(p).get("negatives", "random+hard"))
    scores["variant"] = scores["params"].map(lambda p: json.loads(p).get("variant", ""))
    scores["key"] = scores["scorer"] + scores["variant"].map(lambda v: f" ({v})" if v else "")
    out: dict = {"dictionary": dictionary, "sample": args.sample, "seconds": 0.0, "by_negatives": {}}
    for negatives in kinds:
        row: dict = {}
        for key in sorted(set(scores["key"])):
            s = scores[(scores["negatives"] == negatives) & (scores["key"] == key)]
            real = s[s["baseline"].isna()]
            rnd = s[s["baseline"] == "random-explanation"]
            row[key] = {
                "mean": round(float(real.loc[real["status"] == "ok", "value"].mean()), 4),
                "random_explanation_mean": round(float(rnd.loc[rnd["status"] == "ok", "value"].mean()), 4),
                "ok": int((real["status"] == "ok").sum()),
                "failed": int((real["status"] != "ok").sum()),
            }
        out["by_negatives"][negatives] = row
    out["conventions"] = [
        {
            "group": r["group"],
            "scorer": r["scorer"],
            "negatives": r["negatives"],
            "mean_per_latent": round(float(r[dm.OURS]), 4),
            "pooled_delphi": round(float(r[dm.POOLED]), 4),
            "f1": round(float(r["F1 (delphi)"]), 4),
            "failed_ours": int(r["failed (ours)"]),
        }
        for _, r in table.iterrows()
    ]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
