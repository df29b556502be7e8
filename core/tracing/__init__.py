"""Hierarchical circuit tracing with ablation-verified faithfulness and baselines.

Modules (each algorithm file opens with its method, step by step):
    nodes         node kinds, ids and trace targets (LogitTarget, LatentTarget)
    replacement   the replacement model: transcoders for MLPs, attention SAEs, error nodes, freezing
    attribution   direct effects by batched backward passes over one frozen forward
    hierarchical  the seed paper's level-by-level expansion (TraceParams, hierarchical_trace)
    full_graph    every active node's direct effects (circuit-tracer style), influence pruning
    graph         networkx graphs, JSON export/import close to Neuronpedia's
    ablation      faithfulness and completeness by mean ablation on the real model; latent means
    baselines     attribution patching (Marks et al.) and random circuits at a given size
    dataset       task prompts: aggregate graphs, faithfulness-vs-size curves per method
    api           trace_prompt: one call for the CLI and the circuits page
    commands      `python -m core trace` and `python -m core circuits`
"""

from core.tracing.ablation import FaithfulnessResult, circuit_faithfulness, load_or_compute_means, metric_values
from core.tracing.api import TraceResult, make_target, trace_prompt
from core.tracing.full_graph import FullGraph, full_attribution_graph, full_graph_to_networkx, prune_by_influence
from core.tracing.graph import circuit_features, graph_from_json, graph_summary, graph_to_json, load_graph, save_graph
from core.tracing.hierarchical import TraceParams, hierarchical_trace
from core.tracing.nodes import LatentTarget, LogitTarget, NodeInfo, Target
from core.tracing.replacement import PromptState, ReplacementModel

__all__ = [
    "FaithfulnessResult",
    "FullGraph",
    "LatentTarget",
    "LogitTarget",
    "NodeInfo",
    "PromptState",
    "ReplacementModel",
    "Target",
    "TraceParams",
    "TraceResult",
    "circuit_faithfulness",
    "circuit_features",
    "full_attribution_graph",
    "full_graph_to_networkx",
    "graph_from_json",
    "graph_summary",
    "graph_to_json",
    "hierarchical_trace",
    "load_graph",
    "load_or_compute_means",
    "make_target",
    "metric_values",
    "prune_by_influence",
    "save_graph",
    "trace_prompt",
]
