"""A small synthetic workspace with explanations, scores, per-example results, embeddings and overlaps (no model needed).

Built straight through `core.store`'s write functions with known structure: 'top' explanations are
right on non-activating examples and the top half of deciles only, 'random'/'quantile' ones on every
decile; SAE latents score 0.8, neurons 0.6, top-k neurons 0.65, random latents 0.5, random
explanations 0.5; fuzzing is a monotone function of detection, embedding is independent noise.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np

DICTS = (
    "resid:blocks.0.hook_resid_pre",
    "resid:blocks.1.hook_resid_pre",
    "transcoder:blocks.0.ln2.hook_normalized",
    "transcoder:blocks.1.ln2.hook_normalized",
)
NEURONS = ("neurons:blocks.0.mlp.hook_post", "neurons_topk32:blocks.0.mlp.hook_post")
EMBED_DIM = 16


def fake_dictionaries(seed: int = 0, d_sae: int = 48, d: int = 8) -> dict:
    """Dictionaries with only what overlap needs (id, kind, layer, widths, W_dec as numpy), for the ids in DICTS."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((d_sae, d))
    out = {}
    for did in DICTS:
        kind, layer = did.split(":")[0], int(did.split("blocks.")[1].split(".")[0])
        w = (
            base[rng.permutation(d_sae)]
            + (0.2 + 0.6 * (kind == "transcoder")) * rng.standard_normal((d_sae, d)) * layer
        )
        out[did] = types.SimpleNamespace(
            id=did,
            kind=kind,
            layer=layer,
            d_in=d,
            d_out=d,
            d_sae=d_sae,
            W_dec=w / np.linalg.norm(w, axis=1, keepdims=True),
        )
    return out


def build(path: Path, n_latents: int = 12, seed: int = 0, overlaps: bool = True, examples: bool = True) -> Path:
    """Write the synthetic workspace at `path` and return it."""
    from core import store
    from core.analysis import overlap
    from core.store.explanations import ExplanationRecord, ScoreExampleRecord, ScoreRecord

    rng = np.random.default_rng(seed)
    with store.session(path, write=True) as con:
        store.set_info(con, "model", {"name": "default"})
    expls, scores = [], []

    def add(dictionary, latent, strategy, value, baseline=None, text=None):
        eid = f"e:{dictionary}:{latent}:{strategy}:{baseline}"
        expls.append(
            ExplanationRecord(
                eid,
                dictionary,
                latent,
                "baseline:token-stats",
                True,
                baseline,
                strategy,
                text or f"tokens <b>{latent % 5}</b> & co ({strategy})",
                "v1",
                {},
            )
        )
        det = float(np.clip(value + rng.normal(0, 0.05), 0, 1))
        for scorer, v in (("detection", det), ("fuzzing", det**2), ("embedding", float(rng.uniform()))):
            sid = f"s:{eid}:{scorer}"
            exs = []
            if examples and scorer != "embedding" and baseline is None:
                for d in range(11):
                    right = strategy != "top" or d == 0 or d >= 6
                    truth = 0.0 if d == 0 else 1.0
                    exs += [
                        ScoreExampleRecord(
                            2 * d + i, d, "activating" if d else "random-negative", truth if right else 1 - truth, truth
                        )
                        for i in range(2)
                    ]
            elif examples and scorer == "embedding" and baseline is None:
                exs = [
                    ScoreExampleRecord(
                        d, d, "activating" if d else "random-negative", float(rng.uniform()), float(d > 0)
                    )
                    for d in range(11)
                ]
            scores.append(
                (ScoreRecord(sid, eid, scorer, "judge:minilm-similarity", v, "v1", {}, n_examples=len(exs)), exs)
            )

    for lat in range(n_latents):
        for did in DICTS:
            for strategy, bonus in (("top", 0.0), ("random", 0.05), ("quantile", 0.04)):
                add(did, lat, strategy, 0.8 + bonus)
            add(did, lat, "top", 0.5, baseline="random-explanation")
            add(did, 1000 + lat, "top", 0.5, baseline="random-latent")
        add(NEURONS[0], lat, "top", 0.6)
        add(NEURONS[1], lat, "top", 0.65)
    store.write_explanations(path, expls)
    store.write_scores(path, scores)
    real = [e for e in expls if e.baseline is None]
    vecs = rng.standard_normal((len(real), EMBED_DIM)).astype(np.float32)
    store.write_explanation_embeddings(
        path,
        overlap.EMBEDDING_MODEL,
        [e.explanation_id for e in real],
        vecs / np.linalg.norm(vecs, axis=1, keepdims=True),
    )
    if overlaps:
        overlap.overlap_workspace(path, fake_dictionaries(seed), kinds=("resid", "transcoder"))
    return path
