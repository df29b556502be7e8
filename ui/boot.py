"""Import the engine once, in one thread, before a page imports anything else (every page's first import).

Streamlit runs each browser session's script in its own thread. On a fresh server, sessions opened at once
(several tabs, or a page and its links) imported `core` modules concurrently in different orders, and Python's
per-module import locks then hit a cycle through `core.cache`'s package re-exports: one thread got a
partially initialised module ("cannot import name 'CacheResult' from partially initialized module
'core.cache.run'"), and the page showed that traceback. Importing this module first serialises that
start-up: the first session imports everything below while the others wait on this module's lock, holding
no other import lock, so no cycle can form.
"""

from __future__ import annotations

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
