"""The offline `baseline:token-stats` explainer: enriched tokens over frequent ones, the preceding-context rule."""

from __future__ import annotations

import numpy as np

from core.autointerp.examples import SamplingParams, example_sets
from core.autointerp.explainers import (
    BASELINE_EXPLAINER,
    TOKEN_STATS_VERSION,
    token_stats_explanation,
    token_stats_summary,
    token_stats_text,
)
from core.latents.sampling import Example
from tests.autointerp_helpers import WORDS, synthetic_latent

THE, OF, APPLE, RIVER, BLUE = 1, 3, 7, 8, 9


def _window(tokens: list[int], fire: dict[int, float]) -> Example:
    acts = np.zeros(len(tokens), np.float32)
    for i, v in fire.items():
        acts[i] = v
    return Example(0, 0, np.asarray(tokens, np.int32), acts, next(iter(fire)), 10, "top")


def test_enriched_token_beats_a_frequent_uninformative_one():
    """The latent fires on ' apple' and on one ' the' of ten in every window, more strongly on ' the': ' the' is
    commoner where it is silent than where it fires, so it is left out. v1 (activation-weighted) named ' the' first."""
    train = []
    for i in range(12):
        toks = [THE] * 10 + [20 + i % 5] * 5
        toks[12] = APPLE
        train.append(_window(toks, {0: 9.0, 12: 1.0}))  # fires on one ' the' of ten in each window, strongly
    stats = token_stats_summary(train, WORDS)
    assert stats.tokens[0] == "apple" and "the" not in stats.tokens
    assert token_stats_text(train, WORDS).startswith("apple")


def test_preceding_context_that_predicts_activation_is_named():
    """' of' precedes every activation on ' apple' and is rare elsewhere: `(after of)`. ' the' precedes a third of
    the activations on ' river' but fills the windows: no context is named for it."""
    ctx = [_window([30, 31, OF, APPLE, 32, 33, 34, 35], {3: 5.0}) for _ in range(6)]
    assert token_stats_text(ctx, WORDS) == "apple (after of)"
    assert token_stats_summary(ctx, WORDS).before_share == 1.0
    frequent = [_window([THE, THE, THE, RIVER, THE, THE, 30 + i, THE], {3: 5.0}) for i in range(6)]
    assert token_stats_summary(frequent, WORDS).before is None
    assert token_stats_text(frequent, WORDS) == "river"


def test_synthetic_latent_and_the_record():
    acts, tokens = synthetic_latent()
    params = SamplingParams(window=16)
    sets = example_sets(acts, tokens, params)
    rec = token_stats_explanation(sets, WORDS, params)
    assert rec.explainer == BASELINE_EXPLAINER and rec.is_baseline and rec.prompt_version == TOKEN_STATS_VERSION
    assert rec.text == "apple (after of)"
    silent = [_window([1, 2, 3], {0: 1.0})]
    silent[0].activations[:] = 0
    assert token_stats_text(silent, WORDS) is None


def test_line_breaks_and_spaces_are_written_visibly():
    texts = ["<bos>", "\n", " ", "x"]
    train = [_window([3, 1, 3, 2], {1: 2.0, 3: 1.0}) for _ in range(3)]
    assert token_stats_text(train, texts) == "\\n, ␣"
