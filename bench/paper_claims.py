"""The seed paper's claims re-measured on the embedded default: one command from corpus to report.

    python bench/paper_claims.py [--tokens 65536] [--sample 64] [--scorers detection,fuzzing,simulation,embedding]
                                 [--surprisal-kinds resid,transcoder]
                                 [--workspace data/_build/paper_claims.duckdb] [--out artifacts/paper_claims]

Runs the project's own commands, each resumable (rerunning skips what is stored):
1. `python -m core cache --model default --tokens N`: every dictionary of the default plus raw and
   top-k MLP neurons (the baseline units);
2. for each sampling strategy (top, random, quantile): `explain` then `score` of the same seeded
   sample of latents per dictionary, with the offline explainer (`baseline:token-stats`) and the
   offline scorers (judge:minilm-similarity, all-MiniLM-L6-v2, lm:default), plus the
   random-explanation and random-latent baselines; surprisal (a forward pass of the subject model
   per example and explanation, the slowest scorer here: ~2 min per dictionary) only for the `top`
   explanations of the dictionary kinds in --surprisal-kinds, which is what the scorer-agreement
   matrix needs;
3. `python -m core report`: stores every analysis and layer overlap in the workspace and writes
   report.md with the claims table.
Prints the report; last line: one JSON object with the report's path and the seconds each step took.

    python bench/paper_claims.py --compare-negatives neighbours:cooccurrence --workspace COPY [--sample 24]

instead re-runs the claims table with neighbour negatives beside random ones on an existing workspace (a copy:
e.g. the seed installed in /tmp with `core.build.seed.install_seed`; it gets score rows): the same seeded sample of
latents per dictionary (strategy top, the offline explainer, random-explanation and `--random-latents` random-latent
baselines) is scored by detection and fuzzing once with random + typical-token negatives and once with
the given neighbour negatives; `core.analysis.claims.claims_by_negatives` computes the table for each (in memory, on
the latents scored both ways) and the last line is one JSON object listing each claim's verdict under both and
whether it moved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

STRATEGIES = ("top", "random", "quantile")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=65_536)
    ap.add_argument("--sample", type=int, default=64, help="latents per dictionary, the same sample for every strategy")
    ap.add_argument("--scorers", default="detection,fuzzing,simulation,embedding")
    ap.add_argument(
        "--surprisal-kinds", default="resid,transcoder", help="dictionary kinds scored by surprisal ('' for none)"
    )
    ap.add_argument("--random-latents", type=int, default=32)
    ap.add_argument("--workspace", type=Path, default=ROOT / "data" / "_build" / "paper_claims.duckdb")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "paper_claims")
    ap.add_argument(
        "--compare-negatives", help="e.g. neighbours:cooccurrence: claims with these negatives beside random ones"
    )
    args = ap.parse_args()
    if args.compare_negatives:
        compare_negatives(args.workspace, args.compare_negatives, args.sample, args.random_latents)
        return

    from core.cli import main as core_main

    ws = str(args.workspace)
    args.workspace.parent.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def step(name: str, argv: list[str]) -> None:
        print(f"== {name}: python -m core {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        code = core_main(argv)
        if code:
            raise SystemExit(f"step {name} failed with exit code {code}")
        seconds[name] = round(time.perf_counter() - t0, 1)

    step("cache", ["cache", "--model", "default", "--tokens", str(args.tokens), "--workspace", ws])
    common = ["--workspace", ws, "--sample", str(args.sample), "--random-latents", str(args.random_latents)]
    for strategy in STRATEGIES:
        step(f"explain:{strategy}", ["explain", *common, "--strategy", strategy])
        step(
            f"score:{strategy}",
            ["score", *common, "--strategy", strategy, "--scorers", args.scorers, "--model", "judge"],
        )
    kinds = tuple(k for k in args.surprisal_kinds.split(",") if k)
    if kinds:
        from core import store

        dicts = [d.id for d in store.list_dictionaries(Path(ws), ready_only=True) if d.id.split(":")[0] in kinds]
        step(
            "score:top:surprisal",
            [
                "score",
                *common,
                "--strategy",
                "top",
                "--scorers",
                "surprisal",
                "--model",
                "judge",
                "--dictionary",
                *dicts,
            ],
        )
    step("report", ["report", "--workspace", ws, "--out", str(args.out)])

    report_md = args.out / "report.md"
    print(report_md.read_text())
    print(json.dumps({"workspace": ws, "report": str(report_md), "seconds": seconds}))


def compare_negatives(workspace: Path, negatives: str, sample: int, random_latents: int) -> None:
    """Score a sample with default and `negatives` negatives, then print the claims table's verdicts under both."""
    from dataclasses import replace

    from core import store
    from core.analysis.claims import claims_by_negatives, verdict_moves
    from core.autointerp.engine import RunSpec, run
    from core.autointerp.examples import DEFAULT_NEGATIVES
    from core.autointerp.explainers import TOKEN_STATS_VERSION

    if not workspace.exists():
        raise SystemExit(f"error: {workspace} does not exist")
    dicts = [d.id for d in store.list_dictionaries(workspace, ready_only=True)]
    seconds: dict[str, float] = {}
    base = RunSpec(scorers=("detection", "fuzzing"), random_latents=random_latents, chunk=512)
    for kind in (DEFAULT_NEGATIVES, negatives):
        t0 = time.perf_counter()
        run(workspace, dicts, replace(base, negatives=kind), sample=sample)
        seconds[kind] = round(time.perf_counter() - t0, 1)
        print(f"== scored {kind} in {seconds[kind]} s", flush=True)
    t0 = time.perf_counter()
    tables = claims_by_negatives(workspace, (DEFAULT_NEGATIVES, negatives), TOKEN_STATS_VERSION)
    rows = verdict_moves(tables)
    seconds["claims"] = round(time.perf_counter() - t0, 1)
    for r in rows:
        flag = "MOVED" if r["moved"] else "same "
        print(flag, r["claim"][:70], "|", " | ".join(f"{k}: {r[k]['verdict']} ({r[k]['ours']})" for k in tables))
    print(
        json.dumps(
            {
                "workspace": str(workspace),
                "negatives": negatives,
                "sample": sample,
                "claims": rows,
                "moved": sum(r["moved"] for r in rows),
                "seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
