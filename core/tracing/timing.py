"""Phase timing for the tracing algorithms: each phase is logged and kept in a dict of seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (message, fraction done in [0, 1]) -> None; long work reports through it (the circuits page shows a bar).
ProgressCallback = Callable[[str, float], None]


@contextmanager
def phase(name: str, timings: dict[str, float], log: logging.Logger) -> Iterator[None]:
    """Time the enclosed block, add its seconds to `timings[name]` and log it at INFO."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        dt = time.perf_counter() - t0
        timings[name] = timings.get(name, 0.0) + dt
        log.info("%s: %.3f s", name, dt)


def report(progress: ProgressCallback | None, message: str, fraction: float) -> None:
    """Call `progress(message, fraction)` if a callback was given."""
    if progress is not None:
        progress(message, min(1.0, max(0.0, fraction)))
