"""SAE Circuit Explorer: home page. Choose the workspace, model set and LLM; see what the workspace holds
and the embedded default's figures. The choices reach every page through ui.state."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

import ui.boot  # (first: the engine's modules, imported once; see ui/boot.py)
from core import store
from core.build.overview import default_overview
from core.build.seed import SEED_DIR, seed_problem
from core.cache.workspace import (
    DEFAULT_WORKSPACE,
    DataFolderReadOnlyError,
    build_lock_holder,
    default_workspace_ready,
    ensure_default_workspace,
    set_aside_damaged,
    set_aside_notes,
)
from core.subjects.models import MODEL_NAMES, ArtifactError
from ui.explain_job import default_job_panel
from ui.state import (
    CORE_ERRORS,
    PROBE_TIMEOUT_S,
    checked_workspace_path,
    core_errors,
    current_workspace,
    home_label,
    is_seed_copy,
    llm_model,
    model_set,
    read_only_default_notice,
    set_llm_model,
    set_model_set,
    set_workspace,
    show_error,
    workspace_model_name,
)
from ui.text import code, literal

# Column headers a reader understands at a glance; any other column shows its name with spaces for underscores.
COLUMN_NAMES = {
    "id": "dictionary",
    "d_sae": "latents",
    "n_activations": "stored activations",
    "l0": "L0",
    "fvu": "FVU",
    "ce_loss_recovered": "CE loss recovered",
    "loss_clean": "loss (clean)",
    "loss_spliced": "loss (dictionary spliced in)",
    "loss_zero_ablated": "loss (zero-ablated)",
    "dead_fraction": "dead fraction",
    "n_tokens": "tokens",
    "hook_in": "hook in",
    "is_baseline": "baseline explainer",
    "of_baseline": "of a baseline",
    "scorer_model": "scorer model",
    "mean_value": "mean value",
    "n": "count",
}


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with readable column names (COLUMN_NAMES, else underscores as spaces)."""
    return frame.rename(columns=lambda c: COLUMN_NAMES.get(str(c), str(c).replace("_", " ")))


def show_table(frame: pd.DataFrame, where=st, **kwargs) -> None:
    """A table with readable column names, as tall as its rows (no scroll box hiding some of them)."""
    where.dataframe(readable(frame), hide_index=True, width="stretch", height="content", **kwargs)


# The default's dictionary metrics as shown: columns that are the same for every row (the clean loss, the tokens
# evaluated) and the hooks (in the dictionary's id) go to the caption, so the table fits the page without scrolling.
DICTIONARY_METRIC_COLUMNS = {
    "id": "dictionary",
    "kind": "kind",
    "d_sae": "latents",
    "l0": "L0",
    "fvu": "FVU",
    "ce_loss_recovered": "CE loss recovered",
    "loss_spliced": "loss spliced",
    "loss_zero_ablated": "loss ablated",
    "dead_fraction": "dead fraction",
}


def show_dictionary_metrics(metrics: pd.DataFrame) -> None:
    """The default's per-dictionary metrics (rows of evaluation.json's "dictionaries"), three decimals, whole."""
    varies = [c for c in ("loss_clean", "n_tokens") if c in metrics and metrics[c].nunique() > 1]
    shown = [c for c in DICTIONARY_METRIC_COLUMNS if c in metrics] + varies  # a column that varies stays a column
    table = readable(metrics[shown].rename(columns=DICTIONARY_METRIC_COLUMNS))
    number = {name: st.column_config.NumberColumn(format="%.3f") for name in table.columns[3:] if name != "tokens"}
    number["L0"] = st.column_config.NumberColumn(format="%.1f", help="active latents per token, mean")
    number["loss spliced"] = st.column_config.NumberColumn(
        format="%.3f", help="next-token loss with the dictionary's reconstruction spliced in"
    )
    number["loss ablated"] = st.column_config.NumberColumn(
        format="%.3f", help="next-token loss with the hook's activation set to zero"
    )
    st.dataframe(
        table, hide_index=True, width="stretch", height="content", column_config=number, key="default_dictionaries"
    )
    notes = []
    if "loss_clean" in metrics and "loss_clean" not in varies:
        notes.append(f"loss without dictionaries {metrics['loss_clean'].iloc[0]:.3f}")
    if "n_tokens" in metrics and "n_tokens" not in varies:
        notes.append(f"{int(metrics['n_tokens'].iloc[0]):,} tokens evaluated")
    notes.append(
        "a transcoder reads `ln2.hook_normalized` and writes `hook_mlp_out` of its block; the others read and write "
        "the hook in their id"
    )
    st.caption("; ".join(notes) + ".")


st.set_page_config(page_title="SAE Circuit Explorer", layout="wide")
home_label()
st.title("SAE Circuit Explorer")
st.caption("Browse SAE and transcoder latents, their explanations and scores, and trace sparse circuits.")

# ---------------------------------------------------------------------------------------------
# Workspace. Widget state is dropped when another page runs, so each widget starts from ui.state.
DEFAULT_CHOICE, OTHER_CHOICE = "Embedded default", "Another workspace file"
on_default = current_workspace() == DEFAULT_WORKSPACE or is_seed_copy(current_workspace())  # (data/ read-only)
if "ws_choice" not in st.session_state:
    st.session_state["ws_choice"] = DEFAULT_CHOICE if on_default else OTHER_CHOICE
if "ws_path" not in st.session_state:
    st.session_state["ws_path"] = "" if on_default else str(current_workspace())

st.subheader("Workspace")
choice = st.radio(
    "Workspace", [DEFAULT_CHOICE, OTHER_CHOICE], key="ws_choice", horizontal=True, label_visibility="collapsed"
)
workspace_ok = True
if choice == OTHER_CHOICE:
    typed = st.text_input("Path to a workspace (.duckdb file made by `python -m core cache`)", key="ws_path").strip()
    if not typed:
        st.info("Type the path of a workspace file; the pages keep using the current one until then.")
        workspace_ok = False
    else:
        try:  # a path outside the allowed folders, or a file that is locked or damaged, is refused
            chosen_path = checked_workspace_path(typed)
            store.check_workspace(chosen_path, timeout=PROBE_TIMEOUT_S)
        except store.WorkspaceOutdatedError:
            set_workspace(chosen_path)  # the overview below offers the upgrade
        except (store.WorkspaceLockedError, store.WorkspaceDamagedError) as exc:
            show_error(exc)  # one message naming the file or process and what to do
            st.stop()
        except CORE_ERRORS as exc:
            show_error(exc)
            workspace_ok = False
        else:
            set_workspace(chosen_path)
else:
    set_workspace(DEFAULT_WORKSPACE)
    # Answer at once when another process holds the default workspace (builds it, or has the file open)
    # or the file is damaged: say who and what to do, rather than wait for it.
    builder = build_lock_holder(DEFAULT_WORKSPACE)
    if builder is not None and not builder.this_process:
        st.warning(
            literal(
                f"The default workspace {DEFAULT_WORKSPACE} is being built by {builder.describe()}, "
                "not by this app. Wait for it to finish, then reload this page; or stop that process "
                + (f"(`kill {builder.pid}`) " if builder.pid else "")
                + "and reload: this app then resumes the build where it stopped."
            )
        )
        try:
            runs = store.cache_status(DEFAULT_WORKSPACE, timeout=PROBE_TIMEOUT_S) if DEFAULT_WORKSPACE.exists() else []
        except store.WorkspaceError:
            runs = []
        if runs:
            st.progress(
                min(runs[0].committed_chunks / max(runs[0].n_chunks, 1), 1.0),
                text=f"its progress: {runs[0].committed_chunks:,} / {runs[0].n_chunks:,} chunks cached",
            )
        st.button("Check again", key="default_check_again")
        st.stop()
    try:
        default_ready = default_workspace_ready(DEFAULT_WORKSPACE, timeout=PROBE_TIMEOUT_S, strict=True)
    except store.WorkspaceDamagedError as exc:
        show_error(exc)
        if st.button("Set it aside and rebuild the default", key="default_set_aside"):
            with core_errors("Setting the damaged default workspace aside"):
                st.session_state["default_set_aside_to"] = str(set_aside_damaged(DEFAULT_WORKSPACE))
            st.rerun()
        st.stop()
    except store.WorkspaceLockedError as exc:
        show_error(exc)
        st.button("Check again", key="default_check_again")
        st.stop()
    if aside := st.session_state.pop("default_set_aside_to", None):
        st.success(literal(f"The damaged default workspace was moved, unchanged, to {aside}; building a new one."))
    if DEFAULT_WORKSPACE.exists() and not default_ready:
        with core_errors("Upgrading the default workspace", stop=False):
            # built by older code: add the newer tables (nothing stored changes)
            store.migrate(DEFAULT_WORKSPACE, timeout=PROBE_TIMEOUT_S)
        default_ready = default_workspace_ready(DEFAULT_WORKSPACE, timeout=PROBE_TIMEOUT_S)
    seeded = not default_ready and not DEFAULT_WORKSPACE.exists() and seed_problem(SEED_DIR) is None
    read_only = False
    if not default_ready:
        label = (
            "Another session of this app is building the default workspace; showing its progress…"
            if builder is not None
            else "Setting up the default workspace (first start: copying the one shipped in data/default/seed)…"
            if seeded
            else "Building the default workspace (first start: caching activations of every dictionary)…"
        )
        with st.status(label, expanded=True) as status:
            bar = st.progress(0.0, text="loading the model and dictionaries" if not seeded else "copying")

            def progress(phase: str, done: int, total: int) -> None:
                if phase == "waiting" and not total:
                    bar.progress(0.0, text="waiting: the other session is loading the model and dictionaries")
                    return
                bar.progress(min(done / max(total, 1), 1.0), text=f"{phase}: {done:,} / {total:,}")

            try:
                # Another process building it meanwhile raises at once, naming it (it does not wait for it).
                ensure_default_workspace(
                    progress, path=DEFAULT_WORKSPACE, wait_for_other_processes=False, seed=SEED_DIR
                )
            except DataFolderReadOnlyError:  # a way out below: the shipped seed, read-only
                read_only = True
            except CORE_ERRORS as exc:
                show_error(exc, "Building the default workspace")
                st.stop()
            status.update(
                label="Default workspace ready" if not read_only else "The data folder is read-only",
                state="complete" if not read_only else "error",
                expanded=read_only,
            )
    if read_only:
        read_only_default_notice()
    else:
        for note in set_aside_notes(DEFAULT_WORKSPACE):
            what = ", ".join(f"{n:,} {k}" for k, n in (note.get("content") or {}).items()) or "it could not be read"
            st.info(
                literal(
                    f"An earlier default workspace ({note.get('reason')}, set aside {note.get('when')}) holds your work "
                    f"({what}). It is kept, unchanged, at {note['path']}. To open it, choose “Another workspace file” "
                    "above and paste that path; choose “Embedded default” to come back. This notice goes once that file is "
                    "moved or deleted."
                )
            )
        # Then its latents are explained and scored offline by a detached background job (see README, issue 4).
        with core_errors("The default workspace's explanations job", stop=False):
            default_job_panel(DEFAULT_WORKSPACE)


def render_overview(workspace: Path, summary: dict) -> None:
    """What a workspace holds: model, corpus slice, dictionaries, unfinished runs, who produced its explanations and scores."""
    corpus = summary["corpus"] or {}
    dicts = summary["dictionaries"]
    ready = [d for d in dicts if d["status"] == "ready"]
    st.caption(f"{code(workspace)} · schema v{summary['schema_version']}")
    cols = st.columns(4)
    cols[0].metric("model", literal(str((summary["model"] or {}).get("name", "unknown"))))
    cols[1].metric("cached tokens", f"{corpus.get('n_tokens', 0):,}")
    cols[2].metric("dictionaries ready", f"{len(ready)} / {len(dicts)}")
    cols[3].metric("stored activations", f"{sum(d['n_activations'] or 0 for d in ready):,}")
    for run in summary["runs"]:
        if run["status"] != "finished":
            st.warning(
                f"Cache run {run['run_id']} is unfinished ({run['committed_chunks']} / {run['n_chunks']} chunks); "
                "rerun its `python -m core cache` command to resume it."
            )
    if dicts:
        table = pd.DataFrame(dicts)[["id", "kind", "layer", "d_sae", "status", "n_activations", "file_bytes", "source"]]
        table["MB"] = (table.pop("file_bytes").fillna(0) / 1e6).round(1)
        show_table(table)
    st.markdown("**Explanations and scores: who produced them**")
    explained, scored = store.explain_score_summary(workspace)
    if explained.empty:
        st.info("No explanations are stored in this workspace yet.")
        return
    show_table(explained, key="explainers")  # one above the other: side by side, their last columns were cut off
    show_table(scored, key="scorers")
    st.caption(
        "Rows marked “baseline explainer” / “of a baseline” (or with a baseline kind) are baselines: a baseline "
        "explainer, a random other latent's explanation or a random latent."
    )


workspace = current_workspace()
if workspace_ok:
    try:
        store.check_workspace(workspace, timeout=PROBE_TIMEOUT_S)  # locked or damaged: says so at once
        render_overview(workspace, store.workspace_summary(workspace))
    except (store.WorkspaceLockedError, store.WorkspaceDamagedError) as exc:
        show_error(exc)
        st.stop()
    except store.WorkspaceOutdatedError as exc:
        st.warning(literal(str(exc)))
        if st.button("Upgrade this workspace now (adds the new tables; nothing stored changes)"):
            with core_errors("Upgrading the workspace"), st.spinner("Upgrading…"):
                store.migrate(workspace)
            st.rerun()
    except CORE_ERRORS as exc:
        show_error(exc, f"Reading workspace {workspace}")

# ---------------------------------------------------------------------------------------------
# Model set and LLM
st.subheader("Model set and LLM")
left, right = st.columns(2)
built_from = workspace_model_name(workspace)
if "model_set_choice" not in st.session_state:
    st.session_state["model_set_choice"] = model_set()
chosen = left.selectbox(
    "Model set (for live tracing)",
    list(MODEL_NAMES),
    key="model_set_choice",
    format_func={
        "default": "default: embedded tiny GPT-2 and its dictionaries",
        "gpt2": "gpt2: GPT-2 small + SAE-Lens releases (needs the hub or its cache)",
    }.get,
)
set_model_set(chosen)
if built_from in MODEL_NAMES and chosen != built_from:
    left.warning(
        f"This workspace was built from model {literal(repr(built_from))}; its latents belong to that model's dictionaries."
    )

if "llm_model_input" not in st.session_state:
    st.session_state["llm_model_input"] = llm_model() or ""
typed_llm = right.text_input(
    "LLM for explanations and scoring (a litellm model id)",
    key="llm_model_input",
    placeholder="e.g. openai/gpt-4o-mini",
)
set_llm_model(typed_llm)
right.caption(
    "API keys are read from the environment (for example OPENAI_API_KEY) when a job runs; they are never stored."
)
if llm_model() is None:
    right.info("No LLM set: the offline baseline explainer and judges are used; an LLM explainer or scorer needs one.")
else:
    from core.llm.client import LLMConfigError, check_credentials

    try:
        check_credentials(llm_model())
        right.success(f"{literal(llm_model())}: its credentials are in the environment.")
    except LLMConfigError as exc:
        right.error(literal(str(exc)))

# ---------------------------------------------------------------------------------------------
# The embedded default's figures
st.subheader("Model: embedded default")
try:
    overview = default_overview()
except ArtifactError as exc:
    st.error(f"The embedded default is not available: {literal(str(exc))}")
    st.stop()

cfg = overview.model_config
st.write(
    f"GPT-2 architecture, {cfg['n_layers']} layers, d_model {cfg['d_model']}, {cfg['n_heads']} heads, "
    f"d_mlp {cfg['d_mlp']}, context {cfg['n_ctx']} tokens, vocabulary {cfg['d_vocab']} (BPE trained on its corpus). "
    f"Trained by the project on {overview.manifest.get('tokens_seen', 0):,} tokens of Brown Corpus and task text."
)

evaluation = overview.evaluation
if evaluation is None:
    st.warning("No evaluation figures yet: run `python -m core evaluate-default`.")
else:
    cols = st.columns(5)
    cols[0].metric(
        "held-out loss", f"{evaluation['val_loss']:.3f}", help="next-token loss on held-out Brown text, nats per token"
    )
    cols[1].metric("bits per character", f"{evaluation['val_bits_per_char']:.3f}")
    cols[2].metric("IOI accuracy", f"{evaluation['ioi_accuracy']:.3f}")
    cols[3].metric("subject-verb agreement", f"{evaluation['sva_accuracy']:.3f}")
    cols[4].metric("brackets accuracy", f"{evaluation['bracket_accuracy']:.3f}")
    st.caption("Accuracies on held-out names, nouns and templates: the correct token has the higher logit of the pair.")
    st.markdown("**Dictionaries of the embedded default**")
    show_dictionary_metrics(pd.DataFrame(evaluation["dictionaries"]))

if overview.learning_curves_png is not None:
    # the build's drawing: a plotly chart here cost the browser a few CPU seconds on every start of this page
    st.subheader("Learning curves")
    st.image(str(overview.learning_curves_png))
    st.caption(
        "Held-out accuracy of each task (dashed: training items; dotted: agreement after verbs kept out of "
        "training) and held-out Brown loss, against training tokens; the grey line marks 0.9."
    )
elif overview.learning_curves:
    import plotly.express as px

    st.subheader("Learning curves")
    curves = pd.DataFrame(overview.learning_curves)
    acc = curves.melt(
        id_vars=["tokens"],
        value_vars=[c for c in curves if c.endswith(("_accuracy", "_validation_verbs"))],
        var_name="task",
        value_name="accuracy",
    )
    st.plotly_chart(px.line(acc, x="tokens", y="accuracy", color="task", markers=True), width="stretch")

ui.boot.start_circuit_imports()  # this page is drawn: import the Circuits page's tracing engine meanwhile (ui/boot.py)
