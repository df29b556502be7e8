"""Phase timing for the tracing algorithms: each phase is logged and kept in a dict of seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from core.progress import Progress, report_fraction


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


def report(progress: Progress | None, message: str, fraction: float) -> None:
    """Report `fraction` in [0, 1] of the work as `progress(message, percent, PERCENT)` (core.progress).

    Tracing knows how far along it is, not units of work, so it reports percent with a message."""
    report_fraction(progress, message, fraction)
