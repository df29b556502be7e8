"""The home page (app.py), driven by Streamlit's AppTest: workspace choice and overview, LLM setting,
the embedded default's figures, building a missing default workspace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hostile_text import shown
from streamlit.testing.v1 import AppTest

from core import store
from core.paths import DEFAULT_DIR

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _home(workspace: Path | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if workspace is not None:
        at.session_state["workspace"] = str(workspace)
    return at.run()


def test_home_shows_the_workspace_and_the_default_figures(app_workspace):
    at = _home(app_workspace)
    assert not at.exception and not at.error
    summary = store.workspace_summary(app_workspace)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["model"] == "tiny-test"
    assert metrics["cached tokens"] == f"{summary['corpus']['n_tokens']:,}"
    assert metrics["dictionaries ready"] == f"{len(summary['dictionaries'])} / {len(summary['dictionaries'])}"
    assert metrics["stored activations"] == f"{sum(d['n_activations'] for d in summary['dictionaries']):,}"
    tables = [df.value for df in at.dataframe]
    ws_table = next(t for t in tables if "status" in t)
    assert sorted(ws_table["dictionary"]) == sorted(d["id"] for d in summary["dictionaries"])

    evaluation = json.loads((DEFAULT_DIR / "evaluation.json").read_text())
    assert metrics["IOI accuracy"] == f"{evaluation['ioi_accuracy']:.3f}"
    assert metrics["brackets accuracy"] == f"{evaluation['bracket_accuracy']:.3f}"
    default_table = next(t for t in tables if "status" not in t)
    assert len(default_table) == len(evaluation["dictionaries"])
    assert "transcoder:blocks.0.ln2.hook_normalized" in set(default_table["dictionary"])
    assert list(default_table["CE loss recovered"]) == [d["ce_loss_recovered"] for d in evaluation["dictionaries"]]
    # columns equal on every row, and the hooks already in each id, are told once below: the table fits the page
    assert "hook" not in default_table and "hook in" not in default_table and "tokens" not in default_table
    n_tokens = evaluation["dictionaries"][0]["n_tokens"]
    assert f"{n_tokens:,} tokens evaluated" in " ".join(c.value for c in at.caption)
    for table in tables:  # readable headers, every row shown (no scroll box)
        assert not [c for c in table.columns if "_" in str(c)], list(table.columns)
    # the learning curves are the build's drawing, not a plotly chart (whose bundle the browser would load)
    assert not at.get("plotly_chart")
    assert [h for h in at.subheader if h.value == "Learning curves"] and at.get("image")


def test_choosing_a_workspace_checks_the_path(app_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_EXPLORER_WORKSPACE_DIRS", f"{tmp_path}:{app_workspace.parent}")  # the box opens only these
    at = _home(app_workspace)
    assert at.radio[0].value == "Another workspace file"  # starts from the session's workspace
    assert at.text_input(key="ws_path").value == str(app_workspace)

    at.text_input(key="ws_path").set_value(str(tmp_path / "missing.duckdb")).run()
    assert any("does not exist" in e.value for e in at.error)
    assert at.session_state["workspace"] == str(app_workspace)  # the pages keep the last good one

    (tmp_path / "notes.txt").write_text("x")
    at.text_input(key="ws_path").set_value(str(tmp_path / "notes.txt")).run()
    assert any("is not a .duckdb file" in e.value for e in at.error)

    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"not a database" * 100)
    at.text_input(key="ws_path").set_value(str(bogus)).run()
    assert not at.exception
    assert any("not a readable DuckDB workspace" in e.value or "cannot open workspace" in e.value for e in at.error)

    at.text_input(key="ws_path").set_value(str(app_workspace)).run()
    assert not at.error and at.session_state["workspace"] == str(app_workspace.resolve())


def test_llm_setting_is_shared_and_never_a_key(app_workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-123")
    at = _home(app_workspace)
    assert at.session_state["llm_model"] is None
    at.text_input(key="llm_model_input").set_value("  openai/gpt-4o-mini ").run()
    assert at.session_state["llm_model"] == "openai/gpt-4o-mini"
    assert any("openai/gpt-4o-mini: its credentials are in the environment" in m.value for m in at.success)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    at.text_input(key="llm_model_input").set_value("anthropic/claude-3-5-haiku-latest").run()
    assert any("ANTHROPIC_API_KEY" in e.value for e in at.error)  # names the missing variable
    assert not at.exception
    shown = [e.value for kind in (at.markdown, at.info, at.caption, at.error, at.warning, at.success) for e in kind]
    stored = [str(at.session_state[k]) for k in ("llm_model", "llm_model_input", "workspace", "model_set")]
    assert not any("sk-test-secret-123" in text for text in shown + stored)


def test_missing_default_artifacts_show_the_rebuild_command(app_workspace, tmp_path, monkeypatch):
    monkeypatch.setattr("core.paths.DEFAULT_DIR", tmp_path)
    at = _home(app_workspace)
    assert not at.exception
    assert any("build-default" in e.value for e in at.error)


@pytest.mark.slow
def test_a_missing_default_workspace_is_built_with_progress(tmp_path, monkeypatch):
    """The real build of the default workspace (default model, every dictionary), on few tokens."""
    import functools

    import core.cache.workspace
    from core.cache.plan import CacheParams

    target = tmp_path / "workspace.duckdb"
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", target)
    monkeypatch.setattr(
        "core.cache.workspace.ensure_default_workspace",
        functools.partial(core.cache.workspace.ensure_default_workspace, params=CacheParams(n_tokens=1024, ctx_len=64)),
    )
    from core.autointerp import default_job

    launches: list = []  # the explanations job it then starts: recorded, not run
    monkeypatch.setattr(
        default_job.subprocess, "Popen", lambda argv, **kw: launches.append(argv) or type("P", (), {"pid": 1})()
    )
    at = AppTest.from_file(APP, default_timeout=900).run()
    assert not at.exception and not at.error
    assert core.cache.workspace.default_workspace_ready(target)
    assert at.status[0].proto.label == "Default workspace built"
    assert len(launches) == 1 and "explain-default" in launches[0]
    assert {m.label: m.value for m in at.metric}[
        "cached tokens"
    ] == f"{store.workspace_summary(target)['corpus']['n_tokens']:,}"


def test_home_lists_who_produced_explanations_and_scores(app_workspace, tmp_path):
    from app_workspace import copy_workspace, store_explanations

    workspace = copy_workspace(app_workspace, tmp_path)
    store_explanations(workspace, "resid:blocks.1.hook_resid_pre", 10)
    at = _home(workspace)
    assert not at.exception and not at.error
    explained = next(df.value for df in at.dataframe if "explainer" in df.value)
    assert sorted(zip(explained["explainer"], explained["baseline explainer"], explained["count"], strict=True)) == [
        ("baseline:token-stats", True, 1),
        ("openai/gpt-4o-mini", False, 1),
    ]
    scored = next(df.value for df in at.dataframe if "scorer model" in df.value)
    assert sorted(
        zip(scored["scorer"], scored["scorer model"], scored["of a baseline"], scored["mean value"], strict=True)
    ) == [
        ("detection", "judge:minilm-similarity", True, 0.55),
        ("detection", "openai/gpt-4o-mini", False, 0.8125),
        ("embedding", "embedding:all-MiniLM-L6-v2", False, 0.6),
    ]


def test_an_older_workspace_can_be_upgraded_from_the_page(app_workspace, tmp_path):
    """A workspace with schema v1 (made by older code): the page says so and its button applies the migrations."""
    from app_workspace import copy_workspace

    workspace = copy_workspace(app_workspace, tmp_path)
    newer = [m for m in store.MIGRATIONS if m.version > 1]
    tables = [t for m in newer for stmt in m.statements for t in re.findall(r"CREATE TABLE (\w+)", stmt)]
    with store.session(workspace, write=True) as con:  # roll the file back to v1: drop every newer table
        for name in tables:
            con.execute(f"DROP TABLE {name}")
        con.execute("DELETE FROM schema_migrations WHERE version > 1")
    at = _home(workspace)
    assert not at.exception
    assert any("has schema v1" in w.value for w in at.warning)
    at.button[0].click().run()
    assert not at.exception and not at.warning
    assert store.workspace_summary(workspace)["schema_version"] == store.SCHEMA_VERSION


def _default_home(workspace: Path, monkeypatch, ready: bool = False) -> tuple[AppTest, list]:
    """The home page with `workspace` standing in for a built default workspace; returns (page, launches)."""
    import os
    import types

    from core.autointerp import default_job

    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", workspace)
    monkeypatch.setattr("core.cache.workspace.default_workspace_ready", lambda *a, **k: True)
    monkeypatch.setattr(default_job, "default_explanations_ready", lambda *a, **k: ready)
    launches: list = []

    def fake_popen(argv, **kwargs):  # a live pid (this process) without starting anything
        launches.append(argv)
        return types.SimpleNamespace(pid=os.getpid())

    monkeypatch.setattr(default_job.subprocess, "Popen", fake_popen)
    return AppTest.from_file(APP, default_timeout=120).run(), launches


def _progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_home_starts_the_default_explanations_job_once_and_shows_its_progress(app_workspace, tmp_path, monkeypatch):
    from app_workspace import copy_workspace

    from core.autointerp import default_job

    workspace = copy_workspace(app_workspace, tmp_path)
    at, launches = _default_home(workspace, monkeypatch)
    assert not at.exception and not at.error
    assert len(launches) == 1 and launches[0][2:6] == ["core", "explain-default", "--workspace", str(workspace)]
    assert any("in the background" in t for t in _progress_texts(at))

    second = AppTest.from_file(APP, default_timeout=120).run()  # another browser session: no second job
    assert not second.exception and len(launches) == 1

    with default_job._try_lock(workspace):  # the job runs and has done 40 %
        status = default_job.JobStatus(state="running", stage="fast", phase="resid:x: 512 / 1,000", fraction=0.4)
        default_job._write_status(workspace, status)
        at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception and len(launches) == 1
    assert [p.value for p in at.get("progress")] == [40]
    assert "fast stage, resid:x: 512 / 1,000 (40%)" in shown(_progress_texts(at)[0])  # `:x:` is not an emoji


def test_home_shows_a_finished_or_failed_default_job(app_workspace, tmp_path, monkeypatch):
    from app_workspace import copy_workspace

    from core.autointerp import default_job

    workspace = copy_workspace(app_workspace, tmp_path)
    failed = default_job.JobStatus(state="failed", stage="slow", error="RuntimeError: out of memory")
    default_job._write_status(workspace, failed)
    at, launches = _default_home(workspace, monkeypatch)
    assert not at.exception and not launches  # a failed job is not restarted on its own
    message = next(e.value for e in at.error if "failed" in e.value)
    assert "RuntimeError: out of memory" in message and default_job.rerun_command(workspace) in message
    at.button(key="restart_default_job").click().run()
    assert len(launches) == 1 and not at.exception

    at, launches = _default_home(workspace, monkeypatch, ready=True)
    assert not at.exception and not launches and not at.get("progress")
    assert any("scored detection, fuzzing, simulation" in s.value for s in at.success)
