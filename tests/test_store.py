"""The workspace store: migrations, schema checks, locks held by another process, foreign files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import store
from core.store.schema import Migration, WorkspaceError, WorkspaceLockedError

ROOT = Path(__file__).resolve().parent.parent


def test_new_workspace_gets_every_migration(tmp_path):
    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True) as con:
        store.set_info(con, "model", {"name": "x"})
    with store.session(ws) as con:
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == store.SCHEMA_VERSION
        assert store.get_info(con, "model") == {"name": "x"}
        assert store.dictionaries(con) == []


def test_added_migration_is_applied_by_the_next_write(tmp_path, monkeypatch):
    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True) as con:
        store.set_info(con, "k", {"v": 1})
    extra = Migration(store.SCHEMA_VERSION + 1, "extra", ("CREATE TABLE extra_table (latent INTEGER, text VARCHAR)",))
    monkeypatch.setattr(store.schema, "MIGRATIONS", store.MIGRATIONS + (extra,))
    monkeypatch.setattr(store.schema, "SCHEMA_VERSION", extra.version)
    with pytest.raises(WorkspaceError, match="--migrate"):
        with store.session(ws):
            pass
    assert store.migrate(ws) == extra.version
    with store.session(ws) as con:
        assert con.execute("SELECT count(*) FROM extra_table").fetchone()[0] == 0
        assert store.get_info(con, "k") == {"v": 1}  # old content kept


def test_migration_landing_out_of_order_is_still_applied(tmp_path, monkeypatch):
    """Migrations are numbered per feature: a workspace that has v1 and v3 gets v2 when v2 lands later."""
    ws = tmp_path / "w.duckdb"
    base = store.MIGRATIONS
    top = max(m.version for m in base)
    late = Migration(top + 2, "late", ("CREATE TABLE late_table (i INTEGER)",))
    early = Migration(top + 1, "early", ("CREATE TABLE early_table (i INTEGER)",))
    monkeypatch.setattr(store.schema, "MIGRATIONS", base + (late,))
    monkeypatch.setattr(store.schema, "SCHEMA_VERSION", late.version)
    with store.session(ws, write=True) as con:
        store.set_info(con, "k", {"v": 1})
    monkeypatch.setattr(store.schema, "MIGRATIONS", base + (early, late))
    with pytest.raises(store.WorkspaceOutdatedError, match=f"without migration\\(s\\) {early.version};"):
        with store.session(ws):
            pass
    assert store.migrate(ws) == late.version
    with store.session(ws) as con:
        assert con.execute("SELECT count(*) FROM early_table").fetchone()[0] == 0
        applied = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
        assert applied == [m.version for m in base] + [early.version, late.version]


def test_newer_workspace_and_foreign_files_are_refused(tmp_path):
    import duckdb

    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True) as con:
        con.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    with pytest.raises(WorkspaceError, match="newer than this code"):
        with store.session(ws):
            pass
    other = tmp_path / "other.duckdb"
    c = duckdb.connect(str(other))
    c.execute("CREATE TABLE t (i INTEGER)")
    c.close()
    with pytest.raises(WorkspaceError, match="not an SAE Circuit Explorer workspace"):
        with store.session(other, write=True):
            pass
    with pytest.raises(WorkspaceError, match="does not exist"):
        with store.session(tmp_path / "missing.duckdb"):
            pass


def test_write_session_rolls_back_on_error(tmp_path):
    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True) as con:
        store.set_info(con, "a", {"v": 1})
    with pytest.raises(RuntimeError):
        with store.session(ws, write=True) as con:
            store.set_info(con, "a", {"v": 2})
            raise RuntimeError("boom")
    with store.session(ws) as con:
        assert store.get_info(con, "a") == {"v": 1}


def test_lock_held_by_another_process_gives_a_clear_error(tmp_path):
    ws = tmp_path / "w.duckdb"
    with store.session(ws, write=True) as con:
        store.set_info(con, "a", {"v": 1})
    code = (
        "import sys, time; from pathlib import Path; from core import store\n"
        "with store.session(Path(sys.argv[1]), write=True) as con:\n"
        "    print('holding', flush=True); time.sleep(float(sys.argv[2]))\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(ws), "6"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(WorkspaceLockedError, match=f"process {holder.pid}"):
            with store.session(ws, timeout=0.3):
                pass
        t0 = time.monotonic()
        with store.session(ws, timeout=60) as con:  # waits until the holder lets go
            assert store.get_info(con, "a") == {"v": 1}
        assert time.monotonic() - t0 > 0.5
    finally:
        holder.kill()
        holder.wait()
