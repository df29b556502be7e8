"""Example circuits: one traced, pruned, annotated and measured circuit per task (IOI, subject–verb
agreement, brackets) on the embedded default, saved in a workspace so the Circuits page can open one.

Method, step by step (`build_example_circuits`):
1. Candidates: the task's held-out evaluation items (`core.tracing.dataset.load_task_items`, the
   build's evaluation seed) in their order; the first `N_CANDIDATES` whose answer is one token and
   the model's top prediction at the last position (for brackets, only items inside an open bracket,
   whose answer is ")"). The target is logit(correct) − logit(contrast).
2. Trace each candidate with `core.tracing.api.trace_prompt` (default `TraceParams`, mean ablation,
   as the Circuits page traces).
3. Prune by influence (`core.tracing.influence.graph_influence`, the numbers the page shows): for
   each size K in `SIZES`, `Pruning(node_threshold=influence of the K-th latent)` keeps the K most
   influential latents (`core.circuits.saved.prune_graph`); its faithfulness F(C) is measured on the
   real model (`measure_faithfulness`, reusing the trace's m(M) and m(∅)). A candidate's circuit is
   the smallest K with |1 − F| ≤ `FAITHFUL_BAND`, else the K with F closest to 1.
4. The example is the candidate whose circuit has F closest to 1 (the earlier item on a tie).
5. Annotations: its `N_ANNOTATED` most influential latents get their newest stored explanation in
   the workspace (`node_explanations`; author: the explainer), else a label (author: `MADE_BY`); the
   circuit's note says what was traced, how it was chosen and pruned, and its faithfulness.
6. Save: version 1 the traced graph, version 2 the pruning with annotations and faithfulness, both
   made by `MADE_BY` (`save_circuit`, `save_version`).

Idempotent: a name that is already taken is left alone, whoever made it: an example built before
stays as it is (with any versions a user added), and a user's circuit of the same name is never
touched (that example is skipped, with a warning in the log). Each phase's time is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from core.build.tasks import TaskItem
from core.circuits import saved as C
from core.progress import Progress
from core.tracing.graph import latent_nodes
from core.tracing.influence import graph_influence
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

MADE_BY = "example builder (automatic)"  # `created_by` of every example version, and author of its labels
N_CANDIDATES = 3  # held-out items the model gets right, traced per task
SIZES = (8, 12, 16, 24, 32)  # latents kept by influence, smallest first
FAITHFUL_BAND = 0.25  # |1 - F(C)| at which a smaller circuit is good enough
N_ANNOTATED = 5  # most influential latents annotated
N_ITEMS = 48  # held-out items looked through per task
ABLATION = "mean"  # as the Circuits page measures faithfulness


@dataclass(frozen=True)
class ExampleSpec:
    """One example circuit: its name, task and what the task is called in its note."""

    name: str
    task: str
    title: str


EXAMPLES = (
    ExampleSpec("Example: IOI", "ioi", "Indirect object identification"),
    ExampleSpec("Example: agreement", "sva", "Subject–verb agreement"),
    ExampleSpec("Example: brackets", "brackets", "Closing a bracket"),
)


@dataclass
class _Choice:
    """A traced candidate and its pruned circuit."""

    item: TaskItem
    graph: nx.DiGraph  # version 1, with its target recorded
    logit_diff: float
    pruning: C.Pruning
    n_latents: int
    faithfulness: dict


def _example_made_here(workspace: Path, name: str, timeout: float | None = None) -> bool | None:
    """True if circuit `name` was made by the example builder, False if by someone else, None if absent."""
    try:
        first = C.list_versions(workspace, name, timeout)[0]
    except C.CircuitError:
        return None
    return first.created_by == MADE_BY


def example_circuit_to_open(workspace: Path, timeout: float | None = None) -> tuple[str, int] | None:
    """(name, latest version) of the first example circuit in `workspace` (in `EXAMPLES` order), or None.

    Only circuits the example builder made count: a user's circuit that took an example's name is not opened.
    `timeout`: how long to wait for another process's lock (default the store's; WorkspaceLockedError after).
    """
    if not Path(workspace).exists():
        return None
    stored = {c.name: c for c in C.list_circuits(workspace, timeout=timeout)}
    for spec in EXAMPLES:
        if spec.name in stored and _example_made_here(workspace, spec.name, timeout):
            return spec.name, int(stored[spec.name].latest_version)
    return None


def build_example_circuits(
    workspace: Path,
    model=None,
    dictionaries: Sequence | None = None,
    progress: Progress | None = None,
    root: Path | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Save the example circuits of `EXAMPLES` in `workspace` (steps 1-6); returns the names of the
    example circuits it holds afterwards (built now or before), in `EXAMPLES` order.

    `model` and `dictionaries` default to the embedded default and its attention SAEs and
    transcoders (loaded only when an example is missing); `root` is the default's build folder
    (None: data/default), whose task split, validation text and corpus (latent means) are used.
    """
    workspace = Path(workspace)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    made = {spec.name: _example_made_here(workspace, spec.name, timeout) for spec in EXAMPLES}
    for name, mine in made.items():
        if mine is False:
            log.warning("a circuit named %r was not made by the example builder; that example is skipped", name)
    todo = [spec for spec in EXAMPLES if made[spec.name] is None]
    if todo:
        model, dictionaries, means = _engine(model, dictionaries, root, timings)
        for i, spec in enumerate(todo):
            report(progress, f"example circuit: {spec.name}", i / len(todo))
            with phase(f"example.{spec.task}", timings, log):
                if _build_one(workspace, spec, model, dictionaries, means, root, timeout):
                    made[spec.name] = True
    report(progress, "example circuits done", 1.0)
    log.info("example circuits: %.2f s in all (%s)", time.perf_counter() - t0, _fmt(timings))
    return [spec.name for spec in EXAMPLES if made[spec.name]]


def _engine(model, dictionaries, root: Path | None, timings: dict[str, float]):
    """The model, the traced dictionaries and their latent means (loaded where not given)."""
    from core.tracing.loading import latent_means, tracing_dictionaries

    with phase("example.load", timings, log):
        if model is None:
            from core.subjects.models import load_default_model

            model = load_default_model(root=root, device="cpu")
        if dictionaries is None:
            from core.subjects.dictionaries import load_default_dictionaries

            dictionaries = load_default_dictionaries(root).values()
        dictionaries = tracing_dictionaries(dictionaries)
        if not dictionaries:
            raise ValueError("the example circuits need the default's attention SAEs or transcoders; none were given")
        means = latent_means(model, dictionaries, root)
    return model, dictionaries, means


def _build_one(workspace: Path, spec: ExampleSpec, model, dictionaries, means, root, timeout) -> bool:
    """Trace, choose, prune, annotate and save one example; False if its name was taken meanwhile."""
    choice = choose_example(spec.task, model, dictionaries, means, root)
    version = _annotations(workspace, choice)
    note = _note(spec, choice)
    try:
        first = C.save_circuit(
            workspace,
            spec.name,
            choice.graph,
            created_by=MADE_BY,
            note="traced by the example builder",
            timeout=timeout,
        )
    except C.CircuitError as exc:  # another process saved one under this name since the check
        log.warning("example %r not saved: %s", spec.name, exc)
        return bool(_example_made_here(workspace, spec.name, timeout))
    C.save_version(
        workspace,
        spec.name,
        choice.pruning,
        version,
        C.Annotation(note, MADE_BY),
        choice.faithfulness,
        created_by=MADE_BY,
        note=f"pruned by influence to {choice.n_latents} latents (node threshold {choice.pruning.node_threshold:.4g})",
        timeout=timeout,
        expected_circuit_id=first.circuit_id,
    )
    return True


def example_candidates(
    task: str, model, root: Path | None = None, n: int = N_CANDIDATES
) -> list[tuple[TaskItem, float]]:
    """The first `n` held-out items of `task` (step 1) whose correct token is the model's top prediction,
    with their logit(correct) − logit(incorrect); ValueError if there are none."""
    import torch

    from core.build.evaluate import encode_prompts
    from core.subjects.tokens import TokenizationError, single_token_id
    from core.tracing.dataset import load_task_items

    tok = model.tokenizer
    items = load_task_items(task, N_ITEMS, root, tokenizer=tok)
    if task == "brackets":
        items = [it for it in items if it.correct == ")"]
    out: list[tuple[TaskItem, float]] = []
    device = next(model.parameters()).device
    for it in items:
        try:
            correct, incorrect = single_token_id(tok, it.correct), single_token_id(tok, it.incorrect)
        except TokenizationError:
            continue
        tokens, _ = encode_prompts(tok, [it.prompt], tok.bos_token_id)
        with torch.no_grad():
            logits = model(tokens.to(device))[0, -1]  # [vocab]
        if int(logits.argmax()) == correct:
            out.append((it, float(logits[correct] - logits[incorrect])))
            if len(out) == n:
                break
    if not out:
        raise ValueError(f"the model gets none of the first {N_ITEMS} held-out {task} items right: no example")
    return out


def choose_example(task: str, model, dictionaries: Sequence, means: dict, root: Path | None = None) -> _Choice:
    """Steps 1-4 for one task: the candidate and pruning whose faithfulness is closest to 1."""
    from core.tracing.api import trace_prompt

    best: _Choice | None = None
    for item, diff in example_candidates(task, model, root):
        result = trace_prompt(
            model, dictionaries, item.prompt, item.correct, item.incorrect, means=means, ablation=ABLATION
        )
        G = C.with_target(result.graph, result.target)
        choice = _prune(item, G, diff, model, dictionaries, means)
        if best is None or _distance(choice) < _distance(best):
            best = choice
    assert best is not None
    return best


def _prune(item: TaskItem, G: nx.DiGraph, diff: float, model, dictionaries, means) -> _Choice:
    """Step 3: the smallest influence pruning in SIZES that is faithful enough, else the most faithful."""
    influence = graph_influence(G)
    ranked = sorted(latent_nodes(G), key=lambda v: (-influence[v], v))
    reference = C.reference_of(G.graph.get("faithfulness"), ABLATION)
    sizes = [k for k in SIZES if k < len(ranked)] or [len(ranked)]
    best: _Choice | None = None
    for k in sizes:
        # a node's influence can exceed 1 (summed over its children); a threshold is a share in [0, 1]
        pruning = C.Pruning(node_threshold=min(1.0, influence[ranked[k - 1]]) if ranked else 0.0)
        H = C.prune_graph(G, pruning)
        faith = C.measure_faithfulness(model, dictionaries, H, means, ABLATION, reference=reference).to_json()
        choice = _Choice(item, G, diff, pruning, len(latent_nodes(H)), faith)
        if best is None or _distance(choice) < _distance(best):
            best = choice
        if _distance(choice) <= FAITHFUL_BAND:
            return choice
    assert best is not None
    return best


def _distance(choice: _Choice) -> float:
    f = choice.faithfulness.get("faithfulness")
    return float("inf") if f is None or f != f else abs(1.0 - float(f))


def _annotations(workspace: Path, choice: _Choice) -> dict[str, C.Annotation]:
    """Step 5: the top latents of the pruned circuit, by influence, with their explanation or a label."""
    H = C.prune_graph(choice.graph, choice.pruning)
    influence = graph_influence(choice.graph)
    nodes = sorted(latent_nodes(H), key=lambda v: (-influence[v], v))[:N_ANNOTATED]
    if not nodes:  # no latent kept: annotate what carries the effect instead
        tgt = C.target_node(H)
        nodes = sorted((v for v in H if v != tgt), key=lambda v: (-influence[v], v))[:N_ANNOTATED]
    explained = C.node_explanations(workspace, H.subgraph(nodes))
    out = {}
    for v in nodes:
        e = explained.get(v)
        out[v] = C.Annotation(e.text, e.explainer) if e else C.Annotation(_label(H, v, influence[v]), MADE_BY)
    return out


def _label(G: nx.DiGraph, v: str, influence: float) -> str:
    """A node's label when no explanation is stored: which latent, on which token, how influential."""
    a = G.nodes[v]
    what = a.get("feature_key") or v
    return f"{what} on {a.get('token')!r} (position {a.get('position')}): influence {influence:.3f} on the target; no explanation stored yet"


def _note(spec: ExampleSpec, choice: _Choice) -> str:
    """The circuit-level annotation: what was traced, how it was chosen and pruned, how faithful it is."""
    it, f = choice.item, choice.faithfulness
    return (
        f"{spec.title}: {it.prompt!r} → {it.correct!r} over {it.incorrect!r} "
        f"(logit difference {choice.logit_diff:.2f}). A held-out item the model gets right, chosen as the most "
        f"faithful of the first {N_CANDIDATES} such items; pruned by influence on the target to its "
        f"{choice.n_latents} most influential latents. Faithfulness F(C) {f['faithfulness']:.2f}, "
        f"complement F(M\\C) {f['complement_faithfulness']:.2f} ({f['ablation']} ablation)."
    )


def _fmt(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
