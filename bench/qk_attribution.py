"""QK attribution (issue 24): exactness against explicit ablation, and the cost of a trace with QK expansion.

    python bench/qk_attribution.py [--root data/default] [--threads 2] [--qk-threshold 0.05]

Measured in one run:
- max_qk_error_planted: on the planted QK model of `tests/qk_helpers.py`, the largest
  |QK attribution - explicit ablation effect| (`core.tracing.qk.max_qk_error`: each pair's 4
  largest contributors per side, and the sum rule) over every (query, key) pair of its head.
- max_qk_error_default: the same on the default model and dictionaries, over the
  (layer, head, query, key) pairs that `expand_qk` attributed on the 20-token bracket prompt of
  `bench/trace_latency.py` (target logit(')') - logit('.')), 3 contributors per side.
- max_qk_error: the larger of the two (the issue asks for <= 1e-4).
- qk_trace_s: wall time of prepare + hierarchical trace (default TraceParams) + `expand_qk`
  (default QKParams) on that prompt, median of 3 runs after a warm-up; hier_trace_s is the same
  without `expand_qk`, so the difference is the QK cost.
- the QK expansion's counts: attention latents examined, QK edges and nodes added, backward passes.
- with `--ioi N` (default 16; 0 skips): on N held-out IOI items, at each point of the circuits
  command's sweep (`core.tracing.dataset.DEFAULT_SWEEP`), the faithfulness under standard mean
  ablation on the real model of hierarchical+QK circuits (the hierarchical graph's latents plus
  those `expand_qk` adds) and of attribution patching at the same size per prompt
  (`ioi_f_hier_qk`, `ioi_f_atp`, aligned with `sizes`, the mean latents per prompt); the plain
  hierarchical circuits and attribution patching at their sizes are reported beside them
  (`ioi_sizes_hier`, `ioi_f_hier`, `ioi_f_atp_at_hier`). The same comparison over a task's sweep
  is `python -m core circuits --task ioi --qk` (`core.tracing.dataset.compare_methods(qk=...)`).
- why attribution patching leads, at each point: the share of its picks (at the hier+QK size) that are
  inactive on their prompt (`ioi_atp_inactive_share`: hierarchical tracing and QK expansion only ever
  pick active latents) and that are layer-0 attention latents (`ioi_atp_l0_attn_share`, beside
  `ioi_hier_qk_l0_attn_share`), and attribution patching restricted to active latents at the same
  size (`ioi_f_atp_active`), all under the same standard mean ablation.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PROMPT = "The old man said that the new plan (which the city council had approved last year without a vote"
TARGET, CONTRAST = ")", "."
N_TOKENS = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="default build folder (default data/default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--qk-threshold", type=float, default=0.05)
    ap.add_argument("--qk-latents-only", action="store_true", help="QK expansion ranks only latent contributors")
    ap.add_argument("--ioi", type=int, default=16, help="IOI prompts for the faithfulness comparison (0: skip)")
    ap.add_argument("--means-windows", type=int, default=64)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from qk_helpers import planted_qk_model

    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import make_target
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.qk import QKParams, expand_qk, max_qk_error
    from core.tracing.replacement import ReplacementModel

    # Planted case: every visible (query, key) pair of the one head of layer 1 and of layer 0.
    model, pdicts, ptokens, _ = planted_qk_model()
    prm = ReplacementModel(model, pdicts)
    pstate = prm.prepare(ptokens)
    n = pstate.n_positions
    pairs = [(L, 0, q, k) for L in (0, 1) for q in range(n) for k in range(q + 1)]
    err_planted = max_qk_error(prm, pstate, pairs, nodes_per_side=4)

    root = Path(args.root) if args.root else None
    model = load_default_model(root=root, device="cpu")
    dicts = [d for d in load_default_dictionaries(root).values() if d.kind in ("attn", "transcoder")]
    tok = model.tokenizer
    prompt = tok.decode(tok.encode(PROMPT, add_special_tokens=False)[-N_TOKENS:])
    rm = ReplacementModel(model, dicts)
    params = TraceParams()
    qk_params = QKParams(qk_threshold=args.qk_threshold, latents_only=args.qk_latents_only)

    def run(with_qk: bool):
        t0 = time.perf_counter()
        tokens = rm.tokenize(prompt)
        state = rm.prepare(tokens)
        G = hierarchical_trace(rm, state, make_target(rm, tokens, TARGET, CONTRAST), params)
        if with_qk:
            expand_qk(rm, state, G, qk_params)
        return time.perf_counter() - t0, state, G

    run(True)  # warm-up
    qk_s = statistics.median(run(True)[0] for _ in range(3))
    hier_s = statistics.median(run(False)[0] for _ in range(3))
    _, state, G = run(True)
    qk_pairs = [tuple(p) for p in G.graph["qk_pairs"]]
    err_default = max_qk_error(rm, state, qk_pairs, nodes_per_side=3)
    qk_edges = [(u, v) for u, v, d in G.edges(data=True) if d.get("edge_kind") == "qk"]
    on_direct = sum(1 for *_, d in G.edges(data=True) if "qk_weight" in d)
    out = {
        "max_qk_error": max(err_planted, err_default),
        "max_qk_error_planted": err_planted,
        "max_qk_error_default": err_default,
        "qk_trace_s": round(qk_s, 3),
        "hier_trace_s": round(hier_s, 3),
        "threads": args.threads,
        "prompt_tokens": state.n_positions,
        "qk_pairs": len(qk_pairs),
        "qk_edges": len(qk_edges),
        "qk_weight_on_direct_edges": on_direct,
        "qk_nodes_added": sum(1 for _, a in G.nodes(data=True) if a.get("qk_only")),
        "qk_backward": G.graph["qk_backward"],
        "n_latents": sum(1 for _, a in G.nodes(data=True) if a.get("kind") in ("attn", "transcoder")),
        "qk_params": qk_params.to_json(),
    }
    if args.ioi:
        out.update(ioi_comparison(rm, root, args.ioi, qk_params, args.means_windows))
    print(f"planted: max |QK attribution - ablation| = {err_planted:.2e} over {len(pairs)} pairs")
    print(f"default ({state.n_positions} tokens with BOS): max error {err_default:.2e} over {len(qk_pairs)} pairs")
    print(f"trace {hier_s:.2f} s; with QK expansion {qk_s:.2f} s ({len(qk_edges)} QK edges)")
    print(json.dumps(out))


def ioi_comparison(rm, root, n: int, qk_params, means_windows: int) -> dict:
    """Faithfulness of hierarchical, hierarchical+QK and attribution patching on `n` IOI items (see the docstring)."""
    from core.tracing.ablation import faithfulness_of_sets, metric_values
    from core.tracing.baselines import active_features, attribution_patching_scores, top_features
    from core.tracing.dataset import DEFAULT_SWEEP, load_task_items, padded_tokens, prepare_items
    from core.tracing.graph import circuit_features
    from core.tracing.hierarchical import hierarchical_trace
    from core.tracing.loading import latent_means
    from core.tracing.qk import expand_qk

    model, dicts = rm.model, rm.dictionaries
    t0 = time.perf_counter()
    prepared, skipped = prepare_items(rm, load_task_items("ioi", n, root, tokenizer=model.tokenizer))
    tokens = padded_tokens(prepared)
    targets = [p.target for p in prepared]
    means = latent_means(model, dicts, root, n_windows=means_windows)
    m_full = float(metric_values(model, dicts, tokens, targets, None, "ablate", means, "mean").mean())
    m_empty = float(metric_values(model, dicts, tokens, targets, None, "keep", means, "mean").mean())
    atp = [attribution_patching_scores(model, dicts, p.state.tokens, p.target, means) for p in prepared]
    res: dict[str, list] = {k: [] for k in ("sizes", "ioi_f_hier_qk", "ioi_f_atp", "ioi_sizes_hier", "ioi_f_hier")}
    res["ioi_f_atp_at_hier"] = []
    for key in ("ioi_f_atp_active", "ioi_atp_inactive_share", "ioi_atp_l0_attn_share", "ioi_hier_qk_l0_attn_share"):
        res[key] = []
    active = [active_features(p.state) for p in prepared]
    l0_attn = next((d.id for d in dicts if d.kind == "attn" and ".0." in d.hook_in), None)

    def share(sets, keep) -> float:
        n = sum(map(len, sets))
        return round(sum(1 for c in sets for f in c if keep(f)) / n, 4) if n else 0.0

    for params in DEFAULT_SWEEP:
        hier, hq = [], []
        for p in prepared:
            G = hierarchical_trace(rm, p.state, p.target, params)
            hier.append(circuit_features(G))
            expand_qk(rm, p.state, G, qk_params)
            hq.append(circuit_features(G))
        atp_q = [top_features(s, len(c)) for s, c in zip(atp, hq, strict=True)]
        atp_h = [top_features(s, len(c)) for s, c in zip(atp, hier, strict=True)]
        atp_a = [top_features(s, len(c), a) for s, c, a in zip(atp, hq, active, strict=True)]
        f = faithfulness_of_sets(
            model, dicts, tokens, targets, [hq, atp_q, hier, atp_h, atp_a], means, "mean", (m_full, m_empty)
        )
        res["ioi_f_atp_active"].append(round(f[4].faithfulness, 4))
        res["ioi_atp_inactive_share"].append(
            round(
                1
                - sum(len(set(c) & set(a)) for c, a in zip(atp_q, active, strict=True)) / max(1, sum(map(len, atp_q))),
                4,
            )
        )
        res["ioi_atp_l0_attn_share"].append(share(atp_q, lambda f: f[0] == l0_attn))
        res["ioi_hier_qk_l0_attn_share"].append(share(hq, lambda f: f[0] == l0_attn))
        res["sizes"].append(round(sum(map(len, hq)) / len(hq), 1))
        res["ioi_sizes_hier"].append(round(sum(map(len, hier)) / len(hier), 1))
        for key, r in zip(("ioi_f_hier_qk", "ioi_f_atp", "ioi_f_hier", "ioi_f_atp_at_hier"), f[:4], strict=True):
            res[key].append(round(r.faithfulness, 4))
        print(
            f"IOI node_threshold {params.node_threshold}: hier+QK {res['sizes'][-1]} latents f={f[0].faithfulness:.3f}"
            f" vs AtP {f[1].faithfulness:.3f}; hier {res['ioi_sizes_hier'][-1]} f={f[2].faithfulness:.3f}"
            f" vs AtP {f[3].faithfulness:.3f}"
        )
    res.update(
        ioi_prompts=len(prepared), ioi_skipped=skipped, ioi_ablation="mean", ioi_s=round(time.perf_counter() - t0, 1)
    )
    return res


if __name__ == "__main__":
    main()
