"""Deciles: accuracy per activation decile (and on non-activating examples) per sampling strategy and scorer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui.boot  # (first: the engine's modules, imported once; see ui/boot.py)
from core.analysis import figures
from ui.analysis_charts import decile_svg, interactive_charts, show_chart
from ui.analysis_view import missing, stored_results, workspace_or_stop
from ui.state import current_workspace, default_job_notice, has_stored_analyses, home_label
from ui.text import literal

st.set_page_config(page_title="Deciles · SAE Circuit Explorer", layout="wide")
st.title("Deciles")
st.caption(
    "How well an explanation lets a scorer recognise a latent's examples at each activation decile "
    "(10 = strongest activations), and reject non-activating examples."
)
home_label()
default_job_notice(current_workspace(), "decile charts", missing=not current_workspace().exists())
ws = workspace_or_stop()
default_job_notice(ws, "decile charts", missing=not has_stored_analyses(ws))
results = stored_results(ws)
interactive = interactive_charts()
if "deciles" not in results:
    missing("deciles", "decile curves", ws)
    st.stop()

deciles = results["deciles"].result
scorers = list(dict.fromkeys(c.scorer for c in deciles.curves))
if not scorers:
    st.info("No yes/no scorer has per-example results here (decile accuracy needs detection or fuzzing).")
    st.stop()
scorer = st.selectbox("Scorer", scorers)
show_chart(
    lambda: decile_svg(deciles, scorer),
    f"{scorer}: accuracy per activation decile, one line per sampling strategy (values in the table below)",
    lambda: figures.decile_figure(deciles, scorer),
    interactive,
)
rows = [c for c in deciles.curves if c.scorer == scorer]
st.dataframe(
    pd.DataFrame(
        [[figures.group_label(c.group)] + c.accuracy for c in rows], columns=["group"] + figures.DECILE_LABELS
    ),
    hide_index=True,
)
st.caption(
    "Examples per decile: " + literal("; ".join(f"{figures.group_label(c.group)} {sum(c.n_examples)}" for c in rows))
)
if any(sum(c.n_mismarked) for c in rows):  # fuzzing: its wrongly marked windows are not in the deciles
    rejected = [(c, [v for v in c.mismarked_rejection if v == v]) for c in rows]  # v == v drops NaN
    st.caption(
        "Deciles 1-10 count only the windows marked correctly (recall). Windows shown with wrong marks, share rejected: "
        + literal("; ".join(f"{figures.group_label(c.group)} {sum(v) / len(v):.2f}" for c, v in rejected if v))
    )
if deciles.skipped_scorers:
    st.caption(
        f"Not shown (continuous predictions, no yes/no accuracy): {literal(', '.join(deciles.skipped_scorers))}."
    )

ui.boot.start_circuit_imports()  # this page is drawn: import the Circuits page's tracing engine meanwhile (ui/boot.py)
