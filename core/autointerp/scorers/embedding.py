"""Embedding scoring: the explanation as a query, example windows as documents (all-MiniLM-L6-v2); AUROC."""

from __future__ import annotations

import numpy as np

from core.autointerp.metrics import auroc
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv, example_record
from core.autointerp.scorers.detection import shared_judge

PROMPT_VERSION = "embedding-v1"


class EmbeddingScorer(Scorer):
    """AUROC of cosine(explanation, window) for activating test windows against random and hard negatives."""

    name = "embedding"
    prompt_version = PROMPT_VERSION

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Similarities of each explanation to its examples (windows embedded once per run and workspace)."""
        judge = shared_judge(env)
        examples = [t.sets.scoring_examples() for t in tasks]
        judge.windows.ensure([(int(ex.context), int(ex.start), len(ex.tokens)) for exs in examples for ex, _ in exs])
        e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
        out = []
        for i, (task, exs) in enumerate(zip(tasks, examples, strict=True)):
            sims = judge.windows.of_examples([ex for ex, _ in exs]) @ e[i] if exs else np.zeros(0)
            truth = np.asarray([kind == "activating" for _, kind in exs])
            rows = [
                example_record(j, ex, kind, float(s), float(kind == "activating"))
                for j, ((ex, kind), s) in enumerate(zip(exs, sims, strict=True))
            ]
            out.append(self.outcome(task, auroc(sims, truth) if exs else None, rows))
        return out
