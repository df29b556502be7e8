"""The activation cache: run a model over corpus tokens and store every latent's sparse activations in a workspace.

Steps (each logs its wall time):
1. Plan contexts: tokenise the corpus split into one stream (documents separated by BOS), cut it into
   contexts of `ctx_len` tokens, each BOS + `ctx_len - 1` corpus tokens. BOS positions are not cached
   (they carry attention-sink activations, not text), so `n_tokens` counts corpus tokens.
2. Open the workspace in a short write transaction: check it was built from the same model (weights
   fingerprint) and corpus slice, store the contexts and vocabulary the first time, skip dictionaries
   already cached from the same weights, and register or resume the run. A run is identified by a
   hash of everything that determines its rows, so rerunning the same command finds it.
3. Compute, one chunk of `chunk_contexts` contexts at a time, skipping committed chunks: batched
   forward passes up to the last hook needed and each dictionary's encoder on its `hook_in` (the
   neuron baselines are the MLP's own `hook_post`, which the forward pass computes anyway; top-k
   neurons keep the k largest per token). After each batch, the main thread and a helper (one
   thread per core in all) keep the positive entries (`acts > 0`; raw MLP neurons thus keep GELU's
   positive part) while the model waits; at the end of a chunk they group its rows by latent and
   write them as scratch files, and the chunk is committed in a millisecond transaction. Storage
   runs in lock step with torch rather than beside it: see `_ChunkBuilder`.
4. Finalise each dictionary (two at a time, largest first): merge its chunks by latent ranges (a
   linear scatter; chunks are already grouped by latent and ordered by token) into one Parquet file
   sorted by (latent, context, position), computing per-latent statistics from the same slices
   (`core.stats`) and the output tokens (`W_dec @ W_U`, weights only). The calling thread commits
   the statistics of every dictionary finished since its last commit in one transaction and marks
   them ready, while the workers go on.
5. Mark the run finished and delete its scratch files.

A kill at any point loses at most the uncommitted chunk or dictionary; rerunning the same command
resumes there, and rerunning a finished command does nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core import activation_files as files
from core import store
from core.corpus import BrownDocument, read_corpus
from core.dictionaries import Dictionary, neuron_dictionary
from core.paths import DEFAULT_DIR, default_paths
from core.stats import HIST_BINS, N_OUTPUT_TOKENS, TOP_ROWS, grouped_stats, no_output_tokens, output_token_logits
from core.store import WorkspaceError, WorkspaceLockedError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
"""progress(phase, done, total): phase 'caching' counts tokens, 'finalizing' counts dictionaries;
`ensure_default_workspace` adds 'loading' (0/1, 1/1) and 'waiting' (another process builds the
default workspace: its committed chunks / all chunks, or 0/0 before it has started)."""


class WorkspaceMismatchError(WorkspaceError):
    """The workspace was built from another model, corpus slice or dictionary weights, or has another unfinished run."""


DEFAULT_NEURON_TOPK = 32
FINALIZE_ROWS = 1 << 22  # rows merged at once while finalising (bounds memory to ~100 MB)
ENCODE_ELEMENTS = 1 << 24  # largest dense [tokens, d_sae] block an encoder produces at once


@dataclass(frozen=True)
class CacheParams:
    """Everything besides model, dictionaries and corpus text that determines a cache run's rows."""

    n_tokens: int
    ctx_len: int = 128
    batch_contexts: int = 16
    chunk_contexts: int = 64
    hist_bins: int = HIST_BINS
    top_rows: int = TOP_ROWS
    n_output_tokens: int = N_OUTPUT_TOKENS

    def __post_init__(self) -> None:
        for name in ("n_tokens", "ctx_len", "batch_contexts", "chunk_contexts", "hist_bins", "top_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class ContextPlan:
    """The contexts a run caches: `tokens: [n_contexts, ctx_len]` int32 (BOS first), their documents and stream offsets."""

    tokens: np.ndarray
    docs: list[str]
    offsets: np.ndarray
    source: dict  # corpus path, split, tokens available ...

    @property
    def n_contexts(self) -> int:
        """Number of contexts."""
        return self.tokens.shape[0]

    @property
    def ctx_len(self) -> int:
        """Tokens per context, BOS included."""
        return self.tokens.shape[1]

    @property
    def n_cached_tokens(self) -> int:
        """Token positions whose activations are cached (BOS excluded)."""
        return self.n_contexts * (self.ctx_len - 1)

    def fingerprint(self) -> str:
        """Hash of the token ids."""
        return hashlib.blake2b(np.ascontiguousarray(self.tokens, dtype=np.int32).tobytes(), digest_size=16).hexdigest()


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


def _encode_ids(tokenizer, text: str) -> list[int]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.encode(text, add_special_tokens=False).ids
    return tokenizer.encode(text, add_special_tokens=False)


def bos_token_id(tokenizer) -> int:
    """The id used as BOS and document separator (the tokenizer's BOS, else its EOS)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token")
    return int(bos)


def plan_contexts(
    tokenizer, docs: list[BrownDocument], n_tokens: int, ctx_len: int, source: dict | None = None
) -> ContextPlan:
    """Cut the first `n_tokens` corpus tokens of `docs` into contexts `[n, ctx_len]` (BOS + ctx_len - 1 tokens each).

    The count is rounded up to whole contexts when the corpus has enough tokens, else down.
    """
    if ctx_len < 2:
        raise ValueError(f"--ctx-len must be at least 2 (BOS + one token), got {ctx_len}")
    if n_tokens < 1:
        raise ValueError(f"--tokens must be positive, got {n_tokens}")
    bos = bos_token_id(tokenizer)
    per = ctx_len - 1
    want = math.ceil(n_tokens / per) * per
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    names: list[str] = []
    total = 0
    for doc in docs:
        if total >= want:
            break
        ids = np.asarray(_encode_ids(tokenizer, doc.text) + [bos], dtype=np.int32)
        starts.append(total)
        names.append(doc.name)
        pieces.append(ids)
        total += len(ids)
    if total < n_tokens:
        raise ValueError(
            f"--tokens {n_tokens:,} is larger than the corpus: it has {total:,} tokens "
            f"({len(docs)} documents); ask for at most {total:,}"
        )
    stream = np.concatenate(pieces)
    n_contexts = min(want, total) // per
    tokens = np.empty((n_contexts, ctx_len), dtype=np.int32)
    tokens[:, 0] = bos
    tokens[:, 1:] = stream[: n_contexts * per].reshape(n_contexts, per)
    offsets = np.arange(n_contexts, dtype=np.int64) * per
    doc_idx = np.searchsorted(np.asarray(starts), offsets, side="right") - 1
    src = dict(source or {})
    src.update({"documents_used": len(names)})
    return ContextPlan(tokens, [names[i] for i in doc_idx], offsets, src)


def plan_corpus_contexts(tokenizer, n_tokens: int, ctx_len: int, corpus: Path, split: str = "train") -> ContextPlan:
    """`plan_contexts` over a corpus file written by `core.corpus.save_corpus`."""
    docs = read_corpus(corpus, split)
    if not docs:
        raise ValueError(f"corpus {corpus} has no documents in split {split!r}")
    return plan_contexts(tokenizer, docs, n_tokens, ctx_len, {"corpus": str(corpus), "split": split})


# ---------------------------------------------------------------------------------------------
# Fingerprints


def _hash_tensors(h, tensors: dict) -> None:
    import torch

    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy())  # its buffer: the same bytes, no copy


def model_fingerprint(model) -> str:
    """Hash of a HookedTransformer's config-relevant shape and all its weights."""
    from core.models import model_config_fields

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(model_config_fields(model.cfg), sort_keys=True, default=str).encode())
    _hash_tensors(h, {k: v for k, v in model.state_dict().items() if not k.endswith((".IGNORE", ".mask"))})
    return h.hexdigest()


def dictionary_fingerprint(d: Dictionary) -> str:
    """Hash of a dictionary's id, top-k and weights (for neurons: the MLP's weights)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{d.id}|{d.topk}|{d.d_sae}".encode())
    _hash_tensors(h, dict(d.module.state_dict()))
    if d.ln is not None:  # neurons also depend on the LayerNorm before the MLP
        _hash_tensors(h, {f"ln.{k}": v for k, v in d.ln.state_dict().items()})
    return h.hexdigest()


def _layer_of_hook(hook: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", hook)
    if not m:
        raise ValueError(f"cannot tell the layer of hook {hook!r}")
    return int(m.group(1))


def check_dictionaries(model, dictionaries: list[Dictionary]) -> None:
    """Raise a clear error if a dictionary reads a hook the model lacks or has the wrong width."""
    seen = set()
    for d in dictionaries:
        if d.id in seen:
            raise ValueError(f"dictionary {d.id} is listed twice")
        seen.add(d.id)
        if d.is_baseline and _neuron_hook(d) not in model.hook_dict:
            raise ValueError(
                f"dictionary {d.id} reads hook {_neuron_hook(d)}, which this model ({model.cfg.n_layers} layers) does not have"
            )
        if d.hook_in not in model.hook_dict:
            raise ValueError(
                f"dictionary {d.id} reads hook {d.hook_in}, which this model ({model.cfg.n_layers} layers) does not have"
            )
        width = model.cfg.d_model
        if d.hook_in.endswith("hook_z"):
            width = model.cfg.n_heads * model.cfg.d_head
        if d.d_in != width:
            raise ValueError(f"dictionary {d.id} expects d_in {d.d_in} but {d.hook_in} has width {width}")


# ---------------------------------------------------------------------------------------------
# The computing side


def _neuron_hook(d: Dictionary) -> str:
    return f"blocks.{d.layer}.mlp.hook_post"


def source_hooks(dictionaries: list[Dictionary]) -> list[str]:
    """The hooks a forward pass must capture for `dictionaries` (see `dictionary_input`)."""
    return sorted({_neuron_hook(d) if d.is_baseline else d.hook_in for d in dictionaries})


def dictionary_input(d: Dictionary, cache) -> torch.Tensor:
    """What `d` encodes from one forward batch, BOS excluded, `[T, width]`.

    Its `hook_in` activations; for the MLP-neuron baselines the MLP's own activations (`hook_post`,
    i.e. GELU(ln2 @ W_in + b_in), which is `d.encode(hook_in)`): the forward pass already computed them.
    """
    if d.is_baseline:
        return cache[_neuron_hook(d)][:, 1:, :].reshape(-1, d.d_sae)
    return cache[d.hook_in][:, 1:, :].reshape(-1, d.d_in)


def encode_slices(d: Dictionary, x: torch.Tensor, max_elements: int = ENCODE_ELEMENTS) -> Iterator:
    """`d`'s latents for `x = dictionary_input(d, ...)`, at most `max_elements` activations at a time, in row order.

    Yields dense `[t, d_sae]` tensors, or for top-k neuron baselines the top-k `(values, indices)`
    `[t, k]` (the sparse form of the same thing). Run under `torch.inference_mode()`.
    """
    step = max(1, max_elements // d.d_sae)
    for s in range(0, x.shape[0], step):
        xs = x[s : s + step]
        if d.kind == "neurons":
            yield xs
        elif d.kind == "neurons_topk":
            yield xs.topk(d.topk, dim=-1)
        else:
            yield d.encode(xs)


def positive_entries(piece, d_sae: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive entries of one encoded slice (see `encode_slices`), row by row: (per-row counts `[t]`, latent `[n]`, value `[n]`).

    Latents are uint16 when `d_sae` allows, else uint32; values float32. The scan of dense
    activations on the CPU runs in numpy (several times faster than torch.nonzero on one CPU
    thread); on an accelerator it runs there (`positive_entries_on_device`), so only the positive
    entries are copied to the host, not the dense outputs.
    """
    import torch

    lat_type = _latent_dtype(d_sae)
    if _piece_tensors(piece)[0].device.type != "cpu":
        return positive_entries_on_device(piece, d_sae)
    if isinstance(piece, torch.Tensor):
        acts = piece.float().cpu().numpy()  # [t, d_sae]
        mask = acts > 0
        idx = np.flatnonzero(mask)
        value = acts.reshape(-1)[idx]
        pow2 = d_sae & (d_sae - 1) == 0
        if len(idx) * 8 < mask.size:  # sparse: count rows from the few indices, not by another pass over the mask
            row = idx >> (d_sae.bit_length() - 1) if pow2 else idx // d_sae
            cnt = np.bincount(row, minlength=acts.shape[0])
        else:
            cnt = np.count_nonzero(mask, axis=1)
        if pow2:  # the column is the low bits
            idx &= d_sae - 1
        else:
            idx -= np.repeat(np.arange(acts.shape[0], dtype=np.int64) * d_sae, cnt)
        return cnt, idx.astype(lat_type), value
    v, i = piece[0].float().cpu().numpy(), piece[1].cpu().numpy()  # top-k (values, indices) [t, k]
    mask = v > 0
    return np.count_nonzero(mask, axis=1), i[mask].astype(lat_type), v[mask]


def positive_entries_on_device(piece, d_sae: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`positive_entries` computed with torch on the piece's own device; only the results are copied to the host."""
    import torch

    lat_type = _latent_dtype(d_sae)
    if isinstance(piece, torch.Tensor):
        mask = piece > 0  # [t, d_sae]
        col = mask.nonzero()[:, 1]  # row-major order, as np.flatnonzero
        value = piece[mask]
    else:  # top-k (values, indices) [t, k]
        mask = piece[0] > 0
        col, value = piece[1][mask], piece[0][mask]
    cnt = mask.sum(dim=1)
    return (
        cnt.cpu().numpy().astype(np.int64),
        col.to(torch.int32).cpu().numpy().astype(lat_type),
        value.float().cpu().numpy(),
    )


def _latent_dtype(d_sae: int) -> type:
    return np.uint16 if d_sae <= 1 << 16 else np.uint32


def _piece_tensors(piece) -> list:
    """The tensors of an `encode_slices` item: the dense `[t, d_sae]` one, or top-k values and indices `[t, k]`."""
    import torch

    return [piece] if isinstance(piece, torch.Tensor) else list(piece)


def _piece_rows(piece, a: int, b: int):
    """Rows `[a, b)` of an `encode_slices` item, as an item of the same form."""
    import torch

    return piece[a:b] if isinstance(piece, torch.Tensor) else (piece[0][a:b], piece[1][a:b])


def _piece_bytes(piece) -> int:
    return sum(p.numel() * p.element_size() for p in _piece_tensors(piece))


_ALLOCATOR_TUNED = False


def reuse_freed_memory(limit: int = 256 << 20) -> None:
    """Make glibc's malloc serve blocks up to `limit` bytes from its heap and keep freed memory for reuse.

    By default blocks above a few MB are fresh `mmap`s returned to the OS on free, so every batch's
    activations (tens of MB per dictionary) are page-faulted and zeroed again; a cache job measured
    ~2x the page faults of the forward passes alone, on the main thread's critical path. Process-wide
    and idempotent; a no-op where the C library is not glibc. The process keeps up to `2 * limit`
    bytes of freed memory instead of returning it.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, int(limit))  # M_MMAP_THRESHOLD
        libc.mallopt(-1, int(2 * limit))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def forward_hooks(model, tokens, hooks: list[str]) -> dict:
    """Activations at `hooks` for `tokens: [batch, ctx_len]`, running the model only up to the last layer needed."""
    import torch

    stop = max(_layer_of_hook(h) for h in hooks) + 1
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=list(hooks), stop_at_layer=min(stop, model.cfg.n_layers))
    return cache


def _balanced_groups(costs: list[float], n_groups: int) -> list[list[int]]:
    """Indices of `costs` split into `n_groups` groups of near-equal total cost (largest first, each to the lightest group)."""
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    loads = [0.0] * n_groups
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        g = loads.index(min(loads))
        groups[g].append(i)
        loads[g] += costs[i]
    return groups


class _ChunkBuilder:
    """Extracts each batch's positive activations, groups each chunk's rows by latent and writes and commits
    the chunk, in lock step with the forward passes: the caller's thread and `threads - 1` helpers share
    the work while the model waits.

    Why not overlap it with the next forward pass: torch already keeps every core busy there, and a
    storage thread running beside it preempts one of torch's threads, so the others stall at the next
    barrier; the job measured ~1 s of wall time per CPU second of storage that way, against ~1/threads
    in lock step. On an accelerator the scan runs on the device, but grouping and writing still run
    on the host while the device waits; there a thread beside the forward passes could overlap them
    (not measured: no GPU here). Memory: dense encoder outputs wait until `max_dense_bytes` are held
    (one slice may exceed it); the rows of one chunk are kept until it is written.
    """

    def __init__(
        self,
        workspace: Path,
        run_id: str,
        records: dict[str, store.DictionaryRecord],
        threads: int = 2,
        max_dense_bytes: int = 1 << 26,
    ):
        self.workspace = workspace
        self.run_id = run_id
        self.records = records
        self.threads = max(1, threads)
        self.max_dense_bytes = max_dense_bytes
        self.pool = (
            ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="cache") if self.threads > 1 else None
        )
        self.held: list[tuple[str, int, np.ndarray, object]] = []  # (dictionary id, d_sae, row tokens, encoded slice)
        self.held_bytes = 0
        self.pending: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.helper_cpu = [0.0] * max(0, self.threads - 1)

    def _map(self, fn: Callable, items: list, costs: list[float]) -> list:
        """`[fn(x) for x in items]`, shared between this thread and the helpers by balanced cost."""
        if self.pool is None or len(items) < 2:
            return [fn(x) for x in items]
        groups = _balanced_groups(costs, self.threads)
        out: list = [None] * len(items)

        def run(slot: int, idx: list[int]) -> None:
            c0 = time.thread_time()
            for i in idx:
                out[i] = fn(items[i])
            if slot:
                self.helper_cpu[slot - 1] += time.thread_time() - c0

        futures = [self.pool.submit(run, g, idx) for g, idx in enumerate(groups) if g and idx]
        try:
            run(0, groups[0])
        finally:
            wait(futures)  # on an error too: no helper may still be working when the caller cleans up
        for f in futures:
            f.result()
        return out

    def add(self, d: Dictionary, row_token: np.ndarray, piece) -> None:
        """One encoded slice of dictionary `d` (an `encode_slices` item, `[t, ...]`) and each of its rows' global token index `[t]`."""
        self.held.append((d.id, d.d_sae, row_token, piece))
        self.held_bytes += _piece_bytes(piece)
        if self.held_bytes >= self.max_dense_bytes:
            self.flush()

    def flush(self) -> None:
        """Extract the positive entries of every held slice, each cut by rows among the threads (frees the dense outputs)."""
        if not self.held:
            return
        held, self.held, self.held_bytes = self.held, [], 0
        parts = []  # (index into held, first row, end row)
        for i, (_, _, row_token, _) in enumerate(held):
            n = len(row_token)
            cuts = np.linspace(0, n, min(self.threads, max(1, n)) + 1).astype(int)
            parts += [(i, int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]

        def extract(part: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            i, a, b = part
            _, d_sae, row_token, piece = held[i]
            cnt, lat, val = positive_entries(_piece_rows(piece, a, b), d_sae)
            return np.repeat(row_token[a:b], cnt), lat, val

        got = self._map(extract, parts, [float(b - a) * held[i][1] for i, a, b in parts])
        for (i, _, _), rows in zip(parts, got, strict=True):
            self.pending.setdefault(held[i][0], []).append(rows)

    def end_chunk(self, chunk: int) -> int:
        """Group the chunk's rows by latent, write every dictionary's files and commit the chunk; returns its rows."""
        self.flush()
        folder = files.begin_chunk_dir(self.workspace, self.run_id, chunk)
        recs = list(self.records.values())
        pending, self.pending = self.pending, {}

        def group_and_write(rec: store.DictionaryRecord) -> int:
            got = pending.pop(rec.id, [])
            if got:
                token, latent, value = (np.concatenate([g[i] for g in got]) for i in range(3))
            else:
                token, latent, value = np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.float32)
            del got
            files.write_chunk_part(folder, rec.index, files.group_by_latent(latent, token, value, rec.d_sae))
            return len(value)

        costs = [float(sum(len(g[2]) for g in pending.get(r.id, []))) for r in recs]
        try:
            n_rows = sum(self._map(group_and_write, recs, costs))
            files.publish_chunk_dir(folder)
        except BaseException:
            files.remove_chunk(self.workspace, self.run_id, chunk)
            raise
        with store.session(self.workspace, write=True) as con:
            store.commit_chunk(con, self.run_id, chunk, n_rows)
        return n_rows

    def close(self) -> None:
        """Stop the helper threads."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _compute_chunks(
    model,
    dictionaries: list[Dictionary],
    plan: ContextPlan,
    params: CacheParams,
    chunks: list[int],
    builder: _ChunkBuilder,
    progress: ProgressFn | None,
    done_before: int,
) -> None:
    import torch

    hooks = source_hooks(dictionaries)
    per = plan.ctx_len - 1
    total = plan.n_cached_tokens
    done = done_before
    device = next(model.parameters()).device
    if progress:
        progress("caching", done, total)
    for chunk in chunks:
        c0 = chunk * params.chunk_contexts
        c1 = min(c0 + params.chunk_contexts, plan.n_contexts)
        for b0 in range(c0, c1, params.batch_contexts):
            b1 = min(b0 + params.batch_contexts, c1)
            toks = torch.from_numpy(plan.tokens[b0:b1].astype(np.int64)).to(device)
            cache = forward_hooks(model, toks, hooks)
            # global token index (context * ctx_len + position) of each encoded row; BOS is skipped
            row_token = (
                np.arange(b0, b1, dtype=np.uint32)[:, None] * plan.ctx_len + np.arange(1, plan.ctx_len, dtype=np.uint32)
            ).reshape(-1)
            with torch.inference_mode():
                for d in dictionaries:
                    s = 0
                    for piece in encode_slices(d, dictionary_input(d, cache)):
                        t = len(_piece_tensors(piece)[0])
                        builder.add(d, row_token[s : s + t], piece)
                        s += t
            del cache
            builder.flush()
            done += (b1 - b0) * per
            if progress:
                progress("caching", done, total)
        builder.end_chunk(chunk)


# ---------------------------------------------------------------------------------------------
# Finalising a dictionary


def _latent_ranges(counts: np.ndarray, max_rows: int, max_latents: int) -> list[tuple[int, int]]:
    """Consecutive latent ranges of at most `max_rows` rows (or one latent) and `max_latents` latents."""
    cs = np.cumsum(counts)
    out = []
    start = 0
    d = len(counts)
    while start < d:
        before = cs[start - 1] if start else 0
        end = int(np.searchsorted(cs, before + max_rows, side="right"))
        end = min(max(end, start + 1), start + max_latents, d)
        out.append((start, end))
        start = end
    return out


class _OutputTokens:
    """Every dictionary's output tokens (`W_dec @ W_U`, weights only), computed when first asked for.

    Finalisation asks for them, so they are computed by the finalisation workers, each on its own
    core, rather than by a thread competing with the forward passes. Raw and top-k neuron baselines
    share `W_out`, so they are computed once for both.
    """

    def __init__(self, dictionaries: list[Dictionary], model, k: int):
        self.dicts = {d.id: d for d in dictionaries}
        self.model = model
        self.k = k
        self.by_weights: dict[int, dict[str, np.ndarray]] = {}
        self.locks: dict[int, threading.Lock] = {d.W_dec.data_ptr(): threading.Lock() for d in dictionaries}
        self.cpu_seconds = 0.0

    def get(self, dict_id: str) -> dict[str, np.ndarray]:
        """The output tokens of one dictionary: `[d_sae, k]` arrays (see `output_token_logits`)."""
        d = self.dicts[dict_id]
        if d.d_out != self.model.cfg.d_model:
            return no_output_tokens(d.d_sae)
        key = d.W_dec.data_ptr()
        with self.locks[key]:
            if key not in self.by_weights:
                c0 = time.thread_time()
                self.by_weights[key] = output_token_logits(d.W_dec, self.model.W_U, self.k)
                self.cpu_seconds += time.thread_time() - c0
        return self.by_weights[key]


def _finalize_dictionary(
    workspace: Path,
    run_id: str,
    n_chunks: int,
    rec: store.DictionaryRecord,
    plan: ContextPlan,
    params: CacheParams,
    max_rows: int,
    output_tokens: Callable[[], dict[str, np.ndarray]],
) -> _Finalized:
    """Merge a dictionary's chunks into its Parquet file and compute its statistics (committed later by `_commit_finalized`).

    `output_tokens()` returns the dictionary's output tokens.
    """
    readers = [files.open_chunk(workspace, run_id, c, rec.index) for c in range(n_chunks)]
    counts = np.zeros(rec.d_sae, dtype=np.int64)
    for r in readers:
        counts += np.diff(r.offsets)
    row_start = np.zeros(rec.d_sae, dtype=np.int64)
    np.cumsum(counts[:-1], out=row_start[1:])
    flat_tokens = plan.tokens.reshape(-1)
    n_tokens = plan.n_cached_tokens

    stats = {
        "n_fires": counts,
        "frequency": counts / n_tokens,
        "max_activation": np.zeros(rec.d_sae, np.float32),
        "mean_activation": np.zeros(rec.d_sae, np.float32),
        "quantile_edges": np.zeros((rec.d_sae, 11), np.float32),
        "hist_counts": np.zeros((rec.d_sae, params.hist_bins), np.int64),
        "row_start": row_start,
    }
    top_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    name = files.safe_file_name(rec.index, rec.id)
    writer = files.ParquetActivationWriter(files.activations_dir(workspace) / name)
    try:
        max_latents = max(1, (1 << 22) // max(1, n_chunks))
        for a, b in _latent_ranges(counts, max_rows, max_latents):
            token, value, cnt = files.merge_latent_range(readers, a, b)
            if len(token):
                context = token // np.uint32(plan.ctx_len)
                position = token - context * np.uint32(plan.ctx_len)
                writer.write(np.repeat(np.arange(a, b, dtype=np.int32), cnt), value, context, position)
            rs = grouped_stats(cnt, value, token, a, params.hist_bins, params.top_rows, token_table=flat_tokens)
            stats["max_activation"][a:b] = rs.max_activation
            stats["mean_activation"][a:b] = rs.mean_activation
            stats["quantile_edges"][a:b] = rs.quantile_edges
            stats["hist_counts"][a:b] = rs.hist_counts
            top_parts.append((rs.top_latent, rs.top_token, rs.top_n))
        file_bytes = writer.close()
    except BaseException:
        writer.abort()
        raise
    stats.update(output_tokens())
    top = tuple(np.concatenate([p[i] for p in top_parts]) if top_parts else np.zeros(0, np.int64) for i in range(3))
    return _Finalized(rec, name, int(counts.sum()), file_bytes, stats, top)  # type: ignore[arg-type]


@dataclass
class _Finalized:
    """A dictionary whose Parquet file is in place and whose statistics wait to be committed."""

    rec: store.DictionaryRecord
    file_name: str
    rows: int
    file_bytes: int
    stats: dict[str, np.ndarray]
    top: tuple[np.ndarray, np.ndarray, np.ndarray]


def _commit_finalized(workspace: Path, done: list[_Finalized]) -> None:
    """Store the statistics of finished dictionaries and mark them ready, all in one transaction.

    One commit (a DuckDB checkpoint and fsync, tens of ms) per batch rather than per dictionary;
    a kill before it only costs redoing these dictionaries' finalisation.
    """
    with store.session(workspace, write=True) as con:
        for f in done:
            store.store_latent_stats(con, f.rec.index, f.stats, f.top)
            store.mark_dictionary_ready(con, f.rec.index, f.file_name, f.rows, f.file_bytes)


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


# ---------------------------------------------------------------------------------------------
# Choosing dictionaries


_NEURON_ID = re.compile(r"^neurons(?:_topk(\d+))?:blocks\.(\d+)\.mlp\.hook_post$")


def resolve_dictionaries(
    model,
    model_name: str,
    ids: list[str] | None,
    neurons: bool = True,
    neuron_topk: int = DEFAULT_NEURON_TOPK,
    neuron_layers: list[int] | None = None,
    root: Path | None = None,
    device: str | None = None,
) -> list[Dictionary]:
    """The dictionaries a cache command asks for, plus MLP-neuron baselines (raw and top-k) unless `neurons` is False.

    `ids` None means every dictionary of the embedded default (none for other models). Neuron
    baselines go to `neuron_layers`, by default the layers of the chosen dictionaries (all layers if none).
    """
    from core.dictionaries import load_default_dictionaries
    from core.models import ArtifactError

    out: list[Dictionary] = []
    sae_ids: list[str] = []
    for i in ids or []:
        m = _NEURON_ID.match(i)
        if m:
            layer = int(m.group(2))
            if layer >= model.cfg.n_layers:
                raise ValueError(
                    f"hook blocks.{layer}.mlp.hook_post does not exist: model {model_name} has {model.cfg.n_layers} layers (0..{model.cfg.n_layers - 1})"
                )
            out.append(neuron_dictionary(model, layer, int(m.group(1)) if m.group(1) else None))
        elif i.startswith("neurons"):
            raise ValueError(
                f"unknown dictionary {i!r}: neuron ids look like neurons:blocks.0.mlp.hook_post or neurons_topk32:blocks.0.mlp.hook_post"
            )
        else:
            sae_ids.append(i)
    if sae_ids or ids is None:
        if model_name != "default":
            if sae_ids:
                raise ValueError(
                    f"dictionaries {', '.join(sae_ids)} belong to the embedded default; model {model_name} has only neuron baselines here"
                )
        else:
            try:
                loaded = load_default_dictionaries(root=root, ids=sae_ids or None, device=device)
            except ArtifactError:
                if sae_ids:
                    raise
                log.warning("the embedded default has no dictionaries yet; caching neuron baselines only")
                loaded = {}
            out = list(loaded.values()) + out
    if neurons:
        layers = (
            neuron_layers
            if neuron_layers is not None
            else sorted({d.layer for d in out}) or list(range(model.cfg.n_layers))
        )
        have = {d.id for d in out}
        for layer in layers:
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"--neuron-layers {layer}: model {model_name} has layers 0..{model.cfg.n_layers - 1}")
            for topk in (None, neuron_topk):
                nd = neuron_dictionary(model, layer, topk)
                if nd.id not in have:
                    out.append(nd)
                    have.add(nd.id)
    if not out:
        raise ValueError("no dictionaries to cache")
    return out


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


def _set_aside(path: Path, reason: str) -> Path:
    """Move a stale default workspace (and its data folder) to NAME.stale.duckdb, replacing an older one."""
    import shutil

    stale = path.with_name(f"{path.stem}.stale{path.suffix}")
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
    log.warning("the default workspace %s %s; moved it to %s and building a new one", path, reason, stale)
    return stale


def _build_lock_path(workspace: Path) -> Path:
    return Path(workspace).with_name(Path(workspace).name + ".build-lock")


class _BuildLock:
    """Exclusive right to build a default workspace: a second caller (another process, or another
    thread such as a second browser session) waits, reporting the builder's progress, then finds
    the workspace built. The OS releases the lock if the builder dies; the waiter then resumes the build.

    The holder records who it is in the lock file (`store.holder_record`). With `wait_for_other_processes`
    False, a caller that finds another *process* building fails at once, naming it (the app answers
    rather than hang); it still waits, with progress, for a build running in this process.
    """

    def __init__(
        self, workspace: Path, progress: ProgressFn | None, timeout: float, wait_for_other_processes: bool = True
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

    def _holder(self) -> store.LockHolder:
        return store.lock_file_holder(self.path, os.pread(self.fd, 400, 0).decode(errors="replace"))

    def __enter__(self) -> _BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder()
                # A holder not found yet (no /proc/locks, record not yet written) gets a moment to record itself.
                other = not holder.this_process and (holder.pid is not None or time.monotonic() - start > 1.0)
                if other and not self.wait_for_other_processes:
                    os.close(self.fd)
                    raise WorkspaceLockedError(
                        f"the default workspace {self.workspace} is being built by {holder.describe()}; "
                        f"{holder.what_to_do()}, then reload (a stopped build resumes where it stopped)",
                        holder,
                    ) from None
                if time.monotonic() - start > self.timeout:
                    os.close(self.fd)
                    raise WorkspaceLockedError(
                        f"{holder.describe()} has been building the default workspace {self.workspace} for more "
                        f"than {self.timeout / 60:.0f} minutes; {holder.what_to_do()}, then reload",
                        holder,
                    ) from None
                self._report_waiting()
                time.sleep(0.5)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, store.holder_record().encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


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


def build_lock_holder(path: Path = DEFAULT_WORKSPACE) -> store.LockHolder | None:
    """Who is building the default workspace `path` right now (see `_BuildLock`), or None if nobody is.
    Answers at once; `LockHolder.this_process` tells a build by another thread of this process (another
    session of the app) from one by another process."""
    return _lock_held_by(_build_lock_path(path))


def job_lock_holder(workspace: Path) -> store.LockHolder | None:
    """Who is running a cache job on `workspace` right now (see `_JobLock`), or None (answers at once)."""
    return _lock_held_by(store.data_dir(workspace) / "job.lock")


def ensure_default_workspace(
    progress: ProgressFn | None = None,
    path: Path = DEFAULT_WORKSPACE,
    root: Path | None = None,
    params: CacheParams = DEFAULT_WORKSPACE_PARAMS,
    wait_timeout: float = DEFAULT_WAIT_S,
    wait_for_other_processes: bool = True,
) -> Path:
    """Build (or finish building) the embedded default's workspace if needed; returns its path.

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


def _build_default(progress: ProgressFn | None, path: Path, root: Path | None, params: CacheParams, want: dict) -> None:
    """Load the default model and dictionaries and cache them into `path` (resuming, or setting aside a misfit once)."""
    from core.models import load_model

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


# ---------------------------------------------------------------------------------------------
# CLI


class _Bars:
    """tqdm bars for the progress callback."""

    def __init__(self) -> None:
        self.bars: dict[str, object] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(phase)
        if bar is None:
            self.close()  # one bar at a time: the previous phase is over
            bar = self.bars[phase] = tqdm(
                total=total, desc=phase, unit="tok" if phase == "caching" else "dict", unit_scale=phase == "caching"
            )
        bar.n = done  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()  # type: ignore[attr-defined]


def _run_cache_command(args) -> int:
    import torch

    from core.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else None
    model = load_model(args.model, device=args.device, root=root)
    dicts = resolve_dictionaries(
        model,
        args.model,
        args.dictionaries,
        neurons=not args.no_neurons,
        neuron_topk=args.neuron_topk,
        neuron_layers=args.neuron_layers,
        root=root,
        device=args.device,
    )
    params = CacheParams(
        n_tokens=args.tokens,
        ctx_len=args.ctx_len or min(128, model.cfg.n_ctx),
        batch_contexts=args.batch_size,
        chunk_contexts=args.chunk_contexts,
    )
    corpus = Path(args.corpus) if args.corpus else default_paths(root)["corpus"]
    plan = plan_corpus_contexts(model.tokenizer, params.n_tokens, params.ctx_len, corpus, args.split)
    bars = _Bars()
    try:
        result = run_cache(
            model, dicts, Path(args.workspace), plan, params, model_name=args.model, progress=bars, restart=args.restart
        )
    finally:
        bars.close()
    if result.nothing_to_do:
        print(f"nothing to do: {len(result.skipped)} dictionaries already cached in {args.workspace}")
        return 0
    print(json.dumps(cache_summary(result, Path(args.workspace))))
    return 0


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


def _run_info_command(args) -> int:
    if args.migrate:
        print(f"schema version {store.migrate(Path(args.workspace))}")
    print(json.dumps(store.workspace_summary(Path(args.workspace)), indent=2, default=str))
    return 0


def register(sub) -> None:
    """Add the `cache` and `workspace-info` commands."""
    p = sub.add_parser("cache", help="cache sparse latent activations of a model's dictionaries in a DuckDB workspace")
    p.add_argument("--model", default="default", help="default (embedded) or gpt2 (needs the hub)")
    p.add_argument("--tokens", type=int, required=True, help="corpus tokens to cache (BOS excluded)")
    p.add_argument("--workspace", required=True, help="the workspace file, e.g. runs/ws.duckdb")
    p.add_argument("--dictionaries", nargs="+", help="dictionary ids (default: every dictionary of the model)")
    p.add_argument("--no-neurons", action="store_true", help="do not add MLP-neuron baselines")
    p.add_argument("--neuron-topk", type=int, default=DEFAULT_NEURON_TOPK, help="k of the top-k neuron baseline")
    p.add_argument(
        "--neuron-layers",
        type=int,
        nargs="+",
        help="layers of the neuron baselines (default: those of the dictionaries)",
    )
    p.add_argument("--ctx-len", type=int, help="tokens per context incl. BOS (default min(128, model n_ctx))")
    p.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
    p.add_argument("--chunk-contexts", type=int, default=64, help="contexts per resumable chunk")
    p.add_argument("--corpus", help="corpus file (default: the embedded Brown corpus)")
    p.add_argument("--split", default="train", choices=["train", "validation"])
    p.add_argument("--restart", action="store_true", help="discard an unfinished run with other parameters")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for the forward passes (default: one per core, the fastest whole job on 2 cores)",
    )
    p.add_argument("--root", help="folder of the embedded default's artifacts (default data/default)")
    p.set_defaults(run=_run_cache_command)

    q = sub.add_parser("workspace-info", help="print what a workspace holds")
    q.add_argument("--workspace", required=True)
    q.add_argument("--migrate", action="store_true", help="apply missing schema migrations first")
    q.set_defaults(run=_run_info_command)
