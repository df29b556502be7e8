"""Find latents by meaning: semantic search over stored explanations with MiniLM sentence embeddings.

1. `index_explanations` embeds every stored explanation text (status ok; random-explanation rows are
   copies of other latents' texts and are skipped) that has no `all-MiniLM-L6-v2` embedding yet, and
   stores the unit vectors in the workspace (`explanation_embeddings`). Rerunning adds only new ones.
2. `search_explanations` embeds the query the same way and ranks the stored vectors by cosine
   similarity (a dot product of unit vectors), returning the best explanations with their latents.
The stored vectors are read once per process and workspace version (the file's modification stamp).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import store
from core.progress import Progress
from core.store.schema import WorkspaceError

EMBEDDING_MODEL = "all-MiniLM-L6-v2"  # the key of its vectors in explanation_embeddings
INDEX_BATCH = 512


@dataclass(frozen=True)
class ExplanationMatch:
    """One explanation found by a query: its latent, who wrote it, its text and its cosine similarity to the query."""

    explanation_id: str
    dictionary: str
    latent: int
    explainer: str
    is_baseline: bool
    text: str
    similarity: float


def _embed(texts: list[str]) -> np.ndarray:
    from core.autointerp.embedder import embed_texts

    return embed_texts(texts)


def unindexed_explanations(workspace: Path) -> list[store.ExplanationRecord]:
    """Stored explanations (ok, not random-explanation copies) that have no MiniLM embedding yet."""
    records = store.list_explanations(workspace, baseline=None, status="ok")
    done = set(store.read_explanation_embeddings(workspace, EMBEDDING_MODEL)[0])
    return [r for r in records if r.explanation_id not in done and r.text]


def index_explanations(workspace: Path, progress: Progress | None = None, batch: int = INDEX_BATCH) -> int:
    """Embed and store every unindexed explanation (see module docstring); returns how many were added."""
    todo = unindexed_explanations(workspace)
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        store.write_explanation_embeddings(
            workspace, EMBEDDING_MODEL, [r.explanation_id for r in part], _embed([r.text for r in part])
        )
        if progress is not None:
            progress("indexing explanations", start + len(part), len(todo))
    return len(todo)


_vectors: dict[str, tuple[tuple[int, int], list[str], np.ndarray]] = {}
_vectors_lock = threading.Lock()


def _stored_vectors(workspace: Path) -> tuple[list[str], np.ndarray]:
    """(explanation ids, unit vectors `[n, 384]`) of the workspace, cached until the file changes."""
    path = Path(workspace).resolve()
    if not path.exists():
        raise WorkspaceError(f"workspace {path} does not exist")
    stamp = (path.stat().st_mtime_ns, path.stat().st_size)
    with _vectors_lock:
        hit = _vectors.get(str(path))
        if hit is None or hit[0] != stamp:
            ids, vectors = store.read_explanation_embeddings(path, EMBEDDING_MODEL)
            hit = _vectors[str(path)] = (stamp, ids, vectors)
    return hit[1], hit[2]


def search_explanations(
    workspace: Path, query: str, k: int = 20, dictionary: str | None = None
) -> list[ExplanationMatch]:
    """The `k` stored explanations most similar in meaning to `query` (optionally of one dictionary), best first.

    Raises WorkspaceError if the query is empty or nothing is indexed (run `index_explanations` first).
    """
    query = query.strip()
    if not query:
        raise WorkspaceError("type what the latent should mean, e.g. 'closing brackets' or 'names of people'")
    ids, vectors = _stored_vectors(workspace)
    if not ids:
        raise WorkspaceError("no explanation of this workspace is indexed for search yet; index them first")
    sims = vectors @ _embed([query])[0]  # [n] cosine similarities
    order = np.argsort(-sims, kind="stable")
    matches: list[ExplanationMatch] = []
    step = max(4 * k, 64)  # fetch records in rounds: a dictionary filter may drop many
    for start in range(0, len(order), step):
        positions = order[start : start + step]
        by_id = {r.explanation_id: r for r in store.explanations_by_id(workspace, [ids[p] for p in positions])}
        for p in positions:
            rec = by_id.get(ids[p])
            if rec is None or (dictionary is not None and rec.dictionary != dictionary):
                continue
            matches.append(
                ExplanationMatch(
                    rec.explanation_id,
                    rec.dictionary,
                    rec.latent,
                    rec.explainer,
                    rec.is_baseline,
                    rec.text or "",
                    float(sims[p]),
                )
            )
            if len(matches) == k:
                return matches
    return matches
