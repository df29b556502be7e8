"""The embedded default's workspace: where it lives, whether it is current, building it once.

One process builds it; others wait for it (`_BuildLock`)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from core import store
from core.cache.plan import CacheParams, WorkspaceMismatchError, plan_corpus_contexts, resolve_dictionaries
from core.cache.run import _JobLock, job_lock_holder, run_cache
from core.errors import UserError
from core.locks import LockHolder, ProcessLock, lock_holder
from core.paths import DEFAULT_DIR, default_paths
from core.progress import Progress
from core.store.schema import WorkspaceError, WorkspaceLockedError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The embedded default's workspace

DEFAULT_WORKSPACE = DEFAULT_DIR / "workspace.duckdb"


# 65k Brown tokens: enough for 10 examples in every decile of most live latents (87% of the
# residual-stream SAE's, 98% of the neurons'), about 73M stored activations and 450 MB on disk.
# See README ("Activation cache") and bench/default_workspace.py for its build time.
DEFAULT_WORKSPACE_PARAMS = CacheParams(n_tokens=65_536)


CACHE_FORMAT = 2  # bump when cached rows or statistics change meaning: default workspaces then rebuild


DEFAULT_WAIT_S = 1800.0  # how long ensure_default_workspace waits for another process's build


_source_memo: dict[str, tuple[tuple, str]] = {}


def default_source_fingerprint(root: Path | None = None) -> str:
    """Hash of what a default workspace is built from: the embedded default's model, tokenizer,
    dictionaries and corpus files (their bytes) and `CACHE_FORMAT`.

    Memoised per process on the files' sizes and modification times, so checking is cheap.
    """
    paths = default_paths(root)
    files_ = sorted(
        p
        for base in (paths["model_dir"], paths["dictionaries_dir"])
        if base.exists()
        for p in base.rglob("*")
        if p.is_file()
    )
    if paths["corpus"].exists():
        files_.append(paths["corpus"])
    stamps = tuple((str(p), st.st_size, st.st_mtime_ns, st.st_ino) for p in files_ for st in [p.stat()])
    key = str(paths["root"].resolve())
    hit = _source_memo.get(key)
    if hit is not None and hit[0] == stamps:
        return hit[1]
    h = hashlib.blake2b(digest_size=16)
    h.update(f"cache format {CACHE_FORMAT}".encode())
    for p in files_:
        h.update(str(p.relative_to(paths["root"])).encode())
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    _source_memo[key] = (stamps, h.hexdigest())
    return h.hexdigest()


def _default_info(path: Path) -> dict | None:
    with store.session(path) as con:
        return store.get_info(con, "default_workspace")


def default_workspace_ready(
    path: Path = DEFAULT_WORKSPACE, root: Path | None = None, timeout: float | None = None, strict: bool = False
) -> bool:
    """True if the default workspace exists, was built from the current default artifacts
    (`default_source_fingerprint`), and every dictionary in it is cached (no unfinished run).

    `timeout`: how long to wait for another process's lock on the file (default store.READ_TIMEOUT_S).
    With `strict`, a file locked that long or damaged raises (WorkspaceLockedError, WorkspaceDamagedError)
    instead of counting as not ready, so a caller can say so rather than start a build.
    """
    path = Path(path)
    if not path.exists():
        return False
    source = default_source_fingerprint(root)
    try:
        with store.session(path, timeout=timeout) as con:
            info = store.get_info(con, "default_workspace")
            if info is None or info.get("source") != source:
                return False
            dicts = store.dictionaries(con)
            return bool(dicts) and all(d.status == "ready" for d in dicts) and not store.unfinished_runs(con)
    except (WorkspaceLockedError, store.WorkspaceDamagedError):
        if strict:
            raise
        return False
    except WorkspaceError:
        return False


def set_aside_damaged(path: Path = DEFAULT_WORKSPACE) -> Path:
    """Move a damaged workspace (its file, write-ahead log and data folder, bytes untouched) to a new name
    NAME.damaged-YYYYmmdd-HHMMSS.duckdb beside it, so the default can be rebuilt; returns the new path.
    Never replaces an existing file. Refuses while a job writes the workspace."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    n = 1
    while aside.exists() or store.data_dir(aside).exists():
        n += 1
        aside = path.with_name(f"{path.stem}.damaged-{stamp}-{n}{path.suffix}")
    moves = [
        (path, aside),
        (Path(str(path) + ".wal"), Path(str(aside) + ".wal")),
        (store.data_dir(path), store.data_dir(aside)),
    ]
    with _JobLock(path):  # (its lock file moves with the data folder; the open lock stays valid)
        for src, dst in moves:
            if src.exists():
                os.rename(src, dst)
    log.warning("the workspace %s is damaged; moved it to %s", path, aside)
    return aside


def user_content(path: Path) -> dict[str, int] | None:
    """What in workspace `path` the default's builders did not make (so a rebuild must keep it): circuits and their
    annotations, explanations by another explainer than the offline baseline, LLM replies. Counts of each kind
    present (empty: nothing), or None if the file cannot be read (then it may hold anything)."""
    from core.autointerp.explainers import BASELINE_EXPLAINER

    builder = "example builder (automatic)"  # core.circuits.examples.MADE_BY: the default's example circuits
    queries = {
        "circuits": f"SELECT count(DISTINCT name) FROM circuit_versions WHERE created_by <> '{builder}'",
        "circuit annotations": f"SELECT count(*) FROM circuit_node_annotations WHERE author <> '{builder}'",
        "LLM explanations": f"SELECT count(*) FROM explanations WHERE explainer <> '{BASELINE_EXPLAINER}'",
        "LLM replies": "SELECT count(*) FROM llm_responses",
    }
    out: dict[str, int] = {}
    try:
        with store.session(path, timeout=store.READ_TIMEOUT_S) as con:
            for name, sql in queries.items():
                try:
                    n = int(con.execute(sql).fetchone()[0])
                except Exception:  # a table made by a later migration is missing in an older file
                    continue
                if n:
                    out[name] = n
    except WorkspaceError:
        return None
    return out


def _note_path(path: Path) -> Path:
    return Path(path).with_name(f"{Path(path).stem}-set-aside.json")  # data/default/workspace-set-aside.json


def set_aside_notes(path: Path | None = None) -> list[dict]:
    """Earlier default workspaces (of `path`, default DEFAULT_WORKSPACE) kept aside because they held the user's
    work, newest first: each {"path", "reason", "content", "when"}; only those whose file still exists."""
    import json

    try:
        notes = json.loads(_note_path(path or DEFAULT_WORKSPACE).read_text())
    except (OSError, ValueError):
        return []
    return [n for n in notes if isinstance(n, dict) and Path(str(n.get("path"))).exists()][::-1]


def _note_set_aside(path: Path, aside: Path, reason: str, content: dict | None) -> None:
    import json

    note = _note_path(path)
    try:
        notes = json.loads(note.read_text())
    except (OSError, ValueError):
        notes = []
    notes.append({"path": str(aside), "reason": reason, "content": content, "when": time.strftime("%Y-%m-%d %H:%M")})
    tmp = note.with_name(note.name + ".tmp")
    tmp.write_text(json.dumps(notes, indent=1))
    os.replace(tmp, note)


def _set_aside(path: Path, reason: str) -> Path:
    """Move a stale default workspace (and its data folder) aside so the default can be rebuilt; returns its new path.

    It goes to NAME.stale.duckdb, replacing an older stale one only if that holds nothing the user made
    (`user_content`); otherwise to NAME.stale-YYYYmmdd-HHMMSS.duckdb. One that holds the user's work (or cannot
    be read) is recorded in NAME-set-aside.json, which the app reads to say where it is and how to open it."""
    import shutil

    stale = path.with_name(f"{path.stem}.stale{path.suffix}")
    if stale.exists() and user_content(stale) != {}:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        stale = path.with_name(f"{path.stem}.stale-{stamp}{path.suffix}")
        n = 1
        while stale.exists() or store.data_dir(stale).exists():
            n += 1
            stale = path.with_name(f"{path.stem}.stale-{stamp}-{n}{path.suffix}")
    content = user_content(path)
    with _JobLock(path):  # refuses if a cache job (e.g. a CLI run on this path) is writing it
        for p in (stale, Path(str(stale) + ".wal")):
            p.unlink(missing_ok=True)
        shutil.rmtree(store.data_dir(stale), ignore_errors=True)
        for src, dst in (
            (path, stale),
            (Path(str(path) + ".wal"), Path(str(stale) + ".wal")),
            (store.data_dir(path), store.data_dir(stale)),
        ):
            if src.exists():
                os.replace(src, dst)
    if content != {}:
        _note_set_aside(path, stale, reason, content)
    log.warning("the default workspace %s %s; moved it to %s and building a new one", path, reason, stale)
    return stale


def _build_lock_path(workspace: Path) -> Path:
    return Path(workspace).with_name(Path(workspace).name + ".build-lock")


class _BuildLock:
    """Exclusive right to build a default workspace: a second caller (another process, or another
    thread such as a second browser session) waits, reporting the builder's progress, then finds
    the workspace built. The OS releases the lock if the builder dies; the waiter then resumes the build.

    The holder records who it is in the lock file (`core.locks.ProcessLock`). With `wait_for_other_processes`
    False, a caller that finds another *process* building fails at once, naming it (the app answers
    rather than hang); it still waits, with progress, for a build running in this process.
    """

    def __init__(
        self, workspace: Path, progress: Progress | None, timeout: float, wait_for_other_processes: bool = True
    ):
        self.workspace = workspace
        self.path = _build_lock_path(workspace)
        self.progress = progress
        self.timeout = timeout
        self.wait_for_other_processes = wait_for_other_processes

    def _report_waiting(self) -> None:
        if self.progress is None:
            return
        try:
            runs = store.cache_status(self.workspace) if self.workspace.exists() else []
        except WorkspaceError:
            runs = []
        self.progress("waiting", runs[0].committed_chunks if runs else 0, runs[0].n_chunks if runs else 0)

    def __enter__(self) -> _BuildLock:
        self.lock = ProcessLock(self.path)
        start = time.monotonic()
        while not self.lock.try_acquire():
            holder = self.lock.holder()
            # A holder not found yet (no /proc/locks, record not yet written) gets a moment to record itself.
            other = not holder.this_process and (holder.pid is not None or time.monotonic() - start > 1.0)
            if other and not self.wait_for_other_processes:
                raise WorkspaceLockedError(
                    f"the default workspace {self.workspace} is being built by {holder.describe()}; "
                    f"{holder.what_to_do()}, then reload (a stopped build resumes where it stopped)",
                    holder,
                )
            if time.monotonic() - start > self.timeout:
                raise WorkspaceLockedError(
                    f"{holder.describe()} has been building the default workspace {self.workspace} for more "
                    f"than {self.timeout / 60:.0f} minutes; {holder.what_to_do()}, then reload",
                    holder,
                )
            self._report_waiting()
            time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def build_lock_holder(path: Path = DEFAULT_WORKSPACE) -> LockHolder | None:
    """Who is building the default workspace `path` right now (see `_BuildLock`), or None if nobody is.
    Answers at once; `LockHolder.this_process` tells a build by another thread of this process (another
    session of the app) from one by another process."""
    return lock_holder(_build_lock_path(path))


def ensure_default_workspace(
    progress: Progress | None = None,
    path: Path = DEFAULT_WORKSPACE,
    root: Path | None = None,
    params: CacheParams = DEFAULT_WORKSPACE_PARAMS,
    wait_timeout: float = DEFAULT_WAIT_S,
    wait_for_other_processes: bool = True,
    seed: Path | None = None,
) -> Path:
    """Build (or finish building) the embedded default's workspace if needed; returns its path.

    With `seed` (the app passes `core.build.seed.SEED_DIR`), a missing workspace is first copied from that
    shipped seed when it was made from the current default artifacts (`core.build.seed.install_seed`: seconds,
    no cache run); an unfinished build is replaced by the seed the same way (kept aside if it holds user work).
    A seed that is missing or does not fit falls back to the build. A folder the process cannot write raises
    `DataFolderReadOnlyError` (a UserError) naming it and the ways out.

    Caches `params.n_tokens` Brown training tokens for every default dictionary plus neuron
    baselines; `progress(phase, done, total)` reports as it goes (the app passes st.progress).
    An interrupted build resumes where it stopped. Safe to call from several processes or threads
    at once: one builds, the others wait (phase 'waiting') and return the built workspace; with
    `wait_for_other_processes` False, a build by another process raises WorkspaceLockedError naming
    it instead of waiting (a build in this process is still waited for). A workspace built from
    other default artifacts (a rebuilt model or dictionaries, see `default_source_fingerprint`) or with
    other parameters is moved aside to NAME.stale.duckdb (explanations stored in it are kept there) and rebuilt.
    """
    path = Path(path)
    if default_workspace_ready(path, root):
        return path
    _check_writable(path)  # before the build lock: its file goes there too
    with _BuildLock(path, progress, wait_timeout, wait_for_other_processes):
        if default_workspace_ready(path, root):  # another process built it while we waited
            return path
        job = job_lock_holder(path)
        if job is not None:  # e.g. `python -m core cache --workspace` on this path: say so before loading anything
            raise WorkspaceLockedError(
                f"another job is writing this workspace ({path}): {job.describe()}; {job.what_to_do()}, then try again",
                job,
            )
        want = {"source": default_source_fingerprint(root), "params": asdict(params)}
        seed_usable = False
        if seed is not None:
            from core.build.seed import seed_problem

            problem = seed_problem(seed, root)
            seed_usable = problem is None
            if problem:
                log.warning("not using the shipped seed: %s", problem)
        if path.exists():
            try:
                info = _default_info(path)
            except WorkspaceLockedError:
                raise
            except WorkspaceError:
                _set_aside(path, "is unreadable")
            else:
                if info != want:
                    _set_aside(
                        path,
                        "was built from other default artifacts or parameters"
                        if info
                        else "is not a default workspace",
                    )
                elif seed_usable:  # an unfinished build (e.g. an interrupted first start): the seed is quicker
                    _set_aside(path, "is an unfinished build; the shipped seed replaces it")
        if seed_usable and _install_seed(path, seed, root, progress):
            return path
        import torch

        if progress:
            progress("loading", 0, 1)
        threads = torch.get_num_threads()
        # Every core for the forward passes: on 2 cores the whole job ran at 2,947 tokens/s with two torch
        # threads against 2,251 with one (bench/cache_throughput.py --tokens 65536 --threads 2 / 1).
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            _build_default(progress, path, root, params, want)
        finally:
            torch.set_num_threads(threads)
    return path


class DataFolderReadOnlyError(UserError):
    """The default workspace's folder cannot be written by this process."""


def _check_writable(path: Path) -> None:
    folder = Path(path).parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataFolderReadOnlyError(
            f"cannot write the default workspace into {folder}: this user ({os.getuid()}) has no write permission "
            f"there. Give it write permission (e.g. `chmod u+w {probe}` or run as its owner), or open a workspace "
            "in a writable folder: `SAE_EXPLORER_WORKSPACE=/path/to/writable/workspace.duckdb ./dev app`"
        )


def _install_seed(path: Path, seed: Path, root: Path | None, progress: Progress | None) -> bool:
    """Copy the shipped seed to `path` (see core.build.seed.install_seed); False if it failed (then build instead)."""
    from core.build.seed import SeedError, install_seed

    try:
        install_seed(path, seed, root, progress)
    except SeedError as exc:
        log.warning("the shipped seed could not be installed (%s); building the default workspace instead", exc)
        return False
    except PermissionError as exc:
        raise DataFolderReadOnlyError(
            f"cannot copy the shipped default workspace into {path.parent}: {exc}. Give this user write permission "
            "there, or open a workspace in a writable folder: "
            "`SAE_EXPLORER_WORKSPACE=/path/to/writable/workspace.duckdb ./dev app`"
        ) from exc
    return default_workspace_ready(path, root)


def _build_default(progress: Progress | None, path: Path, root: Path | None, params: CacheParams, want: dict) -> None:
    """Load the default model and dictionaries and cache them into `path` (resuming, or setting aside a misfit once)."""
    from core.subjects.models import load_model

    model = load_model("default", root=root)
    dicts = resolve_dictionaries(model, "default", None, root=root)
    plan = plan_corpus_contexts(model.tokenizer, params.n_tokens, params.ctx_len, default_paths(root)["corpus"])
    if progress:
        progress("loading", 1, 1)
    for attempt in (1, 2):
        with store.session(path, write=True) as con:
            store.set_info(con, "default_workspace", want)
        try:
            run_cache(model, dicts, path, plan, params, model_name="default", progress=progress)
            return
        except WorkspaceMismatchError as exc:  # e.g. cached by an older version of this code
            if attempt == 2:
                raise
            _set_aside(path, f"does not fit the default ({exc})")
