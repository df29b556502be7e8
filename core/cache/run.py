"""`run_cache`: one resumable cache run over a workspace (plan, compute, finalise; steps 2 and 5)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
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
from core.cache.finalise import FINALIZE_ROWS, _commit_finalized, _finalize_dictionary, _OutputTokens
from core.cache.plan import (
    CacheParams,
    ContextPlan,
    ProgressFn,
    WorkspaceMismatchError,
    check_dictionaries,
    dictionary_fingerprint,
    model_fingerprint,
)
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

    def __enter__(self) -> _JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = store.lock_file_holder(self.path, os.pread(self.fd, 400, 0).decode(errors="replace"))
            os.close(self.fd)
            raise WorkspaceLockedError(
                f"another job is writing this workspace ({self.workspace}): {holder.describe()}; "
                f"{holder.what_to_do()}, then try again",
                holder,
            ) from exc
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, store.holder_record().encode(), 0)  # who holds it, for whoever meets the lock
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


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


def run_cache(
    model,
    dictionaries: list[Dictionary],
    workspace: Path,
    plan: ContextPlan,
    params: CacheParams,
    model_name: str = "custom",
    progress: ProgressFn | None = None,
    restart: bool = False,
    finalize_rows: int = FINALIZE_ROWS,
    finalize_workers: int = 2,
    storage_threads: int | None = None,
) -> CacheResult:
    """Cache the sparse activations of `dictionaries` over `plan`'s contexts into `workspace` (resuming if possible).

    `storage_threads` (default: one per core) share the extraction and scratch writing between forward passes.

    Returns what was cached or skipped, rows and bytes per dictionary, and the time of each phase.
    """
    workspace = Path(workspace)
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
    result = CacheResult(workspace=str(workspace), run_id=None, n_tokens=plan.n_cached_tokens)
    reuse_freed_memory()
    t0, c0 = time.perf_counter(), time.process_time()
    with _JobLock(workspace):
        model_fp = model_fingerprint(model)
        plan_fp = plan.fingerprint()
        fps = {d.id: dictionary_fingerprint(d) for d in dictionaries}
        result.seconds["fingerprints"] = time.perf_counter() - t0
        log.info("fingerprints: %.1f s", result.seconds["fingerprints"])

        t = time.perf_counter()
        corpus_info = {
            **plan.source,
            "n_contexts": plan.n_contexts,
            "ctx_len": plan.ctx_len,
            "n_tokens": plan.n_cached_tokens,
            "fingerprint": plan_fp,
            "bos_token": int(plan.tokens[0, 0]),
        }
        discarded: list[str] = []
        with store.session(workspace, write=True) as con:
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
            elif known_model["fingerprint"] != model_fp:
                raise WorkspaceMismatchError(
                    f"workspace {workspace} was built from another model ({known_model['name']}, weights {known_model['fingerprint'][:12]}) "
                    f"than this one ({model_name}, weights {model_fp[:12]}); use a new --workspace"
                )
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
            elif known_corpus["fingerprint"] != plan_fp:
                raise WorkspaceMismatchError(
                    f"workspace {workspace} caches another corpus slice ({known_corpus.get('n_tokens'):,} tokens of "
                    f"{known_corpus.get('corpus', '?')} {known_corpus.get('split', '')}, contexts of {known_corpus.get('ctx_len')}) "
                    f"than this run ({plan.n_cached_tokens:,} tokens, contexts of {plan.ctx_len}); use the same --tokens/--ctx-len/--corpus or a new --workspace"
                )
            existing = {r.id: r for r in store.dictionaries(con)}
            run_status = {r.run_id: r.status for r in store.runs(con)}
            todo = []  # every dictionary of this run, including ones an interrupted finalisation already finished
            for d in dictionaries:
                rec = existing.get(d.id)
                if rec is not None and rec.status == "ready" and rec.fingerprint != fps[d.id]:
                    raise WorkspaceMismatchError(
                        f"dictionary {d.id} is already cached in {workspace} from different weights; use a new --workspace"
                    )
                if rec is not None and rec.status == "ready" and run_status.get(rec.run_id) == "finished":
                    result.skipped.append(d.id)
                else:
                    todo.append(d)
            if todo:
                run_id = _run_key(model_fp, plan_fp, params, [(d.id, fps[d.id]) for d in todo])
                for r in store.unfinished_runs(con):
                    if r.run_id != run_id or restart:
                        if not restart:
                            raise WorkspaceMismatchError(
                                f"workspace {workspace} has an unfinished cache run ({len(r.dictionary_ids)} dictionaries: "
                                f"{', '.join(r.dictionary_ids[:4])}{'...' if len(r.dictionary_ids) > 4 else ''}; "
                                f"{r.committed_chunks}/{r.n_chunks} chunks, params {r.params}). Rerun that command to finish it, "
                                "or add --restart to discard it"
                            )
                        store.discard_run(con, r.run_id)
                        discarded.append(r.run_id)
                n_chunks = math.ceil(plan.n_contexts / params.chunk_contexts)
                if run_id not in {r.run_id for r in store.runs(con)}:
                    store.start_run(
                        con,
                        run_id,
                        {**asdict(params), "model": model_name, "corpus": corpus_info},
                        [d.id for d in todo],
                        n_chunks,
                    )
                    for d in todo:
                        store.register_dictionary(con, d.describe(), fps[d.id], run_id)
                records = {r.id: r for r in store.dictionaries(con) if r.id in {d.id for d in todo}}
                done_chunks = store.committed_chunks(con, run_id)
        for rid in discarded:
            files.remove_scratch(workspace, rid)
        if not todo:
            log.info("nothing to do: %d dictionaries already cached", len(result.skipped))
            return result
        result.run_id = run_id
        result.seconds["open"] = time.perf_counter() - t
        log.info(
            "open workspace (run %s, %d/%d chunks committed): %.1f s",
            run_id,
            len(done_chunks),
            n_chunks,
            result.seconds["open"],
        )

        # 3. compute the chunks not yet committed
        t, c = time.perf_counter(), time.process_time()
        to_finalize = [d for d in todo if records[d.id].status != "ready"]
        outputs = _OutputTokens(to_finalize, model, params.n_output_tokens)
        pending = [c for c in range(n_chunks) if c not in done_chunks]
        for chunk in pending:
            files.remove_chunk(workspace, run_id, chunk)
        if pending:
            builder = _ChunkBuilder(
                workspace, run_id, {d.id: records[d.id] for d in todo}, threads=storage_threads or os.cpu_count() or 1
            )
            done_before = sum(
                (min((c + 1) * params.chunk_contexts, plan.n_contexts) - c * params.chunk_contexts) * (plan.ctx_len - 1)
                for c in done_chunks
            )
            main_cpu = time.thread_time()
            try:
                _compute_chunks(model, todo, plan, params, pending, builder, progress, done_before)
            finally:
                builder.close()
            result.cpu_seconds["compute_main_thread"] = time.thread_time() - main_cpu
            result.cpu_seconds["storage_helpers"] = sum(builder.helper_cpu)
        result.chunks_computed = len(pending)
        result.seconds["compute"] = time.perf_counter() - t
        result.cpu_seconds["compute"] = time.process_time() - c
        log.info("compute %d chunks: %.1f s", len(pending), result.seconds["compute"])

        # 4. finalise each dictionary
        t, c = time.perf_counter(), time.process_time()
        if progress:
            progress("finalizing", 0, len(to_finalize))
        # Dictionaries are independent; numpy, torch and pyarrow release the GIL, so two workers
        # use a second core when there is one. Progress is reported from this (the caller's) thread.
        # Largest first, so that the two workers finish together rather than one finishing a big file alone.
        by_size = sorted(
            to_finalize, key=lambda d: -files.scratch_bytes(workspace, run_id, n_chunks, records[d.id].index)
        )
        import torch

        torch_threads = torch.get_num_threads()
        if finalize_workers > 1:
            torch.set_num_threads(1)  # the workers' output-token products run one per core
        with (
            contextlib.ExitStack() as restore,
            ThreadPoolExecutor(max_workers=max(1, finalize_workers), thread_name_prefix="finalize") as pool,
        ):
            restore.callback(torch.set_num_threads, torch_threads)
            futures = {
                pool.submit(
                    _finalize_dictionary,
                    workspace,
                    run_id,
                    n_chunks,
                    records[d.id],
                    plan,
                    params,
                    finalize_rows,
                    functools.partial(outputs.get, d.id),
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
                        log.info(
                            "finalised %s: %d rows, %.2f bytes/row", f.rec.id, f.rows, f.file_bytes / max(f.rows, 1)
                        )
                    if progress:
                        progress("finalizing", len(result.rows), len(to_finalize))
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        result.cached = [d.id for d in todo]
        result.cpu_seconds["output_tokens"] = outputs.cpu_seconds
        with store.session(workspace, write=True) as con:
            store.finish_run(con, run_id)
        files.remove_scratch(workspace, run_id)
        result.seconds["finalize"] = time.perf_counter() - t
        result.cpu_seconds["finalize"] = time.process_time() - c
        log.info("finalise %d dictionaries: %.1f s", len(to_finalize), result.seconds["finalize"])
    result.seconds["total"] = time.perf_counter() - t0
    result.cpu_seconds["total"] = time.process_time() - c0
    return result


def _lock_held_by(lock: Path) -> store.LockHolder | None:
    """Who holds the flock() on lock file `lock` right now, or None if nobody does (answers at once)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return store.lock_file_holder(lock, os.pread(fd, 400, 0).decode(errors="replace"))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def job_lock_holder(workspace: Path) -> store.LockHolder | None:
    """Who is running a cache job on `workspace` right now (see `_JobLock`), or None (answers at once)."""
    return _lock_held_by(store.data_dir(workspace) / "job.lock")


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
