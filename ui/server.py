"""The app's server as `./dev app` runs it: `streamlit run`, with the engine imported before it listens.

    python -m ui.server run app.py [streamlit options]

A page's first run imports the engine (`ui.boot`: pandas, plotly, DuckDB and `core`, 1.3-2.5 s on two cores),
and the first page a researcher opened on a fresh server used to wait for it. Imported here, before Streamlit
binds its port, that wait moves to start-up: the modules land in the `sys.modules` of the one interpreter every
session's script shares, so the first session finds them imported (the Circuits page's tracing engine and torch
follow in the background once a first page is drawn: `ui.boot.start_circuit_imports`). Nothing else changes: the
arguments go to Streamlit's own command line unchanged.
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> None:
    """Import `ui.boot`, then run Streamlit's command line with `argv` (default: this process's arguments)."""
    from streamlit.runtime.caching import cache_data_api

    # `st.cache_data` checks its storage when a page module applies it; before the runtime exists that check
    # logs "No runtime found" once per cached function (the caches themselves are made on first call, in the
    # runtime's storage).
    quiet = logging.getLogger(cache_data_api.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import ui.boot  # (the engine, imported once; see ui/boot.py)
    finally:
        quiet.setLevel(level)
    ui.boot.enable_background_imports()  # pages, once drawn, import the Circuits page's engine in the background
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
