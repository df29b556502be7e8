"""Detection scoring: does the example (unmarked) show the explained feature? Balanced accuracy."""

from __future__ import annotations

import numpy as np

from core.autointerp.examples import example_token_texts, render
from core.autointerp.judges import SimilarityJudge
from core.autointerp.prompts import detection as prompt
from core.autointerp.scorers.base import ClassifierScorer, Item, ScoreTask, ScoringEnv


def shared_judge(env: ScoringEnv, window_length: int = 32) -> SimilarityJudge:
    """The run's similarity judge (built once)."""
    return env.shared(
        "judge",
        lambda: SimilarityJudge(env.workspace, env.tokens, env.texts, env.n_contexts, env.ctx_len, window_length),
    )


class DetectionScorer(ClassifierScorer):
    """Activating test windows (truth 1) and random/hard negatives (truth 0), shown as plain text."""

    name = "detection"
    prompt_version = prompt.VERSION
    prompt_module = prompt

    def prepare(self, task: ScoreTask, env: ScoringEnv) -> list[Item]:
        """Every scoring example as plain text; truth = activating."""
        return [
            Item(ex, kind, kind == "activating", render(example_token_texts(ex, env.texts)))
            for ex, kind in task.sets.scoring_examples()
        ]

    def judge_predict(self, tasks: list[ScoreTask], items: list[list[Item]], env: ScoringEnv) -> list[np.ndarray]:
        """Present iff the window's best-matching token is at least as similar to the explanation than in `judge_quantile` of random windows.

        The judge reads a window token by token (max over its tokens of cosine(explanation, token)),
        because a whole-window embedding of 32 tokens dilutes the one token a latent fires on.
        """
        judge = shared_judge(env)
        e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
        sims = judge.token_similarity(e)  # [n_tasks, vocab]
        tau = judge.window_max_threshold(sims, self.judge_quantile)  # [n_tasks]
        return [np.asarray([sims[i][it.example.tokens].max() for it in its]) >= tau[i] for i, its in enumerate(items)]
