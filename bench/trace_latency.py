"""Hierarchical tracing latency and backward-pass savings against the full attribution graph.

    python bench/trace_latency.py [--root data/default] [--threads 2] [--random-dictionaries 2048]

Measured in one run on the default model and dictionaries (`load_model('default')`,
`load_default_dictionaries()`), on a 20-token prompt (plus BOS) that ends inside an open bracket
(the bracket task: the default model solves it and the prompt is 20 tokens, longer than an IOI or
agreement item; `python -m core circuits` covers those tasks); the target is logit(')') - logit('.'):
- seconds: wall time of `trace_prompt` without ablations (tokenise, prepare the replacement
  model, hierarchical trace at the default TraceParams), median of 3 runs after a warm-up run;
  cpu_seconds is the CPU time of the same calls (all threads), which a busy machine does not inflate.
- backward_ratio: backward passes of the full graph (every active latent a target) divided by
  those of the hierarchical trace, at the same batch size.
- faithfulness of each, by mean ablation on the real model: the hierarchical circuit, and the full
  graph pruned by influence to (a) the same number of latents and (b) 80% cumulative influence, and
  (c) the unpruned full graph (every active latent kept; under mean ablation the inactive latents
  still take their corpus means, so this is the ceiling of any circuit of active latents).
- max_edge_diff: the largest |hierarchical edge - full-graph entry| over the hierarchical graph's
  edges (the issue asks for agreement within 1e-4).
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

PROMPT = "The old man said that the new plan (which the city council had approved last year without a vote"
TARGET, CONTRAST = ")", "."  # inside an open bracket the clause should close it
N_TOKENS = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="default build folder (default data/default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--random-dictionaries",
        type=int,
        default=0,
        metavar="D_SAE",
        help="use random SAEs/transcoders of this width instead of the trained ones (before they exist)",
    )
    ap.add_argument("--means-windows", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from core.paths import BUILD_CACHE_DIR, default_paths
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.ablation import circuit_faithfulness, load_or_compute_means
    from core.tracing.api import make_target, trace_prompt
    from core.tracing.baselines import active_features
    from core.tracing.full_graph import full_attribution_graph, prune_by_influence
    from core.tracing.graph import circuit_features
    from core.tracing.hierarchical import TraceParams, hierarchical_trace
    from core.tracing.replacement import ReplacementModel

    root = Path(args.root) if args.root else None
    model = load_default_model(root=root, device="cpu")
    tok = model.tokenizer
    if args.random_dictionaries:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from tracing_helpers import random_dictionaries, sparsify_

        dicts = random_dictionaries(model, d_sae=args.random_dictionaries)
        # Random encoders fire together on out-of-distribution text; calibrate on the bench prompt itself
        # so about 32 latents fire per token there, as trained dictionaries would.
        sparsify_(
            dicts, model, torch.tensor([[tok.bos_token_id] + tok.encode(PROMPT, add_special_tokens=False)]), l0=32
        )
        kind = f"random d_sae={args.random_dictionaries}"
    else:
        dicts = [d for d in load_default_dictionaries(root).values() if d.kind in ("attn", "transcoder")]
        kind = "trained"
    ids = tok.encode(PROMPT, add_special_tokens=False)[-N_TOKENS:]
    prompt = tok.decode(ids)
    params = TraceParams()

    def run() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        trace_prompt(model, dicts, prompt, target=TARGET, contrast=CONTRAST, params=params, faithfulness=False)
        return time.perf_counter() - t0, time.process_time() - c0

    cold, _ = run()
    warm = [run() for _ in range(3)]
    seconds = statistics.median(w for w, _ in warm)
    cpu_seconds = statistics.median(
        c for _, c in warm
    )  # CPU time of all threads: tells a loaded machine from slow code

    rm = ReplacementModel(model, dicts)
    tokens = rm.tokenize(prompt)
    state = rm.prepare(tokens)
    target = make_target(rm, tokens, TARGET, CONTRAST)
    G = hierarchical_trace(rm, state, target, params)
    t0 = time.perf_counter()
    full = full_attribution_graph(rm, state, target, params.batch_size)
    full_seconds = time.perf_counter() - t0
    hier_circuit = circuit_features(G)
    n = len(hier_circuit)
    index = {nd.node_id: i for i, nd in enumerate(full.nodes)}
    max_edge_diff = max(abs(d["weight"] - full.effect(index[u], index[v])) for u, v, d in G.edges(data=True))

    def features(idx: list[int]) -> frozenset:
        return frozenset((full.nodes[i].dictionary, full.nodes[i].position, full.nodes[i].latent) for i in idx)

    equal = features(prune_by_influence(full, n_latents=n))
    infl80 = features(prune_by_influence(full, cumulative=0.8))
    means = load_or_compute_means(
        model, dicts, default_paths(root)["corpus"], BUILD_CACHE_DIR / "tracing", n_windows=args.means_windows
    )
    tk = tokens[None]
    f_h = circuit_faithfulness(model, dicts, tk, [target], [hier_circuit], means)
    ref = (f_h.metric_full, f_h.metric_empty)
    f_eq = circuit_faithfulness(model, dicts, tk, [target], [equal], means, reference=ref)
    f_80 = circuit_faithfulness(model, dicts, tk, [target], [infl80], means, reference=ref)
    f_all = circuit_faithfulness(model, dicts, tk, [target], [frozenset(active_features(state))], means, reference=ref)

    n_active = sum(nd.is_latent for nd in state.nodes)
    print(
        f"model: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}; dictionaries: {kind} ({len(dicts)}); threads {args.threads}"
    )
    print(f"prompt ({tokens.numel()} tokens with BOS): {prompt!r}; target {target.node_id}; {n_active} active latents")
    print(
        f"hierarchical: {seconds:.3f} s median of 3 (cold {cold:.3f} s; CPU {cpu_seconds:.3f} s), {G.graph['n_backward']} backward passes, "
        f"{G.number_of_nodes()} nodes ({n} latents), {G.number_of_edges()} edges; phases {G.graph['timings']}"
    )
    print(
        f"full graph: {full_seconds:.2f} s, {full.n_backward} backward passes, {len(full.nodes)} nodes; "
        f"max |hierarchical edge - full entry| = {max_edge_diff:.2e} over {G.number_of_edges()} edges"
    )
    print(f"faithfulness (mean ablation; m(M)={f_h.metric_full:.3f}, m(empty)={f_h.metric_empty:.3f}):")
    print(
        f"  hierarchical          {n:4d} latents  F={f_h.faithfulness:.3f}  F(M\\C)={f_h.complement_faithfulness:.3f}"
    )
    print(
        f"  full, equal size      {len(equal):4d} latents  F={f_eq.faithfulness:.3f}  F(M\\C)={f_eq.complement_faithfulness:.3f}"
    )
    print(
        f"  full, 80% influence   {len(infl80):4d} latents  F={f_80.faithfulness:.3f}  F(M\\C)={f_80.complement_faithfulness:.3f}"
    )
    print(
        f"  full, unpruned        {n_active:4d} latents  F={f_all.faithfulness:.3f}  F(M\\C)={f_all.complement_faithfulness:.3f}"
    )
    print(
        json.dumps(
            {
                "seconds": round(seconds, 4),
                "seconds_cold": round(cold, 4),
                "cpu_seconds": round(cpu_seconds, 4),
                "backward_ratio": round(full.n_backward / max(1, G.graph["n_backward"]), 2),
                "hierarchical_backward": G.graph["n_backward"],
                "full_backward": full.n_backward,
                "full_seconds": round(full_seconds, 3),
                "prompt_tokens": int(tokens.numel()),
                "active_latents": n_active,
                "hierarchical_latents": n,
                "faithfulness_hierarchical": round(f_h.faithfulness, 4),
                "complement_faithfulness_hierarchical": round(f_h.complement_faithfulness, 4),
                "faithfulness_full_equal_size": round(f_eq.faithfulness, 4),
                "faithfulness_full_influence80": round(f_80.faithfulness, 4),
                "full_influence80_latents": len(infl80),
                "faithfulness_full_unpruned": round(f_all.faithfulness, 4),
                "max_edge_diff": float(f"{max_edge_diff:.3g}"),
                "params": params.to_json(),
                "dictionaries": kind,
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
