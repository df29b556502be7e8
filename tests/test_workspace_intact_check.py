"""The cut-short check (store._check_intact) must never call a healthy workspace damaged, whatever
sequence of writes shaped its file: tables grown and dropped (free blocks, a file DuckDB shrinks),
circuits saved and deleted, LLM rows written, each followed by a fresh read as another process sees it."""

from __future__ import annotations

import shutil

import numpy as np

from core import store


def _forget_checks() -> None:
    """Make the next session check the file again, as a fresh process would."""
    store._intact.clear()
    store._checked.clear()


def test_healthy_workspace_is_never_called_damaged_after_many_writes(app_workspace, tmp_path):
    from app_workspace import copy_workspace

    ws = copy_workspace(app_workspace, tmp_path)
    rng = np.random.default_rng(0)
    for i in range(12):
        rows = int(rng.integers(1_000, 200_000))
        with store.session(ws, write=True) as con:
            con.execute(f"CREATE TABLE scratch_{i} AS SELECT range AS a, random() AS b FROM range({rows})")
        _forget_checks()
        with store.session(ws) as con:
            assert con.execute(f"SELECT count(*) FROM scratch_{i}").fetchone()[0] == rows
        if i % 2:
            with store.session(ws, write=True) as con:
                con.execute(f"DROP TABLE scratch_{i - 1}")
                con.execute(f"DROP TABLE scratch_{i}")
            _forget_checks()
        with store.session(ws) as con:
            con.execute("SELECT 1").fetchone()
        with store.session(ws, write=True) as con:
            store.set_info(con, f"stress-{i}", {"blob": "x" * int(rng.integers(10, 300_000))})
        _forget_checks()
        with store.session(ws) as con:
            assert store.get_info(con, f"stress-{i}") is not None
    # and a copy of the final file, opened fresh, reads back everything
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy2(ws, copy / ws.name)
    _forget_checks()
    with store.session(copy / ws.name) as con:
        assert store.get_info(con, "stress-11") is not None
    # the same check still finds the file cut short
    import os

    import pytest

    os.truncate(copy / ws.name, (copy / ws.name).stat().st_size // 2)
    _forget_checks()
    with pytest.raises(store.WorkspaceDamagedError), store.session(copy / ws.name) as con:
        con.execute("SELECT 1")
