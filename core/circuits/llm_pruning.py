"""LLM-assisted circuit pruning, annotation and summary (the seed paper's automated workflow).

Method, step by step:
1. Input: a traced attribution graph (networkx, `core.tracing.graph`), the task (what behaviour,
   the prompt(s), the target) and an explanation for each latent node (node id -> text; a node
   without one is shown as "(no explanation)").
2. Every node's influence on the target (circuit-tracer's score, `core.tracing.influence.
   graph_influence`) orders the nodes and edges shown to the LLM; it never decides anything. For a
   pruned circuit the caller passes the influence on the version-1 graph it was pruned from (the
   numbers the Circuits page's sliders and tooltips show): influence through the pruned graph
   alone would be smaller wherever a removed node carried part of a path. Explanations come from
   `core.circuits.saved.node_explanations` (shown as `NodeExplanation.label`).
3. If the whole graph fits one prompt (estimated at 4 characters a token against
   `PruneConfig.max_prompt_tokens`), one call. Otherwise the graph is pruned hierarchically, layer
   by layer from the output down: each part shows one layer's nodes (a layer too large for one
   prompt is split into subgraphs of nodes in order of influence), the nodes already kept
   downstream with their roles, and the edges from the part into them. A closing call summarises
   the kept circuit, and the summary opens with a sentence saying which way the pruning went.
4. Each reply must be one JSON object of the schema in `core.circuits.llm_prompts`.
   `parse_prune_reply` rejects anything else with the reason: not JSON, wrong keys or types, node
   ids that are not listed, the target dropped, a node both kept and dropped, a listed node left
   undecided, an empty or multi-line role. One rejected part rejects the whole pruning: nothing is
   applied (`PruneReplyError`).
5. Calls go through `core.llm.client` (response cache in the workspace, usage accounting); missing
   credentials fail before any work, naming the variable (`core.llm.client.check_credentials`).
6. `resolve_suggestion` turns the suggestion plus the user's per-node verdicts (accept, edit the
   role, reject = leave the node as it was) into removed nodes, node annotations and a summary,
   each labelled with its author (the LLM's model id, or "hand" for edited text);
   `save_pruned_version` stores that as a new version of a saved circuit (`core.circuits.saved`),
   leaving the version it started from untouched.
Each phase's time is logged.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import networkx as nx

from core.circuits import llm_prompts as prompts
from core.errors import UserError
from core.progress import Progress
from core.settings import setting
from core.tracing.graph import target_node
from core.tracing.influence import graph_influence
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)

NO_EXPLANATION = "(no explanation)"
MAX_ROLE_CHARS = 200
MAX_SUMMARY_CHARS = 3000
CHARS_PER_TOKEN = 4  # rough estimate for English and ids; errs towards more tokens for JSON-ish text
HAND = "hand"

Action = Literal["keep", "drop"]
Verdict = Literal["accept", "edit", "reject"]


class PruneReplyError(UserError):
    """An LLM reply that was rejected; `reason` says why. Nothing was applied."""

    def __init__(self, reason: str, reply_text: str = "", part: str = "") -> None:
        self.reason = reason
        self.reply_text = reply_text
        self.part = part
        where = f" ({part})" if part else ""
        super().__init__(f"the LLM's pruning was rejected{where}: {reason}; nothing was applied")


class PruneCallError(UserError):
    """The LLM call itself failed (network, provider, rate limit) after core.llm.client's retries."""


@dataclass(frozen=True)
class PruneConfig:
    """Knobs of an LLM pruning run; stored with the suggestion. The fields with a flag are flags of
    `circuits --compare-pruning` (`core.settings`)."""

    max_prompt_tokens: int = setting(
        6000, help="estimated prompt tokens above which the LLM prunes layer by layer", flag="--prompt-budget"
    )
    edges_per_node: int = setting(4, help="edges shown per listed node (strongest first)", flag=False)
    temperature: float = setting(0.0, help="sampling temperature of the pruning LLM", flag=False)

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 500:
            raise ValueError(f"max_prompt_tokens must be at least 500, got {self.max_prompt_tokens}")
        if self.edges_per_node < 0:
            raise ValueError(f"edges_per_node must be >= 0, got {self.edges_per_node}")


@dataclass(frozen=True)
class PruneTask:
    """What the circuit is for: a description of the behaviour and the prompt(s) it was traced on."""

    description: str
    prompts: tuple[str, ...] = ()
    name: str = ""  # 'brackets' | 'sva' | 'ioi' | '' for a typed prompt

    def text(self, max_prompts: int = 5) -> str:
        """The TASK section of the LLM prompt."""
        lines = [self.description]
        if self.prompts:
            lines.append(f"Traced on {len(self.prompts)} prompt(s), e.g.:")
            lines += [f"  {p!r}" for p in self.prompts[:max_prompts]]
            if len(self.prompts) > max_prompts:
                lines.append(f"  ... and {len(self.prompts) - max_prompts} more")
        return "\n".join(lines)


def task_for_graph(G: nx.DiGraph, task: str | None = None, prompts_: Sequence[str] | None = None) -> PruneTask:
    """The task of a traced graph: a named task's description, or the graph's own prompt."""
    texts = tuple(prompts_) if prompts_ is not None else ((G.graph["prompt"],) if G.graph.get("prompt") else ())
    if task:
        if task not in prompts.TASK_DESCRIPTIONS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(prompts.TASK_DESCRIPTIONS)}")
        return PruneTask(prompts.TASK_DESCRIPTIONS[task], texts, task)
    return PruneTask(prompts.PROMPT_TASK, texts)


@dataclass(frozen=True)
class ParsedReply:
    """A validated pruning reply: kept node ids with their roles (reply order), dropped ids, summary."""

    keep: dict[str, str]
    drop: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class NodeSuggestion:
    """The LLM's suggestion for one node: keep it (with a one-line role) or drop it."""

    node_id: str
    action: Action
    role: str = ""


@dataclass
class PruneSuggestion:
    """What the LLM suggested for a whole graph, and how it was obtained."""

    model: str
    prompt_version: str
    target_id: str
    mode: str  # 'single prompt' | 'hierarchical: layer by layer' | 'hierarchical: layer by layer, ... split into subgraphs'
    nodes: list[NodeSuggestion]  # one per node of the graph but the target
    summary: str
    target_role: str = ""
    n_calls: int = 0
    n_cached: int = 0
    estimated_tokens: int = 0  # estimated tokens of the whole graph in one prompt
    config: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)

    @property
    def kept_ids(self) -> list[str]:
        """Ids the LLM kept (the target not included)."""
        return [n.node_id for n in self.nodes if n.action == "keep"]

    @property
    def dropped_ids(self) -> list[str]:
        """Ids the LLM dropped."""
        return [n.node_id for n in self.nodes if n.action == "drop"]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PruneSuggestion:
        """Inverse of `to_json`."""
        data = dict(obj)
        data["nodes"] = [NodeSuggestion(**n) for n in obj["nodes"]]
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Reply validation (step 4)


def _json_object(text: str) -> dict[str, Any]:
    """The single JSON object of a reply (one surrounding ``` fence is tolerated), else PruneReplyError."""
    s = (text or "").strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", s, re.S)
    if fenced:
        s = fenced.group(1)
    if not s:
        raise PruneReplyError("the reply is empty", text)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as exc:
        raise PruneReplyError(
            f"the reply is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", text
        ) from None
    if not isinstance(obj, dict):
        raise PruneReplyError(f"the reply is JSON but not an object (got a {type(obj).__name__})", text)
    return obj


def _check_keys(obj: dict[str, Any], expected: set[str], what: str, text: str) -> None:
    missing, extra = expected - set(obj), set(obj) - expected
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(repr(k) for k in sorted(missing))}")
        if extra:
            parts.append(f"unexpected {', '.join(repr(k) for k in sorted(extra))}")
        raise PruneReplyError(
            f"{what} must have exactly the keys {', '.join(repr(k) for k in sorted(expected))} ({'; '.join(parts)})",
            text,
        )


def _one_line(value: Any, what: str, limit: int, text: str, multiline: bool = False) -> str:
    if not isinstance(value, str):
        raise PruneReplyError(f"{what} must be a string, got {type(value).__name__}", text)
    s = value.strip()
    if not s:
        raise PruneReplyError(f"{what} is empty", text)
    if not multiline and ("\n" in s or "\r" in s):
        raise PruneReplyError(f"{what} must be one line", text)
    if len(s) > limit:
        raise PruneReplyError(f"{what} is {len(s)} characters long (at most {limit})", text)
    return s


def _few(ids: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def parse_prune_reply(
    text: str, node_ids: Sequence[str], target_id: str, elsewhere: Collection[str] = ()
) -> ParsedReply:
    """Validate a pruning reply against the listed `node_ids` (step 4); raises PruneReplyError with the reason.

    The target may appear in "keep" (its role is recorded) but never in "drop". `elsewhere` are
    ids of the graph that were not listed in this prompt (other parts of a hierarchical pruning):
    naming them is rejected too, with a message that says so.
    """
    obj = _json_object(text)
    _check_keys(obj, {"keep", "drop", "summary"}, "the reply", text)
    if not isinstance(obj["keep"], list):
        raise PruneReplyError(f'"keep" must be a list, got {type(obj["keep"]).__name__}', text)
    if not isinstance(obj["drop"], list):
        raise PruneReplyError(f'"drop" must be a list, got {type(obj["drop"]).__name__}', text)
    keep: dict[str, str] = {}
    for i, item in enumerate(obj["keep"]):
        if not isinstance(item, dict):
            raise PruneReplyError(f'"keep"[{i}] must be an object {{"id", "role"}}, got {type(item).__name__}', text)
        _check_keys(item, {"id", "role"}, f'"keep"[{i}]', text)
        node = item["id"]
        if not isinstance(node, str):
            raise PruneReplyError(f'"keep"[{i}].id must be a string, got {type(node).__name__}', text)
        if node in keep:
            raise PruneReplyError(f'"keep" lists {node!r} twice', text)
        keep[node] = _one_line(item["role"], f"the role of {node!r}", MAX_ROLE_CHARS, text)
    drop: list[str] = []
    for i, node in enumerate(obj["drop"]):
        if not isinstance(node, str):
            raise PruneReplyError(f'"drop"[{i}] must be a node id string, got {type(node).__name__}', text)
        if node in drop:
            raise PruneReplyError(f'"drop" lists {node!r} twice', text)
        drop.append(node)
    summary = _one_line(obj["summary"], '"summary"', MAX_SUMMARY_CHARS, text, multiline=True)

    listed = set(node_ids)
    allowed = listed | {target_id}
    named = [*keep, *drop]
    other = [v for v in named if v not in allowed and v in elsewhere]
    unknown = [v for v in named if v not in allowed and v not in elsewhere]
    if unknown:
        raise PruneReplyError(
            f"the reply names {len(unknown)} node(s) that are not in the graph: {_few(unknown)}", text
        )
    if other:
        raise PruneReplyError(
            f"the reply names {len(other)} node(s) that were not listed in this prompt: {_few(other)}", text
        )
    if target_id in drop:
        raise PruneReplyError(f"the reply drops the target node {target_id!r}", text)
    both = [v for v in drop if v in keep]
    if both:
        raise PruneReplyError(f"the reply lists {len(both)} node(s) in both keep and drop: {_few(both)}", text)
    undecided = [v for v in node_ids if v not in keep and v not in drop and v != target_id]
    if undecided:
        raise PruneReplyError(
            f"the reply leaves {len(undecided)} listed node(s) in neither keep nor drop: {_few(undecided)}", text
        )
    return ParsedReply(keep, tuple(drop), summary)


def parse_summary_reply(text: str) -> str:
    """Validate the closing summary reply `{"summary": "..."}`; returns the summary or raises PruneReplyError."""
    obj = _json_object(text)
    _check_keys(obj, {"summary"}, "the summary reply", text)
    return _one_line(obj["summary"], '"summary"', MAX_SUMMARY_CHARS, text, multiline=True)


# ---------------------------------------------------------------------------------------------
# Prompt building (steps 2-3)


def _single_line(text: str, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def node_line(G: nx.DiGraph, v: str, influence: float, explanation: str | None) -> str:
    """One node as a line of the NODES section: id | kind | layer | position 'token' | activation | influence | explanation."""
    a = G.nodes[v]
    pos = a.get("position")
    where = (
        f"pos {pos} {a.get('token', '')!r}"
        if pos is not None
        else f"in {a['n_prompts']} prompt(s)"
        if "n_prompts" in a
        else "-"
    )
    act = a.get("activation")
    act_s = f"act {act:.3g}" if isinstance(act, int | float) and not math.isnan(act) else "act -"
    kind = a.get("kind", "?")
    if kind in ("attn", "transcoder"):
        text = _single_line(explanation) if explanation else NO_EXPLANATION
    else:
        text = {
            "embed": "token embedding",
            "pos_embed": "position embedding",
            "attn_error": "what the attention SAE leaves unexplained",
            "mlp_error": "what the transcoder leaves unexplained",
        }.get(kind, "")
    return f"{v} | {kind} | L{a.get('layer')} | {where} | {act_s} | infl {influence:.3f} | {text}"


def _edge_lines(G: nx.DiGraph, sources: Collection[str], targets: Collection[str], n_max: int) -> tuple[list[str], int]:
    """The `n_max` strongest edges from `sources` into `targets` as lines, and how many there were."""
    src, tgt = set(sources), set(targets)
    edges = [(u, v, d.get("weight", 0.0)) for u, v, d in G.edges(data=True) if u in src and v in tgt]
    edges.sort(key=lambda e: -abs(e[2]) if e[2] is not None and not math.isnan(e[2]) else 0.0)
    return [f"{u} -> {v}: {w:+.3g}" for u, v, w in edges[:n_max]], len(edges)


def _messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": prompts.SYSTEM}, {"role": "user", "content": user}]


def estimate_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Rough token count of chat `messages` (characters / 4 plus a few per message)."""
    return math.ceil(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN) + 4 * len(messages)


def _ordered(G: nx.DiGraph, nodes: Collection[str], influence: Mapping[str, float]) -> list[str]:
    """Nodes from the output down: layer descending, then influence descending, then id."""
    return sorted(
        nodes,
        key=lambda v: (-(G.nodes[v].get("layer") if G.nodes[v].get("layer") is not None else -2), -influence[v], v),
    )


def single_prompt(
    G: nx.DiGraph, task: PruneTask, explanations: Mapping[str, str], influence: Mapping[str, float], config: PruneConfig
) -> list[dict[str, str]]:
    """Chat messages asking to prune the whole graph in one reply."""
    target = target_node(G)
    nodes = _ordered(G, [v for v in G if v != target], influence)
    edges, total = _edge_lines(G, G.nodes, G.nodes, config.edges_per_node * max(1, len(nodes)))
    user = prompts.USER_SINGLE.format(**_prompt_fields(G, task, explanations, influence, nodes, edges, total))
    return _messages(user)


def _prompt_fields(
    G: nx.DiGraph,
    task: PruneTask,
    explanations: Mapping[str, str],
    influence: Mapping[str, float],
    nodes: Sequence[str],
    edges: Sequence[str],
    n_edges_total: int,
) -> dict[str, Any]:
    """The placeholders the single and the part prompts share: task, target, the listed nodes and edges, schema, rules."""
    target = target_node(G)
    return {
        "task": task.text(),
        "target_id": target,
        "target_label": _target_label(G, target),
        "n_nodes": len(nodes),
        "node_lines": "\n".join(node_line(G, v, influence[v], explanations.get(v)) for v in nodes),
        "n_edges": len(edges),
        "n_edges_total": n_edges_total,
        "edge_lines": "\n".join(edges) or "(none)",
        "schema": prompts.SCHEMA,
        "rules": prompts.RULES.format(target_id=target),
    }


def _target_label(G: nx.DiGraph, target: str) -> str:
    t = G.graph.get("target") or {}
    label = t.get("label") or G.nodes[target].get("token") or target
    value = G.graph.get("target_value")
    return f"{label} (value {value:.3f})" if isinstance(value, int | float) else str(label)


def _kept_lines(G: nx.DiGraph, kept: Mapping[str, str], influence: Mapping[str, float], char_limit: int) -> str:
    """Kept nodes with roles, strongest first, cut to `char_limit` characters with a note of how many were left out."""
    if not kept:
        return "(none yet)"
    lines: list[str] = []
    used = 0
    order = sorted(kept, key=lambda v: -influence.get(v, 0.0))
    for j, v in enumerate(order):
        a = G.nodes[v]
        pos = a.get("position")
        where = f"pos {pos} {a.get('token', '')!r}" if pos is not None else "-"
        line = f"{v} | {a.get('kind')} | L{a.get('layer')} | {where} | {kept[v]}"
        if used + len(line) + 1 > char_limit:
            lines.append(f"... and {len(order) - j} more kept node(s) with weaker influence, not shown")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def _fit_kept(
    user_with: Callable[[str], str],
    G: nx.DiGraph,
    kept: Mapping[str, str],
    influence: Mapping[str, float],
    config: PruneConfig,
    share: float,
    squeeze: bool,
) -> list[dict[str, str]]:
    """Messages whose kept-node section gets `share` of the budget, or, when `squeeze`, whatever room the rest leaves."""
    budget_chars = config.max_prompt_tokens * CHARS_PER_TOKEN
    limit = int(budget_chars * share)
    if squeeze:
        rest = sum(len(m["content"]) for m in _messages(user_with(""))) + 16 * CHARS_PER_TOKEN
        limit = min(limit, max(0, budget_chars - rest))
    return _messages(user_with(_kept_lines(G, kept, influence, limit)))


def part_prompt(
    G: nx.DiGraph,
    task: PruneTask,
    explanations: Mapping[str, str],
    influence: Mapping[str, float],
    config: PruneConfig,
    part_nodes: Sequence[str],
    kept: Mapping[str, str],
    part: int,
    part_label: str,
    mode: str,
) -> list[dict[str, str]]:
    """Chat messages asking to prune one part of a hierarchical pruning.

    The nodes kept downstream get up to half the budget (strongest first); a part of one node gets
    what room is left, so the smallest part fits whenever anything can.
    """
    target = target_node(G)
    downstream = set(kept) | {target} | set(part_nodes)
    edges, total = _edge_lines(G, part_nodes, downstream, config.edges_per_node * max(1, len(part_nodes)))

    fields = _prompt_fields(G, task, explanations, influence, part_nodes, edges, total)

    def user_with(kept_lines: str) -> str:
        return prompts.USER_PART.format(**fields, mode=mode, part=part, part_label=part_label, kept_lines=kept_lines)

    return _fit_kept(user_with, G, kept, influence, config, 0.5, squeeze=len(part_nodes) <= 1)


def summary_prompt(
    G: nx.DiGraph,
    task: PruneTask,
    influence: Mapping[str, float],
    config: PruneConfig,
    kept: Mapping[str, str],
    notes: Sequence[str],
    mode: str,
) -> list[dict[str, str]]:
    """Chat messages asking for the closing summary of a hierarchical pruning (notes and kept nodes cut to the budget)."""
    target = target_node(G)
    note_chars = max(80, config.max_prompt_tokens * CHARS_PER_TOKEN // (4 * max(1, len(notes))))

    def user_with(kept_lines: str) -> str:
        return prompts.USER_SUMMARY.format(
            task=task.text(),
            target_id=target,
            target_label=_target_label(G, target),
            mode=mode,
            n_parts=len(notes),
            kept_lines=kept_lines,
            part_notes="\n".join(f"- part {i + 1}: {_single_line(n, note_chars)}" for i, n in enumerate(notes)),
            schema=prompts.SUMMARY_SCHEMA,
        )

    return _fit_kept(user_with, G, kept, influence, config, 1.0, squeeze=True)


def split_to_fit(
    nodes: Sequence[str], build: Callable[[Sequence[str]], list[dict[str, str]]], budget: int
) -> list[list[str]]:
    """`nodes` cut into consecutive chunks whose prompt (`build(chunk)`) fits `budget` tokens, halving as needed.

    A single node whose prompt is still too large becomes its own chunk (its context was already cut).
    """
    if len(nodes) <= 1 or estimate_tokens(build(nodes)) <= budget:
        return [list(nodes)]
    mid = len(nodes) // 2
    return split_to_fit(nodes[:mid], build, budget) + split_to_fit(nodes[mid:], build, budget)


# ---------------------------------------------------------------------------------------------
# Calling the LLM (steps 3-5)


@dataclass
class _Calls:
    """The LLM client of one pruning run and what its calls cost."""

    client: Any  # core.llm.client.LLMClient
    n: int = 0
    cached: int = 0
    usage: dict[str, float] = field(default_factory=dict)


async def _ask(
    model: str,
    messages: list[dict[str, str]],
    config: PruneConfig,
    parse: Callable[[str], Any],
    calls: _Calls,
    part: str = "",
) -> Any:
    """One call through core.llm.client, parsed by `parse`; a rejected reply names the part it belonged to."""
    reply = await calls.client.acomplete(model, messages, purpose="circuit-prune", temperature=config.temperature)
    calls.n += 1
    calls.cached += int(reply.cached)
    if not reply.cached:
        for k in ("prompt_tokens", "completion_tokens", "cost"):
            v = getattr(reply.usage, k, None)
            if v is not None:
                calls.usage[k] = calls.usage.get(k, 0) + v
    if reply.error is not None:
        raise PruneCallError(f"the call to {model}{' for ' + part if part else ''} failed: {reply.error}")
    if reply.truncated:
        raise PruneReplyError("the reply was cut off at the model's token limit", reply.text or "", part)
    try:
        return parse(reply.text or "")
    except PruneReplyError as exc:
        raise PruneReplyError(exc.reason, exc.reply_text, part) from None


def suggest_pruning(
    workspace: Path,
    G: nx.DiGraph,
    model: str,
    task: PruneTask | None = None,
    explanations: Mapping[str, str] | None = None,
    config: PruneConfig | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    influence: Mapping[str, float] | None = None,
) -> PruneSuggestion:
    """Ask `model` (any litellm id) to prune and annotate `G`; returns the validated suggestion.

    `influence` ({node id: influence on the target}, covering `G`'s nodes) is what the prompt shows and
    orders by: for a circuit pruned from a larger graph, `graph_influence(version 1)`, as the page
    shows it; default `graph_influence(G)`. ValueError if it lacks a node of `G` or a number is not finite.

    Nothing is stored but the replies (in the workspace's response cache, unless `use_cache` is
    False, which also asks afresh). Raises `core.llm.client`'s credential error before any work,
    PruneReplyError when a reply is rejected (with the reason), PruneCallError when a call fails.
    """
    from core.llm import client as llm

    llm.check_credentials(model)
    config = config or PruneConfig()
    task = task or task_for_graph(G)
    explanations = explanations or {}
    target = target_node(G)
    others = [v for v in G if v != target]
    if not others:
        raise UserError("the graph has no node besides its target: nothing to prune")
    timings: dict[str, float] = {}
    with phase("influence", timings, log):
        influence = graph_influence(G, target) if influence is None else _checked_influence(G, influence)
    calls = _Calls(llm.LLMClient(workspace, use_cache=use_cache))
    try:
        return llm.run_sync(
            _suggest(G, model, task, explanations, config, progress, calls, target, others, influence, timings)
        )
    finally:
        calls.client.flush()  # replies that arrived stay cached, even when one was rejected


def _checked_influence(G: nx.DiGraph, influence: Mapping[str, float]) -> dict[str, float]:
    """`influence` restricted to `G`'s nodes; ValueError naming a node of `G` it lacks or gives no finite number."""
    missing = [v for v in G if v not in influence]
    if missing:
        raise ValueError(
            f"the influence given has no number for {len(missing)} node(s) of the graph, e.g. {missing[0]!r}"
        )
    bad = [v for v in G if not math.isfinite(float(influence[v]))]
    if bad:
        raise ValueError(f"the influence of node {bad[0]!r} is not a finite number: {influence[bad[0]]!r}")
    return {v: float(influence[v]) for v in G}


async def _suggest(
    G: nx.DiGraph,
    model: str,
    task: PruneTask,
    explanations: Mapping[str, str],
    config: PruneConfig,
    progress: Progress | None,
    calls: _Calls,
    target: str,
    others: list[str],
    influence: Mapping[str, float],
    timings: dict[str, float],
) -> PruneSuggestion:
    whole = single_prompt(G, task, explanations, influence, config)
    estimated = estimate_tokens(whole)
    kept: dict[str, str] = {}
    target_role = ""
    if estimated <= config.max_prompt_tokens:
        mode = "single prompt"
        report(progress, f"asking {model} to prune {len(others)} nodes", 0.1)
        with phase("llm_single", timings, log):
            parsed = await _ask(model, whole, config, lambda t: parse_prune_reply(t, others, target), calls)
        target_role = parsed.keep.pop(target, "")
        kept, summary = parsed.keep, parsed.summary
    else:
        kept, target_role, summary, mode = await _prune_hierarchically(
            G, model, task, explanations, influence, config, calls, estimated, progress, timings
        )
    nodes = [
        NodeSuggestion(v, "keep", kept[v]) if v in kept else NodeSuggestion(v, "drop")
        for v in _ordered(G, others, influence)
    ]
    report(progress, f"{model} kept {len(kept)} of {len(others)} nodes", 1.0)
    log.info(
        "llm pruning with %s: %s, %d calls (%d cached); %s",
        model,
        mode,
        calls.n,
        calls.cached,
        ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
    )
    return PruneSuggestion(
        model=model,
        prompt_version=prompts.PROMPT_VERSION,
        target_id=target,
        mode=mode,
        nodes=nodes,
        summary=summary,
        target_role=target_role,
        n_calls=calls.n,
        n_cached=calls.cached,
        estimated_tokens=estimated,
        config=asdict(config),
        usage=calls.usage,
    )


@dataclass
class _Hierarchy:
    """What hierarchical pruning has decided so far, from the output layer down."""

    kept: dict[str, str] = field(default_factory=dict)  # node id -> the role the LLM gave it
    target_role: str = ""
    notes: list[str] = field(default_factory=list)  # the LLM's summary of each part asked so far
    split_layers: list[int] = field(default_factory=list)  # layers too large for one prompt


def _nodes_by_layer(G: nx.DiGraph, target: str) -> dict[int, list[str]]:
    """Every node of `G` but `target`, by layer (-2 for the nodes without one)."""
    by_layer: dict[int, list[str]] = {}
    for v in G:
        if v != target:
            by_layer.setdefault(G.nodes[v].get("layer") if G.nodes[v].get("layer") is not None else -2, []).append(v)
    return by_layer


async def _prune_layer(
    G: nx.DiGraph,
    target: str,
    layer: int,
    nodes: Sequence[str],
    done: _Hierarchy,
    mode: str,
    fraction: float,
    *,
    model: str,
    task: PruneTask,
    explanations: Mapping[str, str],
    influence: Mapping[str, float],
    config: PruneConfig,
    calls: _Calls,
    progress: Progress | None,
) -> None:
    """Ask about one layer's `nodes` (most influential first), shown with the nodes kept in the layers above as fixed context.

    A layer too large for one prompt is asked about in subgraphs that fit. Each reply's kept nodes,
    the target's role and the part's summary go into `done`; `fraction` is the progress reported.
    """
    context = dict(done.kept)  # fixed while this layer is decided
    all_ids = set(G.nodes)

    def build(chunk: Sequence[str], label: str = "", part: int = 0) -> list[dict[str, str]]:
        return part_prompt(
            G,
            task,
            explanations,
            influence,
            config,
            chunk,
            context,
            part or len(done.notes) + 1,
            label or f"layer {_layer_name(layer)}",
            mode,
        )

    chunks = split_to_fit(nodes, build, config.max_prompt_tokens)
    if len(chunks) > 1:
        done.split_layers.append(layer)
    for i, chunk in enumerate(chunks):
        label = f"layer {_layer_name(layer)}" + (
            f", subgraph {i + 1} of {len(chunks)} ({len(chunk)} of {len(nodes)} nodes)" if len(chunks) > 1 else ""
        )
        part = len(done.notes) + 1
        report(progress, f"asking {model} about part {part}: {label}", fraction)
        parsed = await _ask(
            model,
            build(chunk, label, part),
            config,
            lambda t, chunk=chunk: parse_prune_reply(t, chunk, target, all_ids - set(chunk)),
            calls,
            f"part {part}, {label}",
        )
        done.target_role = parsed.keep.pop(target, done.target_role)
        done.kept.update(parsed.keep)
        done.notes.append(parsed.summary)


async def _prune_hierarchically(
    G: nx.DiGraph,
    model: str,
    task: PruneTask,
    explanations: Mapping[str, str],
    influence: Mapping[str, float],
    config: PruneConfig,
    calls: _Calls,
    estimated: int,
    progress: Progress | None,
    timings: dict[str, float],
) -> tuple[dict[str, str], str, str, str]:
    """Step 3's hierarchical branch: one layer (or a subgraph of one) per call from the output down, then a summary call."""
    target = target_node(G)
    by_layer = _nodes_by_layer(G, target)
    layers = sorted(by_layer, reverse=True)
    done = _Hierarchy()
    mode = "layer by layer"
    with phase("llm_parts", timings, log):
        for j, layer in enumerate(layers):
            await _prune_layer(
                G,
                target,
                layer,
                sorted(by_layer[layer], key=lambda v: (-influence[v], v)),
                done,
                mode,
                0.05 + 0.85 * j / len(layers),
                model=model,
                task=task,
                explanations=explanations,
                influence=influence,
                config=config,
                calls=calls,
                progress=progress,
            )
    if done.split_layers:
        mode += f", with {len(done.split_layers)} layer(s) too large for one prompt split into subgraphs ({', '.join(_layer_name(x) for x in done.split_layers)})"
    report(progress, f"asking {model} for the summary", 0.92)
    with phase("llm_summary", timings, log):
        closing = await _ask(
            model,
            summary_prompt(G, task, influence, config, done.kept, done.notes, mode),
            config,
            parse_summary_reply,
            calls,
            "closing summary",
        )
    opening = (
        f"Pruned hierarchically, {mode}, in {len(done.notes)} parts plus this summary, because the whole graph "
        f"(about {estimated} tokens) exceeds the prompt budget of {config.max_prompt_tokens} tokens."
    )
    return done.kept, done.target_role, f"{opening} {closing}", f"hierarchical: {mode}"


def _layer_name(layer: int) -> str:
    return "embeddings" if layer == -1 else "unknown" if layer == -2 else str(layer)


# ---------------------------------------------------------------------------------------------
# Accepting, editing, rejecting and storing (step 6)


@dataclass(frozen=True)
class Decision:
    """The user's verdict on one suggestion: accept it, accept it with an edited role/summary `text`, or reject it."""

    verdict: Verdict = "accept"
    text: str = ""


@dataclass
class AppliedPruning:
    """What accepted suggestions do to a circuit version: removed nodes, annotations and summary, each with its author."""

    removed_nodes: list[str]
    node_annotations: dict[str, dict[str, str]]  # node id -> {"text", "author"}
    summary: dict[str, str] | None  # {"text", "author"} or None when rejected
    created_by: str  # the model id (its suggestions were applied), or 'hand' if every one was rejected or edited
    provenance: dict[str, Any]  # model, prompt version, mode, verdict counts

    def note(self) -> str:
        """One line for the version's note: who suggested what and what the user did with it."""
        p = self.provenance
        v = p["verdicts"]
        return (
            f"LLM pruning by {p['model']} ({p['mode']}; prompt {p['prompt_version']}): "
            f"{p['suggested_drop']} of {p['suggested_drop'] + p['suggested_keep']} nodes suggested for dropping; "
            f"suggestions {v['accept']} accepted, {v['edit']} edited, {v['reject']} rejected; summary {p['summary_verdict']}ed"
        )


def resolve_suggestion(
    suggestion: PruneSuggestion,
    decisions: Mapping[str, Decision] | None = None,
    summary_decision: Decision | None = None,
) -> AppliedPruning:
    """Combine a suggestion with per-node verdicts (missing = accept) into what gets applied (step 6).

    accept: a drop removes the node; a keep annotates it with the LLM's role (author: the model).
    edit: a keep's role is replaced by `text` (author 'hand'); an edited drop is an error.
    reject: the node stays as it was, unannotated. The same verdicts apply to the summary.
    """
    decisions = dict(decisions or {})
    by_id = {n.node_id: n for n in suggestion.nodes}
    unknown = [v for v in decisions if v not in by_id and v != suggestion.target_id]
    if unknown:
        raise ValueError(f"decisions name node(s) the suggestion does not cover: {_few(unknown)}")
    removed: list[str] = []
    annotations: dict[str, dict[str, str]] = {}
    counts = {"accept": 0, "edit": 0, "reject": 0}
    items = list(suggestion.nodes)
    if suggestion.target_role:
        items.append(NodeSuggestion(suggestion.target_id, "keep", suggestion.target_role))
    for n in items:
        d = decisions.get(n.node_id, Decision())
        if d.verdict not in counts:
            raise ValueError(f"verdict for {n.node_id!r} must be accept, edit or reject, got {d.verdict!r}")
        counts[d.verdict] += 1
        if d.verdict == "reject":
            continue
        if n.action == "drop":
            if d.verdict == "edit":
                raise ValueError(
                    f"{n.node_id!r} was suggested for dropping; there is no role to edit (accept or reject it)"
                )
            removed.append(n.node_id)
        elif d.verdict == "edit":
            annotations[n.node_id] = {
                "text": _edited(d.text, f"the role of {n.node_id!r}", MAX_ROLE_CHARS),
                "author": HAND,
            }
        else:
            annotations[n.node_id] = {"text": n.role, "author": suggestion.model}
    sd = summary_decision or Decision()
    summary: dict[str, str] | None = None
    if sd.verdict == "accept":
        summary = {"text": suggestion.summary, "author": suggestion.model}
    elif sd.verdict == "edit":
        summary = {"text": _edited(sd.text, "the summary", MAX_SUMMARY_CHARS, multiline=True), "author": HAND}
    elif sd.verdict != "reject":
        raise ValueError(f"summary verdict must be accept, edit or reject, got {sd.verdict!r}")
    used_model = counts["accept"] > 0 or sd.verdict == "accept"
    provenance = {
        "model": suggestion.model,
        "prompt_version": suggestion.prompt_version,
        "mode": suggestion.mode,
        "verdicts": counts,
        "summary_verdict": sd.verdict,
        "suggested_keep": len(suggestion.kept_ids),
        "suggested_drop": len(suggestion.dropped_ids),
    }
    return AppliedPruning(removed, annotations, summary, suggestion.model if used_model else HAND, provenance)


def save_pruned_version(
    workspace: Path,
    name: str,
    applied: AppliedPruning,
    base: Any = None,
    parent_version: int | None = None,
    faithfulness: Any = None,
    timeout: float | None = None,
    expected_circuit_id: str | None = None,
) -> Any:
    """Save `applied` as a new version of saved circuit `name` (`core.circuits.saved`); returns that CircuitVersion.

    `base` (a `core.circuits.saved.CircuitVersion`, default the circuit's latest version; may be an unsaved
    one from `circuits.unsaved_version`) is what the suggestion was made on: its pruning gains the
    accepted drops, its annotations gain (or swap for) the accepted roles, its summary is replaced
    unless the summary was rejected. Nodes the LLM kept that lose every path to the target once
    the drops are applied leave with their annotations (the circuits' pruning drops orphans); the
    note says how many. Earlier versions are never changed; a failed save stores nothing.
    `expected_circuit_id` (the loaded circuit's `circuit_id`) refuses the save with
    `circuits.CircuitChangedError` if the circuit was deleted or replaced since (`circuits.save_version`).
    """
    from core.circuits import saved as C

    base = base if base is not None else C.load_circuit(workspace, name, timeout=timeout)
    original = C.load_circuit(workspace, name, 1, timeout=timeout).graph
    pruning = C.Pruning(
        removed_nodes=(*base.pruning.removed_nodes, *applied.removed_nodes),
        removed_edges=base.pruning.removed_edges,
        node_threshold=base.pruning.node_threshold,
        edge_threshold=base.pruning.edge_threshold,
        pinned=base.pruning.pinned,
    )
    try:
        pruned = C.prune_graph(original, pruning)
    except ValueError as exc:
        raise C.CircuitError(f"the suggestion does not fit circuit {name!r}: {exc}; nothing was saved") from None
    notes = dict(base.node_annotations)
    notes.update({k: C.Annotation(a["text"], a["author"]) for k, a in applied.node_annotations.items()})
    orphaned = [k for k in applied.node_annotations if k not in pruned and k not in applied.removed_nodes]
    notes = {k: a for k, a in notes.items() if k in pruned}
    annotation = (
        C.Annotation(applied.summary["text"], applied.summary["author"]) if applied.summary else base.annotation
    )
    note = applied.note()
    if orphaned:
        note += f"; {len(orphaned)} kept node(s) lost their last path to the target and were dropped with them"
    parent = parent_version if parent_version is not None else (base.version or None)
    return C.save_version(
        workspace,
        name,
        pruning,
        notes,
        annotation,
        faithfulness,
        created_by=applied.created_by,
        parent_version=parent,
        note=note,
        timeout=timeout,
        expected_circuit_id=expected_circuit_id
        if expected_circuit_id is not None
        else getattr(base, "circuit_id", None),
    )


def _edited(text: str, what: str, limit: int, multiline: bool = False) -> str:
    s = text.strip() if isinstance(text, str) else ""
    if not s:
        raise ValueError(f"{what} was edited to nothing; reject the suggestion instead")
    if not multiline:
        s = " ".join(s.split())
    if len(s) > limit:
        raise ValueError(f"{what} is {len(s)} characters long (at most {limit})")
    return s
