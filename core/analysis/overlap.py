"""Layer overlap: how much two dictionaries of one kind share latents, after aligning them one to one.

A dictionary's latents have no order, so two dictionaries can only be compared after finding the
pairing of latents that makes them most alike (the seed paper uses the Hungarian algorithm).

1. Similarity: cosine between decoder directions (rows of `W_dec: [d_sae, d_out]`), or between the
   MiniLM embeddings of the latents' explanations (`[n_explained, 384]`).
2. Matching: the one-to-one pairing with the largest total similarity (a linear assignment problem).
   - `dense`: `scipy.optimize.linear_sum_assignment` on the whole `[n_a, n_b]` similarity matrix.
     scipy solves it in float64, so memory is `12 * n_a * n_b` bytes with the float32 similarity:
     50 MB at 2,048 latents, 7.2 GB at GPT-2 small's 24,576 (see `bench/overlap.py` for time).
   - `sparse`: a candidate graph of each latent's `k` most similar partners in both directions
     (computed block by block; the full matrix is never held) plus the pairs (i, i), which make a
     full matching always exist; `scipy.sparse.csgraph.min_weight_full_bipartite_matching` then
     solves the assignment exactly on that graph. It equals the dense optimum whenever the optimal
     pairs are among the candidates; `bench/overlap.py` checks that on the default's SAEs.
3. Scores per pair of dictionaries: the mean similarity of matched pairs, and the seed paper's
   Frobenius form <A, P B>_F / (||A||_F ||B||_F) on the raw rows, P being the matching as an
   `[n_a, n_b]` partial permutation matrix. For unit-norm rows and a square matching the two agree
   (SAE-Lens decoders and MiniLM embeddings have unit rows); the Frobenius form additionally weights
   pairs by their norms and counts unmatched rows of a rectangular problem as zero.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import UserError
from core.latents.search import EMBEDDING_MODEL, index_explanations  # the MiniLM index of explanations
from core.progress import Progress

log = logging.getLogger(__name__)

DENSE_BYTES_PER_CELL = 12  # float32 similarity + the float64 cost matrix scipy solves on
DENSE_MEMORY_SHARE = 0.5  # `method='auto'` stays dense while its matrices take at most this share of available memory
FALLBACK_AVAILABLE_BYTES = 4 * 10**9  # assumed available memory where /proc/meminfo cannot be read
DEFAULT_K = 32  # candidates per latent and direction in the sparse method
BLOCK_ROWS = 1024  # rows of the similarity matrix computed at once by the sparse method
OVERLAP_KINDS = ("resid", "attn", "transcoder", "mlp")


class OverlapError(UserError):
    """Two dictionaries (or embedding sets) cannot be compared: different kinds, widths or models."""


@dataclass(frozen=True)
class Matching:
    """A one-to-one pairing: row `rows[i]` of A with row `cols[i]` of B, whose similarity is `similarity[i]`."""

    rows: np.ndarray  # [n_matched] int64, sorted
    cols: np.ndarray  # [n_matched] int64
    similarity: np.ndarray  # [n_matched] float64
    method: str  # 'dense' | 'sparse'

    @property
    def total(self) -> float:
        """Sum of matched similarities (what the matching maximises)."""
        return float(self.similarity.sum())


@dataclass
class OverlapResult:
    """The overlap of two dictionaries (or of their explanations): scores, sizes and the matched pairs.

    `latents_a[rows]` / `latents_b[cols]` map matched rows back to latent ids (identity for decoders).
    """

    dict_a: str
    dict_b: str
    kind: str
    layer_a: int
    layer_b: int
    similarity: str  # 'decoder' | 'explanation'
    n_a: int
    n_b: int
    mean_similarity: float
    frobenius: float
    method: str
    seconds: float
    latent_a: np.ndarray  # [n_matched] latent ids in dict_a
    latent_b: np.ndarray  # [n_matched] latent ids in dict_b
    pair_similarity: np.ndarray  # [n_matched]
    params: dict = field(default_factory=dict)

    @property
    def n_matched(self) -> int:
        """Number of matched pairs (min(n_a, n_b))."""
        return len(self.latent_a)


# ---------------------------------------------------------------------------------------------
# Pure math


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread: on this shared 2-core machine a second OpenBLAS thread made the
    block products of the sparse method up to 70x slower under load, and the solvers are single-threaded anyway."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x: [n, d]` scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity `[n_a, n_b]` between the rows of `a: [n_a, d]` and `b: [n_b, d]`."""
    return unit_rows(a) @ unit_rows(b).T


def match_dense(sim: np.ndarray) -> Matching:
    """The maximum-total-similarity one-to-one matching of `sim: [n_a, n_b]` (Hungarian / LSA, exact).

    scipy solves in float64; negating our own float64 copy (rather than `maximize=True`, which copies
    again) keeps the peak at the similarity matrix plus one float64 matrix.
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.array(sim, dtype=np.float64)
    np.negative(cost, out=cost)
    rows, cols = linear_sum_assignment(cost)
    del cost
    return Matching(
        rows.astype(np.int64), cols.astype(np.int64), np.asarray(sim)[rows, cols].astype(np.float64), "dense"
    )


def _row_topk(a_unit: np.ndarray, b_unit: np.ndarray, k: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of each row of `a_unit`'s `k` most similar rows of `b_unit`, block by block."""
    k = min(k, len(b_unit))
    rows, cols = [], []
    for start in range(0, len(a_unit), block_rows):
        sim = a_unit[start : start + block_rows] @ b_unit.T  # [block, n_b]
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(np.arange(start, start + len(sim)), k))
        cols.append(top.reshape(-1))
    return np.concatenate(rows), np.concatenate(cols)


def candidate_pairs(
    a_unit: np.ndarray, b_unit: np.ndarray, k: int = DEFAULT_K, block_rows: int = BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the sparse method's candidate graph: each row's `k` best columns, each column's `k` best rows, and (i, i).

    `a_unit: [n_a, d]`, `b_unit: [n_b, d]` have unit rows. Memory is `block_rows * max(n_a, n_b)`
    floats; the pairs come back unique, sorted by row.
    """
    n_b = len(b_unit)
    r1, c1 = _row_topk(a_unit, b_unit, k, block_rows)
    c2, r2 = _row_topk(b_unit, a_unit, k, block_rows)
    diag = np.arange(min(len(a_unit), n_b))
    key = np.unique(np.concatenate([r1 * n_b + c1, r2 * n_b + c2, diag * n_b + diag]))
    return key // n_b, key % n_b


def _residual_potentials(
    rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, col_of_row: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shortest-path potentials (d_row `[n]`, d_col `[n]`) of the residual graph of a square min-cost matching.

    Edges: row i -> col j (cost c_ij) for unmatched candidates, col j -> row i (cost -c_ij) for matched
    pairs, and a virtual source reaching every node at 0. Bellman-Ford, vectorised, to convergence
    (no negative cycle exists because the matching is optimal on its graph).
    """
    matched = col_of_row[rows] == cols
    fu, fv, fw = rows[~matched], cols[~matched] + n, cost[~matched]
    mu, mv, mw = cols[matched] + n, rows[matched], -cost[matched]
    u, v, w = np.concatenate([fu, mu]), np.concatenate([fv, mv]), np.concatenate([fw, mw])
    d = np.zeros(2 * n)
    for _ in range(2 * n + 1):
        new = d.copy()
        np.minimum.at(new, v, d[u] + w)
        if np.array_equal(new, d):
            break
        d = new
    return d[:n], d[n:]


def match_sparse(
    a: np.ndarray,
    b: np.ndarray,
    k: int = DEFAULT_K,
    block_rows: int = BLOCK_ROWS,
    tol: float = 1e-5,
    max_rounds: int = 20,
) -> Matching:
    """Maximum-total-cosine matching of the rows of `a: [n, d]` and `b: [n, d]`, exact, without the `[n, n]` matrix.

    Solves on a top-`k` candidate graph, then certifies the result against every pair by LP duality:
    potentials from the residual graph's shortest paths give reduced costs, and any pair with a
    negative reduced cost (a pair that could improve the matching) is added to the graph and the
    problem re-solved. The returned matching is optimal to within `tol` per pair; `Matching.method`
    is 'sparse'. Square problems only (equal widths, which `check_compatible` ensures).
    """
    with one_blas_thread():
        return _match_sparse(a, b, k, block_rows, tol, max_rounds)


def _match_sparse(a: np.ndarray, b: np.ndarray, k: int, block_rows: int, tol: float, max_rounds: int) -> Matching:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    n = len(a)
    if len(b) != n:
        raise ValueError(
            f"the sparse method matches square problems only ({len(a)} vs {len(b)} rows); use method='dense'"
        )
    au, bu = unit_rows(a), unit_rows(b)
    rows, cols = candidate_pairs(au, bu, k, block_rows)
    for rnd in range(max_rounds):
        cost = 2.0 - np.einsum("ij,ij->i", au[rows], bu[cols]).astype(
            np.float64
        )  # in [1, 3]: positive, as the solver needs
        r, c = min_weight_full_bipartite_matching(csr_matrix((cost, (rows, cols)), shape=(n, n)))
        col_of_row = np.empty(n, np.int64)
        col_of_row[r] = c
        d_row, d_col = _residual_potentials(rows, cols, cost, col_of_row, n)
        # A pair improves the matching iff its reduced cost 2 - sim + d_row - d_col is negative. Add each
        # row's `k` most violating pairs (adding all of them can make the graph nearly dense).
        add_r, add_c = [], []
        for start in range(0, n, block_rows):
            gain = au[start : start + block_rows] @ bu.T - (
                2.0 + d_row[start : start + block_rows, None] - d_col[None, :]
            )
            bad_rows = np.nonzero((gain > tol).any(axis=1))[0]
            if len(bad_rows) == 0:
                continue
            g = gain[bad_rows]
            top = np.argpartition(-g, min(k, n) - 1, axis=1)[:, : min(k, n)]
            keep = np.take_along_axis(g, top, 1) > tol
            add_r.append(np.broadcast_to((bad_rows + start)[:, None], top.shape)[keep])
            add_c.append(top[keep])
        if not add_r:
            break
        add_r, add_c = np.concatenate(add_r), np.concatenate(add_c)
        log.debug("sparse matching round %d: %d edges, %d violating pairs added", rnd, len(rows), len(add_r))
        key = np.unique(np.concatenate([rows * n + cols, add_r * n + add_c]))
        rows, cols = key // n, key % n
    else:
        log.warning("sparse matching not certified optimal after %d rounds", max_rounds)
    pair_sim = np.einsum("ij,ij->i", au[r].astype(np.float64), bu[c].astype(np.float64))
    order = np.argsort(r)
    return Matching(r[order].astype(np.int64), c[order].astype(np.int64), pair_sim[order], "sparse")


def available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable of /proc/meminfo; a fixed guess elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_AVAILABLE_BYTES


def match(a: np.ndarray, b: np.ndarray, method: str = "auto", k: int = DEFAULT_K) -> Matching:
    """Cosine matching of the rows of `a: [n_a, d]` and `b: [n_b, d]` by `method` ('dense', 'sparse', or 'auto').

    Both are exact. 'auto' takes dense (about 5x faster at GPT-2 small's width, `bench/overlap.py`)
    while its matrices, DENSE_BYTES_PER_CELL * n_a * n_b, fit in half the available memory, else sparse.
    """
    if method == "auto":
        fits = DENSE_BYTES_PER_CELL * len(a) * len(b) <= DENSE_MEMORY_SHARE * available_memory()
        method = "dense" if fits or len(a) != len(b) else "sparse"
    if method == "dense":
        with one_blas_thread():
            return match_dense(cosine_matrix(a, b))
    if method == "sparse":
        return match_sparse(a, b, k)
    raise ValueError(f"unknown matching method {method!r}; use auto, dense or sparse")


def frobenius_overlap(a: np.ndarray, b: np.ndarray, m: Matching) -> float:
    """The seed paper's form <A, P B>_F / (||A||_F ||B||_F) for raw rows `a: [n_a, d]`, `b: [n_b, d]` and matching `m` as P."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inner = float(np.einsum("ij,ij->", a64[m.rows], b64[m.cols]))
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return inner / denom if denom > 0 else 0.0


@functools.lru_cache(maxsize=16)
def chance_overlap(n_a: int, n_b: int, d: int, seed: int = 0) -> float:
    """Mean matched cosine of two dictionaries of random Gaussian directions `[n_a, d]`, `[n_b, d]`: the chance level.

    With many latents in few dimensions, even unrelated directions find well-aligned partners
    (2,048 random directions in 256-d: ~0.206), so an overlap means something only above this.
    """
    rng = np.random.default_rng(seed)
    return float(match(rng.standard_normal((n_a, d)), rng.standard_normal((n_b, d))).similarity.mean())


def chance_level(records, kind: str, similarity: str = "decoder") -> float | None:
    """The chance level of `kind`'s mean matched cosine among stored overlap `records` (kept with decoder
    overlaps), or None if unknown or if the layers' widths differ (several levels)."""
    levels = {
        r.params["chance"]
        for r in records
        if r.kind == kind and r.similarity == similarity and r.params.get("chance") is not None
    }
    return levels.pop() if len(levels) == 1 else None


def layer_matrix(
    results: list, kind: str, similarity: str = "decoder", score: str = "mean_similarity"
) -> tuple[list[int], np.ndarray]:
    """(layers, `[n_layers, n_layers]` matrix) of `score` for one kind; symmetric, 1.0 on the diagonal, NaN where not computed.

    `results` are OverlapResult or stored OverlapRecord objects (same field names).
    """
    chosen = [r for r in results if r.kind == kind and r.similarity == similarity]
    layers = sorted({r.layer_a for r in chosen} | {r.layer_b for r in chosen})
    pos = {layer: i for i, layer in enumerate(layers)}
    mat = np.full((len(layers), len(layers)), np.nan)
    np.fill_diagonal(mat, 1.0)
    for r in chosen:
        v = getattr(r, score)
        mat[pos[r.layer_a], pos[r.layer_b]] = mat[pos[r.layer_b], pos[r.layer_a]] = v
    return layers, mat


# ---------------------------------------------------------------------------------------------
# Dictionaries


def check_compatible(da, db, model_a: str | None = None, model_b: str | None = None) -> None:
    """Raise OverlapError unless dictionaries `da`, `db` (core.subjects.dictionaries.Dictionary) can be matched: same kind, width, d_out and model."""
    if da.kind != db.kind:
        raise OverlapError(
            f"{da.id} is a {da.kind} dictionary and {db.id} a {db.kind} one; overlap compares dictionaries of one kind"
        )
    if da.d_sae != db.d_sae:
        raise OverlapError(
            f"{da.id} has {da.d_sae} latents and {db.id} has {db.d_sae}; overlap needs dictionaries of equal width"
        )
    if da.d_out != db.d_out or da.d_in != db.d_in:
        raise OverlapError(
            f"{da.id} maps d_in {da.d_in} -> d_out {da.d_out} and {db.id} maps {db.d_in} -> {db.d_out}: "
            "they belong to different models, whose decoder directions live in different spaces"
        )
    if model_a is not None and model_b is not None and model_a != model_b:
        raise OverlapError(
            f"{da.id} is from model {model_a!r} and {db.id} from {model_b!r}; overlap compares dictionaries of one model"
        )


def decoder_matrix(d) -> np.ndarray:
    """Decoder directions `[d_sae, d_out]` of a Dictionary as float32 numpy (`W_dec` a torch tensor or an array)."""
    w = d.W_dec
    if hasattr(w, "detach"):
        w = w.detach().float().cpu().numpy()
    return np.asarray(w, dtype=np.float32)


def decoder_overlap(
    da, db, method: str = "auto", k: int = DEFAULT_K, model_a: str | None = None, model_b: str | None = None
) -> OverlapResult:
    """Overlap of two dictionaries of one kind on decoder-direction cosine (see the module docstring)."""
    check_compatible(da, db, model_a, model_b)
    a, b = decoder_matrix(da), decoder_matrix(db)
    t0 = time.perf_counter()
    m = match(a, b, method, k)
    seconds = time.perf_counter() - t0
    return OverlapResult(
        dict_a=da.id,
        dict_b=db.id,
        kind=da.kind,
        layer_a=da.layer,
        layer_b=db.layer,
        similarity="decoder",
        n_a=len(a),
        n_b=len(b),
        mean_similarity=float(m.similarity.mean()),
        frobenius=frobenius_overlap(a, b, m),
        method=m.method,
        seconds=seconds,
        latent_a=m.rows,
        latent_b=m.cols,
        pair_similarity=m.similarity,
        params={"chance": chance_overlap(len(a), len(b), a.shape[1]), **({"k": k} if m.method == "sparse" else {})},
    )


def embedding_overlap(
    dict_a: str,
    latents_a: np.ndarray,
    emb_a: np.ndarray,
    dict_b: str,
    latents_b: np.ndarray,
    emb_b: np.ndarray,
    kind: str,
    layer_a: int,
    layer_b: int,
    method: str = "auto",
    k: int = DEFAULT_K,
    params: dict | None = None,
) -> OverlapResult:
    """Overlap of two dictionaries on the cosine of their explanations' embeddings `emb_*: [n_*, dim]` (one row per latent in `latents_*`).

    Only explained latents take part; with unequal counts min(n_a, n_b) pairs are matched.
    """
    if emb_a.shape[1] != emb_b.shape[1]:
        raise OverlapError(
            f"explanation embeddings of {dict_a} ({emb_a.shape[1]}-d) and {dict_b} ({emb_b.shape[1]}-d) come from different embedding models"
        )
    if len(emb_a) == 0 or len(emb_b) == 0:
        raise OverlapError(
            f"no explanation embeddings for {dict_a if len(emb_a) == 0 else dict_b}; run `python -m core explain` first"
        )
    t0 = time.perf_counter()
    m = match(emb_a, emb_b, method, k)
    seconds = time.perf_counter() - t0
    la, lb = np.asarray(latents_a, np.int64), np.asarray(latents_b, np.int64)
    return OverlapResult(
        dict_a=dict_a,
        dict_b=dict_b,
        kind=kind,
        layer_a=layer_a,
        layer_b=layer_b,
        similarity="explanation",
        n_a=len(emb_a),
        n_b=len(emb_b),
        mean_similarity=float(m.similarity.mean()),
        frobenius=frobenius_overlap(emb_a, emb_b, m),
        method=m.method,
        seconds=seconds,
        latent_a=la[m.rows],
        latent_b=lb[m.cols],
        pair_similarity=m.similarity,
        params={**(params or {}), **({"k": k} if m.method == "sparse" else {})},
    )


def layer_pairs(dicts: dict, kinds: tuple[str, ...] = OVERLAP_KINDS) -> list[tuple]:
    """Every (da, db) pair of dictionaries of one kind at layers a < b, by kind then layers."""
    out = []
    for kind in kinds:
        same = sorted((d for d in dicts.values() if d.kind == kind), key=lambda d: d.layer)
        out += [(same[i], same[j]) for i in range(len(same)) for j in range(i + 1, len(same))]
    return out


def all_decoder_overlaps(
    dicts: dict,
    kinds: tuple[str, ...] = OVERLAP_KINDS,
    method: str = "auto",
    k: int = DEFAULT_K,
    progress: Progress | None = None,
) -> list[OverlapResult]:
    """Decoder overlap of every pair of layers for each kind in `kinds` (dictionaries by id); `progress("overlaps", done, total)` (core.progress)."""
    pairs = layer_pairs(dicts, kinds)
    out = []
    for i, (da, db) in enumerate(pairs):
        if progress:
            progress("overlaps", i, len(pairs))
        out.append(decoder_overlap(da, db, method, k))
        log.info("overlap %s ~ %s: %.3f (%.2f s)", da.id, db.id, out[-1].mean_similarity, out[-1].seconds)
    if progress:
        progress("overlaps", len(pairs), len(pairs))
    return out


# ---------------------------------------------------------------------------------------------
# Workspace: compute every layer pair, store results and matched pairs, resume


SIMILARITIES = ("decoder", "explanation")


def overlap_id(similarity: str, dict_a: str, dict_b: str) -> str:
    """The stored id of an overlap: one per similarity and (ordered) dictionary pair; a rerun replaces it."""
    return f"{similarity}:{dict_a}~{dict_b}"


def decoder_fingerprint(d) -> str:
    """Hash of a dictionary's id and decoder matrix (what the decoder overlap depends on)."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    h.update(d.id.encode())
    h.update(np.ascontiguousarray(decoder_matrix(d)).tobytes())
    return h.hexdigest()


def _layer_of(dictionary_id: str) -> int:
    import re

    m = re.search(r"blocks\.(\d+)\.", dictionary_id)
    return int(m.group(1)) if m else -1


@dataclass
class ExplanationSet:
    """The explained latents of one dictionary that an explanation overlap compares: ids `[n]` and unit embeddings `[n, dim]`."""

    dictionary: str
    kind: str
    layer: int
    latents: np.ndarray
    vectors: np.ndarray
    explanation_ids: list[str]


def explanation_sets(
    workspace,
    kinds: tuple[str, ...] = OVERLAP_KINDS,
    embedding_model: str = EMBEDDING_MODEL,
    explainer: str | None = None,
    strategy: str | None = None,
) -> tuple[dict[str, ExplanationSet], dict]:
    """Per dictionary of `kinds`: its latents' explanation embeddings, one explanation per latent; and the choice made.

    Real (non-baseline) ok explanations of one explainer and one sampling strategy are used, so the
    layers are compared on equal terms: by default the most common explainer, and 'top' if present
    (else the most common strategy). The latest explanation wins when a latent has several.
    """
    from core import store

    expl = [e for e in store.list_explanations(workspace) if e.dictionary.split(":", 1)[0] in kinds and e.text]
    if not expl:
        return {}, {}
    if explainer is None:
        explainer = max(sorted({e.explainer for e in expl}), key=lambda x: sum(e.explainer == x for e in expl))
    expl = [e for e in expl if e.explainer == explainer]
    if strategy is None:
        strategies = sorted({e.strategy for e in expl})
        strategy = "top" if "top" in strategies else max(strategies, key=lambda x: sum(e.strategy == x for e in expl))
    expl = [e for e in expl if e.strategy == strategy]
    ids, vecs = store.read_explanation_embeddings(workspace, embedding_model, [e.explanation_id for e in expl])
    row = {eid: i for i, eid in enumerate(ids)}
    latest: dict[tuple[str, int], object] = {}
    for e in expl:  # ordered by created_at within a latent
        if e.explanation_id in row:
            latest[(e.dictionary, e.latent)] = e
    out: dict[str, ExplanationSet] = {}
    for dictionary in sorted({d for d, _ in latest}):
        chosen = sorted((e for (d, _), e in latest.items() if d == dictionary), key=lambda e: e.latent)
        out[dictionary] = ExplanationSet(
            dictionary,
            dictionary.split(":", 1)[0],
            _layer_of(dictionary),
            np.array([e.latent for e in chosen], np.int64),
            vecs[[row[e.explanation_id] for e in chosen]],
            [e.explanation_id for e in chosen],
        )
    return out, {"explainer": explainer, "strategy": strategy, "embedding_model": embedding_model}


@dataclass
class OverlapRun:
    """What `overlap_workspace` did: results computed now, pairs skipped as already stored, and notes for the user."""

    computed: list[OverlapResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _store(workspace, r: OverlapResult) -> None:
    from core import store

    store.write_overlap(
        workspace,
        store.OverlapRecord(
            overlap_id(r.similarity, r.dict_a, r.dict_b),
            r.similarity,
            r.kind,
            r.dict_a,
            r.dict_b,
            r.layer_a,
            r.layer_b,
            r.n_a,
            r.n_b,
            r.n_matched,
            r.mean_similarity,
            r.frobenius,
            r.method,
            r.seconds,
            r.params,
        ),
        r.latent_a,
        r.latent_b,
        r.pair_similarity,
    )


def workspace_dictionaries(workspace: Path, model_name: str, kinds: tuple[str, ...], root: Path | None = None) -> dict:
    """The workspace's SAE dictionaries of `kinds`, loaded for `model_name`, checked to be the weights the workspace was cached from."""
    from core import store
    from core.cache.plan import dictionary_matches
    from core.subjects.dictionaries import load_dictionaries

    with store.session(workspace) as con:
        info = store.get_info(con, "model") or {}
        records = [d for d in store.dictionaries(con) if d.kind in kinds]
    if info.get("name") and info["name"] != model_name:
        raise OverlapError(
            f"workspace {workspace} was built from model {info['name']!r}, not {model_name!r}; pass --model {info['name']}"
        )
    if not records:
        raise OverlapError(f"workspace {workspace} has no dictionaries of kind {', '.join(kinds)}")
    dicts = load_dictionaries(model_name, ids=[r.id for r in records], root=root)
    for r in records:
        if not dictionary_matches(dicts[r.id], r.fingerprint):
            raise OverlapError(
                f"{r.id} loaded for model {model_name!r} is not the dictionary the workspace was cached with (weights differ); rebuild the workspace"
            )
    return dicts


_Job = tuple[str, Callable[[], OverlapResult], dict]  # (overlap id, compute the result, params that decide a rerun)


def overlap_workspace(
    workspace,
    dicts: dict | None = None,
    similarities: tuple[str, ...] = SIMILARITIES,
    kinds: tuple[str, ...] = OVERLAP_KINDS,
    method: str = "auto",
    k: int = DEFAULT_K,
    force: bool = False,
    progress: Progress | None = None,
    embedding_model: str = EMBEDDING_MODEL,
    explainer: str | None = None,
    strategy: str | None = None,
    min_explained: int = 2,
) -> OverlapRun:
    """Overlap of every pair of layers of each kind, on decoders (`dicts` by id) and/or explanation embeddings; stored in the workspace.

    A pair already stored with the same inputs (fingerprints, method, explainer choice) is skipped
    unless `force`, so an interrupted run resumes. `progress("overlaps", done, total)` (core.progress).
    """
    from core import store

    run = OverlapRun()
    stored = {r.overlap_id: r for r in store.read_overlaps(workspace)}
    jobs: list[_Job] = []
    if "decoder" in similarities:
        if not dicts:
            run.notes.append("decoder overlap needs the dictionaries' weights; none were given")
        else:
            jobs += _decoder_jobs(dicts, kinds, method, k)
    if "explanation" in similarities:
        explanation_jobs, notes = _explanation_jobs(
            workspace, kinds, embedding_model, explainer, strategy, min_explained, method, k
        )
        jobs += explanation_jobs
        run.notes += notes
    _run_jobs(workspace, jobs, stored, force, progress, run)
    return run


def _decoder_jobs(dicts: dict, kinds: tuple[str, ...], method: str, k: int) -> list[_Job]:
    """One job per pair of layers of each kind, overlapping their decoder rows."""
    jobs = []
    for da, db in layer_pairs(dicts, kinds):
        params = {
            "fingerprint_a": decoder_fingerprint(da),
            "fingerprint_b": decoder_fingerprint(db),
            "method": method,
            "k": k,
        }
        jobs.append(
            (overlap_id("decoder", da.id, db.id), lambda da=da, db=db: decoder_overlap(da, db, method, k), params)
        )
    return jobs


def _explanation_jobs(
    workspace,
    kinds: tuple[str, ...],
    embedding_model: str,
    explainer: str | None,
    strategy: str | None,
    min_explained: int,
    method: str,
    k: int,
) -> tuple[list[_Job], list[str]]:
    """(jobs, notes): one job per pair of layers of each kind with >= `min_explained` embedded explanations each."""
    if embedding_model == EMBEDDING_MODEL:
        index_explanations(workspace)  # embeds explanations stored since the last index (none: no-op)
    sets, choice = explanation_sets(workspace, kinds, embedding_model, explainer, strategy)
    notes = []
    if not sets:
        notes.append(
            f"no explanations with {embedding_model} embeddings in this workspace; run `python -m core explain` first"
        )
    jobs = []
    for kind in kinds:
        same = sorted(
            (s for s in sets.values() if s.kind == kind and len(s.latents) >= min_explained), key=lambda s: s.layer
        )
        for i in range(len(same)):
            for j in range(i + 1, len(same)):
                a, b = same[i], same[j]
                params = {
                    **choice,
                    "explanations_a": _ids_hash(a.explanation_ids),
                    "explanations_b": _ids_hash(b.explanation_ids),
                    "method": method,
                    "k": k,
                }
                jobs.append(
                    (
                        overlap_id("explanation", a.dictionary, b.dictionary),
                        lambda a=a, b=b, p=params: embedding_overlap(
                            a.dictionary,
                            a.latents,
                            a.vectors,
                            b.dictionary,
                            b.latents,
                            b.vectors,
                            a.kind,
                            a.layer,
                            b.layer,
                            method,
                            k,
                            p,
                        ),
                        params,
                    )
                )
    return jobs, notes


def _run_jobs(
    workspace,
    jobs: list[_Job],
    stored: dict,
    force: bool,
    progress: Progress | None,
    run: OverlapRun,
) -> None:
    """Compute and store each job unless `stored` (overlap id -> record) has it with the same params and not `force`; records it in `run`."""
    for i, (oid, fn, params) in enumerate(jobs):
        if progress:
            progress("overlaps", i, len(jobs))
        old = stored.get(oid)
        if not force and old is not None and {key: old.params.get(key) for key in params} == params:
            run.skipped.append(oid)
            continue
        result = fn()
        result.params = {**result.params, **params}
        _store(workspace, result)
        run.computed.append(result)
        log.info(
            "overlap %s: mean %.3f, frobenius %.3f (%.2f s, %s)",
            oid,
            result.mean_similarity,
            result.frobenius,
            result.seconds,
            result.method,
        )
    if progress:
        progress("overlaps", len(jobs), len(jobs))


def _ids_hash(ids: list[str]) -> str:
    import hashlib

    return hashlib.blake2b("|".join(ids).encode(), digest_size=8).hexdigest()


def stored_layer_matrix(
    workspace, kind: str, similarity: str = "decoder", score: str = "mean_similarity"
) -> tuple[list[int], np.ndarray, list]:
    """(layers, `[n, n]` matrix of `score`, records) of the stored overlaps of one kind and similarity (NaN where missing)."""
    from core import store

    recs = store.read_overlaps(workspace, similarity=similarity, kind=kind)
    layers, mat = layer_matrix(recs, kind, similarity, score)
    return layers, mat, recs


def pairs_with_explanations(
    workspace, rec, limit: int = 50, offset: int = 0, most_similar_first: bool = True
):  # -> pandas.DataFrame
    """Matched pairs of stored overlap `rec` (a store.OverlapRecord) with each latent's explanation, for browsing.

    Columns: latent_a, explanation_a, similarity, latent_b, explanation_b. The explanation shown is the
    one the overlap compared (explanation overlaps record their explainer and strategy), else the
    latent's first real explanation; '' when a latent has none.
    """
    from core import store

    pairs = store.read_overlap_pairs(workspace, rec.overlap_id, limit, offset, most_similar_first)
    explainer, strategy = rec.params.get("explainer"), rec.params.get("strategy")

    def texts(dictionary: str, latents) -> dict[int, str]:
        found = store.list_explanations(workspace, dictionary=dictionary, latents=[int(x) for x in latents])
        found.sort(key=lambda e: (e.explainer != explainer, e.strategy != strategy))  # the compared explanation first
        out: dict[int, str] = {}
        for e in found:
            out.setdefault(e.latent, e.text or "")
        return out

    ta, tb = texts(rec.dict_a, pairs["latent_a"]), texts(rec.dict_b, pairs["latent_b"])
    pairs["explanation_a"] = [ta.get(int(x), "") for x in pairs["latent_a"]]
    pairs["explanation_b"] = [tb.get(int(x), "") for x in pairs["latent_b"]]
    return pairs[["latent_a", "explanation_a", "similarity", "latent_b", "explanation_b"]]
