"""The Circuits page's side panel and the edits the graph's clicks make.

Edits (pure functions over the page's state, a MutableMapping such as st.session_state; keys below):
    apply_event(state, event, original)     a graph event: click (focus a node), select, remove (alt-click)
    remove / restore / toggle_pin           on node ids of the traced graph (a supernode id acts on its members)
    group_selected(state, label, original)  the selection becomes a supernode (core.circuits.supernodes.group)
    toggle_expand / ungroup                 draw a supernode's members again / dissolve it
    undo(state)                             back to before the last edit (UNDO_DEPTH edits kept)
Each returns a list of (kind, text) messages ('success' | 'warning' | 'error'), shown literally by the page.
Bad input (a node id not in the graph, e.g. from a stale event; a supernode of one node or of nodes already
grouped; removing the target) gives an 'error' message and changes nothing.

The panel (`render_panel`) shows the focused node: its activation on this prompt and influence on the
target, pin / remove / restore buttons, its QK effects when the graph has any (the nodes that steer where an
attention latent's heads attend, and the attention latents a node steers; drawn or not), and for a latent its
explanations and scores with who made them, its top activating examples (token-highlighted), top output tokens and
a link to its Latents page.

State keys: circ.remove_nodes, circ.remove_edges, circ.pinned ([node ids]), circ.supernodes ([Supernode]),
circ.expanded ([supernode ids]), circ.selected ([node ids]), circ.focus (node id or None), circ.undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import networkx as nx
import streamlit as st

from core.circuits import supernodes as SN
from core.tracing.graph import target_node
from core.tracing.nodes import LATENT_KINDS

EDIT_KEYS = ("circ.remove_nodes", "circ.remove_edges", "circ.pinned", "circ.supernodes", "circ.expanded")
UNDO_DEPTH = 20
EXAMPLES_IN_PANEL = 5
Messages = list[tuple[str, str]]


# ------------------------------------------------------------------------------------------------- edits


def supernodes_of(state: Mapping) -> list[SN.Supernode]:
    """The page's supernodes."""
    return list(state.get("circ.supernodes") or [])


def snapshot(state: Mapping) -> dict[str, list]:
    """A copy of the editable state (what undo restores)."""
    return {k: list(state.get(k) or []) for k in EDIT_KEYS}


def push_undo(state: MutableMapping) -> None:
    """Remember the current edits, so `undo` can return to them."""
    stack = list(state.get("circ.undo") or [])
    stack.append(snapshot(state))
    state["circ.undo"] = stack[-UNDO_DEPTH:]


def undo(state: MutableMapping) -> Messages:
    """Restore the edits as they were before the last one."""
    stack = list(state.get("circ.undo") or [])
    if not stack:
        return [("warning", "Nothing to undo.")]
    state.update(stack.pop())
    state["circ.undo"] = stack
    return [("success", "Undid the last edit.")]


def _members(state: Mapping, node: str) -> list[str]:
    """`node` itself, or a supernode's members."""
    for s in supernodes_of(state):
        if s.id == node:
            return list(s.members)
    return [node]


def _unknown(state: Mapping, original: nx.DiGraph, nodes: list[str]) -> list[str]:
    ids = {s.id for s in supernodes_of(state)}
    return [v for v in nodes if v not in original and v not in ids]


def _stale(nodes: list[str]) -> Messages:
    return [
        (
            "error",
            f"Node {', '.join(map(repr, nodes[:3]))} is not in this graph (the graph changed since it was clicked?); "
            "nothing was changed.",
        )
    ]


def remove(state: MutableMapping, nodes: list[str], original: nx.DiGraph) -> Messages:
    """Add `nodes` (a supernode: its members) to the removed nodes; the target cannot be removed."""
    if bad := _unknown(state, original, nodes):
        return _stale(bad)
    members = [m for v in nodes for m in _members(state, v)]
    if target_node(original) in members:
        return [("error", "The target node cannot be removed; nothing was changed.")]
    push_undo(state)
    state["circ.remove_nodes"] = sorted(set(state.get("circ.remove_nodes") or []) | set(members))
    state["circ.selected"] = [v for v in state.get("circ.selected") or [] if v not in nodes]
    return [("success", f"Removed {', '.join(members[:4])}{'…' if len(members) > 4 else ''} (Undo brings it back).")]


def restore(state: MutableMapping, nodes: list[str], original: nx.DiGraph) -> Messages:
    """Take `nodes` (a supernode: its members) out of the removed nodes."""
    if bad := _unknown(state, original, nodes):
        return _stale(bad)
    members = {m for v in nodes for m in _members(state, v)}
    push_undo(state)
    state["circ.remove_nodes"] = [v for v in state.get("circ.remove_nodes") or [] if v not in members]
    return [("success", f"Restored {', '.join(sorted(members)[:4])}.")]


def toggle_pin(state: MutableMapping, node: str, original: nx.DiGraph) -> Messages:
    """Pin `node` (kept whatever the thresholds), or unpin it if pinned; a supernode pins or unpins its members."""
    if bad := _unknown(state, original, [node]):
        return _stale(bad)
    members = [m for m in _members(state, node) if m != target_node(original)]
    pinned = set(state.get("circ.pinned") or [])
    push_undo(state)
    if all(m in pinned for m in members):
        state["circ.pinned"] = sorted(pinned - set(members))
        return [("success", f"Unpinned {node}.")]
    state["circ.pinned"] = sorted(pinned | set(members))
    return [("success", f"Pinned {node}: kept whatever the thresholds.")]


def group_selected(state: MutableMapping, label: str, original: nx.DiGraph) -> Messages:
    """Group the selected nodes as a supernode named `label` (validated; nothing changes on a bad grouping)."""
    selected = list(dict.fromkeys(state.get("circ.selected") or []))
    try:
        new = SN.group(original, supernodes_of(state), selected, label)
    except SN.SupernodeError as exc:
        return [("error", f"Not grouped: {exc}. Nothing was changed.")]
    push_undo(state)
    state["circ.supernodes"] = [*supernodes_of(state), new]
    state["circ.selected"] = [new.id]
    state["circ.focus"] = new.id
    return [("success", f"Grouped {len(new.members)} nodes as supernode {new.label!r}.")]


def toggle_expand(state: MutableMapping, supernode_id: str) -> Messages:
    """Draw a supernode's members instead of it, or collapse them back."""
    if supernode_id not in {s.id for s in supernodes_of(state)}:
        return _stale([supernode_id])
    expanded = set(state.get("circ.expanded") or [])
    push_undo(state)
    state["circ.expanded"] = sorted(expanded ^ {supernode_id})
    return []


def ungroup(state: MutableMapping, supernode_id: str) -> Messages:
    """Dissolve a supernode (its members stay in the graph)."""
    try:
        kept = SN.ungroup(supernodes_of(state), supernode_id)
    except SN.SupernodeError as exc:
        return [("error", f"{exc}; nothing was changed.")]
    push_undo(state)
    state["circ.supernodes"] = list(kept)
    state["circ.expanded"] = [v for v in state.get("circ.expanded") or [] if v != supernode_id]
    if state.get("circ.focus") == supernode_id:
        state["circ.focus"] = None
    return [("success", "Ungrouped the supernode.")]


def apply_event(state: MutableMapping, event: Mapping[str, Any] | None, original: nx.DiGraph) -> Messages:
    """Apply one graph event ({"type", "node", "nodes", "seq"}) to the page state; see the module docstring."""
    if not event or not isinstance(event, Mapping):
        return []
    kind = event.get("type")
    node = event.get("node")
    nodes = [str(v) for v in event.get("nodes") or []]
    if kind == "remove":
        return remove(state, nodes or [str(node)], original)
    if kind not in ("click", "select"):
        return [("error", f"Unknown graph event {kind!r}; nothing was changed.")]
    if bad := _unknown(state, original, [*nodes, *([str(node)] if node is not None else [])]):
        return _stale(bad)
    state["circ.selected"] = nodes
    if node is not None:
        state["circ.focus"] = str(node)
    return []


# ------------------------------------------------------------------------------------------------- the panel


def latents_link(dictionary: str, latent: int) -> str:
    """The Latents page's URL for one latent (`?dictionary=...&latent=...`, as that page reads them)."""
    return "/Latents?" + urlencode({"dictionary": dictionary, "latent": int(latent)})


def render_panel(
    ws: Path,
    original: nx.DiGraph,
    view: nx.DiGraph,
    node: str | None,
    state: MutableMapping,
    influence: Mapping[str, float],
    on_edit: Callable[[Messages], None],
    texts: Mapping[str, str] | None = None,
) -> None:
    """The side panel for `node` (a node of `original` or a supernode id), or a hint when none is focused.

    `view` is the pruned graph on screen (to tell removed nodes); `on_edit(messages)` receives the messages of
    the panel's buttons (they run as callbacks, before the next script run); `texts` = {node id: annotation or
    explanation} names the nodes its QK effects list."""
    from ui.text import code, literal

    if node is None:
        st.caption("Click a node in the graph to see its card here.")
        return
    groups = {s.id: s for s in supernodes_of(state)}
    if node in groups:
        s = groups[node]
        st.markdown(f"**Supernode** {literal(s.label)}")
        st.caption(literal(f"{len(s.members)} nodes: " + ", ".join(s.members)))
        expanded = node in (state.get("circ.expanded") or [])
        b1, b2, b3 = st.columns(3)
        b1.button(
            "Collapse" if expanded else "Expand",
            key="circ.panel.expand",
            on_click=lambda: on_edit(toggle_expand(state, node)),
        )
        b2.button("Ungroup", key="circ.panel.ungroup", on_click=lambda: on_edit(ungroup(state, node)))
        b3.button("Remove", key="circ.panel.remove", on_click=lambda: on_edit(remove(state, [node], original)))
        return
    if node not in original:
        st.error(literal(f"Node {node!r} is not in this graph; click a node of the graph shown."))
        return
    a = original.nodes[node]
    st.markdown(f"**{code(node)}**")
    from ui.graph_view import KIND_NAMES

    what = [KIND_NAMES.get(a.get("kind"), str(a.get("kind")))]
    if a.get("dictionary"):
        what.append(f"{a['dictionary']} · latent {a.get('latent')}")
    if a.get("position") is not None:
        what.append(f"position {a.get('position')} {a.get('token', '')!r}")
    st.caption(literal(" · ".join(what)))
    m1, m2 = st.columns(2)
    act = a.get("activation")
    m1.metric("activation here", "n/a" if act is None else f"{float(act):.3g}")
    m2.metric(
        "influence", f"{influence.get(node, 0.0):.3f}", help="its share of the target's |direct effect|, propagated"
    )
    pinned = node in (state.get("circ.pinned") or [])
    removed = node not in view
    is_target = node == target_node(original)
    b1, b2 = st.columns(2)
    b1.button(
        "Unpin" if pinned else "Pin",
        key="circ.panel.pin",
        disabled=is_target,
        on_click=lambda: on_edit(toggle_pin(state, node, original)),
    )
    if node in (state.get("circ.remove_nodes") or []):
        b2.button("Restore", key="circ.panel.restore", on_click=lambda: on_edit(restore(state, [node], original)))
    else:
        b2.button(
            "Remove",
            key="circ.panel.remove",
            disabled=is_target,
            on_click=lambda: on_edit(remove(state, [node], original)),
        )
    if removed:
        st.caption("Not in the pruned circuit (removed, below a threshold, or cut off from the target).")
    render_qk(original, node, texts)
    if a.get("kind") in LATENT_KINDS and a.get("dictionary") is not None:
        render_latent(ws, str(a["dictionary"]), int(a["latent"]))


def render_qk(G: nx.DiGraph, node: str, texts: Mapping[str, str] | None = None) -> None:
    """`node`'s QK effects in `G` (`ui.qk_view.node_qk`), whether or not QK edges are drawn; nothing if it has none."""
    from ui.qk_view import node_qk, qk_lines
    from ui.text import literal

    qk = node_qk(G, node, texts)
    sections = (
        ("What steers its attention (QK)", qk.steered_by, "nodes move where its heads attend", "their effect on its"),
        ("Whose attention it steers (QK)", qk.steers, "attention latents whose heads it moves", "its effect on their"),
    )
    for title, entries, who, effect in sections:
        if entries:
            st.markdown(f"**{title}**")
            st.caption(f"{len(entries)} {who}, through the query or the key: {effect} pre-activation, strongest first.")
            st.markdown(literal("\n".join(qk_lines(entries))))


def render_latent(ws: Path, dictionary: str, latent: int) -> None:
    """Explanations and scores (with who made them), top examples, top output tokens, and a Latents page link."""
    from core import store
    from ui.explanations import render_explanations
    from ui.latent_card import examples_html, token_tables_html
    from ui.state import CORE_ERRORS
    from ui.text import literal
    from ui.tokens import TOKEN_CSS

    st.markdown(f"[Open latent {latent} on the Latents page]({latents_link(dictionary, latent)})")
    try:
        explanations = store.explanations_for_latent(ws, dictionary, latent)
        scores = store.scores_for_explanations(ws, [e.explanation_id for e in explanations])
    except CORE_ERRORS as exc:
        st.caption(literal(f"No explanations read: {exc}"))
    else:
        render_explanations(explanations, scores)
    card = cached_card(str(ws), dictionary, latent)
    if isinstance(card, str):
        st.caption(literal(card))
        return
    st.markdown("**Top activating examples**")
    st.html(TOKEN_CSS + (examples_html(card, card.top_examples[:EXAMPLES_IN_PANEL]) or "no examples"))
    st.html(token_tables_html(card))


def cached_card(ws: str, dictionary: str, latent: int):
    """The latent's card (core.latents.cards.latent_card), or a sentence saying why there is none. Cards are
    cached per server process (a click on a node should show its card in well under a second); failures are not."""
    from ui.state import CORE_ERRORS

    try:
        return _card(ws, dictionary, latent)
    except CORE_ERRORS as exc:
        return f"No cached activations of this latent in this workspace ({exc})."


@st.cache_resource(show_spinner=False, max_entries=256)
def _card(ws: str, dictionary: str, latent: int):
    from core.latents.cards import latent_card

    # Deciles are not shown in the panel: sampling them would only slow the click down.
    return latent_card(Path(ws), dictionary, latent, k_top=EXAMPLES_IN_PANEL, k_per_decile=0)
