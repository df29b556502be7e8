"""The engine's one inter-process lock, and the one reader of who holds a lock.

A `ProcessLock` is an exclusive lock on a lock file, held for the length of a job (a cache run, the
default workspace's build, the default explanations job). It is an flock() taken through the `filelock`
package (`UnixFileLock`, never waiting inside filelock: timeout 0, polled here), so the OS releases it
when the holder dies, two open files in one process exclude each other (another thread, e.g. a second
browser session), and Linux lists it in /proc/locks.

Once it holds the lock, the holder records itself in the lock file: "process PID (COMMAND) since TIME"
(`holder_record`). `lock_holder(path)` answers at once who holds a lock file now: the kernel's pid from
/proc/locks when it has one (a holder that recorded nothing, e.g. flock(1), is still named), with what
the holder recorded.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout, UnixFileLock

RECORD_BYTES = 400  # the most of a lock file's holder record that is read


@dataclass(frozen=True)
class LockHolder:
    """The process holding a lock: its id, command line and start of holding (each None when unknown)."""

    pid: int | None
    command: str | None = None
    since: str | None = None

    @property
    def this_process(self) -> bool:
        """True if the holder is this process (e.g. another thread: another browser session of the same app)."""
        return self.pid == os.getpid()

    def describe(self) -> str:
        """E.g. "process 4242 (`python -m core cache --workspace w.duckdb`), holding it since 14:03:02"."""
        if self.pid is None:
            return "another process (it did not record its id)"
        text = f"process {self.pid}" + (f" (`{self.command}`)" if self.command else "")
        return text + (f", holding it since {self.since}" if self.since else "")

    def what_to_do(self) -> str:
        """What the user can do about it."""
        stop = f"stop it (`kill {self.pid}`)" if self.pid is not None else "stop it"
        return f"wait for it to finish, or {stop}"


def process_command(pid: int) -> str | None:
    """The command line of process `pid` (Linux /proc; the program's path shortened to its name), or None."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not args:
        return None
    text = re.sub(r"\s+", " ", " ".join([Path(args[0]).name, *args[1:]])).strip()
    return text if len(text) <= 200 else text[:199] + "…"


def holder_record() -> str:
    """What a lock file records about this process once it holds the lock (see `lock_file_holder`)."""
    command = process_command(os.getpid()) or "?"
    return f"process {os.getpid()} ({command}) since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _flock_pid(path: Path) -> int | None:
    """The process holding a flock() on `path`, from /proc/locks (Linux), or None."""
    try:
        st = path.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].lstrip("-").isdigit():
            return int(fields[4]) if int(fields[4]) > 0 else None
    return None


def lock_file_holder(path: Path, recorded: str = "") -> LockHolder:
    """Who holds the flock() on lock file `path`: the kernel's answer (/proc/locks) if it has one, with what
    the holder recorded in the file (`holder_record`; it can lag the kernel by a moment, or be an older holder's)."""
    match = re.match(r"process (\d+) \((.*)\) since (.+)$", recorded.strip())
    rec = LockHolder(int(match.group(1)), match.group(2), match.group(3)) if match else None
    pid = _flock_pid(path)
    if pid is None:
        return rec or LockHolder(None)
    if rec is not None and rec.pid == pid:
        return rec
    return LockHolder(pid, process_command(pid))


def _recorded(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(RECORD_BYTES).decode(errors="replace")
    except OSError:
        return ""


class ProcessLock:
    """An exclusive flock() on lock file `path` (created with its folder), taken without blocking.

    `acquire(wait)` polls for up to `wait` seconds (calling `on_wait()` between tries) and returns whether
    it got the lock; `release()` lets it go. As a context manager it takes the lock at once or raises
    `LockBusy` naming the holder. One object holds the lock at most once; use a new one per job.
    """

    def __init__(self, path: Path, poll: float = 0.2):
        self.path = Path(path)
        self.poll = poll
        self._lock = UnixFileLock(str(self.path), thread_local=False)

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._lock.is_locked

    def try_acquire(self) -> bool:
        """Take the lock if it is free (answers at once) and record this process in the lock file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        with open(self.path, "r+b") as f:  # another descriptor: closing it keeps the flock (held per open file)
            f.truncate(0)
            f.write(holder_record().encode())
        return True

    def acquire(self, wait: float = 0.0, on_wait: Callable[[], None] | None = None) -> bool:
        """Take the lock, trying for up to `wait` seconds; True if this object now holds it."""
        deadline = time.monotonic() + wait
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            if on_wait is not None:
                on_wait()
            time.sleep(self.poll)
        return True

    def release(self) -> None:
        """Let the lock go (the record stays in the file; readers trust it only with the kernel's pid or a lock)."""
        if self._lock.is_locked:
            self._lock.release(force=True)

    def holder(self) -> LockHolder:
        """Who holds the lock now (meaningful while `try_acquire` fails)."""
        return lock_file_holder(self.path, _recorded(self.path))

    def __enter__(self) -> ProcessLock:
        if not self.try_acquire():
            raise LockBusy(self.path, self.holder())
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LockBusy(Exception):
    """The lock file `path` is held by `holder`."""

    def __init__(self, path: Path, holder: LockHolder):
        super().__init__(f"{path} is held by {holder.describe()}")
        self.path, self.holder = path, holder


def lock_holder(path: Path) -> LockHolder | None:
    """Who holds lock file `path` right now, or None if nobody does (answers at once; never creates the file)."""
    path = Path(path)
    if not path.exists():
        return None
    probe = UnixFileLock(str(path), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return lock_file_holder(path, _recorded(path))
    probe.release(force=True)
    return None
