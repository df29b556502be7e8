"""The server's start-up imports (ui/server.py, ui/boot.py): the engine before Streamlit listens, the Circuits
page's tracing engine and torch in a background thread that the page joins before its own imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_tracing_engine_is_imported_in_the_background_and_joined():
    code = (
        "import sys, ui.boot\n"
        "assert 'torch' not in sys.modules, 'the engine alone loads no torch'\n"
        "ui.boot.start_circuit_imports(); ui.boot.start_circuit_imports()  # once per process\n"
        "ui.boot.wait_for_circuit_imports()\n"
        "missing = [m for m in ui.boot.CIRCUIT_MODULES + ('torch',) if m not in sys.modules]\n"
        "assert not missing, missing\n"
        "import threading\n"
        "assert [t.name for t in threading.enumerate()].count('circuit-imports') == 0\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_server_starts_them_before_streamlit_and_the_circuits_page_waits_first(monkeypatch):
    import streamlit.web.cli

    import ui.boot
    import ui.server

    calls: list[str] = []
    monkeypatch.setattr(ui.boot, "start_circuit_imports", lambda: calls.append("start"))
    monkeypatch.setattr(streamlit.web.cli, "main", lambda: calls.append("streamlit"))
    ui.server.main(["run", "app.py"])
    assert calls == ["start", "streamlit"]
    page = (ROOT / "pages" / "5_Circuits.py").read_text()
    assert page.index("ui.boot.wait_for_circuit_imports()") < page.index("from core.circuits import")
