"""Latents: find a latent by dictionary and id, by token or by meaning, and read its card.

A link `?dictionary=ID&latent=N` opens that latent; a value that names no dictionary or is not a latent
id of it (`-5`, `abc`, `1e3`, a Unicode digit such as `²`) gets a notice naming it and what is shown instead.
"""

from __future__ import annotations

import re

import streamlit as st

import ui.boot  # (first: the engine's modules, imported once; see ui/boot.py)
from core import store
from core.latents.cards import find_latents_by_token, latent_card
from core.latents.search import index_explanations, search_explanations, unindexed_explanations
from core.subjects.models import MODEL_NAMES
from ui.explanations import render_explain_now, render_explanations
from ui.latent_card import render_examples, render_own_text, render_plots, render_stats, render_tokens
from ui.progress import progress_bar
from ui.state import core_errors, default_job_notice, llm_model, open_workspace_or_stop, workspace_model_name
from ui.text import code, literal

TOKEN_ID_LIMIT = 2**31  # token ids are stored as INT32: a larger `#id` names no token


def parse_index(value: str, limit: int = 2**53) -> int | None:
    """`value` as an integer in [0, limit) if it is plain ASCII digits ('42'), else None ('-5', '1e3', '²', '')."""
    if len(value) > 20 or not re.fullmatch(r"[0-9]+", value):  # int() of thousands of digits raises
        return None
    index = int(value)
    return index if index < limit else None


st.set_page_config(page_title="Latents · SAE Circuit Explorer", layout="wide")
st.title("Latents")
workspace = open_workspace_or_stop()
st.caption(f"Workspace: {code(workspace)}")
default_job_notice(workspace, "latents", missing=not workspace.exists())  # the app builds it: its progress

with core_errors("Opening the workspace"):
    dictionaries = store.list_dictionaries(workspace, ready_only=True)
if not dictionaries:
    default_job_notice(workspace, "latents")
    st.warning(
        "This workspace has no cached dictionaries yet: run `python -m core cache ...` or choose another workspace on the home page."
    )
    st.stop()
by_id = {d.id: d for d in dictionaries}

# A link such as ?dictionary=resid:blocks.1.hook_resid_pre&latent=42 opens that latent (other pages link here).
# Read once per session (the widgets keep the choice after that); a bad value is named in a notice below.
params = st.query_params
url_problems: list[str] = []
if "lat_dict" not in st.session_state:
    asked = params.get("dictionary")
    st.session_state["lat_dict"] = asked if asked in by_id else dictionaries[0].id
    if asked is not None and asked not in by_id:
        url_problems.append(f"dictionary {literal(repr(asked))} is not in this workspace")
if "lat_id" not in st.session_state and "latent" in params:
    asked = params.get("latent", "")
    index = parse_index(asked)
    d_sae = by_id[st.session_state["lat_dict"]].d_sae
    if index is not None and index < d_sae:
        st.session_state["lat_id"] = index
    else:
        url_problems.append(
            f"latent {literal(repr(asked))} is not a latent of {literal(st.session_state['lat_dict'])} "
            f"(a whole number 0 – {d_sae - 1})"
        )

mode = st.radio("Find latents", ["by dictionary and id", "by token", "by meaning"], horizontal=True, key="lat_mode")
selected: tuple[str, int] | None = None

if mode == "by dictionary and id":
    left, right = st.columns([3, 1])
    dictionary = left.selectbox("Dictionary", list(by_id), key="lat_dict")
    d_sae = by_id[dictionary].d_sae
    if "lat_id" not in st.session_state:
        with core_errors("Reading the dictionary's statistics"):
            freq = store.latent_stats_frame(workspace, dictionary)
        live = freq.loc[freq["n_fires"] > 0, "latent"]
        st.session_state["lat_id"] = int(live.iloc[0]) if len(live) else 0
    latent = right.number_input(f"Latent (0 – {d_sae - 1})", min_value=0, step=1, key="lat_id")
    if latent >= d_sae:
        st.error(
            f"latent {latent} is out of range for {literal(dictionary)}: it has {d_sae} latents (0 – {d_sae - 1})."
        )
        st.stop()
    selected = (dictionary, int(latent))

elif mode == "by token":
    left, right = st.columns([3, 2])
    token = left.text_input("Token text (surrounding spaces ignored) or #id", key="lat_token")
    scope = right.selectbox("In dictionary", ["all dictionaries", *by_id], key="lat_token_dict")
    if token.strip():
        token_id = parse_index(token[1:], TOKEN_ID_LIMIT) if token.startswith("#") else None
        query: str | int = token if token_id is None else token_id
        with core_errors("Searching by token"):
            matches = find_latents_by_token(workspace, query, None if scope == "all dictionaries" else scope)
        if not matches:
            st.info(f"No latent has its highest activations on {literal(repr(token))}.")
            st.stop()
        st.dataframe(
            [
                {
                    "dictionary": m.dictionary,
                    "latent": m.latent,
                    "top activations on it": m.n_top,
                    "frequency": m.frequency,
                    "max activation": m.max_activation,
                }
                for m in matches
            ],
            hide_index=True,
            width="stretch",
        )
        labels = [f"{m.dictionary} #{m.latent} ({m.n_top} top activations)" for m in matches]
        pick = st.selectbox(
            "Show the card of", range(len(matches)), format_func=labels.__getitem__, key="lat_token_pick"
        )
        selected = (matches[pick].dictionary, matches[pick].latent)

else:
    left, right = st.columns([3, 2])
    query = left.text_input("What the latent should mean (searches the explanations)", key="lat_meaning")
    scope = right.selectbox("In dictionary", ["all dictionaries", *by_id], key="lat_meaning_dict")
    with core_errors("Reading the explanations"):
        unindexed = len(unindexed_explanations(workspace))
        explained = not store.explain_score_summary(workspace)[0].empty
    if not explained:
        default_job_notice(workspace, "explanations")
        st.info(
            "No explanations are stored in this workspace yet: explain latents first "
            "(“Explain now” under a latent's card, or `python -m core explain --workspace ...`)."
        )
        st.stop()
    if unindexed:
        st.info(
            f"{unindexed:,} explanations are not indexed for search yet (MiniLM sentence embeddings, stored in the workspace)."
        )
        if st.button("Index them now", key="lat_index"):
            with st.status("Indexing explanations…", expanded=True) as status:
                with core_errors("Indexing explanations"):
                    index_explanations(workspace, progress=progress_bar("embedding"))
                status.update(label="Indexed", state="complete", expanded=False)
            st.rerun()
    if query.strip():
        with core_errors("Searching by meaning"):
            found = search_explanations(
                workspace, query, k=20, dictionary=None if scope == "all dictionaries" else scope
            )
        if not found:
            st.info("No indexed explanation matches in this dictionary.")
            st.stop()
        st.dataframe(
            [
                {
                    "similarity": round(m.similarity, 3),
                    "dictionary": m.dictionary,
                    "latent": m.latent,
                    "explanation": m.text,
                    "explainer": f"baseline: {m.explainer}" if m.is_baseline else m.explainer,
                }
                for m in found
            ],
            hide_index=True,
            width="stretch",
        )
        labels = [f"{m.dictionary} #{m.latent} ({m.similarity:.2f})" for m in found]
        pick = st.selectbox(
            "Show the card of", range(len(found)), format_func=labels.__getitem__, key="lat_meaning_pick"
        )
        selected = (found[pick].dictionary, found[pick].latent)

if url_problems:
    shown = f"latent {selected[1]} of {literal(selected[0])}" if selected else "the search above"
    st.warning(f"The link's {' and '.join(url_problems)}; showing {shown} instead.")
if selected is None:
    st.stop()

dictionary, latent = selected
st.query_params.update({"dictionary": dictionary, "latent": str(latent)})
with core_errors(f"Loading latent {latent} of {dictionary}"):
    card = latent_card(workspace, dictionary, latent)
    freq = store.latent_stats_frame(workspace, dictionary)

st.header(f"{literal(dictionary)} · latent {latent}")
rec = by_id[dictionary]
st.caption(
    f"{literal(rec.kind)} · layer {rec.layer} · {code(rec.hook_in)} → {code(rec.hook_out)} · "
    f"{rec.d_sae:,} latents · source {literal(rec.source or 'embedded')}"
)
render_stats(card)
if card.stats.n_fires == 0:
    st.warning("This latent never fires on the cached tokens (dead or very rare): no examples to show.")

st.subheader("Explanations and scores")
with core_errors("Reading the latent's explanations"):
    explanations = store.explanations_for_latent(workspace, dictionary, latent)
    scores = store.scores_for_explanations(workspace, [e.explanation_id for e in explanations])
render_explanations(explanations, scores)
if render_explain_now(workspace, dictionary, latent, llm_model(), workspace_model_name(workspace) in MODEL_NAMES):
    st.rerun()

render_examples(card)
render_own_text(card, workspace_model_name(workspace))
render_plots(card, freq["frequency"].to_numpy())
render_tokens(card)

ui.boot.start_circuit_imports()  # this page is drawn: import the Circuits page's tracing engine meanwhile (ui/boot.py)
