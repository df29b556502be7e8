"""Damaged workspaces and processes holding locks, for the tests of how the app answers them
(tests/test_workspace_safety.py, tests/browser/test_workspace_browser.py)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from core import store

ROOT = Path(__file__).resolve().parent.parent


def plain(text: str) -> str:
    """Text as shown: without the backslash escapes and word joiners of ui.text.literal."""
    return re.sub(r"\\(.)", r"\1", text).replace("\u2060", "")


LOCK_FILES = {"job.lock", "write-intent"}  # who holds the workspace, not what it stores


def fingerprint(workspace: Path) -> dict[str, str]:
    """sha256 of the workspace file and of every file of its data folder (lock files aside)."""
    stored = (p for p in store.data_dir(workspace).rglob("*") if p.is_file() and p.name not in LOCK_FILES)
    files = [workspace, *sorted(stored)]
    return {str(p.relative_to(workspace.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def truncated_copy(src: Path, directory: Path, name: str | None = None) -> Path:
    """A copy of workspace `src` in `directory` whose .duckdb file is cut to 4 MiB (or 70% if smaller)."""
    from app_workspace import copy_workspace

    directory.mkdir(parents=True, exist_ok=True)
    ws = copy_workspace(src, directory)
    if name is not None:
        ws = ws.rename(ws.with_name(name))
        store.data_dir(directory / src.name).rename(store.data_dir(ws))
    size = ws.stat().st_size
    os.truncate(ws, min(4 * 1024 * 1024, int(size * 0.7)))
    return ws


def python_holding(code: str, *args: str) -> subprocess.Popen:
    """A Python process that runs `code` (which prints 'holding' once it holds its lock), started and waited for."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


HOLD_WRITE_SESSION = (
    "import sys, time; from pathlib import Path; from core import store\n"
    "with store.session(Path(sys.argv[1]), write=True):\n"
    "    print('holding', flush=True); time.sleep(600)\n"
)
HOLD_BUILD_LOCK = (
    "import sys, time; from pathlib import Path; from core.cache.workspace import _BuildLock\n"
    "with _BuildLock(Path(sys.argv[1]), None, 1.0):\n"
    "    print('holding', flush=True); time.sleep(120)\n"
)
HOLD_JOB_LOCK = (
    "import sys, time; from pathlib import Path; from core.cache.run import _JobLock\n"
    "with _JobLock(Path(sys.argv[1])):\n"
    "    print('holding', flush=True); time.sleep(120)\n"
)


def stop(proc: subprocess.Popen) -> None:
    """Kill a holder started by `python_holding` (its locks go with it)."""
    proc.kill()
    proc.wait()


def no_build(*args, **kwargs):
    """Stands in for core.cache.workspace.ensure_default_workspace where a page must not start a build."""
    raise AssertionError("the page started a build of the default workspace while another process holds it")
