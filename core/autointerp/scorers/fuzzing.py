"""Fuzzing scoring: are the marked tokens the ones the feature fires on? Balanced accuracy.

Activating test windows alternate (in decile order) between correctly marked (the tokens where the
latent fires; truth 1) and mis-marked (as many tokens, drawn at random among those where it does not
fire; truth 0). Non-activating windows get random marks (as many as a typical activating window; truth 0).
With `variant="delphi"` (delphi's default fuzzing) every activating window is marked correctly (truth 1) and
every non-activating one gets ceil(mean number of active tokens per test window) random marks (truth 0);
a neighbour negative is marked on the token its neighbour fires on most (delphi marks the neighbour's
active tokens), so the judge must tell a similar feature from this one. The variant is in the score's params.
The stored rows keep each activating window's decile; `core.analysis.analyses.decile_curves` counts only the
correctly marked ones in a decile's recall and reports the rejection of mis-marked ones apart.
"""

from __future__ import annotations

import numpy as np

from core.autointerp.examples import example_token_texts, render
from core.autointerp.prompts import fuzzing as prompt
from core.autointerp.scorers.base import ClassifierScorer, Item, ScoreTask, ScoringEnv
from core.autointerp.scorers.detection import shared_judge

VARIANTS = ("alternate", "delphi")


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

    def __init__(self, model: str, variant: str = "alternate", **options):
        super().__init__(model, **options)
        if variant not in VARIANTS:
            raise ValueError(f"unknown fuzzing variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.variant = variant

    def params(self) -> dict:
        """The classifier's params, plus the variant when it is not the default (so default ids stay as they were)."""
        p = super().params()
        return p if self.variant == "alternate" else {**p, "variant": self.variant}

    def prepare(self, task: ScoreTask, env: ScoringEnv) -> list[Item]:
        """Scoring examples with marks; truth = the marks are exactly the activating tokens."""
        rng = np.random.default_rng([self.seed, int(task.explanation.latent), 11])
        if self.variant == "delphi":
            return self._prepare_delphi(task, env, rng)
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

    def _prepare_delphi(self, task: ScoreTask, env: ScoringEnv, rng: np.random.Generator) -> list[Item]:
        counts = [int((ex.activations > 0).sum()) for ex in task.sets.test]
        n_marks = max(1, int(np.ceil(np.mean(counts)))) if counts else 1
        items = []
        for ex, kind in task.sets.scoring_examples():
            active = ex.activations > 0
            if kind == "activating":
                mask, truth = active, True
            elif kind == "neighbour-negative":
                mask, truth = np.zeros(len(ex.tokens), bool), False
                mask[ex.center] = True
            else:
                mask, truth = _random_mask(len(ex.tokens), n_marks, ~active, rng), False
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
