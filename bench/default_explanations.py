"""Time of the default workspace's explanations, stage by stage (what the app's background job runs).

    python bench/default_explanations.py --workspace W.duckdb [--stages fast,slow] [--sample N]

On a built default workspace (e.g. `python bench/default_workspace.py --keep DIR`), runs each stage of
`core.autointerp.default` (fast: detection, fuzzing, simulation, embedding with the offline judges;
slow: surprisal and intervention with the workspace's model) the way the job does: baseline
explanations, random-explanation rows, every live latent of every dictionary. With `--sample N`
it runs only N seeded latents per dictionary (and no random-direction latents) and extrapolates
the stage's time to every live latent plus the default's random latents, per latent scored.
The workspace gets the rows (they are the job's rows: a later job skips them). Last line: one JSON object.

It also reports how well the offline explainer (`baseline:token-stats`, its current version) does against its own
baseline: per classifier scorer run (detection, fuzzing), `beats_random_share` is the share of latents scored both
ways whose explanation scores strictly higher than the random-explanation row (another latent's explanation scored
on this latent's examples), with the means of both and the share of ties. `--scorers detection,fuzzing` runs just
those scorers of a stage. Run it on a copy: e.g. the seed installed in /tmp (`core.build.seed.install_seed`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def beats_random(
    workspace: Path, scorers: tuple[str, ...] = ("detection", "fuzzing"), negatives: str | None = None
) -> dict:
    """Per scorer, for scores made with `negatives` (default: random+hard): the share of latents whose current `baseline:token-stats` explanation scores strictly higher than
    its random-explanation row (default negatives), the share of ties, and both means; over real latents only."""
    from core import store
    from core.autointerp.examples import DEFAULT_NEGATIVES
    from core.autointerp.explainers import BASELINE_EXPLAINER, RANDOM_EXPLANATION, TOKEN_STATS_VERSION

    s = store.scores_frame(workspace, status="ok")
    s = s[(s["explainer"] == BASELINE_EXPLAINER) & (s["explainer_prompt_version"] == TOKEN_STATS_VERSION)]
    kind = negatives or DEFAULT_NEGATIVES
    s = s[s["params"].map(lambda p: json.loads(p).get("negatives", DEFAULT_NEGATIVES)) == kind]
    out: dict = {}
    for scorer in scorers:
        x = s[s["scorer"] == scorer]
        key = ["dictionary", "latent"]
        real = x[x["baseline"].isna()].groupby(key)["value"].mean()
        rnd = x[x["baseline"] == RANDOM_EXPLANATION].groupby(key)["value"].mean()
        both = real.to_frame("real").join(rnd.to_frame("random"), how="inner")
        if both.empty:
            continue
        out[scorer] = {
            "latents": len(both),
            "beats_random_share": round(float((both["real"] > both["random"]).mean()), 4),
            "ties_share": round(float((both["real"] == both["random"]).mean()), 4),
            "mean": round(float(both["real"].mean()), 4),
            "random_explanation_mean": round(float(both["random"].mean()), 4),
        }
    return out


def main() -> None:
    from core import store
    from core.autointerp.default import DEFAULT_SPEC, STAGES, stage_spec
    from core.autointerp.engine import run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--sample", type=int, help="latents per dictionary (default: all live latents)")
    ap.add_argument("--dictionary", nargs="+", help="only these dictionaries (with --sample; default: all)")
    ap.add_argument("--scorers", help="only these scorers of each stage, comma-separated (e.g. detection,fuzzing)")
    ap.add_argument("--share-only", action="store_true", help="run nothing: report beats_random_share from stored rows")
    args = ap.parse_args()
    ws = Path(args.workspace)
    every = [d.id for d in store.list_dictionaries(ws, ready_only=True)]
    dicts = args.dictionary if args.dictionary and args.sample else every
    with store.session(ws) as con:
        live = con.execute("SELECT count(*) FROM latent_stats WHERE n_fires > 0").fetchone()[0]
    total = live + DEFAULT_SPEC.random_latents * len(every)  # latents the full stage explains and scores
    result: dict = {
        "dictionaries": len(every),
        "sampled_dictionaries": dicts if args.sample else "all",
        "live_latents": live,
        "latents_in_full_stage": total,
    }
    for stage in [] if args.share_only else args.stages.split(","):
        spec = stage_spec(stage)
        if args.scorers:
            spec = replace(spec, scorers=tuple(x for x in spec.scorers if x in args.scorers.split(",")))
        if args.sample:
            spec = replace(spec, random_latents=0)
        t0, c0 = time.perf_counter(), time.process_time()
        report = run(ws, dicts, spec, sample=args.sample)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        done = args.sample * len(dicts) if args.sample else total
        per = seconds / max(done, 1)
        result[stage] = {
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "latents": done,
            "seconds_per_latent": round(per, 3),
            "full_stage_seconds_estimate": round(per * total, 0),
            "scored": report.scored,
            "scores_failed": report.scores_failed,
            "timings": {k: round(v, 1) for k, v in report.timings.items()},
        }
        print(
            f"{stage}: {seconds:.0f} s for {done} latents ({per:.2f} s each; CPU {cpu:.0f} s) -> "
            f"full stage ~{per * total / 60:.0f} min for {total:,} latents",
            flush=True,
        )
    result["beats_random_share"] = beats_random(ws)
    for kind in ("neighbours:cooccurrence", "neighbours:decoder", "neighbours:encoder"):  # if such rows are stored
        if got := beats_random(ws, negatives=kind):
            result[f"beats_random_share ({kind})"] = got
    result["load_average"] = round(os.getloadavg()[0], 2)
    result["sample"] = args.sample
    print(json.dumps(result))


if __name__ == "__main__":
    main()
