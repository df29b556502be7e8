"""The app's first start on a data folder without a workspace (AppTest): the shipped seed is copied into place and
every page shows content at once; while the app's background job still fills the default workspace, pages show
its progress, never a command to run; a data folder without write permission opens the seed read-only.

The seed here is a small one of the real embedded default (4k tokens, two residual SAEs and the neuron baselines
of their layers, explained and scored on a sample, with its analyses and overlap), written by
`core.build.seed.write_seed` as the build writes the shipped one.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
from page_charts import chart_count
from streamlit.testing.v1 import AppTest

from core import store
from core.cli import main as core_main

ROOT = Path(__file__).resolve().parent.parent
DICTS = ["resid:blocks.1.hook_resid_pre", "resid:blocks.2.hook_resid_pre"]
UNITS = ["neurons:blocks.1.mlp.hook_post", "neurons_topk32:blocks.1.mlp.hook_post"]  # for the latents-vs-neurons chart
COMMAND_HINTS = ("python -m core", "run `", "Run `")


def run(*argv: str) -> None:
    assert core_main(list(argv)) == 0, argv


def _mark_default(ws: Path) -> None:
    """Record `ws` as a default workspace of the current default artifacts (what ensure_default_workspace records)."""
    from core.build.seed import SEED_PARAMS
    from core.cache.workspace import default_source_fingerprint

    with store.session(ws, write=True) as con:
        store.set_info(
            con, "default_workspace", {"source": default_source_fingerprint(), "params": asdict(SEED_PARAMS)}
        )


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    """{'seed': a full seed folder, 'cached': a default workspace with cached dictionaries and nothing explained}."""
    from core.build.seed import write_seed

    d = tmp_path_factory.mktemp("first-start")
    ws = d / "build" / "workspace.duckdb"
    run("cache", "--model", "default", "--tokens", "4096", "--workspace", str(ws), "--dictionaries", *DICTS)
    _mark_default(ws)
    cached = d / "cached"
    cached.mkdir()
    shutil.copy2(ws, cached / ws.name)
    shutil.copytree(store.data_dir(ws), store.data_dir(cached / ws.name))
    common = ["--workspace", str(ws), "--sample", "12", "--dictionary", *DICTS, *UNITS]
    run("explain", *common)
    run("score", *common, "--scorers", "detection,fuzzing,embedding", "--model", "judge")
    run("report", "--workspace", str(ws), "--out", str(d / "report"), "--images", "html")
    write_seed(ws, d / "seed", steps=["cache", "explain:fast", "analyze"])
    return {"seed": d / "seed", "cached": cached / ws.name}


@pytest.fixture
def first_start(seeds, tmp_path, monkeypatch) -> Path:
    """A data folder with no workspace, the seed in place of the shipped one; returns the default workspace's path."""
    import ui.explain_job

    default = tmp_path / "data" / "default" / "workspace.duckdb"
    default.parent.mkdir(parents=True)
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", default)
    monkeypatch.setattr("core.build.seed.SEED_DIR", seeds["seed"])
    monkeypatch.setattr(ui.explain_job, "default_job_panel", lambda workspace: None)  # no detached job in tests
    monkeypatch.delenv("SAE_EXPLORER_WORKSPACE", raising=False)
    return default


def texts(at: AppTest) -> str:
    parts = [*at.title, *at.subheader, *at.caption, *at.markdown, *at.info, *at.warning, *at.error, *at.success]
    return " ".join(str(x.value) for x in parts)


def no_command_hints(at: AppTest) -> None:
    shown = texts(at)
    assert not any(h in shown for h in COMMAND_HINTS), shown


def page(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=300)


def test_first_start_copies_the_seed_and_every_page_shows_content(first_start):
    home = page("app.py").run()
    assert not home.exception and not home.error, texts(home)
    assert first_start.exists() and len(home.dataframe) >= 2
    assert "baseline:token-stats" in "".join(str(df.value) for df in home.dataframe)

    latents = page("pages/1_Latents.py").run()
    assert not latents.exception and not latents.error
    html = "".join(m.value for m in latents.markdown) + "".join(h.proto.body for h in latents.html)
    assert '<span class="tok act' in html
    for path in ("pages/2_Scores.py", "pages/3_Deciles.py", "pages/4_Overlap.py"):
        at = page(path).run()
        assert not at.exception and not at.error, (path, texts(at))
        assert chart_count(at), f"{path} drew no chart: {texts(at)}"
        no_command_hints(at)


def test_a_page_opened_directly_first_copies_the_seed_too(first_start):
    at = page("pages/2_Scores.py").run()  # a link to /Scores before anyone opened the home page
    assert not at.exception and not at.error and chart_count(at), texts(at)
    assert first_start.exists()


def test_pages_show_the_jobs_progress_instead_of_a_command(seeds, first_start, monkeypatch):
    """The default workspace is cached but not yet explained, and the app's background job is running: the pages
    that lack its results say so with the job's progress and time left, and name no command to run."""
    import time

    from core.autointerp import default_job
    from core.locks import ProcessLock

    shutil.copy2(seeds["cached"], first_start)
    shutil.copytree(store.data_dir(seeds["cached"]), store.data_dir(first_start))
    status = default_job.JobStatus(
        state="running",
        stage="fast",
        phase="resid:blocks.1.hook_resid_pre: 512 / 2,048",
        fraction=0.1,
        pid=1,
        started=time.time() - 120,
        stage_started=time.time() - 120,
        eta_s=1500,
    )
    default_job._write_status(first_start, status)
    lock = ProcessLock(default_job.job_files(first_start)["lock"])
    assert lock.try_acquire()  # the job holds its lock while it runs
    try:
        for path in ("pages/2_Scores.py", "pages/3_Deciles.py", "pages/4_Overlap.py"):
            at = page(path).run()
            assert not at.exception and not at.error, (path, texts(at))
            shown = texts(at)
            assert "in the background" in shown, (path, shown)
            assert "about 25 min left in the fast stage" in " ".join(p.proto.text for p in at.get("progress"))
            no_command_hints(at)
        latents = page("pages/1_Latents.py").run()
        assert not latents.exception and not latents.error
        no_command_hints(latents)
    finally:
        lock.release()


def test_a_read_only_data_folder_opens_the_seed_read_only(seeds, first_start, monkeypatch, tmp_path):
    import tempfile

    import core.cache.workspace as workspace

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    real_access = workspace.os.access
    monkeypatch.setattr(
        workspace.os, "access", lambda p, mode: False if Path(p) == first_start.parent else real_access(p, mode)
    )  # (tests run as root, for whom chmod does not deny writing)
    home = page("app.py").run()
    assert not home.exception and not home.error, texts(home)
    warning = " ".join(w.value for w in home.warning)
    assert "cannot write the data folder" in warning and "read-only" in warning
    assert "SAE_EXPLORER_WORKSPACE=" in warning
    assert not first_start.exists() and len(home.dataframe) >= 2  # the seed's tables, from its temporary copy
    assert list((tmp_path / "tmp").glob("sae-explorer-seed-*/workspace.duckdb"))
    scores = page("pages/2_Scores.py").run()  # a page opened directly reads the seed too
    assert not scores.exception and not scores.error and chart_count(scores), texts(scores)


def test_the_home_page_says_where_an_earlier_default_holding_user_work_went(first_start, seeds):
    """A rebuild of the default kept the previous workspace aside because it held a saved circuit: the home page
    names the file, what it holds and how to open it (the workspace picker)."""
    import json

    aside = first_start.with_name("workspace.stale.duckdb")
    shutil.copy2(seeds["cached"], aside)
    note = [
        {
            "path": str(aside),
            "reason": "built from other default artifacts",
            "content": {"circuits": 2},
            "when": "2026-12-06 17:00",
        }
    ]
    first_start.with_name("workspace-set-aside.json").write_text(json.dumps(note))
    home = page("app.py").run()
    assert not home.exception and not home.error
    info = " ".join(i.value for i in home.info).replace("\\", "")
    assert str(aside) in info and "2 circuits" in info and "Another workspace file" in info
