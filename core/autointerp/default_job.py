"""The default workspace's explanations as a background job: one detached process, its lock and its status file.

The app calls `start_default_job(workspace)` once the default workspace is built: it launches
`python -m core explain-default --workspace W` as a detached process (it outlives the page and the
server) unless the job is running, starting, failed or already done. The job (`run_default_job`)
holds an exclusive lock for its whole run and writes its progress to a small JSON status file that
`job_status` reads; the pages keep reading the workspace meanwhile (short store sessions).

Files, in the workspace's data folder (`NAME.duckdb.data/`), so they move with the workspace:
    default-explanations.lock   flock held by the running job (the OS releases it if the job dies)
    default-explanations.json   status: state, stage, phase, fraction, error, pid, times
    default-explanations.log    the job's output (tqdm bars, tracebacks)

No double start: `start_default_job` decides and launches while holding the lock, writes state
'starting' with the child's pid, and a second caller that sees a live 'starting' child does not
launch; a child that still finds the lock held (a job started by hand) exits without writing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import store
from core.autointerp import default as default_stages
from core.autointerp.default import STAGES, default_explanations_ready, ensure_default_explanations
from core.autointerp.engine import RunSpec
from core.errors import UserError
from core.locks import ProcessLock
from core.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTING_STALE_S = 300.0  # a 'starting' child that has not taken the lock by then is considered dead
WRITE_EVERY_S = 1.0  # status file writes at most this often (plus every phase change)


class JobRunningError(UserError):
    """Another default-explanations job holds the workspace's job lock."""


@dataclass
class JobStatus:
    """What the status file says, checked against the lock: state is one of
    'not started' | 'starting' | 'running' | 'finished' | 'failed' | 'stopped' (died without recording why)."""

    state: str = "not started"
    stage: str | None = None
    phase: str | None = None
    fraction: float = 0.0  # of all stages' work, 0..1
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    seconds: dict = field(default_factory=dict)  # stage -> wall seconds, for stages finished by this job
    error: str | None = None
    pid: int | None = None
    started: float | None = None
    updated: float | None = None
    stage_started: float | None = None
    eta_s: float | None = (
        None  # estimated seconds left in the current stage (from its pace so far); None: not known yet
    )


def job_files(workspace: Path) -> dict[str, Path]:
    """Paths of the job's lock, status and log files for `workspace`."""
    base = store.data_dir(Path(workspace))
    return {
        "lock": base / "default-explanations.lock",
        "status": base / "default-explanations.json",
        "log": base / "default-explanations.log",
    }


def rerun_command(workspace: Path) -> str:
    """The shell command that runs (or resumes) the job by hand."""
    return f"python -m core explain-default --workspace {Path(workspace).resolve()}"


def _read_status(workspace: Path) -> JobStatus | None:
    path = job_files(workspace)["status"]
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return JobStatus(state="failed", error=f"unreadable status file {path}")
    known = JobStatus.__dataclass_fields__
    return JobStatus(**{k: v for k, v in data.items() if k in known})


def _write_status(workspace: Path, status: JobStatus) -> None:
    path = job_files(workspace)["status"]
    path.parent.mkdir(parents=True, exist_ok=True)
    status.updated = time.time()
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def _pid_alive(pid: int | None) -> bool:
    """True if process `pid` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextmanager
def _try_lock(workspace: Path, wait: float = 0.0) -> Iterator[bool]:
    """Try to take the job lock (waiting up to `wait` seconds); yields whether it was taken, holds it until exit."""
    lock = ProcessLock(job_files(workspace)["lock"])
    if not lock.acquire(wait):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _status_unlocked(workspace: Path, status: JobStatus | None) -> JobStatus:
    """The state of a job whose lock is free: a running/starting record without a live job is 'stopped'."""
    if status is None:
        return JobStatus()
    if status.state == "running" or (
        status.state == "starting"
        and (not _pid_alive(status.pid) or time.time() - (status.started or 0) > STARTING_STALE_S)
    ):
        status.state = "stopped"
        status.error = status.error or "the job stopped before finishing (killed, or the machine restarted)"
    return status


def job_status(workspace: Path) -> JobStatus:
    """The job's current status (reads the status file; a free lock turns 'running' into 'stopped')."""
    status = _read_status(workspace)
    if status is not None and status.state == "running":
        with _try_lock(workspace) as free:
            if not free:
                return status
        status = _read_status(workspace)  # it may have finished between the two reads
    return _status_unlocked(workspace, status)


def start_default_job(
    workspace: Path,
    argv: list[str] | None = None,
    retry: bool = False,
    stages: tuple[str, ...] = tuple(STAGES),
    base: RunSpec | None = None,
) -> JobStatus:
    """Launch the default-explanations job for `workspace` as a detached process if it should run; returns the status.

    It runs when the explanations are not complete and no job is running or starting, and either none ran
    yet, the last one finished (the spec or workspace changed since), or `retry` is set (after a failure or
    a stop; without it a failed job is reported, not restarted in a loop). `argv` replaces the command (tests).
    """
    workspace = Path(workspace)
    with _try_lock(workspace) as free:
        if not free:
            return job_status(workspace)
        status = _status_unlocked(workspace, _read_status(workspace))
        if default_explanations_ready(workspace, stages, base or default_stages.DEFAULT_SPEC):
            if status.state != "finished":
                status = JobStatus(state="finished", stages=list(stages), fraction=1.0)
                _write_status(workspace, status)
            return status
        if status.state == "starting":
            return status
        if not (status.state in ("not started", "finished") or retry):
            return status
        files = job_files(workspace)
        argv = argv or [
            sys.executable,
            "-m",
            "core",
            "explain-default",
            "--workspace",
            str(workspace.resolve()),
            "--stages",
            ",".join(stages),
            "--wait-lock",
            "60",
            "--nice",
            "19",  # lowest priority: pages opened meanwhile (and the first start's) keep the CPU
        ]
        with open(files["log"], "ab") as log:
            child = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # detached: survives the page, the session and the server
                env={**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            )
        status = JobStatus(state="starting", stages=list(stages), pid=child.pid, started=time.time())
        _write_status(workspace, status)
        return status


class _StatusProgress:
    """Turns the engine's `progress(label, done, total)` into the status file's stage/phase/fraction."""

    def __init__(self, workspace: Path, status: JobStatus, dictionaries: list[str], extra: Progress | None):
        self.workspace, self.status, self.dicts, self.extra = workspace, status, dictionaries, extra
        self.stage_index = 0
        self.last_write = 0.0

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.extra is not None:
            self.extra(label, done, total)
        name = label.split(" ")[0]
        i = self.dicts.index(name) if name in self.dicts else 0
        within = done / max(total, 1) if name == label else 1.0
        units = len(self.status.stages) * max(len(self.dicts), 1)
        self.status.fraction = min((self.stage_index * len(self.dicts) + i + within) / units, 1.0)
        in_stage = (i + within) / max(len(self.dicts), 1)
        elapsed = time.time() - (self.status.stage_started or time.time())
        if in_stage > 0.005 and elapsed > 5:
            self.status.eta_s = round(elapsed * (1 - in_stage) / in_stage)
        changed = self.status.phase != label
        self.status.phase = f"{label}: {done:,} / {total:,}"
        if changed or time.monotonic() - self.last_write >= WRITE_EVERY_S:
            _write_status(self.workspace, self.status)
            self.last_write = time.monotonic()


OVERLAP_KINDS = ("resid", "attn", "transcoder")  # the Overlap page's kinds


def store_page_analyses(workspace: Path, root: Path | None = None) -> dict:
    """Compute and store what the Scores and Deciles pages (core.analysis.analyses) and the Overlap page
    (layer pairs of each kind, on decoders and explanations) read, from the workspace's current scores."""
    from core.analysis import analyses, overlap
    from core.subjects.models import ArtifactError

    results = analyses.analyze_workspace(workspace)
    notes = []
    try:
        dicts = overlap.workspace_dictionaries(workspace, "default", OVERLAP_KINDS, root)
    except (UserError, ArtifactError, ValueError) as exc:  # e.g. no SAE of those kinds: explanation overlap only
        dicts, notes = None, [f"decoder overlap skipped: {exc}"]
    run = overlap.overlap_workspace(workspace, dicts, kinds=OVERLAP_KINDS)
    return {
        "analyses": {k: type(v).__name__ for k, v in results.items()},
        "overlap_pairs": len(run.computed),
        "notes": notes + run.notes,
    }


def time_left_text(status: JobStatus) -> str:
    """'about 12 min left in the fast stage' (then the stages after it), or '' while the pace is not known."""
    if status.eta_s is None or not status.stage:
        return ""
    minutes = max(1, round(status.eta_s / 60))
    later = status.stages[status.stages.index(status.stage) + 1 :] if status.stage in status.stages else []
    return f"about {minutes} min left in the {status.stage} stage" + (
        f", then the {', '.join(later)} stage" if later else ""
    )


def run_default_job(
    workspace: Path,
    stages: tuple[str, ...] = tuple(STAGES),
    progress: Progress | None = None,
    wait_lock: float = 0.0,
    base: RunSpec | None = None,
) -> JobStatus:
    """Run `ensure_default_explanations` stage by stage under the job lock, recording progress and outcome.

    Raises JobRunningError if another job holds the lock after `wait_lock` seconds (nothing is written then).
    A failure is recorded in the status file (state 'failed', the error) and re-raised.
    `base` defaults to `core.autointerp.default.DEFAULT_SPEC` (read at call time).
    """
    workspace = Path(workspace)
    base = base or default_stages.DEFAULT_SPEC
    with _try_lock(workspace, wait=wait_lock) as free:
        if not free:
            other = _read_status(workspace)
            raise JobRunningError(
                f"a default-explanations job is already running on {workspace}"
                + (f" (process {other.pid})" if other and other.pid else "")
                + f"; its progress is in {job_files(workspace)['status']}"
            )
        dicts = [d.id for d in store.list_dictionaries(workspace, ready_only=True)]
        status = JobStatus(state="running", stages=list(stages), pid=os.getpid(), started=time.time())
        _write_status(workspace, status)
        bar = _StatusProgress(workspace, status, dicts, progress)
        try:
            for index, stage in enumerate(stages):
                bar.stage_index, status.stage = index, stage
                status.stage_started, status.eta_s = time.time(), None
                _write_status(workspace, status)
                t0 = time.perf_counter()
                done = ensure_default_explanations(workspace, bar, stages=(stage,), base=base)
                if done:
                    status.seconds[stage] = round(time.perf_counter() - t0, 1)
                    status.phase, status.eta_s = "analyses and layer overlap", None
                    _write_status(workspace, status)
                    store_page_analyses(workspace)  # the Scores, Deciles and Overlap pages read these
        except BaseException as exc:
            status.state = "failed" if not isinstance(exc, KeyboardInterrupt) else "stopped"
            status.error = f"{type(exc).__name__}: {exc}".strip()
            _write_status(workspace, status)
            if not isinstance(exc, (KeyboardInterrupt, UserError)):
                traceback.print_exc()
            raise
        status.state, status.phase, status.fraction, status.error = "finished", None, 1.0, None
        _write_status(workspace, status)
        return status
