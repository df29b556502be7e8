"""Home-page panel of the default workspace's background explain/score job (core.autointerp.default_job).

`default_job_panel(workspace)` starts the job when it is due (never twice: the core module checks its
lock and status file) and shows its state: a progress bar refreshed every few seconds while it
runs, a summary when it has finished, the error and the command to rerun it when it failed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import streamlit as st

from core.autointerp import default_job
from core.autointerp.default import STAGES
from ui.text import code, literal

REFRESH_S = 3.0
WHAT = {
    "fast": "detection, fuzzing, simulation (offline judge judge:minilm-similarity) and embedding (all-MiniLM-L6-v2)",
    "slow": "surprisal (the subject model, lm:default) and intervention (steering lm:default; continuations judged "
    "by judge:minilm-similarity)",
}


def _show(workspace: Path, status: default_job.JobStatus) -> None:
    files = default_job.job_files(workspace)
    command = default_job.rerun_command(workspace)
    if status.state in ("starting", "running"):
        stage = f"{status.stage} stage, " if status.stage else ""
        st.progress(
            min(max(status.fraction, 0.0), 1.0),
            text=f"Explaining and scoring every latent in the background: {literal(stage)}{literal(status.phase or 'starting')} "
            f"({status.fraction:.0%}{'; ' + default_job.time_left_text(status) if default_job.time_left_text(status) else ''}). "
            "Every page stays usable; results appear as they are stored.",
        )
        since = dt.datetime.fromtimestamp(status.started).strftime("%H:%M:%S") if status.started else "?"
        st.caption(f"Process {status.pid}, started {since}; its log: {code(files['log'])}.")
    elif status.state == "finished":
        took = ", ".join(f"{k} {v / 60:.0f} min" for k, v in status.seconds.items())
        st.success(
            "Every latent of this workspace is explained by the baseline explainer (baseline:token-stats) and scored "
            + "; ".join(WHAT[s] for s in status.stages if s in WHAT)
            + ", with the random-explanation and random-latent baselines."
            + (f" The job took {took}." if took else "")
        )
    elif status.state in ("failed", "stopped"):
        st.error(
            f"The background job that explains and scores this workspace's latents {status.state}: "
            f"{literal(str(status.error))}\n\n"
            f"Rerun it with {code(command)} (it resumes where it stopped), or press the button below. "
            f"Its log: {code(files['log'])}."
        )
        if st.button("Restart the background job", key="restart_default_job"):
            default_job.start_default_job(workspace, retry=True)
            st.rerun()


def default_job_panel(workspace: Path) -> None:
    """Start the default workspace's explanations job if it is due, and show its progress or outcome."""
    st.markdown("**Default explanations and scores**")
    try:
        status = default_job.start_default_job(workspace, stages=tuple(STAGES))
    except OSError as exc:  # e.g. a read-only data folder: the pages still work without the job
        st.error(
            f"Could not start the background job ({literal(str(exc))}); "
            f"run {code(default_job.rerun_command(workspace))} by hand."
        )
        return
    if status.state not in ("starting", "running"):
        _show(workspace, status)
        return

    @st.fragment(run_every=REFRESH_S)
    def live() -> None:
        now = default_job.job_status(workspace)
        _show(workspace, now)
        if now.state not in ("starting", "running"):
            st.rerun()  # the job ended: redraw the page (its tables now hold the new rows)

    live()
