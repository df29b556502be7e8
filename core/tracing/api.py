"""One-call entry points for the CLI and the circuits page: trace a prompt, measure its faithfulness.

`trace_prompt` validates the input, prepares the replacement model, runs the hierarchical trace
(optionally the full graph too), and ablates the circuit on the real model. Everything it returns
is plain data: a networkx graph plus dataclasses with `to_json`.

Input checks (`make_target`, before any model work): bad input raises `TraceInputError` (a
UserError and a ValueError) saying what to change; a target or contrast that is a special token
(`<|endoftext|>`, BOS, EOS, padding) is allowed but returned as a warning in `TraceResult.warnings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from core.errors import UserError
from core.progress import Progress
from core.subjects.dictionaries import Dictionary
from core.tracing.ablation import AblationKind, FaithfulnessResult, circuit_faithfulness, load_or_compute_means
from core.tracing.graph import circuit_features, graph_summary
from core.tracing.hierarchical import TraceParams, hierarchical_trace
from core.tracing.nodes import LatentTarget, LogitTarget, Target
from core.tracing.qk import QKParams, expand_qk
from core.tracing.replacement import ReplacementModel, logit_target
from core.tracing.timing import phase, report

log = logging.getLogger(__name__)


class TraceInputError(UserError, ValueError):
    """Trace input that cannot be traced as given (the message says what to change)."""


@dataclass
class TraceResult:
    """A traced prompt: the graph, the circuit's faithfulness (if measured) and where the time went."""

    graph: nx.DiGraph
    target: Target
    faithfulness: FaithfulnessResult | None = None
    full_graph_backward: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # traced anyway, but worth a second look (special tokens)

    def summary(self) -> dict[str, Any]:
        """Plain-JSON summary: graph counts and top edges, faithfulness, timings."""
        out = graph_summary(self.graph)
        out["n_backward"] = self.graph.graph.get("n_backward")
        if "qk_params" in self.graph.graph:
            out["n_qk_edges"] = sum(1 for *_, d in self.graph.edges(data=True) if d.get("edge_kind") == "qk")
        out["faithfulness"] = self.faithfulness.to_json() if self.faithfulness else None
        if self.full_graph_backward is not None:
            out["full_graph_backward"] = self.full_graph_backward
        out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def make_target(
    rm: ReplacementModel,
    tokens,
    target: str | None = None,
    contrast: str | None = None,
    latent: tuple[str, int] | None = None,
    position: int = -1,
) -> Target:
    """The trace target from user input: a token (and contrast) string, or (dictionary id, latent); default the model's top token."""
    n_pos = int(tokens.shape[0])
    if not -n_pos <= position < n_pos:
        raise ValueError(f"position {position} is outside the prompt (0..{n_pos - 1})")
    pos = position % n_pos
    if latent is not None:
        if target is not None:
            raise ValueError("give either a target token or a latent, not both")
        t: Target = LatentTarget(latent[0], pos, int(latent[1]))
        if pos == 0:
            raise ValueError("position 0 is the BOS token; its latents are not traced")
    elif target is not None:
        t = logit_target(rm, tokens, target, contrast, pos)
        if t.contrast == t.token:
            raise TraceInputError(
                f"the target and the contrast are the same token ({target!r}): logit(target) − logit(contrast) "
                "is 0 whatever the model does; give a different contrast token, or leave it empty"
            )
    else:
        import torch

        with torch.no_grad():
            top = int(rm.model(tokens[None].to(rm.device))[0, pos].argmax())
        label = rm.model.tokenizer.decode([top]) if rm.model.tokenizer is not None else str(top)
        contrast_id = rm.token_id(contrast) if contrast is not None else None
        if contrast_id == top:
            raise TraceInputError(
                f"the contrast {contrast!r} is the model's top prediction here, which is the target when no target "
                "is given: logit(target) − logit(contrast) would be 0; give a target token, or another contrast"
            )
        t = LogitTarget(top, pos, contrast_id, label, contrast or "")
    rm.check_target(t, n_pos)
    return t


def special_token_warnings(tokenizer, target: Target) -> list[str]:
    """Warnings for a logit target or contrast that is one of the tokenizer's special tokens (e.g. `<|endoftext|>`)."""
    if not isinstance(target, LogitTarget) or tokenizer is None:
        return []
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    out = []
    for what, token in (("target", target.token), ("contrast", target.contrast)):
        if token is not None and token in special:
            text = tokenizer.decode([token])
            out.append(
                f"the {what} {text!r} is a special token (an end-of-text, start or padding marker), not text: "
                "the graph explains the model's logit for that marker; check that this is what you meant to trace"
            )
    return out


def trace_prompt(
    model,
    dictionaries: Sequence[Dictionary],
    prompt: str,
    target: str | None = None,
    contrast: str | None = None,
    latent: tuple[str, int] | None = None,
    position: int = -1,
    params: TraceParams | None = None,
    faithfulness: bool = True,
    means: dict | None = None,
    ablation: AblationKind = "mean",
    corpus_path: Path | None = None,
    cache_dir: Path | None = None,
    with_full_graph: bool = False,
    progress: Progress | None = None,
    active_only: bool = False,
    qk: QKParams | None = None,
) -> TraceResult:
    """Trace `prompt` from a token's logit (or a logit difference with `contrast`, or a latent's pre-activation).

    Errors (ValueError, with what to do): empty prompt, prompt longer than the context, a target or
    contrast that is not one token (naming its pieces), a contrast that is the target itself, an
    unknown dictionary, a latent out of range. A special-token target or contrast is traced, with a
    warning in `TraceResult.warnings` (also logged).
    For mean ablation pass `means` ({dictionary id: [d_sae]}) or a `corpus_path` to compute them;
    `active_only` leaves inactive latents at 0 instead of their mean (see `ablation.metric_values`).
    `qk`: also add the nodes that steer the graph's attention latents through queries and keys
    (`core.tracing.qk.expand_qk`: edges of kind "qk"), before faithfulness is measured.
    """
    params = params or TraceParams()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rm = ReplacementModel(model, dictionaries)
    tokens = rm.tokenize(prompt)
    tgt = make_target(rm, tokens, target, contrast, latent, position)
    warnings = special_token_warnings(rm.model.tokenizer, tgt)
    for w in warnings:
        log.warning(w)
    report(progress, "preparing the replacement model", 0.02)
    with phase("prepare", timings, log):
        state = rm.prepare(tokens)
    G = hierarchical_trace(rm, state, tgt, params, progress=_scaled(progress, 0.05, 0.6), prompt=prompt)
    timings.update({f"trace.{k}": v for k, v in G.graph["timings"].items()})
    if qk is not None:
        with phase("qk", timings, log):
            expand_qk(rm, state, G, qk)
    if isinstance(tgt, LogitTarget):  # the target's probability, for labels and graph exports (`Output " x" (p=…)`)
        G.graph["target_probability"] = float(state.logits[tgt.position].softmax(-1)[tgt.token])
    result = TraceResult(G, tgt, timings=timings, warnings=warnings)
    if with_full_graph:
        from core.tracing.full_graph import full_attribution_graph

        with phase("full_graph", timings, log):
            full = full_attribution_graph(rm, state, tgt, params.batch_size, progress=_scaled(progress, 0.6, 0.8))
        result.full_graph_backward = full.n_backward
    if faithfulness:
        if ablation == "mean" and means is None:
            if corpus_path is None:
                raise ValueError(
                    "mean ablation needs latent means: pass means=... or corpus_path=..., or use ablation='zero'"
                )
            report(progress, "latent means over corpus text", 0.8)
            with phase("latent_means", timings, log):
                means = load_or_compute_means(model, rm.dictionaries, corpus_path, cache_dir)
        report(progress, "ablating the circuit on the real model", 0.9)
        with phase("faithfulness", timings, log):
            result.faithfulness = circuit_faithfulness(
                model,
                rm.dictionaries,
                tokens[None],
                [tgt],
                [circuit_features(G)],
                means,
                ablation,
                active_only=active_only,
            )
        G.graph["faithfulness"] = result.faithfulness.to_json()
    timings["total"] = time.perf_counter() - t0
    report(progress, "done", 1.0)
    return result


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda msg, done, total: report(progress, msg, lo + (hi - lo) * done / max(total, 1))
