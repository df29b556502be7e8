"""Overlap: layer x layer Hungarian overlap per dictionary kind (diagonal blank, chance level marked), and matched
latents of two layers side by side, each linked to its card on the Latents page."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

import ui.boot  # (first: the engine's modules, imported once; see ui/boot.py)
from core import store
from core.analysis import figures, overlap
from core.errors import UserError
from ui.analysis_charts import interactive_charts, overlap_svg, show_chart, similarity_histogram_svg
from ui.analysis_view import engine_error, workspace_or_stop
from ui.progress import progress_bar
from ui.state import CORE_ERRORS, core_errors, current_workspace, default_job_notice, home_label, workspace_model_name
from ui.text import code, literal

st.set_page_config(page_title="Overlap · SAE Circuit Explorer", layout="wide")
st.title("Layer overlap")
st.caption(
    "Latents of two dictionaries of one kind, paired one to one by the Hungarian algorithm to maximise total "
    "cosine similarity (of decoder directions, or of their explanations' MiniLM embeddings)."
)
home_label()
default_job_notice(current_workspace(), "layer overlap", missing=not current_workspace().exists())
ws = workspace_or_stop()

try:
    records = store.read_overlaps(ws)
except UserError as exc:
    engine_error(exc, ws)


KINDS = ("resid", "attn", "transcoder")
LATENT_IN_LINK = r"latent=(\d+)$"  # LinkColumn shows this capture group: the latent's index


def latent_link(dictionary: str, latent: int) -> str:
    """A link to one latent's card on the Latents page, relative to this page (so any base URL path works)."""
    return f"Latents?{urlencode({'dictionary': dictionary, 'latent': latent})}"


def compute_overlap() -> None:
    with st.status("Matching every pair of layers…", expanded=True) as status:
        progress = progress_bar("Matching layers")
        dicts = None
        try:
            dicts = overlap.workspace_dictionaries(ws, workspace_model_name(ws), KINDS)
        except CORE_ERRORS as exc:
            st.write(f"Decoder overlap skipped: {literal(str(exc))}")
        run = overlap.overlap_workspace(ws, dicts, kinds=KINDS, progress=progress)
        for note in run.notes:
            st.write(literal(note))
        status.update(label=f"{len(run.computed)} pairs matched and stored", state="complete")


if not records:
    default_job_notice(ws, "layer overlap")
    st.info(f"No overlap stored for this workspace. Run {code(f'python -m core overlap --workspace {ws}')} or:")
    if st.button("Compute overlap now"):
        with core_errors("Computing overlap"):
            compute_overlap()
        st.rerun()
    st.stop()

interactive = interactive_charts()
similarities = sorted({r.similarity for r in records}, key=overlap.SIMILARITIES.index)
c1, c2 = st.columns(2)
similarity = c1.radio(
    "Similarity",
    similarities,
    horizontal=True,
    format_func=lambda s: {"decoder": "decoder directions", "explanation": "explanations"}[s],
)
score = c2.radio(
    "Score",
    ["mean_similarity", "frobenius"],
    horizontal=True,
    format_func=lambda s: {"mean_similarity": "mean matched cosine", "frobenius": "Frobenius form"}[s],
)
chosen = [r for r in records if r.similarity == similarity]
kinds = [k for k in overlap.OVERLAP_KINDS if any(r.kind == k for r in chosen)]


cols = st.columns(max(len(kinds), 1))
for col, kind in zip(cols, kinds, strict=False):
    layers, mat = overlap.layer_matrix(chosen, kind, similarity, score)
    mark = overlap.chance_level(chosen, kind, similarity) if score == "mean_similarity" else None
    show_chart(
        lambda layers=layers, mat=mat, kind=kind, mark=mark: overlap_svg(layers, mat, kind, chance=mark),
        f"{kind}: overlap of every pair of layers, diagonal blank",
        lambda layers=layers, mat=mat, kind=kind, mark=mark: figures.overlap_heatmap(layers, mat, kind, chance=mark),
        interactive,
        col,
    )
st.caption(
    "The diagonal (a layer with itself, 1 by definition) is left blank; colours span the other cells, "
    "so differences between neighbouring layers show."
)
chance = sorted({r.params["chance"] for r in chosen if r.params.get("chance") is not None})
if chance:
    st.caption(
        "Chance level: two dictionaries of random directions of the same shape match at "
        + " / ".join(f"{c:.3f}" for c in chance)
        + " mean cosine (many latents in few dimensions always find close partners)"
        + ("; marked on the colour bars." if score == "mean_similarity" else "; it applies to the mean matched cosine.")
    )
elif similarity == "explanation":
    st.caption("No chance level for explanation overlap: explanations are not random directions.")
if similarity == "explanation" and chosen:
    p = chosen[0].params
    st.caption(
        f"Explanations by {literal(str(p.get('explainer')))} ({literal(str(p.get('strategy')))} sampling), "
        f"embedded with {literal(str(p.get('embedding_model')))}; "
        "only explained latents take part."
    )

st.subheader("Matched latents")
k1, k2, k3, k4 = st.columns(4)
kind = k1.selectbox("Kind", kinds)
pairs_of_kind = [r for r in chosen if r.kind == kind]
layer_pairs = [(r.layer_a, r.layer_b) for r in pairs_of_kind]
la = k2.selectbox("Layer A", sorted({a for a, _ in layer_pairs}))
lb = k3.selectbox("Layer B", sorted({b for a, b in layer_pairs if a == la}))
order = k4.radio("Order", ["most similar first", "least similar first"])
rec = next(r for r in pairs_of_kind if (r.layer_a, r.layer_b) == (la, lb))
st.caption(
    f"{literal(rec.dict_a)} ~ {literal(rec.dict_b)}: {rec.n_matched} pairs, mean cosine {rec.mean_similarity:.3f}, "
    f"Frobenius {rec.frobenius:.3f} ({literal(rec.method)} matching)."
)
with core_errors("Loading matched pairs"):
    pairs_hist = store.read_overlap_pairs(ws, rec.overlap_id)
    similarity_values = pairs_hist["similarity"].to_numpy()
    show_chart(
        lambda: similarity_histogram_svg(similarity_values, "similarity of matched pairs"),
        f"similarity of the {len(similarity_values):,} matched pairs",
        lambda: figures.pair_similarity_histogram(similarity_values, "similarity of matched pairs"),
        interactive,
        max_width=720,
    )
    per_page = 50
    page = st.number_input("Page", min_value=1, max_value=max(1, -(-rec.n_matched // per_page)), value=1)
    table = overlap.pairs_with_explanations(ws, rec, per_page, (page - 1) * per_page, order == "most similar first")
# Each latent links to its card on the Latents page (which reads ?dictionary=ID&latent=N); the cell shows N.
table["latent_a"] = [latent_link(rec.dict_a, int(x)) for x in table["latent_a"]]
table["latent_b"] = [latent_link(rec.dict_b, int(x)) for x in table["latent_b"]]
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "latent_a": st.column_config.LinkColumn(f"latent (L{la})", display_text=LATENT_IN_LINK),
        "explanation_a": f"explanation (L{la})",
        "latent_b": st.column_config.LinkColumn(f"latent (L{lb})", display_text=LATENT_IN_LINK),
        "explanation_b": f"explanation (L{lb})",
    },
)
st.caption("Click a latent to open its card on the Latents page (in a new tab).")

ui.boot.start_circuit_imports()  # this page is drawn: import the Circuits page's tracing engine meanwhile (ui/boot.py)
