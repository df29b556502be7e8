"""Why attribution patching beats hierarchical tracing under standard mean ablation: inactive latents.

    python bench/circuit_baselines.py [--tasks ioi,sva,brackets] [--n 16] [--sizes 10,30,100,500]

Attribution patching (AtP, `core.tracing.baselines`) scores every latent, active or not, by the
linear estimate of the effect of setting it to its corpus mean. Under standard mean ablation a
circuit's latents are kept at their values and every other latent, the thousands of inactive ones
included, is set to its mean; so AtP can select *inactive* latents whose mean would hurt the metric
and keep them at 0, which a circuit of active latents (hierarchical tracing, random) cannot do.
For the held-out items of each task (as `python -m core circuits`), at each circuit size n:
- inactive_share: the share of AtP's top-n latents that are inactive on the prompt;
- faithfulness (standard mean ablation, Marks et al.) of AtP's top n latents, and of AtP's top n
  among the prompt's active latents only (`atp_active`), with the same m(M) and m(empty).
If restricting AtP to active latents costs most of its lead, the lead comes from inactive latents.
With --active-only the ablations leave inactive latents at 0 (as `circuits --active-only`), where
AtP's inactive picks do nothing: AtP restricted to active latents is then the fair baseline.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="ioi,sva,brackets")
    ap.add_argument("--n", type=int, default=16, help="prompts per task")
    ap.add_argument("--sizes", default="10,30,100,500", help="circuit sizes (latents per prompt)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--means-windows", type=int, default=64)
    ap.add_argument("--active-only", action="store_true", help="ablate only latents active in the run")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from core.paths import BUILD_CACHE_DIR, default_paths
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model
    from core.tracing.ablation import circuit_faithfulness, load_or_compute_means, metric_values
    from core.tracing.baselines import active_features, attribution_patching_scores, top_features
    from core.tracing.dataset import load_task_items, padded_tokens, prepare_items
    from core.tracing.replacement import ReplacementModel

    t_start = time.perf_counter()
    model = load_model("default")
    dicts = [d for d in load_default_dictionaries().values() if d.kind in ("attn", "transcoder")]
    means = load_or_compute_means(
        model, dicts, default_paths()["corpus"], BUILD_CACHE_DIR / "tracing", n_windows=args.means_windows
    )
    rm = ReplacementModel(model, dicts)
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, list[dict]] = {}
    for task in args.tasks.split(","):
        prepared, _ = prepare_items(rm, load_task_items(task, args.n, tokenizer=model.tokenizer))
        tokens = padded_tokens(prepared)
        targets = [p.target for p in prepared]
        m_full = float(
            metric_values(
                model, dicts, tokens, targets, None, "ablate", means, "mean", active_only=args.active_only
            ).mean()
        )
        m_empty = float(
            metric_values(
                model, dicts, tokens, targets, None, "keep", means, "mean", active_only=args.active_only
            ).mean()
        )
        ref = (m_full, m_empty)
        atp = [attribution_patching_scores(model, dicts, p.state.tokens, p.target, means) for p in prepared]
        active = [frozenset(active_features(p.state)) for p in prepared]
        rows = []
        for n in sizes:
            top = [top_features(s, n) for s in atp]
            top_active = [top_features(s, n, sorted(a)) for s, a in zip(atp, active, strict=True)]
            inactive = sum(len(c - a) for c, a in zip(top, active, strict=True)) / max(1, sum(len(c) for c in top))
            f_all = circuit_faithfulness(
                model, dicts, tokens, targets, top, means, reference=ref, active_only=args.active_only
            )
            f_act = circuit_faithfulness(
                model, dicts, tokens, targets, top_active, means, reference=ref, active_only=args.active_only
            )
            rows.append(
                {
                    "size": n,
                    "inactive_share": round(inactive, 4),
                    "faithfulness_atp": round(f_all.faithfulness, 4),
                    "complement_atp": round(f_all.complement_faithfulness, 4),
                    "faithfulness_atp_active": round(f_act.faithfulness, 4),
                    "complement_atp_active": round(f_act.complement_faithfulness, 4),
                }
            )
            print(
                f"{task:<9} n={n:<4} AtP inactive share {inactive:.2f}  F(AtP)={f_all.faithfulness:.3f}  "
                f"F(AtP, active only)={f_act.faithfulness:.3f}  F(M\\C) {f_all.complement_faithfulness:.3f} / "
                f"{f_act.complement_faithfulness:.3f}",
                flush=True,
            )
        out[task] = rows
    print(
        json.dumps(
            {
                "tasks": out,
                "n_prompts": args.n,
                "ablation": "mean (active latents only)" if args.active_only else "mean",
                "seconds": round(time.perf_counter() - t_start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
