"""What the app's latents page reads: a latent's activations, its card, and latents found by token.

Each function opens one short read session (see `core.store`), so it works while a cache job writes.
A workspace's contexts and vocabulary never change once stored, so each process loads them once
(keyed by the corpus fingerprint) and samples examples from memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import store
from core.cache import files
from core.latents.sampling import (
    DEFAULT_WINDOW,
    ArrayTokens,
    Example,
    LatentActivations,
    WindowSpec,
    sample_quantiles,
    sample_top,
)
from core.store.cache import LatentStatsRecord, TokenMatch
from core.store.schema import WorkspaceError


@dataclass(frozen=True)
class _Constants:
    """What never changes once a workspace has its contexts: corpus info, every context's tokens, the vocabulary."""

    corpus: dict
    tokens: ArrayTokens
    texts: list[str]


_constants: dict[tuple[str, str], _Constants] = {}
_constants_lock = threading.Lock()


def _workspace_constants(con, workspace: Path) -> _Constants:
    """The workspace's constants, loaded once per process (keyed by path and corpus fingerprint)."""
    corpus = store.get_info(con, "corpus")
    if corpus is None:
        raise WorkspaceError("this workspace has no cached contexts yet")
    key = (str(Path(workspace).resolve()), corpus["fingerprint"])
    with _constants_lock:
        hit = _constants.get(key)
        if hit is None:
            hit = _Constants(corpus, ArrayTokens(store.all_context_tokens(con)), store.all_token_texts(con))
            for k in [k for k in _constants if k[0] == key[0]]:
                del _constants[k]
            _constants[key] = hit
    return hit


def _activations(
    workspace: Path, rec: store.DictionaryRecord, stats: LatentStatsRecord, corpus: dict
) -> LatentActivations:
    assert rec.activations_file is not None
    rows = files.read_rows(files.activations_dir(workspace) / rec.activations_file, stats.row_start, stats.n_fires)
    if len(rows["latent"]) and (rows["latent"][0] != stats.latent or rows["latent"][-1] != stats.latent):
        raise WorkspaceError(
            f"activation file {rec.activations_file} does not match its statistics; rebuild the workspace"
        )
    return LatentActivations(
        dictionary=rec.id,
        latent=stats.latent,
        context=rows["context"].astype(np.int64),
        position=rows["position"].astype(np.int64),
        value=rows["value"].astype(np.float32),
        edges=stats.quantile_edges,
        n_contexts=int(corpus["n_contexts"]),
        ctx_len=int(corpus["ctx_len"]),
    )


def load_latent(workspace: Path, dictionary: str, latent: int) -> tuple[LatentStatsRecord, LatentActivations]:
    """A latent's statistics and every cached activation of it (`[n_fires]` rows sorted by context, position)."""
    workspace = Path(workspace)
    with store.session(workspace) as con:
        rec, stats = store.dictionary_and_latent(con, dictionary, latent)
        return stats, _activations(workspace, rec, stats, _workspace_constants(con, workspace).corpus)


def load_context_tokens(workspace: Path) -> ArrayTokens:
    """Every cached context's token ids, as a TokenSource for the sampling functions."""
    workspace = Path(workspace)
    with store.session(workspace) as con:
        return _workspace_constants(con, workspace).tokens


@dataclass(frozen=True)
class LatentCard:
    """Everything the latents page shows for one latent."""

    dictionary: str
    latent: int
    stats: LatentStatsRecord
    top_examples: list[Example]
    decile_examples: dict[int, list[Example]]  # decile 1..10 -> examples
    hist_edges: np.ndarray  # [bins + 1] activation values bounding the histogram bins
    hist_counts: np.ndarray  # [bins]
    top_output: list[tuple[str, float]]  # tokens the decoder direction promotes, with logits
    bottom_output: list[tuple[str, float]]  # ... and suppresses
    top_tokens: list[tuple[str, int]]  # tokens most often at its highest activations, with counts
    token_text: dict[int, str]  # decoded text of every token id in the examples

    @property
    def n_rows(self) -> int:
        """Activations loaded to build the card."""
        return self.stats.n_fires


def latent_card(
    workspace: Path,
    dictionary: str,
    latent: int,
    k_top: int = 10,
    k_per_decile: int = 3,
    window: WindowSpec = DEFAULT_WINDOW,
    seed: int = 0,
) -> LatentCard:
    """Load a latent's card: stats, its top examples and `k_per_decile` examples of every decile (disjoint
    from the top ones) with per-token activations, its histogram, output tokens and top activating tokens."""
    workspace = Path(workspace)
    with store.session(workspace) as con:
        rec, stats = store.dictionary_and_latent(con, dictionary, latent)
        const = _workspace_constants(con, workspace)
        top_tok = store.top_activating_tokens(con, rec.index, latent)
    acts = _activations(workspace, rec, stats, const.corpus)
    top = sample_top(acts, const.tokens, k_top, window)
    quant = sample_quantiles(acts, const.tokens, k_per_decile, seed, window, exclude=top)
    ids = {t for ex in top + quant for t in ex.tokens.tolist()}
    ids.update(stats.top_output_tokens + stats.bottom_output_tokens + [t for t, _ in top_tok])
    texts = {t: const.texts[t] if 0 <= t < len(const.texts) else str(t) for t in ids}
    by_decile: dict[int, list[Example]] = {d: [] for d in range(1, 11)}
    for ex in quant:
        by_decile[ex.decile].append(ex)
    n_bins = len(stats.hist_counts)
    return LatentCard(
        dictionary=dictionary,
        latent=latent,
        stats=stats,
        top_examples=top,
        decile_examples=by_decile,
        hist_edges=np.linspace(0.0, stats.max_activation, n_bins + 1, dtype=np.float32),
        hist_counts=stats.hist_counts,
        top_output=[
            (texts.get(t, str(t)), v) for t, v in zip(stats.top_output_tokens, stats.top_output_logits, strict=True)
        ],
        bottom_output=[
            (texts.get(t, str(t)), v)
            for t, v in zip(stats.bottom_output_tokens, stats.bottom_output_logits, strict=True)
        ],
        top_tokens=[(texts.get(t, str(t)), n) for t, n in top_tok],
        token_text=texts,
    )


def find_latents_by_token(
    workspace: Path, token: str | int, dictionary: str | None = None, limit: int = 50
) -> list[TokenMatch]:
    """Latents whose highest activations fall on `token` (an id, or text matched against the vocabulary ignoring surrounding spaces)."""
    with store.session(Path(workspace)) as con:
        ids = [int(token)] if isinstance(token, int) else store.tokens_for_text(con, token)
        if not ids:
            raise WorkspaceError(f"no token of this workspace's vocabulary reads {token!r}")
        return store.latents_by_token(con, ids, dictionary, limit)
