"""Fuzzing scoring: are the marked tokens the ones the feature fires on? Balanced accuracy.

Activating test windows alternate (in decile order) between correctly marked (the tokens where the
latent fires; truth 1) and mis-marked (as many tokens, drawn at random among those where it does not
fire; truth 0). Non-activating windows get random marks (as many as a typical activating window; truth 0).
The stored rows keep each activating window's decile; `core.analysis.analyses.decile_curves` counts only the
correctly marked ones in a decile's recall and reports the rejection of mis-marked ones apart.
"""

from __future__ import annotations

import numpy as np

from core.autointerp.examples import example_token_texts, render
from core.autointerp.prompts import fuzzing as prompt
from core.autointerp.scorers.base import ClassifierScorer, Item, ScoreTask, ScoringEnv
from core.autointerp.scorers.detection import shared_judge


def _random_mask(length: int, m: int, allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(length, dtype=bool)
    pool = np.flatnonzero(allowed)
    if len(pool):
        mask[rng.choice(pool, size=min(m, len(pool)), replace=False)] = True
    return mask


class FuzzingScorer(ClassifierScorer):
    """Marked windows: right marks on half the activating ones, wrong marks on the rest and on negatives."""

    name = "fuzzing"
    prompt_version = prompt.VERSION
    prompt_module = prompt

    def prepare(self, task: ScoreTask, env: ScoringEnv) -> list[Item]:
        """Scoring examples with marks; truth = the marks are exactly the activating tokens."""
        rng = np.random.default_rng([self.seed, int(task.explanation.latent), 11])
        counts = [int((ex.activations > 0).sum()) for ex in task.sets.test]
        typical = max(1, int(np.median(counts))) if counts else 1
        items = []
        for j, (ex, kind) in enumerate(task.sets.scoring_examples()):
            active = ex.activations > 0
            if kind == "activating" and j % 2 == 0:
                mask, truth = active, True
            else:
                m = int(active.sum()) if kind == "activating" else typical
                mask, truth = _random_mask(len(ex.tokens), max(1, m), ~active, rng), False
            items.append(Item(ex, kind, truth, render(example_token_texts(ex, env.texts), mask), mask))
        return items

    def judge_predict(self, tasks: list[ScoreTask], items: list[list[Item]], env: ScoringEnv) -> list[np.ndarray]:
        """Correct iff the marked tokens' mean similarity to the explanation beats `judge_quantile` of corpus tokens."""
        judge = shared_judge(env)
        e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
        sims = judge.token_similarity(e)  # [n_tasks, vocab]
        tau = judge.token_threshold(sims, self.judge_quantile)  # [n_tasks]
        out = []
        for i, its in enumerate(items):
            score = np.asarray(
                [
                    sims[i][it.example.tokens[it.marked]].mean() if it.marked is not None and it.marked.any() else -1.0
                    for it in its
                ]
            )
            out.append(score >= tau[i])
        return out
