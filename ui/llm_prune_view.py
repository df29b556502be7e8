"""The circuits page's "ask the LLM to prune and annotate" section.

The LLM chosen on the landing page (`ui.state.llm_model`) prunes the graph on screen
(`core.circuits.llm_pruning.suggest_pruning`); its suggestions are listed one per node, each with a verdict
the user picks (accept, edit the role, reject = leave the node as it is), and a summary to accept,
edit or reject. "Save as a new version" stores the accepted ones as the next version of the saved
circuit (`core.circuits.llm_pruning.save_pruned_version`), labelled with the model that wrote them; nothing
else changes. A rejected reply is shown with its reason and nothing is applied. The model id, the
reasons and the circuit's name are shown literally (`ui.text.literal`), never as Markdown.
Session state keys start with "llmp.".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import streamlit as st

from core.circuits import llm_pruning as L
from core.circuits.saved import CircuitChangedError, NodeExplanation, join_sentences
from ui.progress import progress_callback
from ui.text import literal

S = st.session_state
VERDICTS = ("accept", "reject")


def _graph_key(G: nx.DiGraph) -> str:
    """A key of the graph on screen, so a suggestion is shown only for the graph it was made on."""
    return hashlib.blake2b("\n".join(sorted(G.nodes)).encode(), digest_size=8).hexdigest()


def _ask(
    ws: Path, G: nx.DiGraph, model: str, explanations: Mapping[str, NodeExplanation], budget: int, fresh: bool
) -> None:
    """Run the suggestion with a progress bar; store it, or the rejection, in the session."""
    from ui.state import CORE_ERRORS

    S.pop("llmp.suggestion", None)
    S.pop("llmp.rejected", None)
    expl = {v: e.label for v, e in explanations.items()}
    with st.status(literal(f"Asking {model} to prune and annotate…"), expanded=True) as status:
        bar = st.progress(0.0, text="building the prompt")
        try:
            suggestion = L.suggest_pruning(
                ws,
                G,
                model,
                L.task_for_graph(G),
                expl,
                L.PruneConfig(max_prompt_tokens=int(budget)),
                progress=progress_callback(bar),
                use_cache=not fresh,
                influence=S.get("circ.influence"),  # the page's numbers (on version 1), as its sliders and tooltips
            )
        except L.PruneReplyError as exc:
            status.update(label="The LLM's reply was rejected; nothing was applied", state="error")
            S["llmp.rejected"] = {"reason": str(exc), "reply": exc.reply_text}
        except CORE_ERRORS as exc:
            status.update(label="The LLM could not be asked", state="error")
            S["llmp.rejected"] = {"reason": str(exc), "reply": ""}
        else:
            status.update(
                label=literal(
                    f"{model} kept {len(suggestion.kept_ids)} and dropped {len(suggestion.dropped_ids)} nodes "
                    f"({suggestion.mode}; {suggestion.n_calls} call(s), {suggestion.n_cached} from the cache)"
                ),
                state="complete",
                expanded=False,
            )
            S["llmp.suggestion"] = suggestion.to_json()
            S["llmp.graph"] = _graph_key(G)
            S.pop("llmp.table", None)


def _decisions(suggestion: L.PruneSuggestion, rows: list[dict[str, Any]]) -> dict[str, L.Decision]:
    """Verdicts from the edited table: a changed role on a kept node is an edit."""
    by_id = {n.node_id: n for n in suggestion.nodes}
    if suggestion.target_role:
        by_id[suggestion.target_id] = L.NodeSuggestion(suggestion.target_id, "keep", suggestion.target_role)
    out = {}
    for row in rows:
        n = by_id[row["node"]]
        role = (row.get("role") or "").strip()
        if row["verdict"] == "reject":
            out[n.node_id] = L.Decision("reject")
        elif n.action == "keep" and role != n.role:
            out[n.node_id] = L.Decision("edit", role)
        else:
            out[n.node_id] = L.Decision("accept")
    return out


def _ask_controls(ws: Path, G: nx.DiGraph, model: str, explanations: Mapping[str, NodeExplanation]) -> None:
    """The prompt budget, the "ask again" box and the ask button (which runs `_ask`)."""
    c1, c2 = st.columns([1, 1])
    budget = c1.number_input(
        "Prompt budget (estimated tokens; larger graphs are pruned layer by layer)",
        500,
        200_000,
        L.PruneConfig().max_prompt_tokens,
        500,
        key="llmp.budget",
    )
    fresh = c2.checkbox("Ask again, ignoring a cached reply", key="llmp.fresh")
    if st.button(literal(f"Ask {model} to prune and annotate"), key="llmp.ask"):
        _ask(ws, G, model, explanations, int(budget), fresh)


def _show_rejection() -> None:
    """The reason the last reply was rejected (or the LLM could not be asked), and the reply as received."""
    rejected = S.get("llmp.rejected")
    if rejected:
        st.error(literal(join_sentences(rejected["reason"])))
        if rejected["reply"]:
            with st.expander("The reply as received"):
                st.code(rejected["reply"], language=None)  # shown as text, never rendered


def _suggestion_for(G: nx.DiGraph) -> L.PruneSuggestion | None:
    """The session's suggestion if it was made on graph `G` (captioned with who made it), else None."""
    data = S.get("llmp.suggestion")
    if not data:
        return None
    if S.get("llmp.graph") != _graph_key(G):
        st.caption("The graph changed since the last suggestion; ask again to get suggestions for this one.")
        return None
    suggestion = L.PruneSuggestion.from_json(data)
    st.caption(
        literal(
            f"Suggested by {suggestion.model} · prompt {suggestion.prompt_version} · {suggestion.mode} · "
            f"{suggestion.n_calls} call(s), {suggestion.n_cached} cached"
        )
    )
    return suggestion


def _node_table(suggestion: L.PruneSuggestion, explanations: Mapping[str, NodeExplanation]) -> list[dict[str, Any]]:
    """The editable table of suggestions, one row per node (the target first when it got a role); returns its rows."""
    import pandas as pd

    rows = [
        {
            "node": n.node_id,
            "explanation": explanations[n.node_id].text if n.node_id in explanations else "",
            "suggestion": n.action,
            "role": n.role,
            "verdict": "accept",
        }
        for n in (
            [L.NodeSuggestion(suggestion.target_id, "keep", suggestion.target_role)] if suggestion.target_role else []
        )
        + suggestion.nodes
    ]
    edited = st.data_editor(
        pd.DataFrame(rows),
        key="llmp.table",
        hide_index=True,
        use_container_width=True,
        disabled=["node", "explanation", "suggestion"],
        column_config={
            "role": st.column_config.TextColumn("role (edit to change)", max_chars=L.MAX_ROLE_CHARS),
            "verdict": st.column_config.SelectboxColumn("verdict", options=list(VERDICTS), required=True),
        },
    )
    return edited.to_dict("records")


def _summary_verdict(suggestion: L.PruneSuggestion) -> L.Decision:
    """The suggested summary, editable, and the user's verdict on it."""
    summary_text = st.text_area("Summary (edit to change)", suggestion.summary, key="llmp.summary", height=120)
    summary_verdict = st.radio("Summary", VERDICTS, horizontal=True, key="llmp.summary_verdict")
    if summary_verdict == "reject":
        return L.Decision("reject")
    if summary_text.strip() != suggestion.summary:
        return L.Decision("edit", summary_text)
    return L.Decision("accept")


def _save(
    ws: Path,
    source: Mapping[str, Any],
    base: Any,
    suggestion: L.PruneSuggestion,
    rows: list[dict[str, Any]],
    summary_decision: L.Decision,
) -> Any:
    """Save the suggestions accepted in table `rows` as the next version of `source`; returns it, or None (with the reason shown)."""
    from ui.state import CORE_ERRORS

    try:
        applied = L.resolve_suggestion(suggestion, _decisions(suggestion, rows), summary_decision)
        version = L.save_pruned_version(
            ws,
            source["name"],
            applied,
            base=base,
            parent_version=source["version"],
            timeout=5.0,
            expected_circuit_id=source.get("circuit_id"),
        )
    except CircuitChangedError as exc:
        st.error(
            literal(
                join_sentences(
                    f"Not saved: {exc}",
                    "The suggestions are still here",
                    "To keep them, save this page's circuit under a new name (Save and export, above), "
                    "then save the suggestions as its next version",
                )
            )
        )
        return None
    except CORE_ERRORS as exc:
        st.error(literal(join_sentences(f"Not saved: {exc}", "The suggestions are still here")))
        return None
    S.pop("llmp.suggestion", None)
    return version


def render(
    ws: Path,
    G: nx.DiGraph,
    explanations: Mapping[str, NodeExplanation],
    base: Any,
    source: Mapping[str, Any] | None,
) -> Any:
    """Draw the section for graph `G` (the circuit on screen, `base` its unsaved CircuitVersion); returns the saved version or None.

    `explanations`: {node id: NodeExplanation} (`core.circuits.saved.node_explanations`); `source`: {"name", "version"} of the saved circuit
    the page shows, or None if it is not saved yet (then suggestions can be made but not saved).
    """
    from ui.state import llm_model

    st.subheader("Ask an LLM to prune and annotate")
    model = llm_model()
    if model is None:
        st.info(
            "No LLM is chosen: set a litellm model id (and its API key in the environment) on the landing page. "
            "None is available offline."
        )
        return None
    _ask_controls(ws, G, model, explanations)
    _show_rejection()
    suggestion = _suggestion_for(G)
    if suggestion is None:
        return None
    rows = _node_table(suggestion, explanations)
    summary_decision = _summary_verdict(suggestion)
    if source is None:
        st.caption("Save the circuit below first: the accepted suggestions become its next version.")
        return None
    if not st.button(literal(f"Save as a new version of {source['name']!r}"), key="llmp.save", type="primary"):
        return None
    return _save(ws, source, base, suggestion, rows, summary_decision)
