"""Step 6 of the cache, after the job: each dictionary's output tokens, from its weights alone.

The tokens a latent's decoder direction promotes and suppresses most through the unembedding
(`W_dec[latent] @ W_U`, see `core.cache.stats.output_token_logits`) depend on no activation, so they
are not part of the caching job: finalisation stores empty output-token lists, and this step fills
them once per dictionary (all cores on one product at a time; raw and top-k neuron baselines share
`W_out`, so theirs is computed once). A dictionary whose output tokens are already stored is skipped,
so a run killed between the job and this step completes them the next time the cache command runs.
Dictionaries whose decoder does not write to the residual stream (d_out != d_model) keep empty lists.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from core import store
from core.cache.stats import N_OUTPUT_TOKENS, output_token_logits
from core.store.cache import output_tokens_stored, store_output_tokens
from core.subjects.dictionaries import Dictionary

log = logging.getLogger(__name__)


def dictionaries_without_output_tokens(
    workspace: Path, model, dictionaries: list[Dictionary]
) -> list[tuple[Dictionary, int]]:
    """(dictionary, its index in `workspace`) of the ready `dictionaries` whose output tokens are not stored yet."""
    d_model = model.cfg.d_model
    wanted = {d.id: d for d in dictionaries if d.d_out == d_model}
    if not wanted or not Path(workspace).exists():
        return []
    with store.session(Path(workspace)) as con:
        records = [r for r in store.dictionaries(con) if r.status == "ready" and r.id in wanted]
        return [(wanted[r.id], r.index) for r in records if not output_tokens_stored(con, r.index)]


def add_output_tokens(
    workspace: Path, model, dictionaries: list[Dictionary], k: int = N_OUTPUT_TOKENS
) -> tuple[list[str], float]:
    """Compute and store the output tokens of every ready dictionary in `dictionaries` that lacks them.

    Returns (ids filled, seconds). Each dictionary is committed on its own, so an interruption keeps
    what was done.
    """
    t0 = time.perf_counter()
    todo = dictionaries_without_output_tokens(workspace, model, dictionaries)
    by_weights: dict[int, dict] = {}
    done: list[str] = []
    for d, index in todo:
        key = d.W_dec.data_ptr()
        if key not in by_weights:
            by_weights[key] = output_token_logits(d.W_dec, model.W_U, k)
        with store.session(Path(workspace), write=True) as con:
            store_output_tokens(con, index, by_weights[key])
        done.append(d.id)
        log.info("output tokens of %s stored", d.id)
    return done, time.perf_counter() - t0
