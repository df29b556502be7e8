"""The offline judge `judge:minilm-similarity`: decides by embedding similarity with the explanation.

No instruction-following LLM is available offline, so detection, fuzzing, simulation and intervention
scoring can use this judge instead, and every row it makes says so (scorer_model = judge:minilm-similarity).

- Window similarity: cosine(explanation, window text) with all-MiniLM-L6-v2.
- Token similarity: cosine(explanation, one vocabulary entry embedded on its own).
- Yes/no decisions compare a similarity with the explanation's own reference distribution, so no
  threshold is tuned on the examples being scored: a window is judged "the feature is present" if its
  best-matching token is more similar to the explanation than in `quantile` of random cached windows;
  marked tokens are judged "correctly marked" if their mean similarity beats `quantile` of corpus
  tokens (weighted by frequency).
"""

from __future__ import annotations

import numpy as np

from core.autointerp.embedder import WindowEmbeddings, embed_texts, reference_windows, token_embeddings


class SimilarityJudge:
    """Similarities and calibrated yes/no decisions for explanations against windows and tokens."""

    def __init__(
        self,
        workspace,
        tokens,
        texts: list[str],
        n_contexts: int,
        ctx_len: int,
        window_length: int = 32,
        n_reference: int = 256,
    ):
        self.texts = texts
        self.windows = WindowEmbeddings(workspace, tokens, texts)
        self.token_vecs = token_embeddings(texts, workspace)  # [vocab, 384]
        self.ref_keys = reference_windows(n_contexts, ctx_len, window_length, n_reference)
        self.ref_window_vecs = self.windows.get(self.ref_keys)  # [R, 384]
        ref_rows = tokens.get(np.asarray([k[0] for k in self.ref_keys]))
        self.ref_tokens = np.stack(
            [row[s : s + n] for row, (_, s, n) in zip(ref_rows, self.ref_keys, strict=True)]
        )  # [R, length]
        all_tokens = np.asarray(tokens.tokens if hasattr(tokens, "tokens") else tokens.get(np.arange(n_contexts)))
        counts = np.bincount(all_tokens[:, 1:].reshape(-1), minlength=len(texts)).astype(
            np.float64
        )  # position 0 is BOS
        self.token_weight = counts / max(counts.sum(), 1.0)  # [vocab]
        self._expl: dict[str, np.ndarray] = {}

    def explanation_vectors(self, texts: list[str]) -> np.ndarray:
        """Unit vectors `[n, 384]` of explanation texts (each distinct text embedded once per run)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._expl))
        if missing:
            for t, v in zip(missing, embed_texts(missing), strict=True):
                self._expl[t] = v
        return np.stack([self._expl[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def window_threshold(self, e: np.ndarray, quantile: float) -> np.ndarray:
        """Per explanation `e: [n, 384]`: the `quantile` of its similarity to random cached windows `[n]`."""
        return np.quantile(e @ self.ref_window_vecs.T, quantile, axis=1)

    def window_max_threshold(self, sims: np.ndarray, quantile: float) -> np.ndarray:
        """Per row of token similarities `sims: [n, vocab]`: the `quantile` over random cached windows of the
        window's largest token similarity `[n]` (the detection judge's threshold)."""
        return np.quantile(sims[:, self.ref_tokens].max(axis=2), quantile, axis=1)

    def token_similarity(self, e: np.ndarray) -> np.ndarray:
        """Similarity `[n, vocab]` of each explanation to every vocabulary entry."""
        return e @ self.token_vecs.T

    def token_threshold(self, sims: np.ndarray, quantile: float) -> np.ndarray:
        """Per row of `sims: [n, vocab]`: the frequency-weighted `quantile` of its token similarities `[n]`."""
        order = np.argsort(sims, axis=1)
        cum = np.cumsum(self.token_weight[order], axis=1)
        idx = np.minimum((cum < quantile).sum(axis=1), sims.shape[1] - 1)
        return np.take_along_axis(sims, order, axis=1)[np.arange(len(sims)), idx]
