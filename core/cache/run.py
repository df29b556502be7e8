"""`run_cache`: one resumable cache run over a workspace (plan, compute, finalise; steps 2 and 5)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import store
from core.cache import files
from core.cache.compute import _ChunkBuilder, _compute_chunks, reuse_freed_memory
from core.cache.finalise import FINALIZE_ROWS, _commit_finalized, _finalize_dictionary
from core.cache.outputs import add_output_tokens
from core.cache.plan import (
    CacheParams,
    ContextPlan,
    WorkspaceMismatchError,
    check_dictionaries,
    dictionary_fingerprint,
    matching_fingerprint,
    model_fingerprint,
)
from core.locks import LockHolder, ProcessLock, lock_holder
from core.progress import Progress
from core.store.schema import WorkspaceLockedError
from core.subjects.dictionaries import Dictionary

log = logging.getLogger(__name__)


@dataclass
class CacheResult:
    """What a cache run did."""

    workspace: str
    run_id: str | None
    cached: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_tokens: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    file_bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time of the process (all threads) in some phases
    chunks_computed: int = 0

    @property
    def nothing_to_do(self) -> bool:
        """True when every requested dictionary was already cached."""
        return not self.cached


# ---------------------------------------------------------------------------------------------
# The job


class _JobLock:
    """An exclusive lock on a workspace for the length of one job (released by the OS if the process dies)."""

    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self.path = store.data_dir(workspace) / "job.lock"
        self.lock = ProcessLock(self.path)

    def __enter__(self) -> _JobLock:
        if not self.lock.try_acquire():
            holder = self.lock.holder()
            raise WorkspaceLockedError(
                f"another job is writing this workspace ({self.workspace}): {holder.describe()}; "
                f"{holder.what_to_do()}, then try again",
                holder,
            )
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _vocab_texts(tokenizer, d_vocab: int) -> list[str]:
    n = min(len(tokenizer), d_vocab)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        texts = backend.decode_batch([[i] for i in range(n)], skip_special_tokens=False)  # same text, 100x faster
    else:
        texts = tokenizer.batch_decode([[i] for i in range(n)])
    return texts + [f"<unused {i}>" for i in range(n, d_vocab)]


def _run_key(model_fp: str, plan_fp: str, params: CacheParams, dicts: list[tuple[str, str]]) -> str:
    payload = json.dumps(
        {"model": model_fp, "contexts": plan_fp, "params": asdict(params), "dictionaries": sorted(dicts)},
        sort_keys=True,
    )
    return hashlib.blake2b(payload.encode(), digest_size=6).hexdigest()


@dataclass
class _Stopwatch:
    """Wall-clock time and the process's CPU time (all threads) since it was made."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=time.process_time)

    def wall(self) -> float:
        """Seconds of wall-clock time since the start."""
        return time.perf_counter() - self.wall_start

    def cpu(self) -> float:
        """Seconds of CPU time of the process since the start."""
        return time.process_time() - self.cpu_start


@dataclass
class _OpenRun:
    """The cache run a call computes: a new one, or the interrupted one it resumes."""

    run_id: str
    todo: list[Dictionary]  # every dictionary of the run, including ones an interrupted finalisation already finished
    records: dict[str, store.DictionaryRecord]  # the stored record of each of `todo`, by dictionary id
    n_chunks: int
    committed_chunks: set[int]  # chunks an earlier try of this run already wrote and committed


def _check_inputs(model, dictionaries: list[Dictionary], plan: ContextPlan, params: CacheParams) -> None:
    """Refuse contexts that disagree with `params`, exceed the model's context or the cache's 2**32 positions."""
    if plan.ctx_len != params.ctx_len:
        raise ValueError(f"plan has contexts of {plan.ctx_len} tokens but params say {params.ctx_len}")
    if plan.ctx_len > model.cfg.n_ctx:
        raise ValueError(
            f"contexts of {plan.ctx_len} tokens are longer than this model's context ({model.cfg.n_ctx}); use --ctx-len {model.cfg.n_ctx}"
        )
    check_dictionaries(model, dictionaries)
    if plan.n_contexts * plan.ctx_len >= 1 << 32:
        raise ValueError(
            f"{plan.n_contexts * plan.ctx_len:,} token positions exceed this cache's limit of 2**32; cache fewer tokens per workspace"
        )


def _corpus_info(plan: ContextPlan, plan_fp: str) -> dict:
    """The workspace's record of the corpus slice `plan` caches."""
    return {
        **plan.source,
        "n_contexts": plan.n_contexts,
        "ctx_len": plan.ctx_len,
        "n_tokens": plan.n_cached_tokens,
        "fingerprint": plan_fp,
        "bos_token": int(plan.tokens[0, 0]),
    }


def _record_model(con, workspace: Path, model, model_name: str, model_fp: str) -> str:
    """Record the model in a new workspace; refuse a workspace built from other weights.

    Returns the model's fingerprint as the workspace records it (a legacy one stays as stored).
    """
    known_model = store.get_info(con, "model")
    if known_model is None:
        store.set_info(
            con,
            "model",
            {
                "name": model_name,
                "fingerprint": model_fp,
                "n_layers": model.cfg.n_layers,
                "d_model": model.cfg.d_model,
                "d_vocab": model.cfg.d_vocab,
            },
        )
        return model_fp
    recorded = matching_fingerprint(
        known_model["fingerprint"], model_fp, lambda algorithm: model_fingerprint(model, algorithm)
    )
    if recorded != known_model["fingerprint"]:
        raise WorkspaceMismatchError(
            f"workspace {workspace} was built from another model ({known_model['name']}, weights {known_model['fingerprint'][:12]}) "
            f"than this one ({model_name}, weights {model_fp[:12]}); use a new --workspace"
        )
    return recorded


def _record_corpus(con, workspace: Path, model, plan: ContextPlan, corpus_info: dict) -> None:
    """Store the contexts and vocabulary in a new workspace; refuse a workspace that caches another corpus slice."""
    known_corpus = store.get_info(con, "corpus")
    if known_corpus is None:
        store.set_info(con, "corpus", corpus_info)
        store.store_contexts(con, plan.tokens, plan.docs, plan.offsets)
        store.store_vocab(
            con,
            _vocab_texts(model.tokenizer, model.cfg.d_vocab)
            if model.tokenizer is not None
            else [str(i) for i in range(model.cfg.d_vocab)],
        )
    elif known_corpus["fingerprint"] != corpus_info["fingerprint"]:
        raise WorkspaceMismatchError(
            f"workspace {workspace} caches another corpus slice ({known_corpus.get('n_tokens'):,} tokens of "
            f"{known_corpus.get('corpus', '?')} {known_corpus.get('split', '')}, contexts of {known_corpus.get('ctx_len')}) "
            f"than this run ({plan.n_cached_tokens:,} tokens, contexts of {plan.ctx_len}); use the same --tokens/--ctx-len/--corpus or a new --workspace"
        )


def _plan_dictionaries(
    con, workspace: Path, dictionaries: list[Dictionary], fingerprints: dict[str, str]
) -> tuple[list[Dictionary], list[str], dict[str, str]]:
    """Split `dictionaries` into those this run caches and the ids of those a finished run already cached.

    Refuses a dictionary cached from different weights. Also returns each dictionary's fingerprint as the
    workspace records it: a stored fingerprint of the same weights (a legacy one included) is kept, so the
    key of an interrupted run stays the same.
    """
    existing = {r.id: r for r in store.dictionaries(con)}
    run_status = {r.run_id: r.status for r in store.runs(con)}
    todo, skipped = [], []
    fingerprints = dict(fingerprints)
    for d in dictionaries:
        rec = existing.get(d.id)
        if rec is not None:
            fingerprints[d.id] = matching_fingerprint(
                rec.fingerprint, fingerprints[d.id], lambda algorithm, d=d: dictionary_fingerprint(d, algorithm)
            )
        if rec is not None and rec.status == "ready" and rec.fingerprint != fingerprints[d.id]:
            raise WorkspaceMismatchError(
                f"dictionary {d.id} is already cached in {workspace} from different weights; use a new --workspace"
            )
        if rec is not None and rec.status == "ready" and run_status.get(rec.run_id) == "finished":
            skipped.append(d.id)
        else:
            todo.append(d)
    return todo, skipped, fingerprints


def _resume_or_start_run(
    con,
    workspace: Path,
    run_id: str,
    todo: list[Dictionary],
    fingerprints: dict[str, str],
    n_chunks: int,
    run_params: dict,
    restart: bool,
) -> tuple[_OpenRun, list[str]]:
    """Resume run `run_id` if it was interrupted, else start it; returns it and the ids of the runs discarded.

    Another unfinished run is refused, or with `restart` discarded (its scratch files are the caller's to remove).
    """
    discarded = []
    for unfinished in store.unfinished_runs(con):
        if unfinished.run_id != run_id or restart:
            if not restart:
                ids = unfinished.dictionary_ids
                raise WorkspaceMismatchError(
                    f"workspace {workspace} has an unfinished cache run ({len(ids)} dictionaries: "
                    f"{', '.join(ids[:4])}{'...' if len(ids) > 4 else ''}; "
                    f"{unfinished.committed_chunks}/{unfinished.n_chunks} chunks, params {unfinished.params}). "
                    "Rerun that command to finish it, or add --restart to discard it"
                )
            store.discard_run(con, unfinished.run_id)
            discarded.append(unfinished.run_id)
    if run_id not in {r.run_id for r in store.runs(con)}:
        store.start_run(con, run_id, run_params, [d.id for d in todo], n_chunks)
        for d in todo:
            store.register_dictionary(con, d.describe(), fingerprints[d.id], run_id)
    todo_ids = {d.id for d in todo}
    records = {r.id: r for r in store.dictionaries(con) if r.id in todo_ids}
    return _OpenRun(run_id, todo, records, n_chunks, store.committed_chunks(con, run_id)), discarded


def _open_run(
    workspace: Path,
    model,
    model_name: str,
    dictionaries: list[Dictionary],
    plan: ContextPlan,
    params: CacheParams,
    model_fp: str,
    plan_fp: str,
    fingerprints: dict[str, str],
    restart: bool,
) -> tuple[_OpenRun | None, list[str], list[str]]:
    """Plan the run and resume or start it, in one transaction of the workspace.

    Returns the run (None when every dictionary is already cached), the ids of the dictionaries
    skipped, and the ids of the unfinished runs discarded (whose scratch files the caller removes).
    """
    corpus_info = _corpus_info(plan, plan_fp)
    with store.session(workspace, write=True) as con:
        model_fp = _record_model(con, workspace, model, model_name, model_fp)
        _record_corpus(con, workspace, model, plan, corpus_info)
        todo, skipped, fingerprints = _plan_dictionaries(con, workspace, dictionaries, fingerprints)
        if not todo:
            return None, skipped, []
        run, discarded = _resume_or_start_run(
            con,
            workspace,
            _run_key(model_fp, plan_fp, params, [(d.id, fingerprints[d.id]) for d in todo]),
            todo,
            fingerprints,
            math.ceil(plan.n_contexts / params.chunk_contexts),
            {**asdict(params), "model": model_name, "corpus": corpus_info},
            restart,
        )
    return run, skipped, discarded


def _compute_pending_chunks(
    model,
    workspace: Path,
    run: _OpenRun,
    plan: ContextPlan,
    params: CacheParams,
    storage_threads: int | None,
    progress: Progress | None,
    result: CacheResult,
) -> int:
    """Compute and write the chunks of `run` not committed yet (their CPU time goes into `result`); returns how many."""
    pending = [chunk for chunk in range(run.n_chunks) if chunk not in run.committed_chunks]
    for chunk in pending:
        files.remove_chunk(workspace, run.run_id, chunk)
    if not pending:
        return 0
    builder = _ChunkBuilder(
        workspace,
        run.run_id,
        {d.id: run.records[d.id] for d in run.todo},
        threads=storage_threads or os.cpu_count() or 1,
    )
    tokens_done_before = sum(
        (min((chunk + 1) * params.chunk_contexts, plan.n_contexts) - chunk * params.chunk_contexts) * (plan.ctx_len - 1)
        for chunk in run.committed_chunks
    )
    main_thread_cpu_start = time.thread_time()
    try:
        _compute_chunks(model, run.todo, plan, params, pending, builder, progress, tokens_done_before)
    finally:
        builder.close()
    result.cpu_seconds["compute_main_thread"] = time.thread_time() - main_thread_cpu_start
    result.cpu_seconds["storage_helpers"] = sum(builder.helper_cpu)
    return len(pending)


def _finalise_dictionaries(
    workspace: Path,
    run: _OpenRun,
    to_finalize: list[Dictionary],
    plan: ContextPlan,
    params: CacheParams,
    finalize_rows: int,
    finalize_workers: int,
    progress: Progress | None,
    result: CacheResult,
) -> None:
    """Finalise `to_finalize` in `finalize_workers` threads, committing each as it finishes (rows and bytes into `result`)."""
    if progress:
        progress("finalizing", 0, len(to_finalize))
    # Dictionaries are independent; numpy, torch and pyarrow release the GIL, so two workers
    # use a second core when there is one. Progress is reported from this (the caller's) thread.
    # Largest first, so that the two workers finish together rather than one finishing a big file alone.
    by_size = sorted(
        to_finalize, key=lambda d: -files.scratch_bytes(workspace, run.run_id, run.n_chunks, run.records[d.id].index)
    )
    import torch

    torch_threads = torch.get_num_threads()
    if finalize_workers > 1:
        torch.set_num_threads(1)  # the workers share the cores
    with (
        contextlib.ExitStack() as restore,
        ThreadPoolExecutor(max_workers=max(1, finalize_workers), thread_name_prefix="finalize") as pool,
    ):
        restore.callback(torch.set_num_threads, torch_threads)
        futures = {
            pool.submit(
                _finalize_dictionary,
                workspace,
                run.run_id,
                run.n_chunks,
                run.records[d.id],
                plan,
                params,
                finalize_rows,
            )
            for d in by_size
        }
        # The workers write files and compute statistics; this thread commits whatever has
        # finished since its last commit in one transaction, while the workers go on.
        try:
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                batch = [fut.result() for fut in finished if fut.exception() is None]
                _commit_finalized(workspace, batch)
                for fut in finished:
                    fut.result()  # re-raise a worker's error once the others' work is committed
                for f in batch:
                    result.rows[f.rec.id] = f.rows
                    result.file_bytes[f.rec.id] = f.file_bytes
                    log.info("finalised %s: %d rows, %.2f bytes/row", f.rec.id, f.rows, f.file_bytes / max(f.rows, 1))
                if progress:
                    progress("finalizing", len(result.rows), len(to_finalize))
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def run_cache(
    model,
    dictionaries: list[Dictionary],
    workspace: Path,
    plan: ContextPlan,
    params: CacheParams,
    model_name: str = "custom",
    progress: Progress | None = None,
    restart: bool = False,
    finalize_rows: int = FINALIZE_ROWS,
    finalize_workers: int = 2,
    storage_threads: int | None = None,
    output_tokens: bool = True,
) -> CacheResult:
    """The caching job (`cache_job`), then, unless `output_tokens` is False, step 6: the output tokens of
    every cached dictionary that lacks them (`core.cache.outputs.add_output_tokens`, from weights only).

    `result.seconds['total']` is the job's; the output tokens' wall time is `result.seconds['output_tokens']`.
    """
    result = cache_job(
        model,
        dictionaries,
        workspace,
        plan,
        params,
        model_name=model_name,
        progress=progress,
        restart=restart,
        finalize_rows=finalize_rows,
        finalize_workers=finalize_workers,
        storage_threads=storage_threads,
    )
    if output_tokens:
        with _JobLock(Path(workspace)):
            _, result.seconds["output_tokens"] = add_output_tokens(
                Path(workspace), model, dictionaries, params.n_output_tokens
            )
    return result


def cache_job(
    model,
    dictionaries: list[Dictionary],
    workspace: Path,
    plan: ContextPlan,
    params: CacheParams,
    model_name: str = "custom",
    progress: Progress | None = None,
    restart: bool = False,
    finalize_rows: int = FINALIZE_ROWS,
    finalize_workers: int = 2,
    storage_threads: int | None = None,
) -> CacheResult:
    """Cache the sparse activations of `dictionaries` over `plan`'s contexts into `workspace` (resuming if possible).

    Steps, under the workspace's job lock: fingerprint the model, contexts and dictionaries; plan
    (check the workspace holds this model and corpus slice, skip dictionaries a finished run cached);
    resume the interrupted run of the same inputs or start one; compute the chunks not committed yet;
    finalise each dictionary; summarise the times. `storage_threads` (default: one per core) share the
    extraction and scratch writing between forward passes.

    Returns what was cached or skipped, rows and bytes per dictionary, and the time of each phase.
    """
    workspace = Path(workspace)
    _check_inputs(model, dictionaries, plan, params)
    result = CacheResult(workspace=str(workspace), run_id=None, n_tokens=plan.n_cached_tokens)
    reuse_freed_memory()
    whole_run = _Stopwatch()
    with _JobLock(workspace):
        model_fp = model_fingerprint(model)
        plan_fp = plan.fingerprint()
        fingerprints = {d.id: dictionary_fingerprint(d) for d in dictionaries}
        result.seconds["fingerprints"] = whole_run.wall()
        log.info("fingerprints: %.1f s", result.seconds["fingerprints"])
        # 1. plan and 2. resume (or start) the run
        opening = _Stopwatch()
        run, result.skipped, discarded = _open_run(
            workspace, model, model_name, dictionaries, plan, params, model_fp, plan_fp, fingerprints, restart
        )
        for discarded_run_id in discarded:
            files.remove_scratch(workspace, discarded_run_id)
        if run is None:
            log.info("nothing to do: %d dictionaries already cached", len(result.skipped))
            return result
        result.run_id = run.run_id
        result.seconds["open"] = opening.wall()
        done = f"{len(run.committed_chunks)}/{run.n_chunks}"
        log.info("open workspace (run %s, %s chunks committed): %.1f s", run.run_id, done, result.seconds["open"])

        # 3. compute the chunks not yet committed
        computing = _Stopwatch()
        to_finalize = [d for d in run.todo if run.records[d.id].status != "ready"]
        result.chunks_computed = _compute_pending_chunks(
            model, workspace, run, plan, params, storage_threads, progress, result
        )
        result.seconds["compute"] = computing.wall()
        result.cpu_seconds["compute"] = computing.cpu()
        log.info("compute %d chunks: %.1f s", result.chunks_computed, result.seconds["compute"])

        # 4. finalise each dictionary, then close the run
        finalising = _Stopwatch()
        _finalise_dictionaries(
            workspace, run, to_finalize, plan, params, finalize_rows, finalize_workers, progress, result
        )
        result.cached = [d.id for d in run.todo]
        with store.session(workspace, write=True) as con:
            store.finish_run(con, run.run_id)
        files.remove_scratch(workspace, run.run_id)
        result.seconds["finalize"] = finalising.wall()
        result.cpu_seconds["finalize"] = finalising.cpu()
        log.info("finalise %d dictionaries: %.1f s", len(to_finalize), result.seconds["finalize"])

    # 5. summarise: the whole run's times
    result.seconds["total"] = whole_run.wall()
    result.cpu_seconds["total"] = whole_run.cpu()
    return result


def job_lock_holder(workspace: Path) -> LockHolder | None:
    """Who is running a cache job on `workspace` right now (see `_JobLock`), or None (answers at once)."""
    return lock_holder(store.data_dir(workspace) / "job.lock")


def cache_summary(result: CacheResult, workspace: Path) -> dict:
    """What the cache command prints: the workspace's totals after the run (every ready dictionary,
    including those an earlier or interrupted run finished) and, under `this_command`, what this
    invocation did itself (a resumed run finalises only the dictionaries still unfinished)."""
    ready = store.list_dictionaries(workspace, ready_only=True)
    rows = sum(d.n_activations or 0 for d in ready)
    nbytes = sum(d.file_bytes or 0 for d in ready)
    return {
        "workspace": str(workspace),
        "run_id": result.run_id,
        "dictionaries": len(ready),
        "activations": rows,
        "bytes_per_activation": round(nbytes / max(rows, 1), 2),
        "tokens": result.n_tokens,
        "this_command": {
            "dictionaries_finalised": len(result.rows),
            "activations_finalised": sum(result.rows.values()),
            "dictionaries_already_cached": len(result.skipped),
            "chunks_computed": result.chunks_computed,
        },
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
