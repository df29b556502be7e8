"""The Latents, Scores and Deciles pages opened while another session of the app is still copying the shipped seed
into place (a first start with several tabs): they wait for the copy and show their content, instead of a
"setting up" notice that never went away (seen in bench/first_start.py: the Deciles tab stayed on it until the
benchmark's timeout). A set-up longer than the wait keeps the notice, and the next run shows the page.

The copy is the app's own, held back by the `copying` fixture (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_circuits_seed_race import COMMAND_HINTS, shown

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"latents": "1_Latents.py", "scores": "2_Scores.py", "deciles": "3_Deciles.py"}
SETTING_UP = "setting up the default workspace"


@pytest.fixture(autouse=True)
def no_background_job(monkeypatch):
    """No detached explain job from a page in tests (the seed's fast stage is done; a page may start the slow one)."""
    import core.autointerp.default_job as default_job

    monkeypatch.setattr(default_job, "start_default_job", lambda workspace: default_job.job_status(workspace))


@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_page_opened_during_the_seed_copy_waits_and_shows_its_content(copying_once_waited, page):
    default, thread, release = copying_once_waited
    at = AppTest.from_file(str(ROOT / "pages" / PAGES[page]), default_timeout=180).run()
    assert not at.exception, at.exception
    assert default.exists()
    assert SETTING_UP not in shown(at), shown(at)
    assert not any(h in shown(at) for h in COMMAND_HINTS), shown(at)


def test_a_set_up_slower_than_the_wait_keeps_the_notice_and_the_next_run_shows_the_page(copying, monkeypatch):
    import ui.boot

    monkeypatch.setattr(ui.boot, "SEED_WAIT_S", 1.0)  # the page's wait, shortened for the test
    default, thread, release = copying
    at = AppTest.from_file(str(ROOT / "pages" / PAGES["deciles"]), default_timeout=180).run()
    assert not at.exception, at.exception
    assert not default.exists()
    assert SETTING_UP in shown(at), shown(at)
    release.set()
    thread.join(120)
    at.run()
    assert not at.exception, at.exception
    assert SETTING_UP not in shown(at), shown(at)
