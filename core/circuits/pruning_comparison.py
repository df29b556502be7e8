"""LLM pruning compared with threshold pruning, attribution patching and random circuits at the size the LLM chose.

`python -m core circuits --compare-pruning --task brackets|sva|ioi|all --llm MODEL [--workspace W]`

Method, step by step:
1. Per task: held-out items (`dataset.load_task_items`), prepared (`dataset.prepare_items`), each
   traced hierarchically (`TraceParams` from the command line); the graphs averaged into one
   aggregate graph (`dataset.aggregate_graphs`) whose nodes are position-free (a latent by
   dictionary and index, an error by layer, an embedding by token).
2. The LLM prunes the aggregate graph (`circuit_llm.suggest_pruning`), shown each latent's
   explanation from the workspace. Its circuit for prompt i is the latents of prompt i's graph
   whose position-free key it kept: n_i latents, "the size the LLM chose".
3. At the same n_i for each prompt:
   threshold pruning     the n_i latents of prompt i's traced graph with the highest influence on the
                         target (the influence threshold that leaves n_i; circuit-tracer's pruning of
                         the same graph the LLM saw, prompt by prompt);
   attribution patching  prompt i's top n_i latents by |IE| (`baselines.top_features`; with
                         `active_only`, among prompt i's active latents);
   random                n_i of prompt i's active latents, the mean over seeds;
   and, for reference, the traced graphs unpruned (all their latents).
4. Each set of circuits is ablated on the real model (`ablation.circuit_faithfulness`), m averaged
   over prompts before any ratio:
   sufficiency   m(C) / m(M)                          share of the metric the circuit alone keeps
   necessity     1 - m(M\\C) / m(M)                    share of the metric lost when the circuit is ablated
   faithfulness  (m(C) - m(∅)) / (m(M) - m(∅))        Marks et al.; 1 = as good as the model
   completeness  F(M\\C) = (m(M\\C) - m(∅)) / (m(M) - m(∅))   0 = the circuit holds all of the mechanism
Each phase's time is logged and kept in the result.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from core.errors import UserError
from core.progress import Progress, TqdmBars
from core.tracing.ablation import AblationKind, Circuit, FaithfulnessResult, faithfulness_of_sets, metric_values
from core.tracing.nodes import LATENT_KINDS
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

METHODS = ("llm", "threshold", "attribution_patching", "random", "traced")
COMPLETENESS = "completeness F(M\\C)"
METHOD_LABELS = {
    "llm": "LLM pruning",
    "threshold": "threshold (influence)",
    "attribution_patching": "attribution patching",
    "random": "random",
    "traced": "traced graph, unpruned",
}


def circuits_from_keys(graphs: Sequence[nx.DiGraph], kept_keys: Collection[str]) -> list[Circuit]:
    """Per prompt, the latents of its graph whose position-free `feature_key` is in `kept_keys` (step 2)."""
    keys = set(kept_keys)
    return [
        frozenset(
            (a["dictionary"], a["position"], a["latent"])
            for _, a in g.nodes(data=True)
            if a.get("kind") in LATENT_KINDS and a.get("feature_key") in keys
        )
        for g in graphs
    ]


def influence_circuit(G: nx.DiGraph, n: int) -> Circuit:
    """The `n` latents of `G` with the highest influence on its target (ties by node id) (step 3, threshold pruning)."""
    from core.tracing.influence import graph_influence

    if n <= 0:
        return frozenset()
    infl = graph_influence(G)
    latents = sorted((v for v, a in G.nodes(data=True) if a.get("kind") in LATENT_KINDS), key=lambda v: (-infl[v], v))
    return frozenset((G.nodes[v]["dictionary"], G.nodes[v]["position"], G.nodes[v]["latent"]) for v in latents[:n])


def _ratio(num: float, den: float) -> float:
    return float("nan") if abs(den) < 1e-6 else num / den


@dataclass
class PruningRow:
    """The four measures of one method's circuits on one task (step 4)."""

    method: str
    size: float  # mean latents per prompt
    necessity: float
    sufficiency: float
    faithfulness: float
    completeness: float  # F(M\C); 0 = complete
    metric_circuit: float
    metric_complement: float

    @classmethod
    def from_results(cls, method: str, results: Sequence[FaithfulnessResult]) -> PruningRow:
        """Average of the ablation results of one method (several seeds for random), the measures from the mean metrics."""
        k = len(results)
        m_full, m_empty = results[0].metric_full, results[0].metric_empty
        m_c = sum(r.metric_circuit for r in results) / k
        m_mc = sum(r.metric_complement for r in results) / k
        return cls(
            method=method,
            size=sum(r.n_latents for r in results) / k,
            necessity=1.0 - _ratio(m_mc, m_full),
            sufficiency=_ratio(m_c, m_full),
            faithfulness=_ratio(m_c - m_empty, m_full - m_empty),
            completeness=_ratio(m_mc - m_empty, m_full - m_empty),
            metric_circuit=m_c,
            metric_complement=m_mc,
        )


@dataclass
class PruningComparison:
    """The comparison table of one task, with what the LLM did."""

    task: str
    n_prompts: int
    n_skipped: int
    metric_full: float
    metric_empty: float
    ablation: str
    rows: list[PruningRow] = field(default_factory=list)
    llm: dict[str, Any] = field(default_factory=dict)  # model, prompt_version, mode, kept/total nodes, summary, calls
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (NaN as None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        out = asdict(self)
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return clean(out)

    def header(self) -> str:
        """One line: the task, prompts, what the LLM kept and the reference metrics."""
        llm = self.llm
        who = (
            (
                f"; {llm.get('model')} kept {llm.get('kept_nodes')} of {llm.get('total_nodes')} aggregate nodes "
                f"({llm.get('mode')}, prompt {llm.get('prompt_version')})"
            )
            if llm
            else ""
        )
        return (
            f"task {self.task}: {self.n_prompts} prompts ({self.n_skipped} skipped){who}; "
            f"m(M)={self.metric_full:.3f}, m(empty)={self.metric_empty:.3f}, {self.ablation} ablation"
        )

    def table(self) -> str:
        """Plain-text table: one row per method."""
        lines = [
            self.header(),
            f"{'method':<24} {'size':>7} {'necessity':>10} {'sufficiency':>12} {'faithfulness':>13} {COMPLETENESS:>20}",
        ]
        for r in self.rows:
            lines.append(
                f"{METHOD_LABELS.get(r.method, r.method):<24} {r.size:>7.1f} {r.necessity:>10.3f} {r.sufficiency:>12.3f} "
                f"{r.faithfulness:>13.3f} {r.completeness:>20.3f}"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as Markdown rows (for the README), with the header line above it."""
        lines = [
            self.header(),
            "",
            "| method | size | necessity | sufficiency | faithfulness | completeness F(M\\C) |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {METHOD_LABELS.get(r.method, r.method)} | {r.size:.1f} | {r.necessity:.3f} | {r.sufficiency:.3f} | "
                f"{r.faithfulness:.3f} | {r.completeness:.3f} |"
            )
        return "\n".join(lines)


def _reference_metrics(
    model, dicts, tokens, targets, means, ablation: AblationKind, active_only: bool
) -> tuple[float, float]:
    """m(M) and m(∅): the metric averaged over prompts with every latent kept, and with every latent ablated."""
    m_full = float(
        metric_values(model, dicts, tokens, targets, None, "ablate", means, ablation, active_only=active_only).mean()
    )
    m_empty = float(
        metric_values(model, dicts, tokens, targets, None, "keep", means, ablation, active_only=active_only).mean()
    )
    return m_full, m_empty


def _circuits_by_method(
    rm,
    prepared: Sequence,
    graphs: Sequence[nx.DiGraph],
    kept_keys: Collection[str],
    means: dict[str, torch.Tensor] | None,
    ablation: AblationKind,
    random_seeds: Sequence[int],
    active_only: bool,
) -> dict[str, list[list[Circuit]]]:
    """Step 3: per method, its sets of circuits (one set per random seed, else one), each one circuit per prompt.

    Every method's circuit for prompt i has the size of the LLM's (n_i), except the unpruned traced graph.
    """
    from core.tracing.baselines import active_features, attribution_patching_scores, random_features, top_features
    from core.tracing.graph import circuit_features

    llm = circuits_from_keys(graphs, kept_keys)
    sizes = [len(c) for c in llm]
    atp = [
        attribution_patching_scores(
            rm.model, rm.dictionaries, p.state.tokens, p.target, means if ablation == "mean" else None
        )
        for p in prepared
    ]
    return {
        "llm": [llm],
        "threshold": [[influence_circuit(g, n) for g, n in zip(graphs, sizes, strict=True)]],
        "attribution_patching": [
            [
                top_features(s, n, active_features(p.state) if active_only else None)
                for s, n, p in zip(atp, sizes, prepared, strict=True)
            ]
        ],
        "random": [
            [
                random_features(active_features(p.state), n, torch.Generator().manual_seed(1000 * seed + i))
                for i, (p, n) in enumerate(zip(prepared, sizes, strict=True))
            ]
            for seed in random_seeds
        ],
        "traced": [[circuit_features(g) for g in graphs]],
    }


def compare_pruning(
    rm,
    prepared: Sequence,
    graphs: Sequence[nx.DiGraph],
    kept_keys: Collection[str],
    means: dict[str, torch.Tensor] | None = None,
    ablation: AblationKind = "mean",
    random_seeds: Sequence[int] = (0, 1, 2),
    task: str = "",
    n_skipped: int = 0,
    active_only: bool = False,
    progress: Progress | None = None,
) -> PruningComparison:
    """Steps 2-4 on prepared items (`dataset.PreparedItem`) and their traced graphs, for the kept position-free keys."""
    from core.tracing.dataset import padded_tokens

    if not prepared:
        raise ValueError("no prompts to compare on (all items skipped?)")
    if len(graphs) != len(prepared):
        raise ValueError(f"{len(prepared)} prompts but {len(graphs)} graphs")
    model, dicts = rm.model, rm.dictionaries
    timings: dict[str, float] = {}
    tokens = padded_tokens(prepared)
    targets = [p.target for p in prepared]
    with phase("reference_runs", timings, log):
        m_full, m_empty = _reference_metrics(model, dicts, tokens, targets, means, ablation, active_only)
    report(progress, "reference runs", 0.2)
    with phase("circuits", timings, log):
        methods = _circuits_by_method(rm, prepared, graphs, kept_keys, means, ablation, random_seeds, active_only)
    report(progress, "circuits chosen", 0.3)
    label = ablation + (" (active latents only)" if active_only else "")
    result = PruningComparison(task, len(prepared), n_skipped, m_full, m_empty, label, timings=timings)
    with phase("ablations", timings, log):
        for j, (method, circuit_sets) in enumerate(methods.items()):
            res = faithfulness_of_sets(
                model, dicts, tokens, targets, circuit_sets, means, ablation, (m_full, m_empty), active_only
            )
            result.rows.append(PruningRow.from_results(method, res))
            report(progress, f"ablated {METHOD_LABELS[method]}", 0.3 + 0.7 * (j + 1) / len(methods))
    return result


# ---------------------------------------------------------------------------------------------
# The command


def add_arguments(parser) -> None:
    """Add --compare-pruning and its options to the `circuits` command's parser."""
    from core.circuits.llm_pruning import PruneConfig
    from core.settings import add_arguments as add_setting_arguments

    g = parser.add_argument_group("LLM pruning comparison (--compare-pruning)")
    g.add_argument(
        "--compare-pruning",
        action="store_true",
        help="compare LLM pruning with threshold pruning, attribution patching and random at the size the LLM chose",
    )
    g.add_argument(
        "--llm", help="litellm model id that prunes (e.g. openai/gpt-4o-mini); needs its API key in the environment"
    )
    g.add_argument(
        "--workspace",
        help="workspace with the latents' explanations and the LLM response cache (default: the default workspace)",
    )
    g.add_argument("--explainer", help="use explanations by this explainer (default: the best available per latent)")
    add_setting_arguments(g, PruneConfig)  # --prompt-budget


def _comparison_workspace(args) -> Path:
    """The workspace the comparison reads explanations from and caches LLM replies in (migrated to the current schema)."""
    from core import store
    from core.cache.workspace import DEFAULT_WORKSPACE

    workspace = Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE
    if not workspace.exists():
        raise UserError(
            f"workspace {workspace} does not exist; build one with `python -m core cache ...` or pass --workspace"
        )
    store.migrate(workspace)  # explanations and the response cache need the current schema
    return workspace


def _llm_record(suggestion, explanations: dict[str, str], agg: nx.DiGraph) -> dict:
    """What the LLM did for one task, as stored in the comparison's `llm` field."""
    return {
        "model": suggestion.model,
        "prompt_version": suggestion.prompt_version,
        "mode": suggestion.mode,
        "kept_nodes": len(suggestion.kept_ids),
        "total_nodes": len(suggestion.nodes),
        "summary": suggestion.summary,
        "n_calls": suggestion.n_calls,
        "n_cached": suggestion.n_cached,
        "usage": suggestion.usage,
        "explained_latents": sum(1 for v in explanations if agg.nodes[v].get("kind") in LATENT_KINDS),
        "latents": sum(1 for _, a in agg.nodes(data=True) if a.get("kind") in LATENT_KINDS),
    }


def _write_task_files(folder: Path, task: str, record: dict, suggestion, agg: nx.DiGraph) -> None:
    """Write one task's comparison, LLM suggestion and aggregate graph as JSON files into `folder`."""
    from core.tracing.graph import graph_to_json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{task}-pruning-comparison.json").write_text(json.dumps(record, indent=1))
    (folder / f"{task}-pruning-suggestion.json").write_text(json.dumps(suggestion.to_json(), indent=1))
    (folder / f"{task}-aggregate-graph.json").write_text(json.dumps(graph_to_json(agg), indent=1))


def _compare_task(args, task: str, workspace: Path, rm, root, means, params, config) -> dict:
    """Steps 1-4 for one task: trace its prompts, let the LLM prune their aggregate graph, compare the methods.

    Prints the table unless `--json`, writes the files under `--out`, and returns the stored record
    (the comparison with its LLM and trace settings).
    """
    from tqdm import tqdm

    from core.circuits.llm_pruning import suggest_pruning, task_for_graph
    from core.circuits.saved import node_explanations
    from core.tracing.dataset import aggregate_graphs, load_task_items, prepare_items
    from core.tracing.hierarchical import hierarchical_trace

    timings: dict[str, float] = {}
    items = load_task_items(task, args.n, root, tokenizer=rm.model.tokenizer)
    prepared, skipped = prepare_items(rm, items)
    if not prepared:
        raise UserError(f"no usable {task} prompts (all {skipped} had multi-token answers)")
    with phase("trace", timings, log):
        graphs = [
            hierarchical_trace(rm, p.state, p.target, params, prompt=p.item.prompt)
            for p in tqdm(prepared, desc=f"{task}: tracing", unit="prompt")
        ]
    agg = aggregate_graphs(graphs)
    agg.graph["target"] = {"label": "logit(correct answer) - logit(incorrect answer), averaged over the prompts"}
    explanations = {v: e.label for v, e in node_explanations(workspace, agg, explainer=args.explainer).items()}
    with phase("llm", timings, log):
        with TqdmBars(desc=f"{task}: {args.llm} prunes") as bars:
            suggestion = suggest_pruning(
                workspace,
                agg,
                args.llm,
                task_for_graph(agg, task, [p.item.prompt for p in prepared]),
                explanations,
                config,
                progress=bars,
            )
    with TqdmBars(desc=f"{task}: ablations") as bars:
        comparison = compare_pruning(
            rm,
            prepared,
            graphs,
            suggestion.kept_ids,
            means,
            args.ablation,
            task=task,
            n_skipped=skipped,
            active_only=args.active_only,
            progress=bars,
        )
    comparison.timings.update(timings)
    comparison.llm = _llm_record(suggestion, explanations, agg)
    record = comparison.to_json()
    record["trace_params"] = params.to_json()
    if args.out:
        _write_task_files(Path(args.out), task, record, suggestion, agg)
    if not args.json:
        print(comparison.table())
        print(f"summary by {suggestion.model}: {suggestion.summary}")
        print()
    return record


def run_compare_pruning(args) -> int:
    """`circuits --compare-pruning`: the comparison table per task; credentials are checked before anything loads."""
    if not args.llm:
        raise UserError(
            "--compare-pruning needs --llm MODEL, a litellm model id with its API key set (e.g. --llm openai/gpt-4o-mini "
            "with OPENAI_API_KEY); no LLM is available offline, so the comparison cannot run without one"
        )
    from core.llm import client as llm

    llm.check_credentials(args.llm)
    from core.build.tasks import TASKS
    from core.circuits.llm_pruning import PruneConfig
    from core.settings import from_arguments
    from core.tracing.loading import ablation_means, load_subject, trace_params
    from core.tracing.replacement import ReplacementModel

    workspace = _comparison_workspace(args)
    config = from_arguments(PruneConfig, args)
    tasks = list(TASKS) if args.task == "all" else [args.task]
    model, dicts, root = load_subject(args)
    means = ablation_means(args, model, dicts, root)
    rm = ReplacementModel(model, dicts)
    params = trace_params(args)
    out = [_compare_task(args, task, workspace, rm, root, means, params, config) for task in tasks]
    if args.json:
        print(json.dumps(out if len(out) > 1 else out[0]))
    return 0
