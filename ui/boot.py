"""Import the engine once, in one thread, before a page imports anything else (every page's first import).

Streamlit runs each browser session's script in its own thread. On a fresh server, sessions opened at once
(several tabs, or a page and its links) imported `core` modules concurrently in different orders, and Python's
per-module import locks then hit a cycle through `core.cache`'s package re-exports: one thread got a
partially initialised module ("cannot import name 'CacheResult' from partially initialized module
'core.cache.run'"), and the page showed that traceback. Importing this module first serialises that
start-up: the first session imports everything below while the others wait on this module's lock, holding
no other import lock, so no cycle can form.

The objects these imports made live as long as the server: they are moved out of the garbage collector's sight
(`gc.freeze`). Streamlit collects garbage after every script run (`runner.postScriptGC`), and walking them took
0.4 s of each run (2 busy cores), in the one interpreter every session's script shares.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from pathlib import Path

import core.analysis.analyses  # noqa: F401
import core.analysis.figures  # noqa: F401
import core.analysis.overlap  # noqa: F401
import core.autointerp.default_job  # noqa: F401
import core.build.overview  # noqa: F401
import core.build.seed  # noqa: F401
import core.cache  # noqa: F401
import core.latents.cards  # noqa: F401
import core.latents.search  # noqa: F401
import core.store  # noqa: F401
import core.subjects.models  # noqa: F401
import ui.analysis_view  # noqa: F401
import ui.explain_job  # noqa: F401
import ui.explanations  # noqa: F401
import ui.latent_card  # noqa: F401
import ui.state  # noqa: F401

SEED_WAIT_S = 20.0  # how long a page waits for another session's copy of the shipped seed into place


_frozen_modules = 0  # len(sys.modules) at the last freeze


def freeze_imports() -> None:
    """Hide what is alive now from the garbage collector's full collections (`gc.freeze`) if modules were imported
    since the last call: called right after imports that stay for the server's life (this module's; a page with
    heavy imports of its own calls it after them, on every run: only a run that imported something freezes)."""
    global _frozen_modules
    if len(sys.modules) != _frozen_modules:
        _frozen_modules = len(sys.modules)
        gc.freeze()


freeze_imports()


# The tracing engine and torch, which only the Circuits page needs (1.3-2.5 s to import on two cores). Every other
# page, once drawn, starts a background thread that imports them (`start_circuit_imports`, once per server), so a
# researcher who opens the Circuits page later finds them imported. Started at server start instead, the import
# slowed the first page (Home 3.0-3.3 -> 3.7-3.9 s warm). The Circuits page first joins that thread
# (`wait_for_circuit_imports`), so it never imports the same modules at the same time (the race described above).
CIRCUIT_MODULES = (
    "core.tracing",
    "core.tracing.loading",
    "core.tracing.steering",
    "core.tracing.qk",
    "core.circuits.saved",
    "core.circuits.examples",
    "core.circuits.supernodes",
    "core.circuits.interop",
    "core.circuits.llm_pruning",
    "core.circuits.steering_results",
)
_circuit_imports: threading.Thread | None = None
_background_imports = False  # set by `ui.server` (the app's own server); off in tests, which import on their own


def enable_background_imports() -> None:
    """Let `start_circuit_imports` start its thread (`ui.server` calls this before Streamlit starts). Off elsewhere:
    a test process imports these modules on its own threads, which that thread could race."""
    global _background_imports
    _background_imports = True


def _import_circuit_modules() -> None:
    for name in CIRCUIT_MODULES:
        importlib.import_module(name)


def start_circuit_imports() -> None:
    """Import `CIRCUIT_MODULES` in a daemon thread, once per process (called at the end of every page but Circuits)."""
    global _circuit_imports
    if _circuit_imports is None and _background_imports:
        _circuit_imports = threading.Thread(target=_import_circuit_modules, name="circuit-imports", daemon=True)
        _circuit_imports.start()


def wait_for_circuit_imports() -> None:
    """Wait for `start_circuit_imports`'s thread, if one was started (an error there reappears as the page's own
    import of the same module)."""
    if _circuit_imports is not None:
        _circuit_imports.join()


def default_being_set_up(workspace: Path) -> bool:
    """True while the embedded default's workspace `workspace` is being set up: another session of this app holds
    its build lock (copying the shipped seed: the file appears before the copy lets go of it), or another
    process does and the file is not there yet."""
    import core.cache.workspace
    from ui.state import is_default_workspace

    if not is_default_workspace(workspace):
        return False
    holder = core.cache.workspace.build_lock_holder(workspace)
    return holder is not None and (holder.this_process or not Path(workspace).exists())


def wait_for_default(workspace: Path) -> bool:
    """Wait up to SEED_WAIT_S while `default_being_set_up(workspace)`; True once it no longer is."""
    deadline = time.monotonic() + SEED_WAIT_S
    while default_being_set_up(workspace):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
