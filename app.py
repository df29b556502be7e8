"""SAE Circuit Explorer: landing page. Shows the embedded default model, its dictionaries and their figures."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.models import ArtifactError
from core.overview import default_overview

st.set_page_config(page_title="SAE Circuit Explorer", layout="wide")
st.title("SAE Circuit Explorer")
st.caption("Browse SAE and transcoder latents, their explanations and scores, and trace sparse circuits.")

try:
    overview = default_overview()
except ArtifactError as exc:
    st.error(f"The embedded default is not available: {exc}")
    st.stop()

cfg = overview.model_config
st.subheader("Model: embedded default")
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
    cols[0].metric("held-out Brown loss (nats/token)", f"{evaluation['val_loss']:.3f}")
    cols[1].metric("bits per character", f"{evaluation['val_bits_per_char']:.3f}")
    cols[2].metric("IOI accuracy", f"{evaluation['ioi_accuracy']:.3f}")
    cols[3].metric("subject-verb agreement", f"{evaluation['sva_accuracy']:.3f}")
    cols[4].metric("brackets accuracy", f"{evaluation['bracket_accuracy']:.3f}")
    st.caption("Accuracies on held-out names, nouns and templates: the correct token has the higher logit of the pair.")
    st.subheader("Dictionaries")
    st.dataframe(pd.DataFrame(evaluation["dictionaries"]), hide_index=True, use_container_width=True)

if overview.learning_curves:
    st.subheader("Learning curves")
    curves = pd.DataFrame(overview.learning_curves)
    acc = curves.melt(id_vars=["tokens"], value_vars=[c for c in curves if c.endswith("_accuracy")], var_name="task", value_name="accuracy")
    st.plotly_chart(px.line(acc, x="tokens", y="accuracy", color="task", markers=True), use_container_width=True)
