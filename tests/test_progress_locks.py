"""core.progress (the one progress protocol, its time left and tqdm adapter) and core.locks (the one lock)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.locks import LockBusy, ProcessLock, lock_holder
from core.progress import PERCENT, TimeLeft, TqdmBars, progress_text, report_fraction


def test_report_fraction_reports_clamped_percent():
    seen = []
    for fraction in (-0.5, 0.0, 0.254, 1.0, 3.0):
        report_fraction(lambda *a: seen.append(a), "tracing", fraction)
    report_fraction(None, "nobody listens", 0.5)
    assert (
        seen
        == [("tracing", 0, PERCENT), ("tracing", 0, PERCENT), ("tracing", 25, PERCENT)]
        + [("tracing", PERCENT, PERCENT)] * 2
    )


def test_time_left_extrapolates_within_a_phase_and_restarts_with_the_next():
    now = [0.0]
    left = TimeLeft(clock=lambda: now[0])
    assert left("caching", 0, 100) is None  # the phase's first report starts its clock
    now[0] = 10.0
    assert left("caching", 25, 100) == pytest.approx(30.0)  # 25 units in 10 s: 75 more take 30 s
    assert left("finalizing", 0, 4) is None  # a new phase, a new clock
    now[0] = 12.0
    assert left("finalizing", 1, 4) == pytest.approx(6.0)
    # Fraction work changes its message at every report; the clock runs on.
    assert left("level 1", 10, PERCENT) is None
    now[0] = 13.0
    assert left("level 2", 20, PERCENT) == pytest.approx(8.0)
    assert progress_text("caching", 1024, 4096, 12.0) == "caching: 1,024 / 4,096 · about 12 s left"
    assert progress_text("level 2", 20, PERCENT, None) == "level 2"
    assert progress_text("x", 1, 2, 600.0) == "x: 1 / 2 · about 10 min left"


def test_tqdm_bars_one_bar_per_phase_or_one_bar_for_messages():
    out = io.StringIO()
    with TqdmBars(unit="dict", units={"caching": "tok"}, file=out) as bars:
        bars("caching", 10, 40)
        first = bars.bar
        bars("caching", 40, 40)
        assert bars.bar is first and first.n == 40 and first.unit == "tok"
        bars("finalizing", 1, 2)
        assert bars.bar is not first and first.disable  # the previous phase's bar is closed
        assert bars.bar.unit == "dict"
    assert bars.bar is None
    text = out.getvalue()
    assert "caching" in text and "finalizing" in text and "<" in text  # elapsed<left
    out = io.StringIO()
    with TqdmBars(desc="ioi: prunes", file=out) as bars:
        report_fraction(bars, "asking m about part 1", 0.3)
        bar = bars.bar
        report_fraction(bars, "asking m about part 2", 0.6)
        assert bars.bar is bar and bar.n == 60 and bar.unit == "%"
    assert "asking m about part 2" in out.getvalue()


def test_a_lock_excludes_a_second_holder_in_this_process_and_names_it(tmp_path):
    path = tmp_path / "sub" / "job.lock"
    assert lock_holder(path) is None and not path.exists()  # asking never creates the file
    first = ProcessLock(path)
    assert first.try_acquire()
    assert path.read_text().startswith(f"process {os.getpid()} (")
    second = ProcessLock(path)
    assert not second.try_acquire()
    assert path.read_text().startswith(f"process {os.getpid()} (")  # a failed contender keeps the record
    holder = lock_holder(path)
    assert holder is not None and holder.pid == os.getpid() and holder.this_process and holder.since
    with pytest.raises(LockBusy, match=f"held by process {os.getpid()}"):
        with ProcessLock(path):
            pass
    t0 = time.monotonic()
    waits = []
    assert not second.acquire(wait=0.3, on_wait=lambda: waits.append(1))
    assert time.monotonic() - t0 >= 0.3 and waits
    first.release()
    assert lock_holder(path) is None
    with ProcessLock(path) as lock:
        assert lock.held
    assert not lock.held


def test_lock_holder_names_another_process_from_the_kernel(tmp_path):
    if not Path("/proc/locks").exists():
        pytest.skip("needs Linux /proc/locks")
    path = tmp_path / "build-lock"
    code = (
        "import sys, time\nfrom core.locks import ProcessLock\n"
        "lock = ProcessLock(sys.argv[1])\nassert lock.try_acquire()\nprint('held', flush=True)\ntime.sleep(60)\n"
    )
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert child.stdout.readline().strip() == "held"
        holder = lock_holder(path)
        assert holder is not None and holder.pid == child.pid and not holder.this_process
        assert holder.command and "python" in holder.command and holder.since
        assert not ProcessLock(path).try_acquire()
    finally:
        child.kill()
        child.wait()
    assert lock_holder(path) is None  # the OS released the dead holder's lock


def test_streamlit_adapter_shows_phase_counts_and_literal_messages():
    from ui.progress import progress_callback

    class Bar:
        def __init__(self) -> None:
            self.calls: list[tuple[float, str]] = []

        def progress(self, value: float, text: str) -> None:
            self.calls.append((value, text))

    bar = Bar()
    progress = progress_callback(bar)
    progress("caching", 0, 4096)
    progress("caching", 1024, 4096)
    report_fraction(progress, "asking *model* about part 1", 0.5)
    assert bar.calls[0] == (0.0, "caching: 0 / 4,096")
    assert bar.calls[1][0] == 0.25 and bar.calls[1][1].startswith("caching: 1,024 / 4,096")
    assert bar.calls[2] == (0.5, r"asking \*model\* about part 1")  # model text is shown literally
