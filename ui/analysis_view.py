"""What the Scores, Deciles and Overlap pages share: the stored analyses of the chosen workspace, or a
message saying which command fills them (never a traceback), and a button that computes them with progress."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core import store
from core.analysis import analyses as analysis
from core.errors import UserError
from core.store.analyses import workspace_stamp
from ui.progress import progress_bar
from ui.state import check_workspace_or_stop, current_workspace
from ui.text import code, literal


def workspace_or_stop() -> Path:
    """The chosen workspace; stops the page with st.info if it does not exist yet."""
    ws = current_workspace()
    if not Path(ws).exists():
        st.info(
            f"Workspace {code(ws)} does not exist yet. Build it on the start page, or with "
            f"{code(f'python -m core cache --workspace {ws} --tokens N')}, then explain and score latents."
        )
        st.stop()
    check_workspace_or_stop(ws)  # locked or damaged: one message naming the file and what to do
    return ws


def engine_error(exc: UserError, ws: Path) -> None:
    """Show an engine error as st.warning and stop; a workspace made by older code gets an upgrade button
    (migrations only add tables, nothing stored changes)."""
    st.warning(literal(str(exc)))
    if isinstance(exc, store.WorkspaceOutdatedError) and st.button("Upgrade this workspace", key="upgrade_workspace"):
        try:
            store.migrate(ws)
        except UserError as again:
            st.error(literal(str(again)))
            st.stop()
        st.rerun()
    st.stop()


def provenance_caption(prov: analysis.Provenance) -> None:
    """One line saying which explainers and scorer models made the rows shown (baselines labelled)."""
    explainers = ", ".join(f"{literal(e)} (baseline)" if b else literal(e) for e, b in prov.explainers.items())
    scorers = "; ".join(f"{literal(s)}: {', '.join(literal(m) for m in ms)}" for s, ms in prov.scorer_models.items())
    st.caption(
        f"Model {literal(str(prov.model))}. {prov.n_scores} scores of {prov.n_latents} latents. Explainers: {explainers}. Scorers: {scorers}."
    )
    if prov.offline_baselines:
        st.caption(
            "No LLM made these rows: explanations are token statistics and scorers are MiniLM-similarity judges (offline baselines)."
        )


def _compute(ws: Path) -> None:
    with st.status("Computing analyses…", expanded=True) as status:
        progress = progress_bar("Computing analyses")
        results = analysis.analyze_workspace(ws, progress=progress)
        for name, r in results.items():
            if isinstance(r, analysis.NotEnoughScores):
                st.write(literal(f"{name}: {r}"))
        status.update(label="Analyses stored", state="complete")


@st.cache_data(show_spinner=False, max_entries=16)
def _provenance(stamp: tuple) -> analysis.Provenance:
    """`analysis.provenance` of the workspace `stamp` (`workspace_stamp`) names: read again once the file changes."""
    return analysis.provenance(Path(stamp[0]))


@st.cache_data(show_spinner=False, max_entries=16)
def _load_results(stamp: tuple) -> dict[str, analysis.StoredResult]:
    """`analysis.load_results` of the workspace `stamp` names, cached like `_provenance`."""
    return analysis.load_results(Path(stamp[0]))


def stored_results(ws: Path) -> dict[str, analysis.StoredResult]:
    """The workspace's stored analyses, after showing provenance; stops the page with st.info when there are no scores.

    Offers to compute (or recompute, when the scores changed) the analyses, stored in the workspace.
    """
    try:
        stamp = workspace_stamp(ws)
        prov = _provenance(stamp)
        results = _load_results(stamp)
    except UserError as exc:
        engine_error(exc, ws)
    if prov.n_scores == 0:
        st.info(
            f"No scored explanations in {code(ws)} yet. Run {code(f'python -m core explain --workspace {ws} ...')} and "
            f"{code(f'python -m core score --workspace {ws} ...')} (or use “explain now” on the Latents page)."
        )
        st.stop()
    provenance_caption(prov)
    stale = [r.name for r in results.values() if r.stale]
    if not results:
        st.info(
            f"The analyses of this workspace have not been computed. Run {code(f'python -m core analyze --workspace {ws}')} or:"
        )
    elif stale:
        st.warning(f"Scores changed since {literal(', '.join(stale))} were computed.")
    if not results or stale:
        if st.button("Compute analyses now", key="compute_analyses"):
            try:
                _compute(ws)
            except UserError as exc:
                st.error(literal(str(exc)))
                st.stop()
            st.rerun()
    return results


def missing(name: str, what: str, ws: Path) -> None:
    """An st.info for an analysis the workspace lacks (too few scored latents, or never computed)."""
    st.info(
        f"No {what} stored for this workspace (too few scored latents, or not computed yet: "
        f"{code(f'python -m core analyze --workspace {ws} --what {name}')} says how many it needs)."
    )
