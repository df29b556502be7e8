"""Circuits: trace a typed prompt live, prune and annotate its graph by hand, measure the pruned
circuit's faithfulness by ablation on the real model, and save versions of it in the workspace.

The engine is `core.tracing.api.trace_prompt` (tracing) and `core.circuits.saved` (pruning, faithfulness,
saved circuits); the graph is drawn by `ui.graph_view` in a bidirectional component: a click on a node
shows its card in the side panel (`ui.circuit_panel`), Shift-click / Shift-drag select nodes to group as
a supernode (`core.circuits.supernodes`, saved with the version), Alt-click removes a node; Undo takes
back the last edit. The graph and the panel are one st.fragment: a click reruns only them, an edit that
changes the circuit reruns the page. The multiselects stay as the keyboard way to do the same edits. Everything the page holds between reruns
lives in st.session_state under keys starting with "circ.".

Text from users and models (prompts, names, notes, annotations, explanations, model ids, error
messages that quote them) goes through `ui.text.literal` wherever Streamlit would read Markdown.
A failed trace is shown as an error above the graph, which is then marked as the previous one.
A save carries the `circuit_id` of the circuit it was loaded from: if that circuit was deleted or
replaced meanwhile, the save is refused and the edits stay on the page.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ui.boot  # noqa: E402, F401  (first: the engine's modules, imported once; see ui/boot.py)

ui.boot.wait_for_circuit_imports()  # the tracing engine, imported while the server started (see ui/boot.py)
from core.circuits import saved as C  # noqa: E402
from core.circuits.examples import example_circuit_to_open  # noqa: E402
from core.circuits.saved import join_sentences  # noqa: E402
from core.circuits.supernodes import Supernode  # noqa: E402
from core.tracing.influence import graph_influence  # noqa: E402
from core.tracing.loading import (  # noqa: E402
    hub_sources_from_env,
    latent_means,
    load_tracing_subject,
    means_location,
    tracing_dictionaries,
)
from ui import circuit_panel, graph_interop_view, graph_view, llm_prune_view, qk_view, steering_view  # noqa: E402
from ui.progress import progress_callback  # noqa: E402
from ui.state import (  # noqa: E402
    CORE_ERRORS,
    cached_dictionaries,
    cached_model,
    model_set,
    open_workspace_or_stop,
)
from ui.text import code, literal  # noqa: E402

ui.boot.freeze_imports()  # this page's own imports (the tracer, the graph view) stay for the server's life
st.set_page_config(page_title="Circuits · SAE Circuit Explorer", layout="wide")

EDGE_OPTIONS = 500  # edges offered in the Remove edges box
EXAMPLE_TIMEOUT_S = 0.5  # a locked workspace: the example is skipped (tried again on the next run), never waited for
WRITE_TIMEOUT_S = 5.0  # a locked workspace gives up after this and says so; the page keeps every edit
ERRORS = CORE_ERRORS
TORCH_THREADS = 1
MODEL_LABELS = {"default": "embedded default model", "gpt2": "GPT-2 small (model set gpt2)"}
S = st.session_state


def engine():
    """The model of the model set (Home's choice, else the workspace's model) and the dictionaries a trace uses
    (attention SAEs, transcoders), cached per server process. For gpt2 the releases and transcoder folder come
    from $SAE_EXPLORER_RELEASES and $SAE_EXPLORER_TRANSCODER_DIR (`core.tracing.loading.hub_sources_from_env`)."""
    import torch

    # One intra-op thread: the default model's matrices are small, and on a small machine shared with
    # the browser and other sessions, two spinning OpenMP threads per trace oversubscribe the cores
    # (measured in the served app on 2 busy cores: four traces took 7.2-22.1 s with 2 threads, 1.3-2.4 s with 1).
    torch.set_num_threads(TORCH_THREADS)
    name = MODEL_SET
    if name == "default":
        return cached_model("default"), tracing_dictionaries(cached_dictionaries("default").values())
    releases, transcoder_dir = hub_sources_from_env()
    return cached_hub_engine(name, tuple(releases) if releases else None, str(transcoder_dir or ""))


@st.cache_resource(show_spinner="Loading the model and its transcoders…", max_entries=1)
def cached_hub_engine(name: str, releases: tuple[str, ...] | None, transcoder_dir: str):
    """(model, attention SAEs and transcoders) of a hub model (`core.tracing.loading.load_tracing_subject`), per server process."""
    return load_tracing_subject(
        name, list(releases) if releases else None, Path(transcoder_dir) if transcoder_dir else None
    )


@st.cache_resource(show_spinner=False)
def cached_latent_means(_model, _dicts):
    """Latent means for mean ablation (`core.tracing.loading.latent_means`), cached per server process."""
    return latent_means(_model, _dicts)


def set_original(
    graph, target, source: dict | None, version: C.CircuitVersion | None = None, warnings: list[str] | None = None
) -> None:
    """Make `graph` (a version 1) the page's circuit, with the pruning and annotations of `version` if given.

    `source` = {"name", "version", "circuit_id"} of the saved circuit it came from (None: not saved);
    `warnings` are the trace's (shown with the graph until another circuit replaces it)."""
    v = version
    S["circ.original"] = graph
    S["circ.imported"] = None  # apply_import sets it again for an imported graph
    S["circ.generation"] = S.get("circ.generation", 0) + 1  # what the page's memos of this circuit are keyed on
    S["circ.target"] = target
    S["circ.source"] = source
    S["circ.trace_warnings"] = list(warnings or [])
    S.pop("circ.trace_error", None)
    S.pop("circ.graph_flash", None)
    S["circ.influence"] = graph_influence(graph)
    S["circ.remove_nodes"] = list(v.pruning.removed_nodes) if v else []
    S["circ.remove_edges"] = [edge_key(e) for e in v.pruning.removed_edges] if v else []
    S["circ.pinned"] = [n for n in v.pruning.pinned if n != C.target_node(graph)] if v else []
    S["circ.supernodes"] = list(v.pruning.supernodes) if v else []
    S["circ.expanded"] = []
    S["circ.selected"] = []
    S["circ.focus"] = None
    S["circ.undo"] = []
    S["circ.node_thr"] = v.pruning.node_threshold if v else 0.0
    S["circ.edge_thr"] = v.pruning.edge_threshold if v else 0.0
    S["circ.annotations"] = {k: a.text for k, a in v.node_annotations.items()} if v else {}
    S["circ.note"] = v.annotation.text if v and v.annotation else ""
    S["circ.faith"] = {}
    if v and v.faithfulness:
        S["circ.faith"][v.pruning.key()] = v.faithfulness
    elif graph.graph.get("faithfulness"):
        S["circ.faith"][C.Pruning().key()] = graph.graph["faithfulness"]
    S["circ.name"] = source["name"] if source else ""
    for k in [k for k in S if str(k).startswith("circ.ann.")]:
        del S[k]


def memo(name: str, key: tuple, compute):
    """`compute()`, remembered in the session under `name` until `key` changes: a click on the graph reruns the
    page, and pruning or drawing a 1,000-node graph again each time would slow the card down."""
    held = S.get(f"circ.memo.{name}")
    if held is not None and held[0] == key:
        return held[1]
    value = compute()
    S[f"circ.memo.{name}"] = (key, value)
    return value


def edge_key(e: tuple[str, str]) -> str:
    return f"{e[0]} → {e[1]}"


def flash(kind: str, text: str) -> None:
    """Queue a message for the next run (callbacks run before the page is drawn); shown literally."""
    S.setdefault("circ.flash", []).append((kind, text))


def graph_flash(messages: list[tuple[str, str]]) -> None:
    """The messages of the last graph edit, shown above the graph until the next click or edit replaces them
    (a rerun of the graph alone and then of the whole page must not lose them)."""
    S["circ.graph_flash"] = list(messages)


def edit(apply) -> None:
    """Run `apply()` (an edit of circuit_panel, returning messages); if it changed the circuit, the graph's
    fragment asks for a run of the whole page (the metrics, faithfulness and save follow the edit)."""
    before = circuit_panel.snapshot(S)
    graph_flash(apply())
    if circuit_panel.snapshot(S) != before:
        S["circ.full_rerun"] = True


def on_graph_event() -> None:
    """on_change of the graph component: apply its event (a click, a selection, an alt-click removal)."""
    original = S.get("circ.original")
    if original is not None:
        edit(lambda: circuit_panel.apply_event(S, S.get("circ.graph"), original))


def group_nodes() -> None:
    """Callback of "Group as supernode": the selected nodes become one supernode with the typed label."""
    edit(lambda: circuit_panel.group_selected(S, S.get("circ.group_label", ""), S["circ.original"]))
    if not any(kind == "error" for kind, _ in S.get("circ.graph_flash", [])):
        S["circ.group_label"] = ""


def load_saved(ws: Path, name: str, version: int) -> None:
    """Callback of the Load button: the saved version and its version 1 become the page's circuit."""
    try:
        v, original = C.load_with_original(ws, name, version, timeout=WRITE_TIMEOUT_S)
        source = {"name": name, "version": version, "circuit_id": v.circuit_id}
        set_original(original, C.graph_target(original), source, v)
        flash("success", f"Loaded {name!r} version {version}.")
    except ERRORS as exc:
        flash("error", join_sentences(str(exc)))


def open_example_once(ws: Path) -> None:
    """On a session's first visit with no circuit on screen, open the workspace's example circuit (if it has one:
    the default workspace ships IOI, agreement and brackets examples), so the page starts with a circuit."""
    if S.get("circ.example_checked") or S.get("circ.original") is not None:
        return
    # On a first start another session may be copying the shipped seed into place (about a second): wait for
    # it (once per session) rather than open an empty page.
    if not S.get("circ.seed_waited") and ui.boot.default_being_set_up(ws):
        S["circ.seed_waited"] = True
        with st.spinner("Waiting for the default workspace: another tab of this app is copying it into place…"):
            ready = ui.boot.wait_for_default(ws)
        if not ready:
            flash(
                "info",
                "The default workspace is still being set up by another tab of this app; its example circuit opens "
                "here once it is ready (on your next click, or reload the page). You can trace a prompt meanwhile.",
            )
            return  # not checked: looked for again on the next run
    if not ws.exists() and ui.boot.default_being_set_up(ws):
        return  # still being set up: looked for again on the next run
    try:
        found = example_circuit_to_open(ws, timeout=EXAMPLE_TIMEOUT_S)
        S["circ.example_checked"] = True
        if found is None:
            return
        name, version = found
        v, original = C.load_with_original(ws, name, version, timeout=EXAMPLE_TIMEOUT_S)
    except ERRORS:
        return  # no example to show is not an error (a locked workspace: tried again on the next run)
    set_original(original, C.graph_target(original), {"name": name, "version": version, "circuit_id": v.circuit_id}, v)
    flash(
        "info",
        f"Opened the example circuit {name!r} (version {version}, made by {v.created_by}). Trace your own prompt "
        "below, or load another saved circuit from the sidebar.",
    )


def apply_import(graph, info) -> None:
    """Make an imported graph the page's circuit (once per uploaded file)."""
    try:
        target = C.graph_target(graph)
    except (ValueError, KeyError, TypeError):
        target = None  # a graph that records no token ids: viewable, not measurable
    set_original(graph, target, None)
    tgt = C.target_node(graph)
    S["circ.pinned"] = [v for v in info.pinned if v in graph and v != tgt]
    S["circ.supernodes"] = [sn for sn in info.supernodes if isinstance(sn, Supernode)]
    S["circ.imported"] = info
    S["circ.import_applied"] = graph
    flash("success", f"Imported the graph {info.slug or ''!r} ({info.source}): {graph.number_of_nodes()} nodes.")


def delete_saved(ws: Path, name: str) -> None:
    """Callback of the Delete button."""
    try:
        n = C.delete_circuit(ws, name, timeout=WRITE_TIMEOUT_S)
        if (S.get("circ.source") or {}).get("name") == name:
            S["circ.source"] = None
        flash("success", f"Deleted {name!r} ({n} version{'s' if n != 1 else ''}).")
    except ERRORS as exc:
        flash("error", join_sentences(str(exc), "Nothing was deleted"))


def set_annotation(node: str) -> None:
    """on_change of a node's annotation box: an empty text removes the annotation."""
    text = S.get(f"circ.ann.{node}", "").strip()
    notes = S.setdefault("circ.annotations", {})
    if text:
        notes[node] = text
    else:
        notes.pop(node, None)


ws = open_workspace_or_stop(stop_if_locked=False)  # a lock: its own timeouts keep the edits
open_example_once(ws)
MODEL_SET = model_set()  # once per run: without Home's choice it reads the workspace (a lock costs its timeout)
st.title("Circuits")
st.caption(
    f"Workspace {code(str(ws))} · trace a prompt on the {MODEL_LABELS.get(MODEL_SET, literal(MODEL_SET))}, "
    "prune and annotate the graph, "
    "measure the circuit's faithfulness by ablation, save versions."
)

# ---------------------------------------------------------------------------------------------- saved circuits
with st.sidebar:
    st.subheader("Saved circuits")
    try:
        saved = C.list_circuits(ws, timeout=WRITE_TIMEOUT_S)
    except ERRORS as exc:
        saved = []
        st.error(literal(join_sentences(f"Cannot read saved circuits: {exc}")))
    if not saved:
        st.caption("None saved in this workspace yet.")
    else:
        by_name = {c.name: c for c in saved}
        name = st.selectbox(
            "Circuit", list(by_name), key="circ.pick", format_func=lambda n: f"{n} (v{by_name[n].latest_version})"
        )
        info = by_name[name]
        st.caption(
            literal(f"{info.prompt!r} → {info.target_label} · {info.n_versions} version(s) · model {info.model}")
        )
        version = st.selectbox(
            "Version",
            list(range(info.latest_version, 0, -1)),
            key="circ.pick_version",
            format_func=lambda v: f"v{v}" + (" (the traced graph)" if v == 1 else ""),
        )
        st.button("Load", key="circ.load", on_click=load_saved, args=(ws, name, version))
        confirm = st.checkbox("Confirm deleting every version", key="circ.confirm_delete")
        st.button("Delete circuit", key="circ.delete", disabled=not confirm, on_click=delete_saved, args=(ws, name))

for kind, text in S.pop("circ.flash", []):
    getattr(st, kind)(literal(text))

# ---------------------------------------------------------------------------------------------- trace
with st.form("circ.trace_form"):
    prompt = st.text_area(
        "Prompt",
        key="circ.prompt",
        height=80,
        placeholder="The old man said that the new plan (which the city council had approved last year without a vote",
    )
    c1, c2, c3 = st.columns(3)
    target = c1.text_input(
        "Target token",
        key="circ.target_text",
        help="One token, e.g. ' Mary' or ')'. Empty: the model's top prediction.",
    )
    contrast = c2.text_input(
        "Contrast token (optional)", key="circ.contrast_text", help="Trace logit(target) − logit(contrast)."
    )
    ablation = c3.radio("Ablation for faithfulness", ["mean", "zero"], key="circ.ablation", horizontal=True)
    with st.expander("Trace settings"):
        d1, d2 = st.columns(2)
        node_threshold = d1.number_input(
            "Node threshold (share of |direct effect|)", 0.0, 0.99, 0.02, 0.005, format="%.3f", key="circ.trace_thr"
        )
        max_latents = d2.number_input("Max latents", 1, 2000, 200, 10, key="circ.max_latents")
        q1, q2 = st.columns(2)
        trace_qk = q1.checkbox(
            "Expand along QK edges",
            key="circ.trace_qk",
            help="Also add the nodes that steer the attention latents' heads through their queries and keys "
            "(core.tracing.qk.expand_qk): hierarchical tracing freezes attention patterns and misses them otherwise.",
        )
        trace_qk_thr = q2.number_input(
            "QK threshold (share of a latent's |direct effect|)",
            0.0,
            0.99,
            0.05,
            0.01,
            format="%.3f",
            key="circ.trace_qk_thr",
        )
    submitted = st.form_submit_button("Trace", type="primary")

if submitted:
    from core.tracing.api import trace_prompt
    from core.tracing.hierarchical import TraceParams
    from core.tracing.qk import QKParams

    with st.status("Tracing…", expanded=True) as status:
        bar = st.progress(0.0, text="loading the model and dictionaries")
        S.pop("circ.trace_error", None)
        try:
            t0 = time.perf_counter()
            model, dicts = engine()
            corpus, means_cache = means_location()
            # Mean ablation reads latent means from the engine's disk cache (computed once, after the
            # input is validated and the graph traced, with its own progress message).
            result = trace_prompt(
                model,
                dicts,
                prompt,
                target=target or None,
                contrast=contrast or None,
                ablation=ablation,
                corpus_path=corpus if ablation == "mean" else None,
                cache_dir=means_cache,
                params=TraceParams(node_threshold=float(node_threshold), max_latents=int(max_latents)),
                progress=progress_callback(bar),
                qk=QKParams(qk_threshold=float(trace_qk_thr)) if trace_qk else None,
            )
        except ERRORS as exc:
            # Shown below the form, outside this box, and kept until the next trace or load (see "stale" below).
            S["circ.trace_error"] = str(exc)
            status.update(label="Trace failed: see the error below", state="error", expanded=False)
        else:
            seconds = time.perf_counter() - t0
            set_original(C.with_target(result.graph, result.target), result.target, None, warnings=result.warnings)
            s = result.summary()
            st.caption("Where the time went: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
            status.update(
                label=literal(
                    f"Traced {result.graph.graph['target']['node_id']} in {seconds:.1f} s: {s['n_nodes']} nodes "
                    f"({s['n_latents']} latents), {s['n_edges']} edges"
                ),
                state="complete",
                expanded=False,
            )

with st.expander("Import a graph (JSON from this app, circuit-tracer or Neuronpedia)"):
    imported_now = graph_interop_view.render_import_uploader()
    if imported_now is not None and S.get("circ.import_applied") is not imported_now[0]:
        apply_import(*imported_now)
        st.rerun()

failed = S.get("circ.trace_error")
if failed:
    st.error(literal(join_sentences(f"Trace failed: {failed}")))

original = S.get("circ.original")
if original is None:
    st.info("Trace a prompt, or load a saved circuit from the sidebar.")
    st.stop()
stale = failed is not None  # the graph below is not the prompt whose trace just failed

# ---------------------------------------------------------------------------------------------- prune
explained = C.node_explanations(ws, original)
labels = {v: e.text for v, e in explained.items()}
influence = S["circ.influence"]  # over direct edges: QK edges change no number unless asked below
has_qk = qk_view.has_qk(original)
if has_qk and S.get("circ.qk_influence"):
    influence = memo("qk_influence", (S.get("circ.generation", 0),), lambda: graph_influence(original, qk=True))
tgt = C.target_node(original)
others = sorted((v for v in original.nodes if v != tgt), key=lambda v: -influence.get(v, 0.0))


def describe(v: str) -> str:
    return (
        f"{graph_view.short_id(v, original.nodes[v])} @{original.nodes[v].get('position')} {labels.get(v, '')}".strip()
    )


source = S.get("circ.source")
meta = original.graph
st.subheader("Previous circuit (the last trace failed)" if stale else "Circuit")
if stale:
    st.warning(
        "The graph below is the circuit shown before your last trace, not the prompt that failed: fix the "
        "input and trace again, or keep working on this circuit."
    )
# The prompt and target are user text: shown literally, at body size (a long prompt is not a heading).
st.markdown(f"**Prompt:** {literal(meta.get('prompt', ''))}  \n**Target:** {literal(meta['target']['node_id'])}")
for w in S.get("circ.trace_warnings", []):
    st.warning(literal(join_sentences(f"Traced, but {w}")))
if source:
    st.caption(literal(f"Saved circuit {source['name']!r}, loaded from version {source['version']}."))
if explained:
    st.caption(
        literal(
            f"Latent labels: explanations by {', '.join(sorted({e.explainer for e in explained.values()}))} "
            f"({len(explained)} latents)."
        )
    )
else:
    st.caption("No explanations for these latents in this workspace: nodes are labelled kind.layer/latent.")
p1, p2, p3 = st.columns([2, 2, 1])
node_thr = p1.slider(
    "Node threshold: minimum influence on the target",
    0.0,
    max(0.2, S.get("circ.node_thr", 0.0)),  # a loaded version may have been pruned harder than the slider's range
    step=0.001,
    format="%.3f",
    key="circ.node_thr",
    help="Influence as the node tooltips and sizes show it (core.tracing.influence.graph_influence).",
)
edge_thr = p2.slider(
    "Edge threshold: minimum share of the target node's |direct effect|",
    0.0,
    max(0.5, S.get("circ.edge_thr", 0.0)),
    step=0.005,
    format="%.3f",
    key="circ.edge_thr",
)
per_node = p3.select_slider(
    "Edges drawn per node",
    options=[1, 2, 3, 5, 10, "all"],
    value=graph_view.EDGES_PER_NODE,
    key="circ.edges_per_node",
    help="The graph draws each node's strongest incoming edges (and its strongest outgoing one); more, or all.",
)
show_qk, qk_thr = False, 0.0
if has_qk:
    k1, k2, k3 = st.columns([1, 2, 2])
    show_qk = k1.toggle(
        "Show QK edges",
        key="circ.show_qk",
        help="Effects through where a head attends (its query or key), drawn dashed; off: only direct edges.",
    )
    qk_thr = k2.slider(
        "QK edge threshold: minimum share of the target latent's |direct effect|",
        0.0,
        0.5,
        0.0,
        step=0.005,
        format="%.3f",
        key="circ.qk_thr",
        disabled=not show_qk,
    )
    k3.checkbox(
        "Influence counts QK edges",
        key="circ.qk_influence",
        help="Off (default): influence, node sizes and the node threshold use direct effects only, so nodes "
        "reached only through QK edges have influence 0. On: QK effects count beside direct ones.",
    )
supernodes = circuit_panel.supernodes_of(S)
super_ids = {sn.id: sn for sn in supernodes}
# Keyboard fallback of the graph's clicks: the same lists the clicks edit.
removed = st.multiselect("Remove nodes", others, key="circ.remove_nodes", format_func=describe)
# The strongest edges only (and those removed already): ten thousand options would slow every redraw of the page.
strongest = sorted(original.edges, key=lambda e: -abs(original.edges[e].get("weight") or 0.0))[:EDGE_OPTIONS]
edge_options = list(dict.fromkeys([*map(edge_key, strongest), *S.get("circ.remove_edges", [])]))
removed_edges = st.multiselect(
    "Remove edges",
    edge_options,
    key="circ.remove_edges",
    help=f"The {EDGE_OPTIONS} strongest edges by |direct effect|, strongest first.",
)
pinned = st.multiselect("Pin nodes (kept whatever the thresholds)", others, key="circ.pinned", format_func=describe)
pruning = C.Pruning(
    tuple(removed),
    tuple(tuple(e.split(" → ", 1)) for e in removed_edges),
    node_thr,
    edge_thr,
    tuple(pinned),
    tuple(supernodes),
)
pruning_json = json.dumps(pruning.to_json(), sort_keys=True)
qk_key = bool(has_qk and S.get("circ.qk_influence"))
G = memo(
    "pruned", (S.get("circ.generation", 0), pruning_json, qk_key), lambda: C.prune_graph(original, pruning, influence)
)
counts = C.pruning_counts(original, G)
m1, m2, m3 = st.columns(3)
m1.metric("nodes", counts["nodes"], -counts["removed_nodes"] or None)
m2.metric("edges", counts["edges"], -counts["removed_edges"] or None)
m3.metric("latents (the circuit)", counts["latents"], -counts["removed_latents"] or None)
if counts["latents"] == 0 and counts["removed_latents"] == 0:
    st.warning("The traced graph has no latents: trace again with a lower node threshold or more Max latents.")
elif counts["latents"] == 0:
    st.warning(C.zero_latent_warning("This pruning"))

notes = S.setdefault("circ.annotations", {})
G_original, G_view = original, G  # hooks below (steering, interop) read these


@st.fragment
def graph_and_panel(G, spec_key: tuple, pinned: list[str], supernodes: list, per_node, qk_shown: float | None) -> None:
    """The graph and the side panel. A click on a node (or a selection) reruns only this part, so the card
    follows the click at once; an edit that changes the circuit (remove, pin, group, undo) reruns the page.
    `qk_shown`: the QK edge threshold when QK edges are shown, None when they are not."""
    if S.pop("circ.full_rerun", False):
        st.rerun()
    super_ids = {sn.id: sn for sn in supernodes}
    for kind, text in S.get("circ.graph_flash", []):
        getattr(st, kind)(literal(text))
    left, right = st.columns([5, 2])
    with left:
        expanded = S.get("circ.expanded") or []

        def draw() -> dict:
            spec = graph_view.graph_spec(
                qk_view.direct_view(G),
                labels,
                notes,
                influence,
                pinned,
                supernodes,
                expanded,
                edges_per_node=None if per_node == "all" else int(per_node),
            )
            return spec if qk_shown is None else qk_view.with_qk_edges(spec, G, qk_shown, supernodes, expanded)

        spec = memo("spec", (*spec_key, tuple(expanded), qk_shown), draw)
        graph_view.circuit_graph(spec, S.get("circ.selected") or [], key="circ.graph", on_change=on_graph_event)
        st.caption(
            f"Drawing {spec['n_shown_edges']} of {spec['n_edges']} edges (each node's strongest; "
            "more with Edges drawn per node). Blue: positive, red: negative; width by |effect|; size by influence."
        )
        st.markdown(graph_view.legend_html(), unsafe_allow_html=True)  # static text only
        if qk_shown is not None:
            st.caption(f"{spec.get('n_qk_edges', 0)} QK edges drawn: {qk_view.LEGEND}.")
        choices = [*super_ids, *sorted(original.nodes, key=lambda v: -influence.get(v, 0.0))]
        # An undo or ungroup can leave a selection of a supernode that is gone: drop it before the widgets read it.
        S["circ.selected"] = [v for v in S.get("circ.selected") or [] if v in choices]
        if S.get("circ.focus") not in (None, *choices):
            S["circ.focus"] = None
        selected_nodes = st.multiselect(
            "Selected nodes (Shift-click or Shift-drag in the graph)",
            choices,
            key="circ.selected",
            format_func=lambda v: f"supernode {super_ids[v].label}" if v in super_ids else describe(v),
        )
        g1, g2, g3 = st.columns([3, 2, 1])
        g1.text_input(
            "Supernode label",
            key="circ.group_label",
            placeholder="e.g. name movers",
            label_visibility="collapsed",
        )
        g2.button(
            "Group as supernode",
            key="circ.group",
            on_click=group_nodes,
            disabled=len(selected_nodes) < 2,
            help="Group the selected nodes under the label: drawn as one node with summed edges, saved with the version.",
        )
        g3.button(
            "Undo",
            key="circ.undo_btn",
            on_click=lambda: edit(lambda: circuit_panel.undo(S)),
            disabled=not S.get("circ.undo"),
            help="Undo the last edit made from the graph or the panel.",
        )
        if supernodes:
            st.caption(
                literal("Supernodes: " + "; ".join(f"{sn.label} ({len(sn.members)} nodes)" for sn in supernodes))
            )
    with right:
        st.markdown("**Node**")
        focus = st.selectbox(
            "Card of node (click a node in the graph)",
            [None, *choices],
            key="circ.focus",
            format_func=lambda v: (
                "none" if v is None else (f"supernode {super_ids[v].label}" if v in super_ids else describe(v))
            ),
            label_visibility="collapsed",
        )
        circuit_panel.render_panel(
            ws, original, G, focus, S, influence, lambda messages: edit(lambda: messages), {**labels, **notes}
        )


S.pop("circ.full_rerun", None)  # this run is a whole one already
graph_and_panel(
    G,
    (S.get("circ.generation", 0), pruning_json, json.dumps([labels, notes], sort_keys=True), str(per_node), qk_key),
    list(pinned),
    supernodes,
    per_node,
    float(qk_thr) if show_qk else None,
)
selected_nodes = list(S.get("circ.selected") or [])  # node ids chosen in the graph (supernode ids: "supernode:...")

# ---------------------------------------------------------------------------------------------- faithfulness
st.subheader("Faithfulness of this circuit")
faith = S.setdefault("circ.faith", {}).get(pruning.key())
imported = S.get("circ.imported")
not_loadable = imported is not None and not imported.loadable
if not_loadable:
    st.caption(literal(f"Faithfulness needs the model this graph was traced on: {imported.reason}."))
if st.button("Recompute faithfulness", key="circ.recompute", disabled=not_loadable):
    with st.spinner("Ablating on the real model…"):
        try:
            model, dicts = engine()
            means = cached_latent_means(model, dicts) if ablation == "mean" else None
            ref = C.reference_of(original.graph.get("faithfulness"), ablation)
            faith = C.measure_faithfulness(model, dicts, G, means, ablation, reference=ref).to_json()
            S["circ.faith"][pruning.key()] = faith
        except ERRORS as exc:
            st.error(literal(join_sentences(str(exc))))
if faith:
    # One number per metric, in rows of three: two values in one metric ("9.728 / -1.2…") were cut off.
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    f1, f2, f3 = st.columns(3)
    f1.metric("faithfulness F(C)", fmt(faith["faithfulness"]), help="(m(C) − m(∅)) / (m(M) − m(∅)); 1 = sufficient")
    f2.metric(
        "complement F(M\\C)",
        fmt(faith["complement_faithfulness"]),
        help="completeness: 0 = the circuit holds all of the mechanism",
    )
    f3.metric("sufficiency m(C)", fmt(faith["metric_circuit"]), help="the target with only the circuit's latents kept")
    f4, f5, f6 = st.columns(3)
    f4.metric(
        "necessity m(M\\C)", fmt(faith["metric_complement"]), help="the target with the circuit's latents ablated"
    )
    f5.metric("model m(M)", fmt(faith["metric_full"]), help="the target on the whole model")
    f6.metric("empty m(∅)", fmt(faith["metric_empty"]), help="the target with every latent ablated")
    st.caption(
        literal(
            f"{faith['ablation']} ablation of {faith['n_latents']:.0f} latents on the real "
            f"{MODEL_LABELS.get(MODEL_SET, MODEL_SET)}."
        )
    )
else:
    st.caption("Not measured for this pruning yet: press Recompute faithfulness.")

# ---------------------------------------------------------------------------------------------- steering
st.subheader("Steering")
st.caption(
    "Set latents of this circuit (by default the nodes selected in the graph) to a multiple of their activation, "
    "to zero or to a value, and compare the model's next-token probabilities and continuation before and after."
)
if not_loadable:
    st.caption(literal(f"Steering needs the model this graph was traced on: {imported.reason}."))
elif st.toggle("Steer latents of this circuit", key="circ.steer_on", help="Loads the model when first switched on."):
    with st.spinner("Loading the model…"):
        steer_model, steer_dicts = engine()
    steering_view.render_steering(
        steer_model,
        steer_dicts,
        str(meta.get("prompt", "")),
        G,
        selected_nodes,
        ws=ws,
        circuit=source,
        key="circ.steer",
    )

# ---------------------------------------------------------------------------------------------- annotate
st.subheader("Annotations")
st.text_area("Circuit annotation / summary", key="circ.note", height=80)
node_choices = sorted(
    G.nodes, key=lambda v: (G.nodes[v].get("kind") not in ("attn", "transcoder"), -influence.get(v, 0.0))
)
node = st.selectbox("Node to annotate", node_choices, key="circ.ann_node", format_func=describe)
box = f"circ.ann.{node}"
if box not in S:
    S[box] = notes.get(node) or labels.get(node, "")
st.text_input(
    "Annotation (prefilled from the explanation; Enter to set, empty to clear)",
    key=box,
    on_change=set_annotation,
    args=(node,),
)
kept_notes = {k: t for k, t in notes.items() if k in G}
if kept_notes:
    st.dataframe(
        [{"node": k, "annotation": t} for k, t in sorted(kept_notes.items())], hide_index=True, width="stretch"
    )
if len(kept_notes) < len(notes):
    st.caption(
        f"{len(notes) - len(kept_notes)} annotation(s) are on nodes this pruning removes; they are kept here but not saved."
    )

# ---------------------------------------------------------------------------------------------- save, export
st.subheader("Save and export")
s1, s2 = st.columns([2, 3])
name = s1.text_input("Circuit name", key="circ.name")
version_note = s2.text_input("Version note (optional)", key="circ.version_note")
annotation = C.Annotation(S["circ.note"].strip()) if S.get("circ.note", "").strip() else None
node_notes = C.annotations_from(kept_notes)
if st.button("Save", key="circ.save", type="primary"):
    outcome = C.save_edits(
        ws,
        name,
        original,
        S.get("circ.target"),
        source,
        pruning,
        node_notes,
        annotation,
        faith,
        note=version_note,
        timeout=WRITE_TIMEOUT_S,
    )
    source = S["circ.source"] = outcome.source
    name = outcome.version.name if outcome.version else name
    for kind, text in outcome.messages:
        getattr(st, kind)(literal(text))

current = C.unsaved_version(name or "circuit", original, pruning, node_notes, annotation, faith, pruned=G)
slug = "".join(ch if ch.isalnum() else "-" for ch in (name or meta.get("slug") or "circuit"))[:60]
lines = [
    f"prompt: {meta.get('prompt', '')}",
    f"target: {meta['target']['node_id']}",
    f"{counts['latents']} latents, {counts['nodes']} nodes, {counts['edges']} edges; model: embedded default",
]
if supernodes:
    lines.append("supernodes: " + "; ".join(f"{sn.label}: {', '.join(sn.members)}" for sn in supernodes))
if faith:
    lines.append(
        f"faithfulness F(C) {faith['faithfulness']}, complement F(M\\C) {faith['complement_faithfulness']} ({faith['ablation']} ablation)"
    )
if annotation:
    lines.append(f"annotation: {annotation.text}")
e1, e2, e3 = st.columns(3)
e1.download_button(
    "Export JSON",
    lambda: json.dumps(C.export_json(current, labels), indent=1),
    f"{slug}.json",
    "application/json",
    key="circ.export_json",
)
e2.download_button(
    "Export HTML",
    lambda: graph_view.graph_html(  # static exports draw direct effects only
        qk_view.direct_view(G),
        labels,
        notes,
        influence,
        set(pinned),
        header_html=graph_view.header(name or "circuit", lines, kept_notes),
    ),
    f"{slug}.html",
    "text/html",
    key="circ.export_html",
)
e3.download_button(
    "Export PNG",
    lambda: graph_view.graph_png(
        qk_view.direct_view(G), labels, notes, title=f"{meta.get('prompt', '')} → {meta['target']['node_id']}"
    ),
    f"{slug}.png",
    "image/png",
    key="circ.export_png",
)

graph_interop_view.render_export_button(
    G,
    slug=slug,
    model_id=str(imported.model_id if imported is not None and imported.model_id else "default"),
    pinned=pinned,
    supernodes=supernodes,
    labels={**labels, **kept_notes},
    key="circ.export_graph_json",
    # The label avoids "circuit-tracer": a button found by the name "Trace" must stay the trace form's.
    label="Download graph JSON (Neuronpedia format)",
)

# ---------------------------------------------------------------------------------------------- LLM pruning
st.divider()
llm_saved = llm_prune_view.render(ws, G, explained, current, source)
if llm_saved is not None:
    st.success(
        literal(
            f"Saved the accepted suggestions as {llm_saved.name!r} version {llm_saved.version} ({llm_saved.created_by})."
        )
    )
    if llm_saved.n_latents == 0:
        st.warning(C.zero_latent_warning(f"Version {llm_saved.version}"))
    st.button(
        f"Show version {llm_saved.version}",
        key="circ.load_llm",
        on_click=load_saved,
        args=(ws, llm_saved.name, llm_saved.version),
    )
