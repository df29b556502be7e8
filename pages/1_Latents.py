"""Latents: find a latent by dictionary and id, by token or by meaning, and read its card."""

from __future__ import annotations

import streamlit as st

from core import store
from core.latents import find_latents_by_token, latent_card
from core.models import MODEL_NAMES
from core.search import index_explanations, search_explanations, unindexed_explanations
from ui.explanations import progress_bar, render_explain_now, render_explanations
from ui.latent_card import render_examples, render_plots, render_stats, render_tokens
from ui.state import core_errors, current_workspace, llm_model, workspace_model_name

st.set_page_config(page_title="Latents · SAE Circuit Explorer", layout="wide")
st.title("Latents")
workspace = current_workspace()
st.caption(f"Workspace: `{workspace}`")

with core_errors("Opening the workspace"):
    dictionaries = store.list_dictionaries(workspace, ready_only=True)
if not dictionaries:
    st.warning(
        "This workspace has no cached dictionaries yet: run `python -m core cache ...` or choose another workspace on the home page."
    )
    st.stop()
by_id = {d.id: d for d in dictionaries}

# A link such as ?dictionary=resid:blocks.1.hook_resid_pre&latent=42 opens that latent (other pages link here).
params = st.query_params
if "lat_dict" not in st.session_state:
    st.session_state["lat_dict"] = params.get("dictionary") if params.get("dictionary") in by_id else dictionaries[0].id
if "lat_id" not in st.session_state and str(params.get("latent", "")).isdigit():
    st.session_state["lat_id"] = int(params["latent"])

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
        st.error(f"latent {latent} is out of range for {dictionary}: it has {d_sae} latents (0 – {d_sae - 1}).")
        st.stop()
    selected = (dictionary, int(latent))

elif mode == "by token":
    left, right = st.columns([3, 2])
    token = left.text_input("Token text (surrounding spaces ignored) or #id", key="lat_token")
    scope = right.selectbox("In dictionary", ["all dictionaries", *by_id], key="lat_token_dict")
    if token.strip():
        query: str | int = int(token[1:]) if token.startswith("#") and token[1:].isdigit() else token
        with core_errors("Searching by token"):
            matches = find_latents_by_token(workspace, query, None if scope == "all dictionaries" else scope)
        if not matches:
            st.info(f"No latent has its highest activations on {token!r}.")
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

if selected is None:
    st.stop()

dictionary, latent = selected
st.query_params.update({"dictionary": dictionary, "latent": str(latent)})
with core_errors(f"Loading latent {latent} of {dictionary}"):
    card = latent_card(workspace, dictionary, latent)
    freq = store.latent_stats_frame(workspace, dictionary)

st.header(f"{dictionary} · latent {latent}")
rec = by_id[dictionary]
st.caption(
    f"{rec.kind} · layer {rec.layer} · `{rec.hook_in}` → `{rec.hook_out}` · {rec.d_sae:,} latents · source {rec.source or 'embedded'}"
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
render_plots(card, freq["frequency"].to_numpy())
render_tokens(card)
