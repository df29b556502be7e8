"""Attribution-graph JSON that Neuronpedia and circuit-tracer read: export (`to_graph_json`) and import
(`from_graph_json`).

The format is Neuronpedia's published graph schema (hijohnnylin/neuronpedia,
`apps/webapp/app/api/graph/graph-schema.json`), which circuit-tracer's `create_graph_files` also writes
and its local viewer reads: `{"metadata", "qParams", "nodes", "links"}`.

Export, step by step (`to_graph_json`):
1. Each node gets the id and fields the viewers expect (n = the model's layer count; the logit row is n + 1):
       our kind     node_id                  feature                layer   feature_type
       transcoder   {layer}_{latent}_{pos}   cantor(layer, latent)  "L"     "cross layer transcoder"
       attn         A{layer}_{latent}_{pos}  cantor(layer, latent)  "L"     "lorsa"
       mlp_error    0_{layer}_{pos}          -1                     "L"     "mlp reconstruction error"
       attn_error   A0_{layer}_{pos}         -1                     "L"     "lorsa error"
       embed        E_{token id}_{pos}       pos                    "E"     "embedding"
       pos_embed    E_pos_{pos}              -2                     "E"     "embedding"
       logit        {n+1}_{token id}_{pos}   token id               "n+1"   "logit"
   `feature` is circuit-tracer's Cantor pairing of (layer, latent) with `metadata.schema_version = 1`,
   so Neuronpedia unpairs it to the layer and the latent index. Attention-SAE latents and their errors
   take Neuronpedia's attention types ("lorsa", "lorsa error": its only attention-feature kind); their
   ids carry an `A` so they never collide with a transcoder latent of the same layer, index and
   position. Position embeddings have no counterpart in either viewer (circuit-tracer attributes only
   token embeddings): they are exported as a second embedding node per position, feature -2, so the
   viewers draw them in the embedding row and the round trip keeps them.
2. `clerp`: the node's label (annotation or explanation), else its readable id; a logit's is
   `Output " tok" (p=0.123)` (the viewers parse the token between quotes and the number after `(p=`),
   with ` vs " other"` appended for a logit difference. p is `target_prob` (the model's softmax
   probability of the target token), "nan" when not known.
3. `influence`: circuit-tracer's field is a node's cumulative share of influence, nodes sorted by
   influence descending (the viewer's slider keeps nodes with influence <= the threshold), computed here
   from `core.tracing.influence.graph_influence`; `activation` is ours.
4. `qParams`: `pinnedIds` = the pinned nodes and every supernode member (the viewers draw a supernode
   only from pinned members), `supernodes` = `[[label, node_id, ...], ...]`.
5. Every node also carries `explorer`: our node id and attributes; `metadata.explorer` carries our
   graph metadata. The viewers ignore both; import reads them back, so our export round-trips exactly.
6. QK effects (`core.tracing.qk.expand_qk`: edges of kind "qk", `qk_weight` on direct edges) are not
   links: the viewers would draw them as direct effects and count them in their influence. They go where
   Neuronpedia's viewer reads QK tracing (the shape of its CRM backend): each attention latent they
   steer gets `qk_tracing_results` = {"pair_wise_contributors": [], "top_q_marginal_contributors":
   [[node_id, effect through the query], ...], "top_k_marginal_contributors": [[node_id, effect
   through the keys], ...]} (strongest first; we attribute per node, not per query-key pair, so the
   pair list is empty), and a node joined to the circuit only through QK edges (`qk_only`, no direct
   out-edge) is listed in the top-level `qk_only_nodes` ({node_id: node}) instead of `nodes`, with the
   links into it left out too. The viewer draws the direct circuit and lists a clicked attention
   latent's QK contributors, resolving ids from `nodes` or `qk_only_nodes`. The exact QK edges and the
   left-out links travel in `metadata.explorer` (`qk_edges`, `link_extras`), so import restores them.

`check_exportable` runs the checks alone (cheap), `write_graph_json` writes the file, `target_probability`
gives the target token's probability for the logit label.

Import (`from_graph_json`) also reads the JSON our circuits are stored in (`core.tracing.graph`'s
format, e.g. `saved.export_json`). For the viewers' format it checks the schema's required fields and
types (GraphImportError naming the field and node otherwise), that every link and qParams id names a
node, and that links form no cycle.
Our own export comes back as it was; circuit-tracer's and Neuronpedia's JSON becomes a graph of our
node kinds (ids as in `core.tracing.nodes`). `ImportInfo.loadable` says whether faithfulness and
steering can run on it (our export of a model this app loads); `ImportInfo.reason` says why not.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from core.errors import UserError
from core.tracing.graph import EDGE_EXTRAS, GRAPH_FORMAT, graph_from_json, target_node
from core.tracing.influence import graph_influence, is_qk_edge
from core.tracing.nodes import NodeInfo
from core.tracing.qk import qk_edges

FORMAT = "sae-circuit-explorer/graph-interop"
VERSION = 1
GENERATOR = "sae-circuit-explorer"
LOADABLE_MODELS = ("default", "gpt2")  # core.subjects.models.MODEL_NAMES, without importing torch-heavy loaders
MAX_SUPERNODE_LABEL = 200

FEATURE_TYPE = {
    "transcoder": "cross layer transcoder",
    "attn": "lorsa",
    "mlp_error": "mlp reconstruction error",
    "attn_error": "lorsa error",
    "embed": "embedding",
    "pos_embed": "embedding",
    "logit": "logit",
}
# Import: feature types of circuit-tracer, Neuronpedia and our older export -> our kinds.
KIND_OF_TYPE = {
    "cross layer transcoder": "transcoder",
    "per layer transcoder": "transcoder",
    "transcoder": "transcoder",
    "unexplored node": "transcoder",  # the viewers treat it as a transcoder feature too
    "lorsa": "attn",
    "attention sae": "attn",
    "mlp reconstruction error": "mlp_error",
    "lorsa error": "attn_error",
    "attention reconstruction error": "attn_error",
    "embedding": "embed",
    "logit": "logit",
}
POS_EMBED_FEATURE = -2
ERROR_FEATURE = -1


class GraphImportError(UserError, ValueError):
    """Graph JSON that cannot be imported; the message names what is wrong."""


@dataclass(frozen=True)
class ImportInfo:
    """What `from_graph_json` read besides the graph.

    `source`: "sae-circuit-explorer" (our export), "circuit-tracer" or "neuronpedia"; `model_id`: the
    JSON's `metadata.scan`; `loadable`: faithfulness and steering can run (our export, of a model this
    app loads, with its prompt's token ids); `reason`: why not, in one sentence ('' when loadable);
    `pinned` and `supernodes` (Supernode records, or (label, members) pairs before that module existed)
    use our node ids; `id_map`: {JSON node id: our node id}.
    """

    source: str
    model_id: str
    slug: str
    prompt: str
    loadable: bool
    reason: str
    pinned: tuple[str, ...] = ()
    supernodes: tuple[Any, ...] = ()
    node_threshold: float | None = None
    id_map: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """Plain-JSON form for the CLI (the id map left out)."""
        return {
            "source": self.source,
            "model_id": self.model_id,
            "slug": self.slug,
            "prompt": self.prompt,
            "loadable": self.loadable,
            "reason": self.reason,
            "pinned": list(self.pinned),
            "supernodes": [[_label_members(s)[0], *_label_members(s)[1]] for s in self.supernodes],
            "node_threshold": self.node_threshold,
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# Ids


def cantor_pair(x: int, y: int) -> int:
    """circuit-tracer's `feature` of a latent: the Cantor pairing of (layer, latent index)."""
    return (x + y) * (x + y + 1) // 2 + y


def cantor_unpair(z: int) -> tuple[int, int]:
    """Inverse of `cantor_pair`: (layer, latent index)."""
    w = (math.isqrt(8 * z + 1) - 1) // 2
    y = z - w * (w + 1) // 2
    return w - y, y


def _n_layers(G: nx.DiGraph) -> int:
    n = G.graph.get("n_layers")
    if isinstance(n, int):
        return n
    logit_layers = [a.get("layer") for _, a in G.nodes(data=True) if a.get("kind") == "logit"]
    if logit_layers and isinstance(logit_layers[0], int):
        return logit_layers[0]
    layers = [a.get("layer") for _, a in G.nodes(data=True) if isinstance(a.get("layer"), int)]
    return max(layers, default=-1) + 1


def _token_id(G: nx.DiGraph, pos: int) -> int:
    ids = G.graph.get("prompt_token_ids") or []
    return int(ids[pos]) if 0 <= pos < len(ids) else pos


def exported_id(G: nx.DiGraph, node: str, n_layers: int | None = None) -> str:
    """The Neuronpedia / circuit-tracer id of our node `node` of `G` (table in the module docstring)."""
    a = G.nodes[node]
    kind, layer, pos, latent = a.get("kind"), a.get("layer"), int(a.get("position", 0)), a.get("latent")
    if kind == "transcoder":
        return f"{layer}_{latent}_{pos}"
    if kind == "attn":
        return f"A{layer}_{latent}_{pos}"
    if kind == "mlp_error":
        return f"0_{layer}_{pos}"
    if kind == "attn_error":
        return f"A0_{layer}_{pos}"
    if kind == "embed":
        return f"E_{_token_id(G, pos)}_{pos}"
    if kind == "pos_embed":
        return f"E_pos_{pos}"
    if kind == "logit":
        n = _n_layers(G) if n_layers is None else n_layers
        return f"{n + 1}_{_logit_token_id(G, node)}_{pos}"
    raise ValueError(f"node {node!r} has kind {kind!r}, which the graph JSON cannot express")


def _logit_token_id(G: nx.DiGraph, node: str) -> int:
    spec = G.graph.get("target_spec") or {}
    if spec.get("type") == "logit" and (G.graph.get("target") or {}).get("node_id") == node:
        return int(spec["token"])
    token_id = G.nodes[node].get("token_id")
    return int(token_id) if isinstance(token_id, int) else -1


# ---------------------------------------------------------------------------------------------
# Export


def cumulative_influence(influence: Mapping[str, float]) -> dict[str, float]:
    """circuit-tracer's node `influence` field: with nodes sorted by influence descending, each node's
    cumulative share of the total (the most influential node has the smallest value; 1.0 for the last)."""
    order = sorted(influence, key=lambda v: -influence[v])
    total = sum(max(0.0, influence[v]) for v in order)
    out, running = {}, 0.0
    for v in order:
        running += max(0.0, influence[v])
        out[v] = running / total if total > 0 else 1.0
    return out


def _label_members(s: Any) -> tuple[str, tuple[str, ...]]:
    """(label, member ids) of a Supernode, a {"label", "members"} mapping, a (label, members) pair or a
    Neuronpedia `[label, id, id, ...]` list."""
    if hasattr(s, "label") and hasattr(s, "members"):
        return str(s.label), tuple(map(str, s.members))
    if isinstance(s, Mapping):
        return str(s.get("label", "")), tuple(map(str, s.get("members", ())))
    items = list(s)
    if len(items) == 2 and not isinstance(items[1], str):
        return str(items[0]), tuple(map(str, items[1]))
    return (str(items[0]) if items else ""), tuple(map(str, items[1:]))


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _clean(x: Any) -> Any:
    """JSON-safe value: NaN and infinities become None; tuples lists; keys strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _quoted(token: str) -> str:
    return '"' + str(token).replace('"', "'") + '"'


def _logit_clerp(G: nx.DiGraph, node: str, prob: float | None) -> str:
    target = G.graph.get("target_spec") or {}
    is_target = (G.graph.get("target") or {}).get("node_id") == node
    token = target.get("token_str") if is_target and target.get("token_str") else None
    if token is None:
        token = str(G.nodes[node].get("token", ""))
        m = re.match(r"^('.*?'|\".*?\")", token)
        token = token[1:-1] if m and m.group(0) == token else token
    p = "nan" if prob is None else f"{prob:.3f}"
    text = f"Output {_quoted(token)} (p={p})"
    if is_target and target.get("contrast") is not None:
        text += f" vs {_quoted(target.get('contrast_str') or target['contrast'])}"
    return text


def check_exportable(
    G: nx.DiGraph, pinned: Iterable[str] = (), supernodes: Iterable[Any] = (), node_threshold: float | None = None
) -> dict[str, str]:
    """{our node id: exported id} of `G`; ValueError (saying what) if `to_graph_json` cannot write it: a node
    kind the JSON cannot express (e.g. a collapsed supernode: pass the graph with its members and the
    supernodes list instead), two nodes with one exported id, a pinned or grouped id not in `G`, a
    non-finite edge weight, a node_threshold outside (0, 1]. Cheap: no influence is computed."""
    groups = [_label_members(s) for s in supernodes]
    missing = [v for v in [*map(str, pinned), *(m for _, ms in groups for m in ms)] if v not in G]
    if missing:
        raise ValueError(f"pinned or grouped nodes are not in the graph: {', '.join(missing[:5])}")
    if node_threshold is not None and not (0.0 < float(node_threshold) <= 1.0):
        raise ValueError(f"node_threshold must be in (0, 1], got {node_threshold!r}")
    n_layers = _n_layers(G)
    ids = {v: exported_id(G, v, n_layers) for v in G.nodes}
    seen: dict[str, str] = {}
    for v, i in ids.items():
        if i in seen:
            raise ValueError(f"nodes {seen[i]!r} and {v!r} would both be exported as {i!r}")
        seen[i] = v
    for u, w, d in G.edges(data=True):
        if _finite(d.get("weight")) is None:
            raise ValueError(f"edge {u} -> {w} has weight {d.get('weight')!r}; graph JSON needs a finite number")
    return ids


def to_graph_json(
    G: nx.DiGraph,
    *,
    slug: str,
    model_id: str,
    prompt_tokens: Sequence[str] | None = None,
    prompt: str | None = None,
    pinned: Iterable[str] = (),
    supernodes: Iterable[Any] = (),
    node_threshold: float | None = None,
    labels: Mapping[str, str] | None = None,
    target_prob: float | None = None,
) -> dict[str, Any]:
    """`G` (our attribution graph, usually the pruned circuit on screen) as graph JSON that satisfies
    Neuronpedia's schema and that circuit-tracer's viewer draws (conventions in the module docstring).

    `pinned` and the `supernodes` (Supernode records or `[label, id, ...]` lists) use our node ids;
    `labels` ({node id: text}) override the nodes' own `label` attribute as `clerp`; `node_threshold`
    (in (0, 1]) turns on the viewers' pruning slider; `target_prob` is the model's probability of the
    target token (default: `G.graph["target_probability"]`, which a trace records). ValueError for a
    pinned or grouped id not in `G`, or a non-finite edge weight.
    """
    prompt_tokens = list(prompt_tokens if prompt_tokens is not None else G.graph.get("prompt_tokens") or [])
    prompt = str(prompt if prompt is not None else G.graph.get("prompt", ""))
    pinned = [str(p) for p in pinned]
    groups = [_label_members(s) for s in supernodes]
    ids = check_exportable(G, pinned, groups, node_threshold)
    n_layers = _n_layers(G)
    try:
        target = target_node(G)
        # A pruned circuit carries its unpruned graph's influence (saved.prune_graph), which is what the page
        # shows and what circuit-tracer exports; the cumulative share is taken over all of those nodes.
        stored = G.graph.get("original_influence")
        influence = dict(stored) if isinstance(stored, Mapping) and all(v in stored for v in G) else None
        influence = influence if influence is not None else graph_influence(G, target)
        influence[target] = 0.0  # as circuit-tracer: a logit carries no influence on itself
        cumulative = cumulative_influence(influence)
    except ValueError:  # no target node, or a cycle: no influence to give
        target, cumulative = None, {}
    prob = _finite(target_prob if target_prob is not None else G.graph.get("target_probability"))
    nodes = []
    for v, a in G.nodes(data=True):
        kind, pos = a.get("kind"), int(a.get("position", 0))
        layer = a.get("layer")
        if kind in ("embed", "pos_embed"):
            np_layer, feature = "E", (pos if kind == "embed" else POS_EMBED_FEATURE)
        elif kind == "logit":
            np_layer, feature = str(n_layers + 1), _logit_token_id(G, v)
        elif kind in ("mlp_error", "attn_error"):
            np_layer, feature = str(layer), ERROR_FEATURE
        else:
            np_layer, feature = str(layer), cantor_pair(int(layer), int(a["latent"]))
        if kind == "logit":
            clerp = _logit_clerp(G, v, prob if v == target else None)
        else:
            clerp = str((labels or {}).get(v) or a.get("label") or v)
        entry: dict[str, Any] = {
            "node_id": ids[v],
            "feature": int(feature),
            "layer": np_layer,
            "ctx_idx": pos,
            "feature_type": FEATURE_TYPE[kind],
            "jsNodeId": ids[v] if kind != "logit" else f"L_{feature}-{pos}",
            "clerp": clerp,
            "influence": cumulative.get(v),
            "activation": _finite(a.get("activation")),
            "is_target_logit": v == target and kind == "logit",
            "token_prob": (prob or 0.0) if v == target and kind == "logit" else 0.0,
            "explorer": _clean({"id": v, **a}),
        }
        nodes.append(entry)
    nodes, qk_only_nodes, links, explorer_edges = _qk_export(G, nodes, ids, target)
    pinned_ids = list(dict.fromkeys([*(ids[p] for p in pinned), *(ids[m] for _, ms in groups for m in ms)]))
    metadata: dict[str, Any] = {
        "slug": str(slug),
        "scan": str(model_id),
        "prompt_tokens": [str(t) for t in prompt_tokens],
        "prompt": prompt,
        "schema_version": 1,
        "transcoder_list": [],
        "info": {
            "description": f"Attribution graph traced by {GENERATOR} ({G.graph.get('method', 'trace')})",
            "generator": {"name": GENERATOR, "version": str(VERSION)},
            "create_time_ms": int(time.time() * 1000),
        },
        "explorer": {
            "format": FORMAT,
            "version": VERSION,
            "model_id": str(model_id),
            "graph": _clean(dict(G.graph)),
            **explorer_edges,
        },
    }
    if node_threshold is not None:
        metadata["node_threshold"] = float(node_threshold)
    out_qk = {"qk_only_nodes": qk_only_nodes} if qk_only_nodes else {}
    return {
        **out_qk,
        "metadata": metadata,
        "qParams": {
            "pinnedIds": pinned_ids,
            "supernodes": [[label, *(ids[m] for m in ms)] for label, ms in groups],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def qk_only_nodes(G: nx.DiGraph, target: str | None) -> set[str]:
    """Nodes of `G` joined to the circuit only through QK edges: every out-edge is a QK edge (step 6)."""
    return {
        v for v in G if v != target and G.out_degree(v) and all(is_qk_edge(d) for *_, d in G.out_edges(v, data=True))
    }


def _qk_export(
    G: nx.DiGraph, nodes: list[dict[str, Any]], ids: Mapping[str, str], target: str | None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Step 6: (nodes, qk_only_nodes, links, our exact QK edges and left-out links for `metadata.explorer`)."""
    aside = qk_only_nodes(G, target)
    links, outside, extras = [], [], []
    for u, w, d in G.edges(data=True):
        if is_qk_edge(d) or u in aside or w in aside:
            outside.append([u, w, _clean(dict(d))])
            continue
        links.append({"source": ids[u], "target": ids[w], "weight": float(d["weight"])})
        extra = {k: _clean(d[k]) for k in EDGE_EXTRAS if k in d}
        if extra:
            extras.append([u, w, extra])
    by_id = {n["explorer"]["id"]: n for n in nodes}
    for e in qk_edges(G):
        sides = G.edges[e.source, e.target].get("qk_sides")
        res = by_id[e.target].setdefault(
            "qk_tracing_results",
            {"pair_wise_contributors": [], "top_q_marginal_contributors": [], "top_k_marginal_contributors": []},
        )
        if isinstance(sides, list | tuple) and len(sides) == 2:
            for key, x in zip(("top_q_marginal_contributors", "top_k_marginal_contributors"), sides, strict=True):
                if _finite(x):  # a side it does not act through (exactly 0) is not listed
                    res[key].append([ids[e.source], float(x)])
    for n in nodes:
        for key in ("top_q_marginal_contributors", "top_k_marginal_contributors"):
            if "qk_tracing_results" in n:
                n["qk_tracing_results"][key].sort(key=lambda c: -abs(c[1]))
    explorer = {"qk_edges": outside, "link_extras": extras} if outside or extras else {}
    kept = [n for n in nodes if n["explorer"]["id"] not in aside]
    return kept, {n["node_id"]: n for n in nodes if n["explorer"]["id"] in aside}, links, explorer


def dumps(obj: Mapping[str, Any]) -> str:
    """The graph JSON as text (strict JSON: no NaN)."""
    return json.dumps(obj, indent=1, allow_nan=False)


def write_graph_json(G: nx.DiGraph, path: Path | str, *, slug: str, model_id: str, **kwargs: Any) -> Path:
    """Write `to_graph_json(G, slug=..., model_id=..., **kwargs)` to `path` (folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(to_graph_json(G, slug=slug, model_id=model_id, **kwargs)))
    return path


def target_probability(model, G: nx.DiGraph) -> float | None:
    """The model's softmax probability of `G`'s target token at the target position (None if `G` records
    no logit target or no token ids). `model`: a HookedTransformer of the model `G` was traced on."""
    import torch

    spec = G.graph.get("target_spec") or {}
    ids = G.graph.get("prompt_token_ids")
    if spec.get("type") != "logit" or not ids:
        return None
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long, device=model.cfg.device))[0, int(spec["position"])]
    return float(torch.softmax(logits.float(), dim=-1)[int(spec["token"])])


# ---------------------------------------------------------------------------------------------
# Import


def parse_graph_json(raw: bytes | str) -> dict[str, Any]:
    """Parse uploaded graph JSON text; GraphImportError if it is not a JSON object."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GraphImportError(f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise GraphImportError(
            f"the file is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    if not isinstance(data, dict):
        raise GraphImportError(
            f"graph JSON must be an object with metadata, qParams, nodes and links; got a {_type(data)}"
        )
    return data


def _type(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "boolean"
    if isinstance(x, int | float):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(x), type(x).__name__)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_schema(data: Any) -> None:
    """GraphImportError unless `data` has the required fields and types of Neuronpedia's graph schema,
    unique node ids, links between listed nodes, and ctx_idx inside the prompt."""
    if not isinstance(data, dict):
        raise GraphImportError(f"graph JSON must be an object; got a {_type(data)}")
    missing = [k for k in ("metadata", "qParams", "nodes", "links") if k not in data]
    if missing:
        raise GraphImportError(
            f"not an attribution graph: missing {', '.join(missing)} (Neuronpedia's graph JSON has metadata, "
            "qParams, nodes and links)"
        )
    meta = data["metadata"]
    if not isinstance(meta, dict):
        raise GraphImportError(f"metadata must be an object; got a {_type(meta)}")
    for key in ("slug", "scan", "prompt"):
        if not isinstance(meta.get(key), str):
            what = "missing" if key not in meta else f"a {_type(meta[key])}"
            raise GraphImportError(f"metadata.{key} must be a string; it is {what}")
    tokens = meta.get("prompt_tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise GraphImportError("metadata.prompt_tokens must be a list of strings")
    if "node_threshold" in meta and not _is_num(meta["node_threshold"]):
        raise GraphImportError(f"metadata.node_threshold must be a number; it is a {_type(meta['node_threshold'])}")
    if not isinstance(data["qParams"], dict):
        raise GraphImportError(f"qParams must be an object; got a {_type(data['qParams'])}")
    nodes, links = data["nodes"], data["links"]
    if not isinstance(nodes, list) or not nodes:
        raise GraphImportError("nodes must be a non-empty list")
    if not isinstance(links, list):
        raise GraphImportError(f"links must be a list; got a {_type(links)}")
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        if not isinstance(n, dict):
            raise GraphImportError(f"nodes[{i}] must be an object; got a {_type(n)}")
        where = f"nodes[{i}]" + (f" ({n['node_id']!r})" if isinstance(n.get("node_id"), str) else "")
        for key in ("node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp"):
            if key not in n:
                raise GraphImportError(f"{where} has no {key}")
        checks = (
            ("node_id", isinstance(n["node_id"], str), "a string"),
            ("feature", n["feature"] is None or _is_int(n["feature"]), "an integer or null"),
            ("layer", isinstance(n["layer"], str) or _is_int(n["layer"]), "a string or an integer"),
            ("ctx_idx", _is_int(n["ctx_idx"]), "an integer"),
            ("feature_type", isinstance(n["feature_type"], str), "a string"),
            ("jsNodeId", isinstance(n["jsNodeId"], str), "a string"),
            ("clerp", isinstance(n["clerp"], str), "a string"),
        )
        for key, ok, what in checks:
            if not ok:
                raise GraphImportError(f"{where}.{key} must be {what}; it is {n[key]!r}")
        for key in ("influence", "activation"):
            if n.get(key) is not None and not _is_num(n[key]):
                raise GraphImportError(f"{where}.{key} must be a number or null; it is {n[key]!r}")
        if not 0 <= n["ctx_idx"] < max(len(tokens), 1):
            raise GraphImportError(
                f"{where}.ctx_idx is {n['ctx_idx']}, outside the prompt's {len(tokens)} tokens (metadata.prompt_tokens)"
            )
        if n["node_id"] in seen:
            raise GraphImportError(f"node id {n['node_id']!r} appears twice in nodes")
        seen.add(n["node_id"])
    for i, link in enumerate(links):
        if not isinstance(link, dict):
            raise GraphImportError(f"links[{i}] must be an object; got a {_type(link)}")
        for key in ("source", "target", "weight"):
            if key not in link:
                raise GraphImportError(f"links[{i}] has no {key}")
        if not _is_num(link["weight"]):
            raise GraphImportError(f"links[{i}].weight must be a finite number; it is {link['weight']!r}")
        for key in ("source", "target"):
            if not isinstance(link[key], str):
                raise GraphImportError(f"links[{i}].{key} must be a string; it is {link[key]!r}")
            if link[key] not in seen:
                raise GraphImportError(f"links[{i}].{key} is {link[key]!r}, which is not a node id in nodes")


def _source_of(meta: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> str:
    ours = meta.get("explorer")
    if (
        isinstance(ours, Mapping)
        and ours.get("format") == FORMAT
        and all(isinstance(n.get("explorer"), dict) for n in nodes)
    ):
        return GENERATOR
    if "transcoder_list" in meta or meta.get("schema_version") is not None:
        return "circuit-tracer"
    return "neuronpedia"


def from_graph_json(data: Mapping[str, Any] | bytes | str) -> tuple[nx.DiGraph, ImportInfo]:
    """A graph JSON (ours, circuit-tracer's or Neuronpedia's; or its text) as our DiGraph and an ImportInfo.

    GraphImportError (a UserError) for malformed or foreign JSON, unknown feature types, links or
    qParams ids that name no node, and links that form a cycle; the message names what is wrong.
    """
    if isinstance(data, bytes | str):
        data = parse_graph_json(data)
    if isinstance(data, Mapping) and data.get("format") == GRAPH_FORMAT:
        return _read_saved_format(data)
    check_schema(data)
    meta, nodes = data["metadata"], data["nodes"]
    source = _source_of(meta, nodes)
    warnings: list[str] = []
    if source == GENERATOR:
        G, id_map = _read_ours(data)
    else:
        G, id_map = _read_foreign(data, warnings)
    if not nx.is_directed_acyclic_graph(G):
        cycle = " -> ".join(str(e[0]) for e in nx.find_cycle(G))
        raise GraphImportError(f"the links form a cycle ({cycle}); an attribution graph runs forward only")
    q = data["qParams"]
    pinned = _q_ids(q.get("pinnedIds"), id_map, "qParams.pinnedIds")
    supernodes = _q_supernodes(q.get("supernodes"), id_map)
    model_id = meta["scan"]
    loadable, reason = _loadable(source, model_id, G)
    info = ImportInfo(
        source=source,
        model_id=model_id,
        slug=meta["slug"],
        prompt=meta["prompt"],
        loadable=loadable,
        reason=reason,
        pinned=pinned,
        supernodes=supernodes,
        node_threshold=float(meta["node_threshold"]) if "node_threshold" in meta else None,
        id_map=id_map,
        warnings=tuple(warnings),
    )
    return G, info


def _read_saved_format(data: Mapping[str, Any]) -> tuple[nx.DiGraph, ImportInfo]:
    """The JSON our circuits are stored in (`core.tracing.graph.graph_to_json`, e.g. `saved.export_json`)."""
    try:
        G = graph_from_json(dict(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise GraphImportError(f"this {GRAPH_FORMAT} file cannot be read: {exc}") from exc
    meta = data.get("metadata") or {}
    model_id = str(meta.get("model_id") or meta.get("scan") or "default")
    loadable, reason = _loadable(GENERATOR, model_id, G)
    circuit = meta.get("circuit") or {}
    pruning = circuit.get("pruning") or {}
    pinned = tuple(p for p in pruning.get("pinned", ()) if p in G)
    groups = tuple(
        _supernode(str(g.get("label", "")), tuple(m for m in g.get("members", ()) if m in G))
        for g in pruning.get("supernodes", ())
        if isinstance(g, Mapping)
    )
    info = ImportInfo(
        source=GENERATOR,
        model_id=model_id,
        slug=str(meta.get("slug", "")),
        prompt=str(meta.get("prompt", "")),
        loadable=loadable,
        reason=reason,
        pinned=pinned,
        supernodes=groups,
        id_map={v: v for v in G.nodes},
    )
    return G, info


def _loadable(source: str, model_id: str, G: nx.DiGraph) -> tuple[bool, str]:
    if source != GENERATOR:
        return False, (
            f"this graph comes from {source} (model {model_id!r}): its latents belong to dictionaries this app "
            "does not have, so faithfulness and steering cannot run; view, prune, group and annotate it"
        )
    if model_id not in LOADABLE_MODELS:
        return False, (
            f"this graph is of model {model_id!r}, which this app cannot load (it loads {', '.join(LOADABLE_MODELS)}), "
            "so faithfulness and steering cannot run"
        )
    if not G.graph.get("prompt_token_ids") or not G.graph.get("target_spec"):
        return (
            False,
            "this graph does not record its prompt's token ids and target, so faithfulness and steering cannot run",
        )
    return True, ""


def _read_ours(data: Mapping[str, Any]) -> tuple[nx.DiGraph, dict[str, str]]:
    G = nx.DiGraph()
    G.graph.update(data["metadata"]["explorer"].get("graph") or {})
    id_map: dict[str, str] = {}
    for n in data["nodes"]:
        attrs = dict(n["explorer"])
        ours = attrs.pop("id", None)
        if not isinstance(ours, str) or not ours:
            raise GraphImportError(f"node {n['node_id']!r} has no explorer.id")
        if ours in G:
            raise GraphImportError(f"explorer.id {ours!r} appears twice in nodes")
        G.add_node(ours, **attrs)
        id_map[n["node_id"]] = ours
    qk_only = data.get("qk_only_nodes") or {}
    for n in qk_only.values() if isinstance(qk_only, Mapping) else ():
        attrs = dict(n.get("explorer") or {}) if isinstance(n, Mapping) else {}
        ours = attrs.pop("id", None)
        if isinstance(ours, str) and ours and ours not in G:
            G.add_node(ours, **attrs)
            id_map[str(n.get("node_id"))] = ours
    _add_links(G, data["links"], id_map)
    explorer = data["metadata"]["explorer"]
    for u, v, attrs in explorer.get("qk_edges") or []:
        if u in G and v in G:
            G.add_edge(u, v, **attrs)
    for u, v, attrs in explorer.get("link_extras") or []:
        if G.has_edge(u, v):
            G.edges[u, v].update(attrs)
    return G, id_map


def _add_links(G: nx.DiGraph, links: Sequence[Mapping[str, Any]], id_map: Mapping[str, str]) -> None:
    for link in links:
        u, v = id_map[link["source"]], id_map[link["target"]]
        if u == v:
            raise GraphImportError(f"link {link['source']!r} -> itself; an attribution graph has no self-loops")
        if G.has_edge(u, v):
            raise GraphImportError(f"link {link['source']!r} -> {link['target']!r} appears twice in links")
        G.add_edge(u, v, weight=float(link["weight"]))


def _q_ids(ids: Any, id_map: Mapping[str, str], where: str) -> tuple[str, ...]:
    if ids in (None, "", []):
        return ()
    if isinstance(ids, str):  # circuit-tracer's viewer saves its URL form, comma-separated
        ids = [i for i in ids.split(",") if i]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise GraphImportError(f"{where} must be a list of node ids")
    unknown = [i for i in ids if i not in id_map]
    if unknown:
        raise GraphImportError(f"{where} names nodes that are not in nodes: {', '.join(map(repr, unknown[:5]))}")
    return tuple(dict.fromkeys(id_map[i] for i in ids))


def _q_supernodes(groups: Any, id_map: Mapping[str, str]) -> tuple[Any, ...]:
    if groups in (None, "", []):
        return ()
    if isinstance(groups, str):
        try:
            groups = json.loads(groups)
        except json.JSONDecodeError as exc:
            raise GraphImportError(f"qParams.supernodes is not valid JSON: {exc.msg}") from exc
    if not isinstance(groups, list):
        raise GraphImportError("qParams.supernodes must be a list of [label, node id, ...] lists")
    out = []
    for i, g in enumerate(groups):
        if not isinstance(g, list) or len(g) < 2 or not all(isinstance(x, str) for x in g):
            raise GraphImportError(f"qParams.supernodes[{i}] must be a list [label, node id, ...] of strings")
        label = " ".join(g[0].split())[:MAX_SUPERNODE_LABEL]
        members = _q_ids(g[1:], id_map, f"qParams.supernodes[{i}] ({g[0]!r})")
        out.append(_supernode(label, members))
    return tuple(out)


def _supernode(label: str, members: tuple[str, ...]) -> Any:
    try:
        from core.circuits.supernodes import Supernode
    except ImportError:  # before supernodes existed: a plain pair
        return (label, members)
    return Supernode(label, members)


_FEATURE_ID = re.compile(r"^A?(\d+)_(\d+)_(\d+)$")


def _read_foreign(data: Mapping[str, Any], warnings: list[str]) -> tuple[nx.DiGraph, dict[str, str]]:
    """circuit-tracer's / Neuronpedia's nodes as ours (kinds, layers, latent indices, positions)."""
    meta, nodes = data["metadata"], data["nodes"]
    tokens: list[str] = list(meta["prompt_tokens"])
    cantor = meta.get("schema_version") == 1
    logit_layers = [int(n["layer"]) for n in nodes if n["feature_type"] == "logit" and str(n["layer"]).isdigit()]
    other_layers = [
        int(n["layer"]) for n in nodes if n["feature_type"] != "logit" and str(n["layer"]).lstrip("-").isdigit()
    ]
    n_layers = logit_layers[0] - 1 if logit_layers else max(other_layers, default=-1) + 1
    scan = meta["scan"]
    infos: list[tuple[Mapping[str, Any], NodeInfo, dict[str, Any]]] = []
    for n in nodes:
        ftype = n["feature_type"]
        kind = KIND_OF_TYPE.get(ftype)
        if kind is None:
            known = ", ".join(sorted(set(KIND_OF_TYPE)))
            raise GraphImportError(f"node {n['node_id']!r} has feature_type {ftype!r}, which is not one of: {known}")
        pos = int(n["ctx_idx"])
        token = tokens[pos] if pos < len(tokens) else ""
        extra: dict[str, Any] = {}
        layer_str = str(n["layer"])
        if kind == "embed":
            layer, latent = -1, None
        elif kind == "logit":
            layer, latent = n_layers, None
            token = _clerp_token(n["clerp"]) or str(n["feature"])
            extra["token_id"] = n["feature"]
            prob = _clerp_prob(n["clerp"])
            if n.get("token_prob") and _is_num(n["token_prob"]):
                prob = float(n["token_prob"])
            extra["token_prob"] = prob
        else:
            if not layer_str.lstrip("-").isdigit():
                raise GraphImportError(f"node {n['node_id']!r} has layer {n['layer']!r}; a {ftype} node needs a number")
            layer, latent = int(layer_str), None
            if kind in ("transcoder", "attn"):
                latent = _latent_index(n, cantor)
                if latent is None:
                    raise GraphImportError(
                        f"node {n['node_id']!r} is a {ftype} feature without a feature index (feature is null)"
                    )
        dictionary = (
            f"imported:{scan}:{kind}.{layer}" if kind in ("transcoder", "attn", "attn_error", "mlp_error") else None
        )
        activation = _finite(n.get("activation"))
        info = NodeInfo(kind, layer, pos, latent, activation, dictionary, repr(token) if kind == "logit" else token)
        if n["clerp"] and not n["clerp"].startswith(("Emb:", "Err:")):
            extra["label"] = n["clerp"]
        infos.append((n, info, extra))
    G = nx.DiGraph()
    G.graph.update({"prompt": meta["prompt"], "prompt_tokens": tokens, "n_layers": n_layers, "method": "imported"})
    G.graph["imported_from"] = {"source": _source_of(meta, nodes), "model_id": scan, "slug": meta["slug"]}
    id_map: dict[str, str] = {}
    for n, info, extra in infos:
        ours = info.node_id
        if ours in G:
            raise GraphImportError(f"nodes {n['node_id']!r} and another node are the same node ({ours})")
        G.add_node(
            ours,
            kind=info.kind,
            layer=info.layer,
            position=info.position,
            latent=info.latent,
            activation=info.activation,
            dictionary=info.dictionary,
            token=info.token,
            feature_key=info.feature_key,
            **extra,
        )
        id_map[n["node_id"]] = ours
    _add_links(G, data["links"], id_map)
    target = _foreign_target(infos)
    if target is None:
        raise GraphImportError(
            "the graph has no logit node (feature_type 'logit'); there is nothing to trace back from"
        )
    G.nodes[target]["is_target"] = True
    a = G.nodes[target]
    G.graph["target"] = {"node_id": target, "kind": "logit", "position": a["position"], "label": a["token"]}
    G.graph["target_value"] = None
    n_logits = sum(1 for _, i, _ in infos if i.kind == "logit")
    if n_logits > 1:
        warnings.append(
            f"the graph has {n_logits} logit nodes; influence and pruning here are taken on the target logit "
            f"{a['token']} only (circuit-tracer weights all logits by their probability)"
        )
    return G, id_map


def _latent_index(n: Mapping[str, Any], cantor: bool) -> int | None:
    m = _FEATURE_ID.match(n["node_id"])
    if m and int(m.group(1)) == int(str(n["layer"])) and int(m.group(3)) == int(n["ctx_idx"]):
        return int(m.group(2))
    feature = n["feature"]
    if feature is None:
        return None
    if cantor and feature >= 0:
        return cantor_unpair(int(feature))[1]
    return int(feature)


def _clerp_token(clerp: str) -> str | None:
    m = re.search(r'"(.*?)"', clerp)
    return m.group(1) if m else None


def _clerp_prob(clerp: str) -> float | None:
    m = re.search(r"\(p=([^)]*)\)", clerp)
    return _finite(m.group(1)) if m else None


def _foreign_target(infos: Sequence[tuple[Mapping[str, Any], NodeInfo, dict[str, Any]]]) -> str | None:
    logits = [(n, i, e) for n, i, e in infos if i.kind == "logit"]
    if not logits:
        return None
    marked = [i for n, i, _ in logits if n.get("is_target_logit") is True]
    if marked:
        return marked[0].node_id
    best = max(logits, key=lambda t: t[2].get("token_prob") or 0.0)
    return best[1].node_id
