"""Scores: score distributions by sampling strategy per scorer (baselines overlaid), latents vs the other units scored
(neurons, top-k neurons, random latents), and scorer agreement."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui.boot  # (first: the engine's modules, imported once; see ui/boot.py)
from core.analysis import figures
from ui.analysis_charts import distributions_svg, interactive_charts, show_chart, spearman_svg, units_svg
from ui.analysis_view import missing, stored_results, workspace_or_stop
from ui.delphi_metrics_view import conventions_section
from ui.state import current_workspace, default_job_notice, has_stored_analyses, home_label
from ui.text import literal

st.set_page_config(page_title="Scores · SAE Circuit Explorer", layout="wide")
st.title("Scores")
home_label()
default_job_notice(current_workspace(), "score charts", missing=not current_workspace().exists())
ws = workspace_or_stop()
default_job_notice(ws, "score charts", missing=not has_stored_analyses(ws))
results = stored_results(ws)
interactive = interactive_charts()


def contrast_table(contrasts, label, p_name: str) -> None:
    """One row per contrast: scorer, what is compared, the mean difference with its 95% CI and the test's p-value."""
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "scorer": c.scorer,
                    "contrast": label(c),
                    "n": c.n,
                    "mean difference": c.mean_difference,
                    "95% CI low": c.ci_low,
                    "95% CI high": c.ci_high,
                    p_name: c.p_value,
                }
                for c in contrasts
            ]
        ),
        hide_index=True,
    )


st.subheader("Score distributions by sampling strategy")
if "distributions" in results:
    dist = results["distributions"].result
    show_chart(
        lambda: distributions_svg(dist),
        "Score distributions by sampling strategy: per scorer, a box per strategy and baseline (values in the table below)",
        lambda: figures.distributions_figure(dist),
        interactive,
    )
    st.caption(
        "Baselines (grey): a random explanation is another latent's explanation scored on this latent; "
        "a random latent is a random direction explained and scored like a real one."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "scorer": g.scorer,
                    "group": figures.group_label(g.group),
                    "n": g.n,
                    "mean": g.mean,
                    "95% CI low": g.ci_low,
                    "95% CI high": g.ci_high,
                    "median": g.median,
                    "q25": g.q25,
                    "q75": g.q75,
                }
                for g in dist.groups
            ]
        ),
        hide_index=True,
    )
    if dist.contrasts:
        st.markdown("**Paired over latents explained both ways** (same explainer)")
        contrast_table(dist.contrasts, lambda c: f"{c.group} − {c.reference}", "Wilcoxon p")
else:
    missing("distributions", "score distributions", ws)

if "units" in results:
    units = results["units"].result
    st.subheader(figures.units_heading(units))  # names only the kinds of unit that were scored
    show_chart(
        lambda: units_svg(units, figures.units_heading(units)),
        f"{figures.units_heading(units)}: mean score per scorer with 95% CI",
        lambda: figures.units_figure(units),
        interactive,
    )
    st.caption(f"{literal(repr(units.strategy))} explanations of each kind of unit.")
    contrast_table(units.contrasts, lambda c: f"latents − {c.reference}", "Mann-Whitney p")
else:
    st.subheader("Latents vs other units")
    missing("units", "latents-vs-neurons comparison", ws)

st.subheader("Scorer agreement")
if "spearman" in results:
    m = results["spearman"].result
    show_chart(
        lambda: spearman_svg(m),
        "Spearman rho between scorers, each cell with its 95% CI and n",
        lambda: figures.spearman_figure(m),
        interactive,
        max_width=720,
    )
else:
    missing("spearman", "Spearman matrix", ws)

conventions_section(ws)

ui.boot.start_circuit_imports()  # this page is drawn: import the Circuits page's tracing engine meanwhile (ui/boot.py)
