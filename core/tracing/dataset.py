"""Tracing over a dataset of task prompts: aggregate graphs and faithfulness-vs-size curves per method.

Method, step by step:
1. Items: the held-out evaluation items of a task (`core.build.tasks.evaluation_items`) from the
   default build's task split and validation text; items whose answer tokens are not single tokens
   are skipped (and counted). Each item's target is logit(correct) - logit(incorrect) at its last
   position.
2. Prepare every prompt (`ReplacementModel.prepare`).
3. For each point of a parameter sweep (`TraceParams`, e.g. decreasing node thresholds), trace every
   prompt hierarchically; its circuit is the graph's latents, of size n_i for prompt i.
4. Baselines at equal size: attribution patching (one forward/backward per prompt, reused for all
   sizes) keeps prompt i's top n_i latents by |IE|; random keeps n_i active latents (several seeds).
   With `active_only`, attribution patching ranks only the prompt's active latents, as hierarchical
   tracing and random do: an inactive latent stays at 0 under that ablation, in the circuit or not.
   With `qk` (QKParams), hierarchical+QK: each hierarchical graph, copied, expanded along QK edges
   (`core.tracing.qk.expand_qk`: the latents that steer its attention latents' queries and keys), its
   circuit the expanded graph's latents (n'_i >= n_i); attribution patching is also measured at those
   sizes ("attribution_patching_at_qk_size"), so hierarchical+QK is compared at equal size too.
5. Faithfulness and complement faithfulness of each method at each point by mean ablation on the
   real model (`ablation.py`), with m(M) and m(∅) computed once.
6. Aggregate graph: the hierarchical graphs of one sweep point averaged over prompts. Nodes are
   keyed by position-free identity (`NodeInfo.feature_key`: a latent by dictionary and index,
   errors by layer, embeddings by token); an edge's weight is its direct effect summed over
   positions within a prompt, then averaged over all prompts (0 where absent).
Each phase's time is logged and kept in the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from core.build.tasks import TaskItem
from core.progress import Progress
from core.tracing.ablation import (
    AblationKind,
    Circuit,
    FaithfulnessResult,
    Feature,
    faithfulness_of_sets,
    metric_values,
)
from core.tracing.baselines import active_features, attribution_patching_scores, random_features, top_features
from core.tracing.graph import circuit_features
from core.tracing.hierarchical import TraceParams, hierarchical_trace
from core.tracing.nodes import LogitTarget
from core.tracing.qk import QKParams, expand_qk
from core.tracing.replacement import PromptState, ReplacementModel
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

METHODS = ("hierarchical", "attribution_patching", "random")
QK_METHODS = ("hierarchical+qk", "attribution_patching_at_qk_size")  # with compare_methods(qk=...)
_SHORT = {
    "hierarchical": "hierarchical",
    "attribution_patching": "attr. patching",
    "random": "random",
    "hierarchical+qk": "hier.+QK",
    "attribution_patching_at_qk_size": "AtP at +QK size",
}

# From small to large circuits; the middle point is the default TraceParams.
DEFAULT_SWEEP = (
    TraceParams(node_threshold=0.05, max_parents=6),
    TraceParams(node_threshold=0.03, max_parents=8),
    TraceParams(node_threshold=0.02, max_parents=10),
    TraceParams(node_threshold=0.01, max_parents=16, max_latents=400),
    TraceParams(node_threshold=0.005, max_parents=24, max_latents=400),
)


def _find_key(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def load_task_items(task: str, n: int, root: Path | None = None, seed: int = 1234, tokenizer=None) -> list[TaskItem]:
    """`n` held-out items of `task` from the default build's task split and validation text (step 1).

    The split comes from the build manifest; without one (a model folder from a bare training run)
    it is rebuilt as the training does: the single-token names and all nouns, `make_split(seed=0)`,
    which needs `tokenizer`.
    """
    from core.build.corpus import read_corpus, split_sentences
    from core.build.tasks import NAMES, NOUNS, TaskSplit, evaluation_items, make_split
    from core.paths import default_paths
    from core.subjects.dictionaries import read_manifest
    from core.subjects.models import ArtifactError

    try:
        split_json = _find_key(read_manifest(root), "task_split")
    except ArtifactError:
        split_json = None
    if split_json is not None:
        split = TaskSplit.from_json(split_json)
    elif tokenizer is not None:
        log.warning(
            "no task split in a manifest under %s; rebuilding it from the tokenizer", default_paths(root)["root"]
        )
        names = [w for w in NAMES if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]
        split = make_split(names, list(NOUNS), seed=0)
    else:
        raise ValueError(
            f"no task split: {default_paths(root)['manifest']} is missing or has none; rebuild the default"
        )
    sentences: list[str] = []
    if task == "brackets":
        docs = read_corpus(default_paths(root)["corpus"], split="validation")
        sentences = [s for d in docs for s in split_sentences(d.text)]
    return evaluation_items(task, split, sentences, n, seed)


@dataclass
class PreparedItem:
    """A task item with its tokens, prepared replacement state and logit-difference target."""

    item: TaskItem
    state: PromptState
    target: LogitTarget


def prepare_items(
    rm: ReplacementModel, items: Sequence[TaskItem], progress: Progress | None = None
) -> tuple[list[PreparedItem], int]:
    """Prepare each item (step 2); returns the prepared items and how many were skipped for multi-token answers."""
    from core.subjects.tokens import TokenizationError

    out, skipped = [], 0
    for j, it in enumerate(items):
        try:
            correct, incorrect = rm.token_id(it.correct), rm.token_id(it.incorrect)
        except TokenizationError as exc:
            log.info("skipping %r: %s", it.prompt, exc)
            skipped += 1
            continue
        tokens = rm.tokenize(it.prompt)
        state = rm.prepare(tokens)
        target = LogitTarget(correct, int(tokens.shape[0]) - 1, incorrect, it.correct, it.incorrect)
        out.append(PreparedItem(it, state, target))
        report(progress, "prepare prompts", (j + 1) / len(items))
    return out, skipped


def padded_tokens(prepared: Sequence[PreparedItem]) -> torch.Tensor:
    """Right-padded token ids `[n, max_len]` of prepared items (padding repeats BOS; targets sit at each prompt's last index)."""
    n_max = max(p.state.n_positions for p in prepared)
    out = torch.full((len(prepared), n_max), int(prepared[0].state.tokens[0]), dtype=torch.long)
    for i, p in enumerate(prepared):
        out[i, : p.state.n_positions] = p.state.tokens.cpu()
    return out


def aggregate_graphs(graphs: Sequence[nx.DiGraph]) -> nx.DiGraph:
    """Mean attribution graph over prompts, nodes keyed by position-free identity (step 6)."""
    G = nx.DiGraph()
    n = len(graphs)
    weights: dict[tuple[str, str], float] = {}
    for g in graphs:
        key = {v: ("logit" if a.get("is_target") else a["feature_key"]) for v, a in g.nodes(data=True)}
        seen: set[str] = set()
        for v, a in g.nodes(data=True):
            k = key[v]
            if k not in G:
                G.add_node(
                    k,
                    kind=a["kind"],
                    layer=a["layer"],
                    latent=a.get("latent"),
                    dictionary=a.get("dictionary"),
                    feature_key=k,
                    n_prompts=0,
                    activation=0.0,
                    is_target=bool(a.get("is_target")),
                )
            if k not in seen:
                G.nodes[k]["n_prompts"] += 1
                seen.add(k)
            G.nodes[k]["activation"] += float(a.get("activation") or 0.0) / n
        for u, v, d in g.edges(data=True):
            weights[(key[u], key[v])] = weights.get((key[u], key[v]), 0.0) + float(d["weight"]) / n
    for (u, v), w in weights.items():
        G.add_edge(u, v, weight=w)
    if graphs:
        G.graph.update(
            {
                "method": "hierarchical-aggregate",
                "n_prompts": n,
                "params": graphs[0].graph.get("params", {}),
                "n_layers": graphs[0].graph.get("n_layers"),
            }
        )
    return G


@dataclass
class ComparisonRow:
    """Faithfulness of one method at one sweep point, over a task's prompts."""

    method: str
    point: int
    params: dict[str, Any]
    size: float  # mean circuit size (latents per prompt)
    faithfulness: float
    complement_faithfulness: float
    metric_circuit: float
    metric_complement: float


@dataclass
class CircuitComparison:
    """Faithfulness-vs-size curves of the three methods on one task."""

    task: str
    n_prompts: int
    n_skipped: int
    metric_full: float
    metric_empty: float
    ablation: str
    rows: list[ComparisonRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    mean_backward_per_trace: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (NaN as None)."""

        def clean(x: Any) -> Any:
            return None if isinstance(x, float) and math.isnan(x) else x

        out = asdict(self)
        out["rows"] = [{k: clean(v) for k, v in r.items()} for r in out["rows"]]
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return {k: clean(v) for k, v in out.items()}

    def table(self) -> str:
        """The curves as a plain-text table: one line per sweep point, F and F(M\\C) per method (with QK
        methods, a second size column: the hierarchical+QK circuits' mean size)."""
        methods = [m for m in (*METHODS, *QK_METHODS) if any(r.method == m for r in self.rows)]
        qk = "hierarchical+qk" in methods
        lines = [
            f"task {self.task}: {self.n_prompts} prompts ({self.n_skipped} skipped), m(M)={self.metric_full:.3f}, "
            f"m(empty)={self.metric_empty:.3f}, {self.ablation} ablation; F = faithfulness, C = F(M\\C) (0 = complete)",
            f"{'point':>5} {'size':>6}"
            + (f" {'+QK':>6}" if qk else "")
            + "  "
            + "  ".join(f"{_SHORT[m]:<15}" for m in methods),
            f"{'':>5} {'':>6}" + (f" {'':>6}" if qk else "") + "  " + "  ".join(f"{'F':>7} {'C':>7}" for _ in methods),
        ]
        for p in sorted({r.point for r in self.rows}):
            by = {r.method: r for r in self.rows if r.point == p}
            size = by["hierarchical"].size if "hierarchical" in by else float("nan")
            qk_size = f" {by['hierarchical+qk'].size:>6.1f}" if "hierarchical+qk" in by else (" " * 7 if qk else "")
            cells = "  ".join(
                f"{by[m].faithfulness:>7.3f} {by[m].complement_faithfulness:>7.3f}" if m in by else " " * 15
                for m in methods
            )
            lines.append(f"{p:>5} {size:>6.1f}{qk_size}  {cells}")
        return "\n".join(lines)


def compare_methods(
    rm: ReplacementModel,
    prepared: Sequence[PreparedItem],
    sweep: Sequence[TraceParams] = DEFAULT_SWEEP,
    means: dict[str, torch.Tensor] | None = None,
    ablation: AblationKind = "mean",
    random_seeds: Sequence[int] = (0, 1, 2),
    task: str = "",
    n_skipped: int = 0,
    progress: Progress | None = None,
    active_only: bool = False,
    qk: QKParams | None = None,
) -> tuple[CircuitComparison, list[list[nx.DiGraph]]]:
    """Steps 3-5 on prepared items; returns the comparison and the hierarchical graphs per sweep point
    (without QK expansion: `qk` expands copies)."""
    if not prepared:
        raise ValueError("no prompts to compare on (all items skipped?)")
    model, dicts = rm.model, rm.dictionaries
    timings: dict[str, float] = {}
    tokens = padded_tokens(prepared)
    targets = [p.target for p in prepared]
    with phase("reference_runs", timings, log):
        m_full = float(
            metric_values(
                model, dicts, tokens, targets, None, "ablate", means, ablation, active_only=active_only
            ).mean()
        )
        m_empty = float(
            metric_values(model, dicts, tokens, targets, None, "keep", means, ablation, active_only=active_only).mean()
        )
    label = ablation + (" (active latents only)" if active_only else "")
    result = CircuitComparison(task, len(prepared), n_skipped, m_full, m_empty, label, timings=timings)
    with phase("hierarchical_traces", timings, log):
        graphs, n_backward = _trace_sweep(rm, prepared, sweep, progress)
    result.mean_backward_per_trace = n_backward / (len(sweep) * len(prepared))
    with phase("attribution_patching", timings, log):
        atp = [
            attribution_patching_scores(model, dicts, p.state.tokens, p.target, means if ablation == "mean" else None)
            for p in prepared
        ]
    candidates = [active_features(p.state) for p in prepared]
    with_qk: list[list[Circuit]] = []
    if qk is not None:
        with phase("qk_expansion", timings, log):
            for row in graphs:
                with_qk.append(
                    [circuit_features(expand_qk(rm, p.state, g.copy(), qk)) for p, g in zip(prepared, row, strict=True)]
                )

    with phase("ablations", timings, log):
        for j, params in enumerate(sweep):
            hier = [circuit_features(g) for g in graphs[j]]
            methods = _method_circuits(hier, atp, candidates, random_seeds, active_only)
            if with_qk:
                hq = with_qk[j]
                methods["hierarchical+qk"] = [hq]
                methods["attribution_patching_at_qk_size"] = _method_circuits(hq, atp, candidates, (), active_only)[
                    "attribution_patching"
                ]
            for method, circuit_sets in methods.items():
                res = faithfulness_of_sets(
                    model, dicts, tokens, targets, circuit_sets, means, ablation, (m_full, m_empty), active_only
                )
                sized = with_qk[j] if method in QK_METHODS else hier
                result.rows.append(_mean_row(method, j, params, [len(c) for c in sized], res))
            report(progress, f"ablations {j + 1}/{len(sweep)}", 0.4 + 0.6 * (j + 1) / len(sweep))
    return result, graphs


def _trace_sweep(
    rm: ReplacementModel, prepared: Sequence[PreparedItem], sweep: Sequence[TraceParams], progress: Progress | None
) -> tuple[list[list[nx.DiGraph]], int]:
    """Step 3: (graphs[point][prompt], total backward passes) of hierarchical traces at every sweep point."""
    graphs: list[list[nx.DiGraph]] = []
    n_backward = 0
    for j, params in enumerate(sweep):
        row = []
        for p in prepared:
            g = hierarchical_trace(rm, p.state, p.target, params, prompt=p.item.prompt)
            n_backward += g.graph["n_backward"]
            row.append(g)
        graphs.append(row)
        report(progress, f"traced sweep point {j + 1}/{len(sweep)}", 0.1 + 0.3 * (j + 1) / len(sweep))
    return graphs, n_backward


def _method_circuits(
    hier: list[Circuit],
    atp: list[dict[str, torch.Tensor]],
    candidates: list[list[Feature]],
    random_seeds: Sequence[int],
    active_only: bool,
) -> dict[str, list[list[Circuit]]]:
    """Step 4: method -> circuit sets (one circuit per prompt, sized like `hier`'s); random has one set per seed."""
    sizes = [len(c) for c in hier]
    return {
        "hierarchical": [hier],
        "attribution_patching": [
            [top_features(s, n, c if active_only else None) for s, n, c in zip(atp, sizes, candidates, strict=True)]
        ],
        "random": [
            [
                random_features(c, n, torch.Generator().manual_seed(1000 * seed + i))
                for i, (c, n) in enumerate(zip(candidates, sizes, strict=True))
            ]
            for seed in random_seeds
        ],
    }


def _mean_row(
    method: str, point: int, params: TraceParams, sizes: list[int], res: list[FaithfulnessResult]
) -> ComparisonRow:
    """One method's row at one sweep point: each faithfulness measure averaged over its circuit sets `res`."""
    return ComparisonRow(
        method=method,
        point=point,
        params=params.to_json(),
        size=sum(sizes) / len(sizes),
        faithfulness=sum(r.faithfulness for r in res) / len(res),
        complement_faithfulness=sum(r.complement_faithfulness for r in res) / len(res),
        metric_circuit=sum(r.metric_circuit for r in res) / len(res),
        metric_complement=sum(r.metric_complement for r in res) / len(res),
    )
