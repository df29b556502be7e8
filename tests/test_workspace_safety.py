"""A damaged workspace, a held lock and a path outside the allowed folders: every page answers at once with
one clear message (which file or process, what to do), never a traceback or a hang, and changes nothing.
Also: the app serves 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from workspace_helpers import (
    HOLD_BUILD_LOCK,
    HOLD_JOB_LOCK,
    HOLD_WRITE_SESSION,
    fingerprint,
    no_build,
    plain,
    python_holding,
    stop,
    truncated_copy,
)

from core import store
from core.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "pages/1_Latents.py", "pages/2_Scores.py", "pages/3_Deciles.py", "pages/4_Overlap.py"]
PAGES += ["pages/5_Circuits.py"]
ANSWER_S = 5.0  # a page must answer within this under a held lock


def page(script: str, workspace: Path | None = None, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(str(ROOT / script), default_timeout=timeout)
    if workspace is not None:
        at.session_state["workspace"] = str(workspace)
    return at


def shown(at: AppTest) -> list[str]:
    return [plain(e.value) for kind in (at.error, at.warning, at.info, at.success) for e in kind]


# ---------------------------------------------------------------------------------------------- damaged


@pytest.fixture(scope="module")
def damaged(app_workspace, tmp_path_factory) -> Path:
    """A copy of the tiny workspace cut to 4 MiB (as by a full disk or an interrupted copy)."""
    return truncated_copy(app_workspace, tmp_path_factory.mktemp("damaged"))


def test_store_refuses_a_truncated_workspace_and_leaves_it_alone(damaged):
    before = fingerprint(damaged)
    for write in (False, True):
        with pytest.raises(store.WorkspaceDamagedError, match="not a readable DuckDB workspace") as err:
            with store.session(damaged, write=write) as con:
                con.execute("SELECT count(*) FROM latent_top_tokens").fetchall()
        assert "cut short" in str(err.value) and str(damaged) in str(err.value)
    with pytest.raises(store.WorkspaceDamagedError):
        store.migrate(damaged)
    assert fingerprint(damaged) == before


@pytest.mark.parametrize("script", PAGES)
def test_every_page_shows_one_clear_message_on_a_truncated_workspace(damaged, script):
    before = fingerprint(damaged)
    at = page(script, damaged).run()
    assert not at.exception
    assert len(at.error) == 1, shown(at)
    message = plain(at.error[0].value)
    assert str(damaged) in message and "cut short" in message and "Nothing in it was changed" in message
    assert "choose another workspace" in message and "set this one aside" in message
    # nothing misleading beside it (the Overlap page said "No overlap stored", the Scores page "No scored explanations")
    assert not any(text.startswith("No ") and "stored" in text for text in shown(at)), shown(at)
    assert not any("No scored explanations" in text for text in shown(at))
    assert fingerprint(damaged) == before


def test_a_damaged_default_workspace_is_set_aside_from_the_home_page(app_workspace, tmp_path, monkeypatch):
    """The home page names the file and offers to set it aside (renamed, bytes kept) and rebuild the default."""
    from app_workspace import copy_workspace

    import core.cache.workspace
    import ui.explain_job

    default = truncated_copy(app_workspace, tmp_path / "default", name="workspace.duckdb")
    before = {k.replace("workspace.duckdb", ""): v for k, v in fingerprint(default).items()}
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", default)
    builds: list[Path] = []

    def fake_build(progress=None, path=core.cache.workspace.DEFAULT_WORKSPACE, **kwargs) -> Path:
        builds.append(path)  # stands in for the real build (minutes): the tiny workspace becomes the default
        (tmp_path / "built").mkdir()
        copy_workspace(app_workspace, tmp_path / "built")
        shutil.move(tmp_path / "built" / app_workspace.name, path)
        shutil.move(store.data_dir(tmp_path / "built" / app_workspace.name), store.data_dir(path))
        return path

    monkeypatch.setattr("core.cache.workspace.ensure_default_workspace", fake_build)
    monkeypatch.setattr(ui.explain_job, "default_job_panel", lambda workspace: None)

    at = page("app.py").run()
    assert not at.exception and len(at.error) == 1 and not builds
    message = plain(at.error[0].value)
    assert str(default) in message and "cut short" in message and "rebuild the default" in message
    assert fingerprint(default).keys() and default.exists()  # untouched until asked

    at.button(key="default_set_aside").click().run()
    assert not at.exception and not at.error, shown(at)
    aside = [p for p in default.parent.iterdir() if p.name.startswith("workspace.damaged-") and p.suffix == ".duckdb"]
    assert len(aside) == 1 and builds == [default]
    assert {k.replace(aside[0].name, ""): v for k, v in fingerprint(aside[0]).items()} == before  # byte for byte
    assert any(str(aside[0]) in text for text in shown(at))

    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", tmp_path / "default" / "other.duckdb")
    latents = page("pages/1_Latents.py", aside[0]).run()  # the set-aside copy still reads as damaged
    assert not latents.exception and len(latents.error) == 1 and "cut short" in plain(latents.error[0].value)


def test_other_pages_point_to_the_home_page_for_a_damaged_default(damaged, monkeypatch):
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", damaged)
    at = page("pages/1_Latents.py").run()
    assert not at.exception and len(at.error) == 1
    message = plain(at.error[0].value)
    assert str(damaged) in message and "rebuild the default with the button on the home page" in message


# ---------------------------------------------------------------------------------------------- held locks


@pytest.fixture(scope="module")
def write_locked(app_workspace, tmp_path_factory):
    """A copy of the tiny workspace whose DuckDB file another process holds open for writing; yields (path, pid)."""
    from app_workspace import copy_workspace

    ws = copy_workspace(app_workspace, tmp_path_factory.mktemp("locked"))
    holder = python_holding(HOLD_WRITE_SESSION, ws)
    try:
        yield ws, holder.pid
    finally:
        stop(holder)


def answered(at: AppTest) -> float:
    """Run the page again (its first run paid the imports) and return how long it took."""
    t0 = time.monotonic()
    at.run()
    return time.monotonic() - t0


@pytest.mark.parametrize("script", PAGES[:-1])
def test_every_page_names_the_process_holding_the_workspace_within_seconds(write_locked, script):
    ws, pid = write_locked
    at = page(script, ws).run()
    seconds = answered(at)
    assert not at.exception and seconds < ANSWER_S, seconds
    assert len(at.error) == 1, shown(at)
    message = plain(at.error[0].value)
    assert str(ws) in message and f"process {pid} (`python -c" in message and f"kill {pid}" in message


def test_circuits_page_names_the_holder_and_keeps_working(write_locked):
    """The Circuits page traces without the workspace and keeps unsaved edits across reruns, so a lock does not
    stop it: its sidebar names the holder after the page's own short timeout (tests/test_circuits_page.py)."""
    ws, pid = write_locked
    at = page("pages/5_Circuits.py", ws).run()
    seconds = answered(at)
    assert not at.exception and seconds < ANSWER_S + 5, seconds
    assert any(f"process {pid} (`python -c" in plain(e.value) for e in at.error), shown(at)
    assert any(f.label == "Trace" for f in at.button)  # the trace form is there


def test_home_page_names_another_process_building_the_default(tmp_path, monkeypatch):
    """The build lock held by another process: the page says who (pid, command, since when) and what to do
    within seconds, and starts no build (it waited up to 30 minutes, under a misleading 'first start' label)."""
    default = tmp_path / "workspace.duckdb"
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", default)
    monkeypatch.setattr("core.cache.workspace.ensure_default_workspace", no_build)
    holder = python_holding(HOLD_BUILD_LOCK, default)
    try:
        at = page("app.py", timeout=30).run()
        seconds = answered(at)
        assert not at.exception and not at.error and seconds < ANSWER_S, seconds
        warning = plain(at.warning[0].value)
        assert f"is being built by process {holder.pid} (`python -c" in warning and "holding it since" in warning
        assert f"kill {holder.pid}" in warning and "reload" in warning
        assert not at.status  # no "Building the default workspace (first start…)"
    finally:
        stop(holder)


def test_home_page_names_a_process_that_holds_the_build_lock_without_saying_so(tmp_path, monkeypatch):
    """A holder that recorded nothing (here `flock`) is still named: the kernel says who holds the lock."""
    if not shutil.which("flock") or not Path("/proc/locks").exists():
        pytest.skip("needs flock(1) and Linux /proc/locks")
    import fcntl

    def held(path: Path) -> bool:
        with path.open("rb+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    default = tmp_path / "workspace.duckdb"
    lock = tmp_path / "workspace.duckdb.build-lock"
    lock.touch()
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", default)
    monkeypatch.setattr("core.cache.workspace.ensure_default_workspace", no_build)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "120"])
    try:
        deadline = time.monotonic() + 10
        while not held(lock):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        at = page("app.py", timeout=30).run()
        assert not at.exception and not at.error
        warning = plain(at.warning[0].value)
        assert f"process {holder.pid} (`flock {lock} sleep 120`)" in warning
    finally:
        stop(holder)


def test_home_page_names_the_process_holding_the_default_workspace_file(write_locked, monkeypatch):
    ws, pid = write_locked
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", ws)
    at = page("app.py", timeout=60).run()
    seconds = answered(at)
    assert not at.exception and seconds < ANSWER_S, seconds
    assert len(at.error) == 1 and f"process {pid} (`python -c" in plain(at.error[0].value)
    assert not at.status


def test_home_page_names_a_cache_job_writing_the_default_workspace(app_workspace, tmp_path, monkeypatch):
    """A `python -m core cache` run on the default's path: the page names it instead of loading the model first."""
    from app_workspace import copy_workspace

    ws = copy_workspace(app_workspace, tmp_path)
    monkeypatch.setattr("core.cache.workspace.DEFAULT_WORKSPACE", ws)
    holder = python_holding(HOLD_JOB_LOCK, ws)
    try:
        at = page("app.py", timeout=30).run()
        seconds = answered(at)
        assert not at.exception and seconds < ANSWER_S, seconds
        assert len(at.error) == 1
        message = plain(at.error[0].value)
        assert "another job is writing this workspace" in message and f"process {holder.pid} (`python -c" in message
        assert f"kill {holder.pid}" in message
    finally:
        stop(holder)


def test_build_lock_waits_for_a_build_in_this_process_and_names_another_process(tmp_path):
    """wait_for_other_processes=False: another session's build (a thread of this process) is waited for, with
    progress; another process's build fails at once, naming it."""
    import threading

    from core.cache.workspace import _BuildLock, build_lock_holder

    ws = tmp_path / "workspace.duckdb"
    assert build_lock_holder(ws) is None
    release = threading.Event()
    held = threading.Event()

    def other_session() -> None:
        with _BuildLock(ws, None, 10.0):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_session)
    thread.start()
    held.wait(10)
    holder = build_lock_holder(ws)
    assert holder is not None and holder.this_process and holder.pid == os.getpid()
    seen: list[tuple] = []
    threading.Timer(1.0, release.set).start()
    with _BuildLock(ws, lambda *a: seen.append(a), 10.0, wait_for_other_processes=False):
        assert seen and seen[0][0] == "waiting"
    thread.join()

    proc = python_holding(HOLD_BUILD_LOCK, ws)
    try:
        t0 = time.monotonic()
        with pytest.raises(store.WorkspaceLockedError, match=f"being built by process {proc.pid}"):
            with _BuildLock(ws, None, 60.0, wait_for_other_processes=False):
                pass
        assert time.monotonic() - t0 < 2.0
    finally:
        stop(proc)


# ---------------------------------------------------------------------------------------------- allowed paths


@pytest.fixture
def folders(app_workspace, tmp_path, monkeypatch):
    """An allowed folder (in $SAE_EXPLORER_WORKSPACE_DIRS) holding a workspace, a data folder, and a folder
    outside both holding another workspace; returns (allowed, outside) workspace paths."""
    from app_workspace import copy_workspace

    data, allowed, outside = tmp_path / "data", tmp_path / "allowed", tmp_path / "outside"
    for d in (data, allowed, outside):
        d.mkdir()
    monkeypatch.setattr("core.paths.DATA_DIR", data)
    monkeypatch.setenv("SAE_EXPLORER_WORKSPACE_DIRS", str(allowed))
    monkeypatch.delenv("SAE_EXPLORER_WORKSPACE", raising=False)
    return copy_workspace(app_workspace, allowed), copy_workspace(app_workspace, outside)


def test_workspace_paths_outside_the_allowed_folders_are_refused(folders, tmp_path):
    from ui.state import WORKSPACE_DIRS_ENV, allowed_workspace_dirs, checked_workspace_path

    inside, outside = folders
    assert allowed_workspace_dirs() == [(tmp_path / "data").resolve(), (tmp_path / "allowed").resolve()]
    (tmp_path / "allowed" / "link.duckdb").symlink_to(outside)  # a link inside pointing out
    (tmp_path / "allowed" / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
    tricks = [
        str(outside),
        f"{tmp_path}/allowed/../outside/{outside.name}",
        f"{tmp_path}/data/../outside/{outside.name}",
        str(tmp_path / "allowed" / "link.duckdb"),
        str(tmp_path / "allowed" / "sub" / outside.name),
        "/etc/passwd",
    ]
    for typed in tricks:
        with pytest.raises(UserError) as err:
            checked_workspace_path(typed)
        message = str(err.value)
        assert "outside the folders this app opens workspaces from" in message, typed
        assert str((tmp_path / "allowed").resolve()) in message and WORKSPACE_DIRS_ENV in message
    assert checked_workspace_path(str(inside)) == inside.resolve()
    assert checked_workspace_path(f"{tmp_path}/outside/../allowed/{inside.name}") == inside.resolve()
    with pytest.raises(UserError, match="does not exist"):
        checked_workspace_path(str(tmp_path / "data" / "missing.duckdb"))


def test_home_page_refuses_a_workspace_outside_the_allowed_folders(folders, tmp_path):
    inside, outside = folders
    at = page("app.py", inside).run()
    assert not at.exception and not at.error
    for typed in (str(outside), f"{tmp_path}/allowed/../outside/{outside.name}"):
        at.text_input(key="ws_path").set_value(typed).run()
        assert not at.exception and len(at.error) == 1
        message = plain(at.error[0].value)
        assert "outside the folders this app opens workspaces from" in message
        assert "SAE_EXPLORER_WORKSPACE_DIRS=" in message
        assert at.session_state["workspace"] == str(inside)  # the pages keep the allowed one
    at.text_input(key="ws_path").set_value(str(inside)).run()
    assert not at.exception and not at.error


def test_the_startup_workspace_folder_counts_as_configured(folders, monkeypatch):
    from ui.state import checked_workspace_path

    _, outside = folders
    monkeypatch.setenv("SAE_EXPLORER_WORKSPACE", str(outside))
    assert checked_workspace_path(str(outside)) == outside.resolve()


# ---------------------------------------------------------------------------------------------- listening address


def listening(port: int) -> set[str]:
    """The local addresses on which something listens on TCP `port` (Linux /proc/net/tcp and tcp6)."""
    import ipaddress

    out = set()
    for name, v6 in (("tcp", False), ("tcp6", True)):
        table = Path(f"/proc/net/{name}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            if v6:
                out.add(str(ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))))
            else:
                out.add(str(ipaddress.IPv4Address(raw[::-1])))
    return out


def serve_with_dev(port: int, host: str, env: dict[str, str], *args: str, stderr: Path | None = None) -> set[str]:
    """Start `./dev app` on `port`, wait until it answers on `host`, return where it listens, stop it
    (its standard error goes to the file `stderr` if given)."""
    env = {**{k: v for k, v in os.environ.items() if k != "SAE_EXPLORER_ADDRESS"}, **env}
    err = open(stderr, "w") if stderr is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(ROOT / "dev"), "app", "--server.port", str(port), "--server.fileWatcherType", "none", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the app did not start"
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        return listening(port)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        if stderr is not None:
            err.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_the_app_serves_this_machine_only_unless_told_otherwise(tmp_path):
    from tests.browser.serve import free_port

    log = tmp_path / "stderr.txt"
    assert serve_with_dev(free_port(), "127.0.0.1", {}, stderr=log) == {"127.0.0.1"}
    assert "warning" not in log.read_text()
    # the documented options (another loopback address here, so that the test exposes nothing); each
    # address other than 127.0.0.1/localhost gets the no-login warning, however it was chosen
    assert serve_with_dev(free_port(), "127.0.0.2", {"SAE_EXPLORER_ADDRESS": "127.0.0.2"}, stderr=log) == {"127.0.0.2"}
    assert "warning: serving on 127.0.0.2 with no login" in log.read_text()
    args = ("--server.address", "127.0.0.3")
    assert serve_with_dev(free_port(), "127.0.0.3", {}, *args, stderr=log) == {"127.0.0.3"}
    assert "warning: serving on 127.0.0.3 with no login" in log.read_text()


def test_streamlit_run_from_the_project_folder_serves_this_machine_only():
    """`streamlit run app.py` without ./dev reads .streamlit/config.toml: 127.0.0.1, no usage statistics."""
    code = (
        "from streamlit import config; config.get_config_options(force_reparse=True); "
        "print(config.get_option('server.address'), config.get_option('browser.gatherUsageStats'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["127.0.0.1", "False"]
