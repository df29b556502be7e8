"""Render a latent's stored explanations with every score and who produced each (baselines labelled).

Explanation texts are model output and may contain anything: they reach HTML only through html.escape.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import streamlit as st

from core.store.explanations import ExplanationRecord, ScoreRecord
from ui.progress import progress_bar
from ui.state import core_errors
from ui.text import literal


def explainer_label(rec: ExplanationRecord) -> str:
    """Who made an explanation, with its baseline kind: e.g. 'openai/gpt-4o-mini', 'baseline: baseline:token-stats',
    'baseline (random explanation, borrowed from another latent)'."""
    if rec.baseline == "random-explanation":
        return f"baseline: random other latent's explanation (by {rec.explainer})"
    if rec.baseline == "random-latent":
        return f"baseline (random latent, by {rec.explainer})"
    return f"baseline: {rec.explainer}" if rec.is_baseline else rec.explainer


def is_baseline(rec: ExplanationRecord) -> bool:
    """True for a baseline explanation: a baseline explainer's, a random other latent's, or one of a random latent."""
    return bool(rec.is_baseline or rec.baseline)


def ordered_explanations(explanations: list[ExplanationRecord]) -> list[ExplanationRecord]:
    """The real explanations first, then the baselines (each group in stored order): the order they are shown and numbered."""
    return [r for r in explanations if not is_baseline(r)] + [r for r in explanations if is_baseline(r)]


def explanation_html(index: int, rec: ExplanationRecord) -> str:
    """One explanation as an escaped HTML block: number, text (or the failure), producer, strategy, prompt version, time.
    A baseline is drawn secondary (smaller, grey, indented) with a BASELINE badge."""
    baseline = is_baseline(rec)
    badge = (
        '<span style="background:#eee; color:#555; border-radius:3px; padding:0 4px; margin-left:6px; font-size:0.8em">BASELINE</span>'
        if baseline
        else ""
    )
    if rec.status == "ok":
        body = f"<span>{html.escape(rec.text or '')}</span>"
    else:
        body = f'<span style="color:#b00">failed: {html.escape(rec.error or "unknown error")}</span>'
    when = f" · {rec.created_at:%Y-%m-%d %H:%M}" if hasattr(rec.created_at, "strftime") else ""
    meta = html.escape(f"by {explainer_label(rec)} · strategy {rec.strategy} · prompt {rec.prompt_version}{when}")
    style = "margin: 2px 0 6px 1.5em; color:#666; font-size:0.9em" if baseline else "margin: 4px 0 8px 0"
    cls = "explanation baseline" if baseline else "explanation"
    return (
        f'<div class="{cls}" style="{style}"><b>#{index}</b>{badge} {body}'
        f'<div style="color:#888; font-size:0.8em">{meta}</div></div>'
    )


def scores_table(explanations: list[ExplanationRecord], scores: list[ScoreRecord]) -> pd.DataFrame:
    """One row per score: explanation number (as listed), scorer, scorer model, value, status, error, examples, prompt version."""
    number = {rec.explanation_id: i for i, rec in enumerate(explanations, start=1)}
    rows = [
        {
            "explanation": f"#{number[s.explanation_id]}",
            "scorer": s.scorer,
            "scorer model": s.scorer_model,
            "value": s.value,
            "status": s.status,
            "error": s.error or "",
            "examples": s.n_examples,
            "prompt": s.prompt_version,
        }
        for s in scores
        if s.explanation_id in number
    ]
    columns = ["explanation", "scorer", "scorer model", "value", "status", "error", "examples", "prompt"]
    return pd.DataFrame(rows, columns=columns).sort_values(["explanation", "scorer"], kind="stable")


def render_explanations(explanations: list[ExplanationRecord], scores: list[ScoreRecord]) -> None:
    """The explanations (escaped HTML), the real ones first and the baselines beneath them as secondary, and a
    table of every score of them (numbered as shown)."""
    if not explanations:
        st.info("No explanations of this latent are stored yet.")
        return
    explanations = ordered_explanations(explanations)
    blocks = [explanation_html(i, rec) for i, rec in enumerate(explanations, start=1)]
    n_real = sum(not is_baseline(r) for r in explanations)
    if n_real < len(explanations):
        blocks.insert(
            n_real,
            '<div class="baselines-head" style="color:#888; font-size:0.8em; margin-top:6px">'
            "Baselines, the floor to compare against:</div>",
        )
    st.html("".join(blocks))
    table = scores_table(explanations, scores)
    if table.empty:
        st.caption("No scores of these explanations yet.")
    else:
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={"value": st.column_config.NumberColumn(format="%.3f")},
        )
        st.caption(
            "value: balanced accuracy (detection, fuzzing), AUROC (surprisal, embedding) or correlation (simulation); "
            "intervention as the scorer defines it. Scores of baseline explanations are the floor to compare against."
        )


def render_explain_now(
    workspace: Path, dictionary: str, latent: int, explainer: str | None, subject_loadable: bool
) -> bool:
    """Controls that explain this latent now with `explainer` (a litellm id, or None: the offline baseline) and
    score it with the chosen scorers, showing progress; the engine saves the results. True if it ran."""
    from core.autointerp.scorers import LLM_SCORERS, OPTIONAL_SCORERS, SCORERS

    # Surprisal and intervention run the workspace's own model; a workspace built from another model can't.
    offered = SCORERS if subject_loadable else tuple(s for s in SCORERS if s not in ("surprisal", "intervention"))
    optional = tuple(OPTIONAL_SCORERS)  # offered, not chosen by default (as on the CLI: `--scorers ...,intruder`)
    with st.expander("Explain now", expanded=False):
        who = literal(explainer) if explainer else literal("the offline baseline explainer (baseline:token-stats)")
        st.caption(
            f"Explainer: {who}. Scorers {', '.join(LLM_SCORERS)} use "
            f"{literal(explainer) if explainer else 'offline judges'}; the others run offline. Set the LLM on the home page."
        )
        if not subject_loadable:
            st.caption(
                "Surprisal and intervention are not offered: they run the workspace's own model, which can't be loaded here."
            )
        left, right = st.columns([3, 1])
        scorers = left.multiselect("Scorers", [*offered, *optional], default=list(offered), key="explain_scorers")
        strategy = right.selectbox("Examples", ["top", "random", "quantile"], key="explain_strategy")
        contrastive = st.checkbox(
            "Contrastive explainer",
            key="explain_contrastive",
            help="Show the explainer near misses too: windows of the latent's typical tokens where it is silent "
            "(offline: the baseline baseline:contrastive-token-stats).",
        )
        if not st.button("Explain and score this latent", key="explain_now", type="primary"):
            return False
        from core.autointerp.engine import explain_and_score_latent

        with st.status(f"Explaining and scoring latent {latent}…", expanded=True) as status:
            with core_errors("Explaining the latent"):
                explain_and_score_latent(
                    workspace,
                    dictionary,
                    latent,
                    explainer_model=explainer,
                    scorers=tuple(scorers),
                    progress=progress_bar("starting"),
                    strategy=strategy,
                    scorer_model=explainer,
                    contrastive=contrastive,
                )
            status.update(label="Explained and scored; saved in the workspace", state="complete", expanded=False)
    return True
