"""The one progress protocol of the engine, its time-left estimate, and its tqdm adapter.

Every long engine function takes `progress: Progress | None` and calls `progress(phase, done, total)`:

- `phase` says what is being done now: a short label ('caching', 'finalizing', 'indexing explanations')
  or, for work that only knows how far along it is, a sentence ('level 2: 14 node(s)');
- `done` of `total` units are finished (tokens, dictionaries, latents, ...).

Work measured only as a fraction (tracing, LLM pruning, ablations) reports percent: `total == PERCENT`,
through `report_fraction(progress, message, fraction)`.

Front ends adapt the one callback: `TqdmBars` (here) draws tqdm bars with elapsed and time left for
the CLI; `ui.progress.progress_bar` draws an st.progress bar with time left for the app. Both estimate
time left per phase (`TimeLeft`), so a phase's clock restarts when the phase changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import IO, Any

# progress(phase, done, total) -> None
Progress = Callable[[str, int, int], None]

PERCENT = 100  # `total` of work that reports a fraction (see report_fraction)


def report_fraction(progress: Progress | None, message: str, fraction: float) -> None:
    """Report `fraction` in [0, 1] (clamped) as `progress(message, percent, PERCENT)`, if a callback was given."""
    if progress is not None:
        progress(message, round(PERCENT * min(1.0, max(0.0, fraction))), PERCENT)


class TimeLeft:
    """Seconds left in the current phase, extrapolated linearly from the phase's rate so far.

    The clock starts at a phase's first report; a report with another phase restarts it (a sentence-like
    phase of fraction work keeps the clock while `total` stays PERCENT, since its message changes often).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.key: tuple[str, int] | None = None
        self.start = 0.0
        self.done0 = 0

    def __call__(self, phase: str, done: int, total: int) -> float | None:
        """Seconds left, or None before there is a rate to extrapolate from (or when `total` is unknown)."""
        now = self.clock()
        key = ("", PERCENT) if total == PERCENT else (phase, total)
        if key != self.key:
            self.key, self.start, self.done0 = key, now, done
            return None
        if total <= 0 or done <= self.done0 or now <= self.start:
            return None
        rate = (done - self.done0) / (now - self.start)
        return max(0.0, (total - done) / rate)


def format_time_left(seconds: float | None) -> str:
    """'about 40 s left' / 'about 3 min left' / 'about 1.5 h left', or '' when unknown."""
    if seconds is None:
        return ""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s left"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min left"
    return f"about {seconds / 3600:.1f} h left"


def progress_text(phase: str, done: int, total: int, left: float | None) -> str:
    """The one-line text of a progress report: 'caching: 1,024 / 4,096 · about 12 s left'.

    Fraction work (total == PERCENT) shows its message alone, since its units are percent.
    """
    text = phase if total == PERCENT else f"{phase}: {done:,} / {total:,}"
    eta = format_time_left(left)
    return f"{text} · {eta}" if eta else text


class TqdmBars:
    """A `Progress` callback drawing tqdm bars with elapsed time and time left; `close()` them at the end.

    By default one bar per phase, one at a time (a new phase closes the previous bar); its unit is
    `units[phase]` or `unit`, with SI scaling for the phases in `scaled`. With `desc`, every phase goes to
    a single bar of that name and the phase is shown after it (for fraction work, whose phase is a
    message). Use as a context manager to close the bars even when the work fails.
    """

    def __init__(
        self,
        unit: str = "it",
        units: Mapping[str, str] | None = None,
        scaled: Collection[str] = (),
        desc: str | None = None,
        file: IO[str] | None = None,
    ) -> None:
        self.unit = unit
        self.units = dict(units or {})
        self.scaled = set(scaled)
        self.desc = desc
        self.file = file
        self.bar: Any = None
        self.phase: str | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm

        name = self.desc if self.desc is not None else phase
        if self.bar is None or name != self.phase or self.bar.total != total:
            self.close()  # one bar at a time: the previous phase is over
            unit = "%" if self.desc is not None and total == PERCENT else self.units.get(phase, self.unit)
            self.bar = tqdm(total=total, desc=name, unit=unit, unit_scale=phase in self.scaled, file=self.file)
            self.phase = name
        if self.desc is not None:
            self.bar.set_postfix_str(phase[:60], refresh=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.phase = None

    def __enter__(self) -> TqdmBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
