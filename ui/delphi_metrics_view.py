"""The Scores page's "ours vs delphi" section: detection's and fuzzing's accuracy under both conventions, each named."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.autointerp import delphi_metrics
from core.errors import UserError
from core.store.analyses import workspace_stamp
from ui.text import literal


@st.cache_data(show_spinner=False, max_entries=16)
def _conventions_table(stamp: tuple):  # -> pandas.DataFrame
    """`delphi_metrics.stored_conventions_table` of the workspace `stamp` (`workspace_stamp`) names: read again only
    once the workspace file changes, so a rerun or a second session pays nothing."""
    return delphi_metrics.stored_conventions_table(Path(stamp[0]))


def conventions_section(ws: Path) -> None:
    """Heading, the table of `delphi_metrics.conventions_table` (as stored) and a caption saying how the two conventions differ."""
    st.subheader("Accuracy conventions: ours vs delphi")
    try:
        table = _conventions_table(workspace_stamp(ws))
    except UserError as exc:
        st.warning(literal(str(exc)))
        return
    if table.empty:
        st.info("No detection or fuzzing scores stored yet.")
        return
    st.dataframe(table, hide_index=True)
    st.caption(
        f"{delphi_metrics.OURS}: each latent's balanced accuracy, averaged; a latent missing a class fails and is left out "
        f"(counted under 'failed (ours)'). {delphi_metrics.POOLED}: every latent's confusion matrix summed, as delphi's "
        "result analysis does, with a missing class counting as a rate of 0; precision, recall, F1 and AUC of the same "
        "pooled matrix. With yes/no predictions the pooled AUC equals the pooled balanced accuracy."
    )
