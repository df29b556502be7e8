"""Attribution graphs as networkx DiGraphs, with a JSON export/import close to Neuronpedia's graph JSON.

In memory: `nx.DiGraph` whose nodes are node ids (see `core.tracing.nodes`) with attributes
    kind, layer, position, latent, activation, dictionary, token, feature_key
    (+ optional: level, expanded, influence, target_value for the logit node)
and whose edges `source -> target` carry `weight` = the direct effect of source on target (on the
target's pre-activation; on the logit or logit difference for the logit node). `G.graph` holds the
metadata: prompt, prompt_tokens, prompt_token_ids, target (dict), target_value, method, params,
n_backward, timings, and any faithfulness results.

JSON (`graph_to_json` / `graph_from_json`), format "sae-circuit-explorer/attribution-graph" v1:
    {
      "format": "sae-circuit-explorer/attribution-graph", "version": 1,
      "metadata": {"slug", "scan", "prompt", "prompt_tokens", "prompt_token_ids", "method",
                   "target", "target_value", "params", "n_backward", "timings", ...},
      "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sparseThreshold": null},
      "nodes": [{"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp",
                 "activation", "influence", "is_target_logit",           <- Neuronpedia's fields
                 "kind", "layer_index", "position", "latent", "dictionary", "token", "feature_key", ...}],
      "links": [{"source", "target", "weight"}]
    }
Neuronpedia's fields follow its graph JSON: `layer` is a string ("E" for embeddings, "L+1" for the
logit), `feature_type` one of "embedding", "cross layer transcoder" (used for transcoders),
"attention sae", "mlp reconstruction error", "attention reconstruction error", "logit".
Our own fields carry the exact values; import reads only ours, so the two never disagree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import networkx as nx

from core.tracing.nodes import LATENT_KINDS, NodeInfo

GRAPH_FORMAT = "sae-circuit-explorer/attribution-graph"
GRAPH_VERSION = 1

_FEATURE_TYPE = {
    "embed": "embedding",
    "pos_embed": "embedding",
    "transcoder": "cross layer transcoder",
    "attn": "attention sae",
    "mlp_error": "mlp reconstruction error",
    "attn_error": "attention reconstruction error",
    "logit": "logit",
}


def node_attributes(n: NodeInfo) -> dict[str, Any]:
    """The attributes of a graph node made from a NodeInfo."""
    return {
        "kind": n.kind,
        "layer": n.layer,
        "position": n.position,
        "latent": n.latent,
        "activation": n.activation,
        "dictionary": n.dictionary,
        "token": n.token,
        "feature_key": n.feature_key,
    }


def latent_nodes(G: nx.DiGraph) -> list[str]:
    """Ids of the dictionary-latent nodes of `G` (what circuit size counts)."""
    return [v for v, a in G.nodes(data=True) if a.get("kind") in LATENT_KINDS]


def target_node(G: nx.DiGraph) -> str:
    """The id of the graph's target node (the node every kept node must reach): `G.graph["target"]["node_id"]`,
    else the first node marked `is_target` or of kind 'logit'; ValueError if there is none."""
    tid = (G.graph.get("target") or {}).get("node_id")
    if tid is not None and tid in G:
        return tid
    for v, a in G.nodes(data=True):
        if a.get("is_target") or a.get("kind") == "logit":
            return v
    raise ValueError("the graph has no target node")


def circuit_features(G: nx.DiGraph) -> frozenset[tuple[str, int, int]]:
    """The latents of `G` as (dictionary id, position, latent) triples, the form ablation takes."""
    return frozenset(
        (a["dictionary"], a["position"], a["latent"]) for _, a in G.nodes(data=True) if a.get("kind") in LATENT_KINDS
    )


def graph_summary(G: nx.DiGraph, top: int = 10) -> dict[str, Any]:
    """Plain-JSON summary: counts by kind, the strongest edges into the target and the graph's metadata."""
    kinds: dict[str, int] = {}
    for _, a in G.nodes(data=True):
        kinds[a.get("kind", "?")] = kinds.get(a.get("kind", "?"), 0) + 1
    target = next((v for v, a in G.nodes(data=True) if a.get("kind") == "logit" or a.get("is_target")), None)
    into_target = []
    if target is not None:
        into_target = sorted(((u, d["weight"]) for u, _, d in G.in_edges(target, data=True)), key=lambda t: -abs(t[1]))[
            :top
        ]
    meta = {k: v for k, v in G.graph.items() if k not in ("timings",)}
    return {
        "n_nodes": G.number_of_nodes(),
        "n_edges": G.number_of_edges(),
        "n_latents": len(latent_nodes(G)),
        "nodes_by_kind": kinds,
        "target_node": target,
        "top_edges_into_target": [{"source": u, "weight": w} for u, w in into_target],
        "metadata": meta,
        "timings": G.graph.get("timings", {}),
    }


def _clean(x: Any) -> Any:
    """JSON-safe value: NaN and infinities become None; tuples lists."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


# Edge attributes besides `weight` that a graph keeps through JSON: QK edges (core.tracing.qk.expand_qk).
EDGE_EXTRAS = ("edge_kind", "qk_weight", "heads", "qk_sides")


def graph_to_json(G: nx.DiGraph, n_layers: int | None = None, scan: str = "default") -> dict[str, Any]:
    """The JSON form of an attribution graph (schema in the module docstring)."""
    n_layers = n_layers if n_layers is not None else G.graph.get("n_layers")
    nodes = []
    for js_id, (v, a) in enumerate(G.nodes(data=True)):
        kind = a.get("kind")
        layer = a.get("layer")
        if kind in ("embed", "pos_embed"):
            np_layer = "E"
        elif kind == "logit":
            np_layer = str((n_layers if n_layers is not None else layer) + 1)
        else:
            np_layer = str(layer)
        entry = {
            "node_id": v,
            "feature": a.get("latent"),
            "layer": np_layer,
            "ctx_idx": a.get("position"),
            "feature_type": _FEATURE_TYPE.get(kind, kind),
            "jsNodeId": f"{np_layer}_{a.get('latent') if a.get('latent') is not None else kind}-{js_id}",
            "clerp": a.get("label", ""),
            "activation": a.get("activation"),
            "influence": a.get("influence"),
            "is_target_logit": kind == "logit" or bool(a.get("is_target")),
            "layer_index": layer,
        }
        entry.update({k: val for k, val in a.items() if k not in ("layer",)})
        nodes.append(_clean(entry))
    links = [
        {
            "source": u,
            "target": w,
            "weight": _clean(float(d["weight"])),
            **{k: _clean(d[k]) for k in EDGE_EXTRAS if k in d},
        }
        for u, w, d in G.edges(data=True)
    ]
    meta = dict(G.graph)
    meta.setdefault("scan", scan)
    meta.setdefault("slug", _slug(str(meta.get("prompt", "graph"))))
    return {
        "format": GRAPH_FORMAT,
        "version": GRAPH_VERSION,
        "metadata": _clean(meta),
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sparseThreshold": None},
        "nodes": nodes,
        "links": links,
    }


def graph_from_json(obj: dict[str, Any]) -> nx.DiGraph:
    """Rebuild the DiGraph written by `graph_to_json` (raises ValueError on another format)."""
    if obj.get("format") != GRAPH_FORMAT:
        raise ValueError(
            f"not an attribution graph of this project (format {obj.get('format')!r}, expected {GRAPH_FORMAT!r})"
        )
    if obj.get("version", 0) > GRAPH_VERSION:
        raise ValueError(f"graph JSON version {obj.get('version')} is newer than this code reads ({GRAPH_VERSION})")
    G = nx.DiGraph()
    G.graph.update(obj.get("metadata", {}))
    neuronpedia_only = {
        "node_id",
        "feature",
        "ctx_idx",
        "feature_type",
        "jsNodeId",
        "clerp",
        "is_target_logit",
        "layer_index",
    }
    for entry in obj["nodes"]:
        attrs = {k: v for k, v in entry.items() if k not in neuronpedia_only and k != "layer"}
        attrs["layer"] = entry["layer_index"]
        if entry.get("clerp"):
            attrs["label"] = entry["clerp"]
        if attrs.get("influence") is None:
            attrs.pop("influence", None)
        G.add_node(entry["node_id"], **attrs)
    for link in obj["links"]:
        G.add_edge(
            link["source"],
            link["target"],
            weight=link["weight"] if link["weight"] is not None else float("nan"),
            **{k: link[k] for k in EDGE_EXTRAS if k in link},
        )
    return G


def save_graph(G: nx.DiGraph, path: Path) -> None:
    """Write `G` as JSON to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(graph_to_json(G), indent=1))


def load_graph(path: Path) -> nx.DiGraph:
    """Read a graph written by `save_graph`."""
    return graph_from_json(json.loads(path.read_text()))


def _slug(text: str) -> str:
    keep = "".join(c.lower() if c.isalnum() else "-" for c in text[:40])
    return "-".join(p for p in keep.split("-") if p) or "graph"


def start_graph(
    token_strs: list[str],
    token_ids: list[int],
    target_info: NodeInfo,
    method: str,
    params: dict[str, Any],
    prompt: str | None = None,
) -> nx.DiGraph:
    """An empty graph for one prompt (BOS first in `token_strs`/`token_ids`) holding only its target node and metadata."""
    G = nx.DiGraph()
    G.graph.update(
        {
            "prompt": prompt if prompt is not None else "".join(token_strs[1:]),
            "prompt_tokens": list(token_strs),
            "prompt_token_ids": [int(t) for t in token_ids],
            "method": method,
            "params": dict(params),
            "target": {
                "node_id": target_info.node_id,
                "kind": target_info.kind,
                "position": target_info.position,
                "latent": target_info.latent,
                "dictionary": target_info.dictionary,
                "label": target_info.token,
            },
            "target_value": target_info.activation,
        }
    )
    G.add_node(target_info.node_id, **node_attributes(target_info), is_target=True)
    return G
