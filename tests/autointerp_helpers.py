"""Synthetic latents for autointerp tests: a token array where token 7 (" apple") fires the latent."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.autointerp.examples import SamplingParams, example_sets
from core.autointerp.explainers import explanation_id
from core.autointerp.scorers.base import ScoreTask, ScoringEnv
from core.latents.sampling import ArrayTokens, LatentActivations
from core.store.explanations import ExplanationRecord

N_CTX, CTX_LEN, VOCAB = 200, 48, 40
WORDS = ["<bos>", " the", " a", " of", " dog", " cat", " house", " apple", " river", " blue"] + [
    f" w{i}" for i in range(10, VOCAB)
]


def synthetic_latent(seed: int = 0, density: float = 0.02) -> tuple[LatentActivations, ArrayTokens]:
    """A latent that fires strongly on token 7 after token 3 (" of apple"), weakly at random elsewhere; contexts 0-49 hold token 7 silently."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, size=(N_CTX, CTX_LEN)).astype(np.int32)
    tokens[:, 0] = 0
    c7, p7 = np.nonzero(tokens == 7)
    keep = p7 >= 2
    tokens[c7[keep], p7[keep] - 1] = 3  # " of" before every " apple"
    dense = np.where(rng.random((N_CTX, CTX_LEN)) < density, rng.uniform(0.1, 1.0, (N_CTX, CTX_LEN)), 0.0).astype(
        np.float32
    )
    dense[tokens == 7] = rng.uniform(4, 8, int((tokens == 7).sum()))
    dense[:, 0] = 0
    dense[:50][tokens[:50] == 7] = 0
    ctx, pos = np.nonzero(dense)
    v = dense[ctx, pos]
    edges = np.quantile(v, np.linspace(0, 1, 11), method="lower").astype(np.float32)
    return LatentActivations(
        "test:dict", 5, ctx.astype(np.int64), pos.astype(np.int64), v, edges, N_CTX, CTX_LEN
    ), ArrayTokens(tokens)


def explanation(text: str, latent: int = 5) -> ExplanationRecord:
    """An ok explanation row for the synthetic latent."""
    eid = explanation_id("test:dict", latent, "test", None, "top", "v", {"t": text})
    return ExplanationRecord(eid, "test:dict", latent, "test", False, None, "top", text, "v", {})


def task_and_env(
    text: str = "the word apple", client=None, window: int = 16, seed: int = 0
) -> tuple[ScoreTask, ScoringEnv]:
    """A scoring task for the synthetic latent and an env over its tokens (no workspace)."""
    acts, tokens = synthetic_latent(seed)
    sets = example_sets(acts, tokens, SamplingParams(window=window))
    env = ScoringEnv(None, WORDS, tokens, client, N_CTX, CTX_LEN)
    return ScoreTask(explanation(text), sets, float(acts.value.max())), env


def tiny_workspace(tmp_path_factory) -> tuple[Path, object]:
    """(workspace, dictionary): the tiny model with one cached SAE (model name 'tiny', registered as lm:tiny)."""
    import torch

    from core.autointerp.scorers.surprisal import register_lm
    from core.cache.run import run_cache
    from tests import tiny_cache

    torch.set_num_threads(1)
    tokdir = tmp_path_factory.mktemp("tok")
    tiny_cache.make_tokenizer(tokdir)
    model, dicts = tiny_cache.build(tokdir)
    plan, params = tiny_cache.plan_and_params(model)
    ws = tmp_path_factory.mktemp("ws") / "ws.duckdb"
    run_cache(model, [dicts["resid1"]], ws, plan, params, model_name="tiny")
    register_lm("tiny", model)
    return ws, dicts["resid1"]
