"""The Circuits page opened while another session of the app is still copying the shipped seed into place (a first
start with several tabs): it waits for the copy and opens the example circuit; a copy slower than its wait gets a
clear message (never a traceback or a command to run), and the next run opens the example.

The copy is the app's own, held back by the `copying` fixture (tests/conftest.py); the seed is the shipped one (it
holds the example circuits).
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
CIRCUITS = str(ROOT / "pages" / "5_Circuits.py")
COMMAND_HINTS = ("python -m core", "run `", "Run `")


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


def test_a_circuits_page_opened_during_the_seed_copy_shows_the_example(copying_once_waited):
    default, thread, release = copying_once_waited
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
