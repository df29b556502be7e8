"""CLI commands: `python -m core trace ...` (one prompt) and `python -m core circuits --task ...` (a dataset).

    python -m core trace --prompt "When Mary and John went to the store, John gave a drink to" \\
        --target " Mary" --contrast " John" --json
    python -m core trace --prompt "..." --latent transcoder:blocks.2.ln2.hook_normalized:88 --position 5
    python -m core circuits --task ioi --n 16 --json
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from core.tracing.loading import ablation_means, load_subject, trace_params

log = logging.getLogger(__name__)


def _parse_latent(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    dict_id, _, latent = text.rpartition(":")
    if not dict_id or not latent.lstrip("-").isdigit():
        raise ValueError(
            f"--latent must be DICTIONARY_ID:LATENT (e.g. transcoder:blocks.1.ln2.hook_normalized:42), got {text!r}"
        )
    return dict_id, int(latent)


def run_trace(args) -> int:
    """`trace`: hierarchical trace of one prompt, its faithfulness, and optionally the graph JSON."""
    from core.tracing.api import trace_prompt
    from core.tracing.graph import save_graph

    model, dicts, root = load_subject(args)
    means = ablation_means(args, model, dicts, root) if not args.no_faithfulness else None
    result = trace_prompt(
        model,
        dicts,
        args.prompt,
        target=args.target,
        contrast=args.contrast,
        latent=_parse_latent(args.latent),
        position=args.position,
        params=trace_params(args),
        faithfulness=not args.no_faithfulness,
        means=means,
        ablation=args.ablation,
        with_full_graph=args.full,
        active_only=args.active_only,
    )
    if args.out:
        save_graph(result.graph, Path(args.out))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    g = result.graph.graph
    print(f"prompt: {g['prompt']!r} ({len(g['prompt_tokens'])} tokens with BOS)")
    print(f"target: {g['target']['node_id']} = {g['target_value']:.4f}")
    print(
        f"graph: {summary['n_nodes']} nodes ({summary['n_latents']} latents), {summary['n_edges']} edges, "
        f"{summary['n_backward']} backward passes, {summary['timings'].get('total', 0):.2f} s"
    )
    for e in summary["top_edges_into_target"]:
        print(f"  {e['source']:<32} {e['weight']:+.4f}")
    f = summary["faithfulness"]
    if f:
        print(
            f"faithfulness {f['faithfulness']:.3f}, complement {f['complement_faithfulness']:.3f} "
            f"(m(M)={f['metric_full']:.3f}, m(C)={f['metric_circuit']:.3f}, m(M\\C)={f['metric_complement']:.3f}, "
            f"m(empty)={f['metric_empty']:.3f}; {f['ablation']} ablation)"
        )
    if args.out:
        print(f"graph written to {args.out}")
    return 0


def run_circuits(args) -> int:
    """`circuits`: dataset-level comparison of hierarchical tracing, attribution patching and random."""
    if args.compare_pruning:
        from core.circuits.pruning_comparison import run_compare_pruning

        return run_compare_pruning(args)
    from core.build.tasks import TASKS
    from core.tracing.dataset import DEFAULT_SWEEP, aggregate_graphs, compare_methods, load_task_items, prepare_items
    from core.tracing.graph import graph_to_json
    from core.tracing.hierarchical import TraceParams
    from core.tracing.replacement import ReplacementModel

    tasks = list(TASKS) if args.task == "all" else [args.task]
    model, dicts, root = load_subject(args)
    means = ablation_means(args, model, dicts, root)
    rm = ReplacementModel(model, dicts)
    sweep = DEFAULT_SWEEP
    if args.thresholds:
        sweep = tuple(
            TraceParams(node_threshold=float(t), max_parents=args.max_parents) for t in args.thresholds.split(",")
        )
    out = []
    for task in tasks:
        items = load_task_items(task, args.n, root, tokenizer=model.tokenizer)
        prepared, skipped = prepare_items(rm, items)
        comparison, graphs = compare_methods(
            rm, prepared, sweep, means, args.ablation, task=task, n_skipped=skipped, active_only=args.active_only
        )
        mid = len(sweep) // 2
        aggregate = aggregate_graphs(graphs[mid])
        record = comparison.to_json()
        record["aggregate_top_edges_into_logit"] = [
            {"source": u, "weight": round(d["weight"], 4), "n_prompts": aggregate.nodes[u]["n_prompts"]}
            for u, _, d in sorted(aggregate.in_edges("logit", data=True), key=lambda e: -abs(e[2]["weight"]))[:10]
        ]
        record["aggregate_params"] = sweep[mid].to_json()
        out.append(record)
        if args.out:
            folder = Path(args.out)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{task}-comparison.json").write_text(json.dumps(record, indent=1))
            (folder / f"{task}-aggregate-graph.json").write_text(json.dumps(graph_to_json(aggregate), indent=1))
        if not args.json:
            print(comparison.table())
            print("aggregate graph (mean over prompts), strongest parents of the logit difference:")
            for e in record["aggregate_top_edges_into_logit"]:
                print(f"  {e['source']:<36} {e['weight']:+.4f}  (in {e['n_prompts']} prompts)")
            print()
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0]))
    return 0


def register(subparsers) -> None:
    """Add the `trace` and `circuits` commands."""
    p = subparsers.add_parser("trace", help="hierarchical circuit trace of one prompt, with ablation faithfulness")
    p.add_argument("--prompt", required=True, help="text to trace (BOS is prepended)")
    p.add_argument("--target", help="token whose logit to trace, e.g. ' Mary' (default: the model's top token)")
    p.add_argument("--contrast", help="trace logit(target) - logit(contrast)")
    p.add_argument("--latent", help="trace a latent instead: DICTIONARY_ID:LATENT")
    p.add_argument("--position", type=int, default=-1, help="position of the target (default: the last)")
    _add_common(p)
    p.add_argument("--no-faithfulness", action="store_true", help="skip the ablation runs")
    p.add_argument(
        "--full", action="store_true", help="also build the full attribution graph (counts its backward passes)"
    )
    p.add_argument("--out", help="write the graph JSON here")
    p.set_defaults(run=run_trace)

    c = subparsers.add_parser(
        "circuits", help="compare hierarchical tracing, attribution patching and random circuits on a task"
    )
    c.add_argument("--task", default="ioi", choices=["ioi", "sva", "brackets", "all"])
    c.add_argument("--n", type=int, default=16, help="prompts per task (default 16)")
    c.add_argument("--thresholds", help="comma-separated node thresholds for the sweep (default: the built-in sweep)")
    _add_common(c)
    c.add_argument("--out", help="folder for <task>-comparison.json and <task>-aggregate-graph.json")
    from core.circuits.pruning_comparison import add_arguments

    add_arguments(c)
    c.set_defaults(run=run_circuits)


def _add_common(p) -> None:
    p.add_argument("--model", default="default", help="subject model (only 'default' has transcoders)")
    p.add_argument("--root", help="folder of the default build (default data/default)")
    from core.settings import add_arguments
    from core.tracing.hierarchical import TraceParams

    add_arguments(p, TraceParams)
    p.add_argument(
        "--ablation",
        choices=["mean", "zero"],
        default="mean",
        help="how ablated latents are replaced (default mean over corpus text)",
    )
    p.add_argument("--means-windows", type=int, default=64, help="corpus windows for latent means (default 64)")
    p.add_argument(
        "--active-only",
        action="store_true",
        help="ablate only latents active in the run (inactive ones stay 0, not their mean)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: python -m core trace ... / python -m core circuits ...")
