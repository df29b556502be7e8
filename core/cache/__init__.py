"""The activation cache: run a model over corpus tokens and store every latent's sparse activations in a workspace.

Steps (each logs its wall time):
1. Plan contexts: tokenise the corpus split into one stream (documents separated by BOS), cut it into
   contexts of `ctx_len` tokens, each BOS + `ctx_len - 1` corpus tokens. BOS positions are not cached
   (they carry attention-sink activations, not text), so `n_tokens` counts corpus tokens.
2. Open the workspace in a short write transaction: check it was built from the same model (weights
   fingerprint: XXH3-128, or blake2b for one stored before fingerprints named their algorithm) and corpus slice, store the contexts and vocabulary the first time, skip dictionaries
   already cached from the same weights, and register or resume the run. A run is identified by a
   hash of everything that determines its rows, so rerunning the same command finds it.
3. Compute, one chunk of `chunk_contexts` contexts at a time, skipping committed chunks: batched
   forward passes up to the last hook needed and each dictionary's encoder on its `hook_in` (the
   neuron baselines are the MLP's own `hook_post`, which the forward pass computes anyway; top-k
   neurons keep the k largest per token). After each batch, the main thread and a helper (one
   thread per core in all) keep the positive entries (`acts > 0`; raw MLP neurons thus keep GELU's
   positive part) while the model waits; at the end of a chunk they group its rows by latent and
   write them as scratch files, and the chunk is committed in a millisecond transaction. Raw-neuron
   slices at least 35% positive are scanned transposed instead, so each comes out grouped by latent
   and is written as one run of the chunk, with no sort (sparser ones are faster sorted). Storage runs in lock step with torch
   rather than beside it: see `_ChunkBuilder`.
4. Finalise each dictionary (two at a time, largest first): merge its chunks by latent ranges (a
   linear scatter; chunks and their runs are already grouped by latent and ordered by token) into one Parquet file
   sorted by (latent, context, position), computing per-latent statistics from the same slices
   (`core.cache.stats`) and the output tokens (`W_dec @ W_U`, weights only). The calling thread commits
   the statistics of every dictionary finished since its last commit in one transaction and marks
   them ready, while the workers go on.
5. Mark the run finished and delete its scratch files.

A kill at any point loses at most the uncommitted chunk or dictionary; rerunning the same command
resumes there, and rerunning a finished command does nothing.

Modules (this package re-exports their public names, except the CLI's):
    plan.py           Step 1 of the cache: what to run (parameters, contexts, fingerprints, dictionaries).
    compute.py        Step 3 of the cache: forward passes, encoders, and each chunk's positive entries.
    finalise.py       Step 4 of the cache: merge a dictionary's chunks into its Parquet file and commit its statistics.
    run.py            `run_cache`: one resumable cache run over a workspace (plan, compute, finalise; steps 2 and 5).
    workspace.py      The embedded default's workspace: where it lives, whether it is current, building it once.
    commands.py       CLI: `python -m core cache ...` and `python -m core workspace-info ...`.
"""

from __future__ import annotations

from core.cache.compute import (
    ENCODE_ELEMENTS,
    _ChunkBuilder,
    dictionary_input,
    encode_slices,
    forward_hooks,
    positive_entries,
    positive_entries_on_device,
    reuse_freed_memory,
    source_hooks,
)
from core.cache.finalise import FINALIZE_ROWS, _commit_finalized
from core.cache.plan import (
    DEFAULT_NEURON_TOPK,
    CacheParams,
    ContextPlan,
    WorkspaceMismatchError,
    bos_token_id,
    check_dictionaries,
    dictionary_fingerprint,
    dictionary_matches,
    model_fingerprint,
    plan_contexts,
    plan_corpus_contexts,
    resolve_dictionaries,
)
from core.cache.run import CacheResult, cache_summary, job_lock_holder, run_cache
from core.cache.workspace import (
    CACHE_FORMAT,
    DEFAULT_WAIT_S,
    DEFAULT_WORKSPACE,
    DEFAULT_WORKSPACE_PARAMS,
    build_lock_holder,
    default_source_fingerprint,
    default_workspace_ready,
    ensure_default_workspace,
    set_aside_damaged,
)

__all__ = [
    "CACHE_FORMAT",
    "CacheParams",
    "CacheResult",
    "ContextPlan",
    "DEFAULT_NEURON_TOPK",
    "DEFAULT_WAIT_S",
    "DEFAULT_WORKSPACE",
    "DEFAULT_WORKSPACE_PARAMS",
    "ENCODE_ELEMENTS",
    "FINALIZE_ROWS",
    "WorkspaceMismatchError",
    "_ChunkBuilder",
    "_commit_finalized",
    "bos_token_id",
    "build_lock_holder",
    "cache_summary",
    "check_dictionaries",
    "default_source_fingerprint",
    "default_workspace_ready",
    "dictionary_fingerprint",
    "dictionary_input",
    "dictionary_matches",
    "encode_slices",
    "ensure_default_workspace",
    "forward_hooks",
    "job_lock_holder",
    "model_fingerprint",
    "plan_contexts",
    "plan_corpus_contexts",
    "positive_entries",
    "positive_entries_on_device",
    "resolve_dictionaries",
    "reuse_freed_memory",
    "run_cache",
    "set_aside_damaged",
    "source_hooks",
]
