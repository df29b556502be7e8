"""Step 4 of the cache: merge a dictionary's chunks into its Parquet file and commit its statistics.

Per-latent statistics are computed from the merged slices; output tokens (weights only) come after
the job, in `core.cache.outputs`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import store
from core.cache import files
from core.cache.plan import CacheParams, ContextPlan
from core.cache.stats import grouped_stats, no_output_tokens

FINALIZE_ROWS = 1 << 22  # rows merged at once while finalising (bounds memory to ~100 MB)


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


def _finalize_dictionary(
    workspace: Path,
    run_id: str,
    n_chunks: int,
    rec: store.DictionaryRecord,
    plan: ContextPlan,
    params: CacheParams,
    max_rows: int,
) -> _Finalized:
    """Merge a dictionary's chunks into its Parquet file and compute its statistics (committed later by `_commit_finalized`).

    Output tokens are left empty here: they depend on weights only and are filled after the job
    (`core.cache.outputs.add_output_tokens`).
    """
    readers = [r for c in range(n_chunks) for r in files.open_chunk(workspace, run_id, c, rec.index)]
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
        max_latents = max(1, (1 << 22) // max(1, len(readers)))
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
    stats.update(no_output_tokens(rec.d_sae))
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
