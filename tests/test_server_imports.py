"""The app's imports (ui/boot.py): the Circuits page's tracing engine and torch in a background thread that every
other page starts once drawn, and that the Circuits page joins before its own imports."""

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
        "ui.boot.start_circuit_imports()\n"
        "assert ui.boot._circuit_imports is None, 'off unless the app server enabled it'\n"
        "ui.boot.enable_background_imports()\n"
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


def test_every_other_page_starts_them_once_drawn_and_the_circuits_page_waits_first():
    for name in ("app.py", "pages/1_Latents.py", "pages/2_Scores.py", "pages/3_Deciles.py", "pages/4_Overlap.py"):
        lines = [ln for ln in (ROOT / name).read_text().splitlines() if ln.strip()]
        assert lines[-1].startswith("ui.boot.start_circuit_imports()"), name  # the last statement: page drawn
    page = (ROOT / "pages" / "5_Circuits.py").read_text()
    assert "start_circuit_imports" not in page
    assert page.index("ui.boot.wait_for_circuit_imports()") < page.index("from core.circuits import")


def test_the_app_server_enables_them_before_streamlit_starts(monkeypatch):
    import streamlit.web.cli

    import ui.boot
    import ui.server

    calls: list[str] = []
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the server rewrites it for Streamlit's command line
    monkeypatch.setattr(ui.boot, "enable_background_imports", lambda: calls.append("enable"))
    monkeypatch.setattr(streamlit.web.cli, "main", lambda: calls.append("streamlit"))
    ui.server.main(["run", "app.py"])
    assert calls == ["enable", "streamlit"]
