"""Intruder scoring (delphi's `IntruderScorer`, here conditioned on the explanation): find the odd example out.

1. Prompts: one per non-activating example of the latent (the intruder), cycling through the activating test
   windows' deciles: `n_shown - 1` activating windows of one decile with their active tokens marked, and the
   intruder inserted at a seeded random place. The intruder gets as many random marks as an activating window
   has active tokens (delphi's default); a neighbour negative is marked on the token its neighbour fires on most.
2. Pick: an LLM is asked which example is the intruder (`prompts/intruder.py`, reply `[RESPONSE]: k`); offline,
   the judge `judge:minilm-similarity` (a baseline) picks the example whose marked tokens are on average least
   similar to the explanation.
3. Score: the share of prompts whose intruder was found (chance: 1 / n_shown).

Unlike delphi's, the explanation is in the prompt, so a random explanation should find fewer intruders than the
latent's own. Per-example rows: every shown window of every prompt, truth 1 for the intruder, prediction 1 for
the one picked (NULL for a prompt without a usable reply), `detail` the prompt number.
"""

from __future__ import annotations

import numpy as np

from core.autointerp.examples import example_token_texts, render
from core.autointerp.prompts import intruder as prompt
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv, example_record
from core.autointerp.scorers.detection import shared_judge
from core.autointerp.scorers.fuzzing import _random_mask
from core.latents.sampling import Example


class IntruderScorer(Scorer):
    """Share of prompts (n_shown - 1 activating windows + 1 non-activating intruder) whose intruder is picked."""

    name = "intruder"
    prompt_version = prompt.VERSION

    def __init__(self, model: str, n_shown: int = 5, seed: int = 0):
        super().__init__(model)
        if n_shown < 2:
            raise ValueError("n_shown must be at least 2 (one intruder and one activating example)")
        self.n_shown = n_shown
        self.seed = seed

    def params(self) -> dict:
        """Examples per prompt and the seed."""
        return {"n_shown": self.n_shown, "seed": self.seed}

    def prompts(self, task: ScoreTask) -> list[tuple[list[tuple[Example, str, np.ndarray]], int]]:
        """Per prompt: the shown (example, kind, marks `[length]` bool) and the intruder's index."""
        rng = np.random.default_rng([self.seed, int(task.explanation.latent), 17])
        by_decile: dict[int, list[Example]] = {}
        for ex in task.sets.test:
            by_decile.setdefault(int(ex.decile), []).append(ex)
        deciles = sorted(by_decile)
        negatives = [(ex, kind) for ex, kind in task.sets.scoring_examples() if kind != "activating"]
        if not deciles:
            return []
        counts = [int((ex.activations > 0).sum()) for ex in task.sets.test]
        n_marks = max(1, int(np.mean(counts)))
        out = []
        for j, (neg, kind) in enumerate(negatives):
            pool = by_decile[deciles[j % len(deciles)]]
            if len(pool) < self.n_shown - 1:  # a decile with too few windows borrows from the whole test set
                pool = task.sets.test
            take = rng.choice(len(pool), size=min(self.n_shown - 1, len(pool)), replace=False)
            shown = [(pool[int(i)], "activating", pool[int(i)].activations > 0) for i in take]
            if kind == "neighbour-negative":
                mask = np.zeros(len(neg.tokens), bool)
                mask[neg.center] = True
            else:
                mask = _random_mask(len(neg.tokens), n_marks, neg.activations <= 0, rng)
            at = int(rng.integers(len(shown) + 1))
            shown.insert(at, (neg, kind, mask))
            out.append((shown, at))
        return out

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Pick the intruder of every prompt (judge: vectorised per task; LLM: all prompts at once)."""
        prepared = [self.prompts(t) for t in tasks]
        picks: list[list[int | None]]
        failures: list[list[dict]] = [[] for _ in tasks]
        if self.is_judge:
            judge = shared_judge(env)
            e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
            sims = judge.token_similarity(e)  # [n_tasks, vocab]
            picks = [
                [
                    int(np.argmin([sims[i][ex.tokens[m]].mean() if m.any() else np.inf for ex, _, m in shown]))
                    for shown, _ in ps
                ]
                for i, ps in enumerate(prepared)
            ]
        else:
            from core.llm.client import LLMRequest

            requests, where = [], []
            for ti, (task, ps) in enumerate(zip(tasks, prepared, strict=True)):
                for pi, (shown, _) in enumerate(ps):
                    texts = [render(example_token_texts(ex, env.texts), m) for ex, _, m in shown]
                    requests.append(
                        LLMRequest(
                            self.model,
                            prompt.build_messages(task.explanation.text or "", texts),
                            {"temperature": 0.0, "max_tokens": 300},
                            self.name,
                            task.explanation.dictionary,
                            task.explanation.latent,
                        )
                    )
                    where.append((ti, pi, len(shown)))
            replies = await env.client.acomplete_many(requests)
            picks = [[None] * len(ps) for ps in prepared]
            for (ti, pi, n), reply in zip(where, replies, strict=True):
                problem = reply.problem()
                k = None if problem else prompt.parse_reply(reply.text, n)
                if k is None:
                    failures[ti].append(
                        {
                            "prompt": pi,
                            "error": problem or f"reply has no [RESPONSE]: line naming 1..{n}",
                            "raw": reply.text,
                            "transient": reply.transient,
                        }
                    )
                picks[ti][pi] = k
        return [self._finish(t, ps, pk, f) for t, ps, pk, f in zip(tasks, prepared, picks, failures, strict=True)]

    def _finish(self, task: ScoreTask, ps, picks: list[int | None], failures: list[dict]) -> Outcome:
        rows, found = [], []
        for pi, ((shown, at), pick) in enumerate(zip(ps, picks, strict=True)):
            for si, (ex, kind, _) in enumerate(shown):
                pred = None if pick is None else float(si == pick)
                rows.append(example_record(len(rows), ex, kind, pred, float(si == at), {"prompt": pi}))
            if pick is not None:
                found.append(pick == at)
        error = None
        if not ps:
            error = "no intruder prompts: the latent has no non-activating or no activating test windows"
        elif len(found) < len(ps):
            error = f"{len(ps) - len(found)} of {len(ps)} prompts got no usable reply"
        return self.outcome(task, float(np.mean(found)) if error is None else None, rows, failures, error)
