"""CLI commands: `python -m core trace ...` (one prompt), `python -m core circuits --task ...` (a dataset) and
`python -m core steer ...` (interventions on latents, before/after).

    python -m core trace --prompt "When Mary and John went to the store, John gave a drink to" \\
        --target " Mary" --contrast " John" --json
    python -m core trace --prompt "..." --latent transcoder:blocks.2.ln2.hook_normalized:88 --position 5
    python -m core circuits --task ioi --n 16 --json
    python -m core steer --prompt "When Mary and John went to the store, John gave a drink to" \\
        --latent transcoder.0/1715@14=zero --target " Mary" --contrast " John"
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from core.subjects.models import add_device_arguments
from core.tracing.loading import ablation_means, load_subject, trace_params

TRACE_DTYPES = ("float32",)  # --dtype of trace, circuits and steer (tracing computes in float32)

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


def _qk_params(args):
    """QKParams from `--qk`, `--qk-threshold` and `--qk-latents-only` (None without `--qk`)."""
    from core.tracing.qk import QKParams

    if not args.qk:
        return None
    return QKParams(qk_threshold=args.qk_threshold, latents_only=args.qk_latents_only)  # ValueError: one line


def run_trace(args) -> int:
    """`trace`: hierarchical trace of one prompt, its faithfulness, and optionally the graph JSON."""
    from core.tracing.api import trace_prompt
    from core.tracing.graph import save_graph

    qk = _qk_params(args)  # checked before anything loads
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
        qk=qk,
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
    if "n_qk_edges" in summary:
        print(f"QK expansion: {summary['n_qk_edges']} edges through queries and keys")
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
    qk = _qk_params(args)  # checked before anything loads
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
            rm, prepared, sweep, means, args.ablation, task=task, n_skipped=skipped, active_only=args.active_only, qk=qk
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
    """Add the `trace`, `circuits` and `steer` commands."""
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
    p.add_argument(
        "--qk",
        action="store_true",
        help="also add the nodes that steer attention latents through queries and keys (edges of kind 'qk')",
    )
    p.add_argument("--qk-threshold", type=float, default=0.05, help="with --qk: minimum share of a latent's effects")
    p.add_argument("--qk-latents-only", action="store_true", help="with --qk: rank only latent contributors")
    p.set_defaults(run=run_trace)

    c = subparsers.add_parser(
        "circuits", help="compare hierarchical tracing, attribution patching and random circuits on a task"
    )
    c.add_argument("--task", default="ioi", choices=["ioi", "sva", "brackets", "all"])
    c.add_argument("--n", type=int, default=16, help="prompts per task (default 16)")
    c.add_argument("--thresholds", help="comma-separated node thresholds for the sweep (default: the built-in sweep)")
    _add_common(c)
    c.add_argument("--out", help="folder for <task>-comparison.json and <task>-aggregate-graph.json")
    c.add_argument("--qk", action="store_true", help="also compare hierarchical+QK (graphs expanded along QK edges)")
    c.add_argument("--qk-threshold", type=float, default=0.05, help="with --qk: minimum share of a latent's effects")
    c.add_argument("--qk-latents-only", action="store_true", help="with --qk: rank only latent contributors")
    from core.circuits.pruning_comparison import add_arguments

    add_arguments(c)
    c.set_defaults(run=run_circuits)

    st = subparsers.add_parser(
        "steer", help="run a prompt with latents scaled, zeroed or set; print the outputs before and after"
    )
    st.add_argument("--prompt", help="text to run (BOS is prepended); default: the saved circuit's prompt")
    st.add_argument(
        "--latent",
        action="append",
        required=True,
        help="NODE_ID=MODE[:AMOUNT] (e.g. transcoder.2/88@5=zero) or DICTIONARY_ID:LATENT[@POS,...]=MODE[:AMOUNT]; "
        "MODE is scale (multiple of its activation), zero or value; repeat for several",
    )
    st.add_argument(
        "--attention",
        choices=["frozen", "recomputed"],
        default="frozen",
        help="hold attention patterns at their clean values (default) or recompute them",
    )
    st.add_argument("--tokens", type=int, default=10, help="greedy continuation length (default 10)")
    st.add_argument("--target", help="token for the logit difference (default: the top token before steering)")
    st.add_argument("--contrast", help="logit difference = logit(target) - logit(contrast)")
    st.add_argument("--workspace", help="save the result with a circuit of this workspace")
    st.add_argument("--circuit", help="the saved circuit's name (its prompt and target are the defaults)")
    st.add_argument("--version", type=int, help="the circuit version to save with (default: its latest)")
    _add_model_arguments(st)
    st.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the model is small, and 2 oversubscribe busy cores)",
    )
    add_device_arguments(st, TRACE_DTYPES)
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(run=run_steer)


def parse_steer_latent(text: str) -> tuple:
    """One `--latent` of `steer` as an intervention tuple (latent, positions or None, mode, amount).

    Forms: `NODE_ID=MODE[:AMOUNT]` (e.g. `transcoder.2/88@5=zero`, `attn.1/417@3=scale:2`) or
    `DICTIONARY_ID:LATENT[@POS,...]=MODE[:AMOUNT]` (positions default to the last prompt token)."""
    from core.tracing.steering import MODES, SteeringError

    where, eq, how = text.rpartition("=")
    mode, _, amount = how.partition(":")
    if not eq or not where or mode not in MODES or (mode != "zero" and not amount):
        raise SteeringError(
            f"--latent must be NODE_ID=MODE[:AMOUNT] or DICTIONARY_ID:LATENT[@POS,...]=MODE[:AMOUNT] with MODE one of "
            f"{', '.join(MODES)} (e.g. transcoder.2/88@5=zero or transcoder:blocks.2.ln2.hook_normalized:88@5=scale:2); "
            f"got {text!r}"
        )
    value = amount if amount else "0"
    if ":" not in where:  # a node id: its position is the default
        return (where, None, mode, value)
    head, at, pos_text = where.rpartition("@")
    if not at:
        head, pos_text = where, ""
    dict_id, _, latent = head.rpartition(":")
    try:
        positions = tuple(int(p) for p in pos_text.split(",")) if pos_text else (-1,)
        latent_i = int(latent)
    except ValueError:
        raise SteeringError(f"--latent {text!r}: the latent and positions must be integers") from None
    if not dict_id:
        raise SteeringError(f"--latent {text!r} names no dictionary (DICTIONARY_ID:LATENT)")
    return ((dict_id, None, latent_i), positions, mode, value)


def run_steer(args) -> int:
    """`steer`: run a prompt with latents scaled, zeroed or set, and print the outputs before and after."""
    from core.tracing.steering import SteeringError, steer

    circuit = version = None
    prompt, target, contrast = args.prompt, args.target, args.contrast
    if args.circuit or args.version is not None:
        if not (args.workspace and args.circuit):
            raise SteeringError("to save with a circuit give --workspace, --circuit and (optionally) --version")
        from core.circuits.saved import CircuitError, list_circuits

        info = next((c for c in list_circuits(Path(args.workspace)) if c.name == args.circuit), None)
        if info is None:
            raise CircuitError(f"circuit {args.circuit!r} is not in workspace {args.workspace}")
        circuit, version = info.name, args.version if args.version is not None else info.latest_version
        if not 1 <= version <= info.latest_version:
            raise CircuitError(f"circuit {circuit!r} has versions 1..{info.latest_version}, not {version}")
        if prompt is None:
            prompt = info.prompt
        elif prompt != info.prompt:
            raise SteeringError(f"--prompt differs from circuit {circuit!r}'s prompt {info.prompt!r}; leave it out")
        if target is None and info.target.get("type") == "logit":
            target, contrast = info.target.get("token_str") or None, contrast or info.target.get("contrast_str") or None
    if prompt is None:
        raise SteeringError("give --prompt (or --workspace and --circuit to steer a saved circuit's prompt)")
    specs = [parse_steer_latent(t) for t in args.latent]
    model, dicts, _ = load_subject(args)
    result = steer(
        model, dicts, prompt, specs, attention=args.attention, n_tokens=args.tokens, target=target, contrast=contrast
    )
    saved = None
    if circuit is not None:
        from core.circuits.steering_results import CLI, save_steering

        saved = save_steering(Path(args.workspace), circuit, version, result, CLI)
    if args.json:
        out = result.to_json()
        if saved is not None:
            out["saved"] = {"circuit": circuit, "version": version, "steering_id": saved.steering_id}
        print(json.dumps(out))
        return 0
    for iv in result.interventions:
        print(f"steer: {iv.label()}")
    print(f"attention {result.attention}; {result.metric_label}:")
    print(f"  before {result.before.logit_diff:+.4f}   after {result.after.logit_diff:+.4f}")
    print(f"  {'before':<30} after")
    for (bt, _, bp), (at, _, ap) in zip(result.before.top, result.after.top, strict=False):
        print(f"  {bt!r:<20} {bp:7.4f}   {at!r:<20} {ap:7.4f}")
    print(f"continuation before: {result.before.continuation!r}")
    print(f"continuation after:  {result.after.continuation!r}")
    for w in result.warnings:
        print(f"warning: {w}")
    print(f"{result.seconds:.2f} s")
    if saved is not None:
        print(f"saved with circuit {circuit!r} version {version} as steering run {saved.steering_id}")
    return 0


def _add_model_arguments(p) -> None:
    """`--model`, `--root`, and for gpt2 `--releases`/`--transcoder-dir` (as `cache` takes them)."""
    p.add_argument(
        "--model",
        default="default",
        help="default (embedded) or gpt2 (from the Hugging Face cache, HF_HOME; needs --transcoder-dir)",
    )
    p.add_argument("--root", help="folder of the default build (default data/default)")
    p.add_argument(
        "--releases", nargs="+", help="gpt2: SAE-Lens releases (attention SAEs), e.g. gpt2-small-attn-out-v5-32k"
    )
    p.add_argument("--transcoder-dir", help="gpt2: a folder of SAE-Lens transcoder folders")


def _add_common(p) -> None:
    _add_model_arguments(p)
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
    add_device_arguments(p, TRACE_DTYPES)
    p.add_argument("--json", action="store_true", help="print one JSON object")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run as: python -m core trace ... / python -m core circuits ...")
