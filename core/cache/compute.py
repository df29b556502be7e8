"""Step 3 of the cache: forward passes, encoders, and each chunk's positive entries.

Entries are grouped by latent and written as scratch files (see `_ChunkBuilder` for why storage
runs in lock step with torch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core import store
from core.cache import files
from core.subjects.dictionaries import Dictionary

if TYPE_CHECKING:
    import torch
from core.cache.plan import CacheParams, ContextPlan, _layer_of_hook, _neuron_hook
from core.progress import Progress

ENCODE_ELEMENTS = 1 << 24  # largest dense [tokens, d_sae] block an encoder produces at once


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


def positive_entries_by_latent(piece: torch.Tensor, row_token: np.ndarray, d_sae: int) -> files.ChunkPart:
    """Positive entries of a dense slice `[t, d_sae]` already grouped by latent, in row order within a latent.

    For dense raw-neuron slices (`BY_LATENT_MIN_SHARE`): scanning the transposed slice yields the entries
    in latent order, so the chunk needs no sort by latent (`files.group_by_latent`); the chunk's slices are
    written as runs (`files.write_chunk_runs`) and finalising merges them like chunks. Slower than the
    row-order scan and sort on sparser slices. `row_token` `[t]`: each row's global token index.
    """
    if piece.device.type != "cpu":
        return positive_entries_by_latent_on_device(piece, row_token)
    acts = piece.float().cpu().numpy().T.copy()  # [d_sae, t]
    mask = acts > 0
    counts = np.count_nonzero(mask, axis=1).astype(np.int64)
    token = np.broadcast_to(row_token, acts.shape)[mask]
    return files.ChunkPart(token, acts[mask], counts)


# Raw-neuron slices at least this share positive are scanned by latent (`positive_entries_by_latent`), sparser
# ones row by row and sorted. One thread, 3,072 neurons, per slice of 8 x 1,016 rows: 254 vs 109 ms at 10%
# positive, 322 vs 194 at 20%, 366 vs 330 at 30%, 396 vs 438 at 44% (the GPT-2 fixture's random weights: ~50%;
# the default model's neurons are 10-25% positive). docs/benchmarks.md.
BY_LATENT_MIN_SHARE = 0.35


def positive_share(piece: torch.Tensor, sample_rows: int = 64) -> float:
    """Share of positive entries in the first `sample_rows` rows of a dense slice `[t, d_sae]` (0 if empty)."""
    head = piece[:sample_rows]
    return float((head > 0).float().mean()) if head.numel() else 0.0


def _chunk_runs(extracted: list, d_sae: int) -> list[files.ChunkPart]:
    """A chunk's extracted slices (in token order) as runs grouped by latent: slices scanned by latent are runs
    already; each stretch of row-order slices between them is concatenated and sorted into one run."""
    runs: list[files.ChunkPart] = []
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def close_stretch() -> None:
        if rows:
            token, latent, value = (np.concatenate([g[i] for g in rows]) for i in range(3))
            runs.append(files.group_by_latent(latent, token, value, d_sae))
            rows.clear()

    for g in extracted:
        if isinstance(g, files.ChunkPart):
            close_stretch()
            runs.append(g)
        else:
            rows.append(g)
    close_stretch()
    if not runs:
        runs.append(files.ChunkPart(np.zeros(0, np.uint32), np.zeros(0, np.float32), np.zeros(d_sae, np.int64)))
    return runs


def positive_entries_by_latent_on_device(piece: torch.Tensor, row_token: np.ndarray) -> files.ChunkPart:
    """`positive_entries_by_latent` computed with torch on the piece's own device; only the entries are copied to the host."""
    acts = piece.T.contiguous()  # [d_sae, t]
    mask = acts > 0
    row = mask.nonzero()[:, 1]  # row-major over [d_sae, t]: latent order, then row order
    return files.ChunkPart(
        row_token[row.cpu().numpy()], acts[mask].float().cpu().numpy(), mask.sum(dim=1).cpu().numpy().astype(np.int64)
    )


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


def _rows_of(extracted) -> int:
    """Rows of one extracted slice: a (token, latent, value) triple or a `files.ChunkPart`."""
    return len(extracted.value) if isinstance(extracted, files.ChunkPart) else len(extracted[2])


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
        # (dictionary id, d_sae, row tokens, encoded slice, whether it is scanned by latent)
        self.held: list[tuple[str, int, np.ndarray, object, bool]] = []
        self.held_bytes = 0
        self.pending: dict[str, list] = {}  # dictionary id -> extracted slices in token order (see `_rows_of`)
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
        by_latent = d.kind == "neurons" and positive_share(piece) >= BY_LATENT_MIN_SHARE  # once per slice
        self.held.append((d.id, d.d_sae, row_token, piece, by_latent))
        self.held_bytes += _piece_bytes(piece)
        if self.held_bytes >= self.max_dense_bytes:
            self.flush()

    def flush(self) -> None:
        """Extract the positive entries of every held slice, each cut by rows among the threads (frees the dense outputs)."""
        if not self.held:
            return
        held, self.held, self.held_bytes = self.held, [], 0
        parts = []  # (index into held, first row, end row)
        for i, (_, _, row_token, _, _) in enumerate(held):
            n = len(row_token)
            cuts = np.linspace(0, n, min(self.threads, max(1, n)) + 1).astype(int)
            parts += [(i, int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]

        def extract(part: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | files.ChunkPart:
            i, a, b = part
            _, d_sae, row_token, piece, by_latent = held[i]
            if by_latent:
                return positive_entries_by_latent(_piece_rows(piece, a, b), row_token[a:b], d_sae)
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
            runs = _chunk_runs(pending.pop(rec.id, []), rec.d_sae)
            files.write_chunk_runs(folder, rec.index, runs)
            return sum(len(r.value) for r in runs)

        costs = [float(sum(_rows_of(g) for g in pending.get(r.id, []))) for r in recs]
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
    progress: Progress | None,
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
