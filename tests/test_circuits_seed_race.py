"""The Circuits page opened while another session of the app is still copying the shipped seed into place (a first
start with several tabs): it waits for the copy and opens the example circuit; a copy slower than its wait gets a
clear message (never a traceback or a command to run), and the next run opens the example.

The copy is the app's own (`ensure_default_workspace(seed=...)` in a thread, as another session runs it), held
back before `core.build.seed.install_seed` until the test lets it go; the seed is the shipped one (it holds the
example circuits).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
CIRCUITS = str(ROOT / "pages" / "5_Circuits.py")
COMMAND_HINTS = ("python -m core", "run `", "Run `")


@pytest.fixture
def copying(tmp_path, monkeypatch):
    """Start copying the shipped seed as the (temporary) default workspace in another thread, held back until the
    returned event is set; returns (default workspace path, the thread, the event) once the thread holds the
    build lock."""
    import core.build.seed as seed
    import core.cache.workspace as workspace

    assert seed.seed_problem(seed.SEED_DIR) is None, "the shipped seed does not fit the default artifacts"
    default = tmp_path / "data" / "default" / "workspace.duckdb"
    default.parent.mkdir(parents=True)
    monkeypatch.setattr(workspace, "DEFAULT_WORKSPACE", default)
    monkeypatch.delenv("SAE_EXPLORER_WORKSPACE", raising=False)
    real = seed.install_seed
    started, release = threading.Event(), threading.Event()

    def held_install(*args, **kwargs):
        started.set()
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(seed, "install_seed", held_install)
    thread = threading.Thread(
        target=workspace.ensure_default_workspace,
        kwargs={"path": default, "seed": seed.SEED_DIR, "wait_for_other_processes": False},
        daemon=True,
    )
    thread.start()
    assert started.wait(60), "the copy did not start"
    assert workspace.build_lock_holder(default) is not None and not default.exists()
    yield default, thread, release
    release.set()
    thread.join(120)


def shown(at: AppTest) -> str:
    parts = [*at.title, *at.caption, *at.markdown, *at.info, *at.warning, *at.error, *at.success]
    return " ".join(str(x.value) for x in parts)


def opened(at: AppTest) -> bool:
    """True if the page holds a circuit (the example it opened)."""
    return "circ.original" in at.session_state and at.session_state["circ.original"] is not None


def check_clean(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not any(h in shown(at) for h in COMMAND_HINTS), shown(at)


def test_a_circuits_page_opened_during_the_seed_copy_shows_the_example(copying, monkeypatch):
    import ui.boot

    default, thread, release = copying
    real_wait = ui.boot.wait_for_default

    def wait_then_copy(workspace):  # the copy goes on once the page waits for it (a page that does not wait: never)
        release.set()
        return real_wait(workspace)

    monkeypatch.setattr(ui.boot, "wait_for_default", wait_then_copy)
    at = AppTest.from_file(CIRCUITS, default_timeout=180).run()
    check_clean(at)
    assert default.exists()
    assert opened(at), shown(at)
    assert "Opened the example circuit" in " ".join(i.value for i in at.info), shown(at)


def test_a_copy_slower_than_the_wait_says_so_and_the_next_run_opens_the_example(copying, monkeypatch):
    import ui.boot

    monkeypatch.setattr(ui.boot, "SEED_WAIT_S", 1.0)  # the page's wait, shortened for the test
    default, thread, release = copying
    at = AppTest.from_file(CIRCUITS, default_timeout=180).run()
    check_clean(at)
    assert not default.exists() and not opened(at)  # still copying
    assert "still being set up" in " ".join(i.value for i in at.info), shown(at)
    at.run()  # a click while the copy goes on: no wait again, nothing opened yet, and nothing given up
    check_clean(at)
    assert not default.exists() and not opened(at)
    release.set()
    thread.join(120)
    assert default.exists()
    at.run()  # the next click looks again
    check_clean(at)
    assert opened(at), shown(at)
