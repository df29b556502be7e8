"""Simulation scoring (Bills et al. 2023): predict the activation (0-10) of every token; Pearson correlation with the truth.

LLM mode: one prompt per example window (`prompts/simulation.py`): the tokens numbered one per line,
the reply one `index<TAB>value` line per token. When the provider returns log-probabilities
(`logprobs=True, top_logprobs=k`), a token's prediction is the expected value over the alternatives
0..10 at the position where the model wrote the number, normalised over those alternatives (as in
Bills et al.); otherwise it is the parsed number. A reply that does not give exactly one value in 0..10
for every index is unusable (kept raw in `failures`), never a prediction.

Judge mode (`judge:minilm-similarity`, offline): a token's prediction is the similarity of the
explanation to that vocabulary entry.

The score is the correlation over all tokens of all scored windows (activating and non-activating).
"""

from __future__ import annotations

import math
import re

import numpy as np

from core.autointerp.metrics import pearson
from core.autointerp.prompts import simulation as prompt
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv, example_record
from core.autointerp.scorers.detection import shared_judge
from core.autointerp.scorers.surprisal import subset_examples
from core.llm.client import LLMReply, TokenLogprob

_LINE = re.compile(r"^\s*(\d+)\s*(?:\t|:|\s)\s*(\d+(?:\.\d+)?)\s*$")


def parse_simulation(text: str | None, n: int) -> tuple[np.ndarray, list[tuple[int, int]]] | None:
    """Values `[n]` from `index<TAB>value` lines (each index 1..n exactly once, values 0..10), with each
    value's (start, end) character span in `text`; None if the reply does not fit."""
    if not text:
        return None
    values = np.full(n, np.nan)
    spans: list[tuple[int, int]] = [(-1, -1)] * n
    offset = 0
    for line in text.splitlines(keepends=True):
        m = _LINE.match(line.rstrip("\r\n"))
        if m:
            idx, val = int(m.group(1)), float(m.group(2))
            if not 1 <= idx <= n or not 0 <= val <= 10 or not math.isnan(values[idx - 1]):
                return None
            values[idx - 1] = val
            spans[idx - 1] = (offset + m.start(2), offset + m.end(2))
        elif line.strip():
            return None
        offset += len(line)
    if np.isnan(values).any():
        return None
    return values, spans


def expected_values(
    logprobs: list[TokenLogprob], spans: list[tuple[int, int]], parsed: np.ndarray
) -> tuple[np.ndarray, int]:
    """Per value span, the expectation over alternatives 0..10 at the token that starts it (normalised over
    those alternatives); the parsed number where the token cannot be aligned. Returns (values, how many used logprobs)."""
    starts = []
    pos = 0
    for t in logprobs:
        starts.append(pos)
        pos += len(t.token)
    starts_arr = np.asarray(starts)
    out = parsed.astype(np.float64).copy()
    used = 0
    for i, (a, _) in enumerate(spans):
        k = int(np.searchsorted(starts_arr, a, side="right") - 1)
        if (
            k < 0 or starts_arr[k] != a
        ):  # the number does not start a token (e.g. "\t7" is one token): no clean alignment
            continue
        alts = logprobs[k].top or [(logprobs[k].token, logprobs[k].logprob)]
        num, den = 0.0, 0.0
        for tok, lp in alts:
            s = tok.strip()
            if s.isdigit() and 0 <= int(s) <= 10:
                p = math.exp(lp)
                num += p * int(s)
                den += p
        if den > 0:
            out[i] = num / den
            used += 1
    return out, used


class SimulationScorer(Scorer):
    """Per-token activation prediction; Pearson correlation with the latent's true activations."""

    name = "simulation"
    prompt_version = prompt.VERSION

    def __init__(
        self, model: str, n_per_decile: int = 1, n_negatives: int = 5, use_logprobs: bool = True, top_logprobs: int = 15
    ):
        super().__init__(model)
        self.n_per_decile = n_per_decile
        self.n_negatives = n_negatives
        self.use_logprobs = use_logprobs
        self.top_logprobs = top_logprobs

    def params(self) -> dict:
        """Examples used (LLM mode: a subset, one call each) and the logprob setting."""
        if not self.uses_llm:
            return {"examples": "all"}
        return {
            "n_per_decile": self.n_per_decile,
            "n_negatives": self.n_negatives,
            "use_logprobs": self.use_logprobs,
            "temperature": 0.0,
        }

    def examples(self, task: ScoreTask):
        """The (example, kind) pairs simulated: all scoring examples for the judge; in LLM mode `n_per_decile` per decile and `n_negatives` negatives."""
        exs = task.sets.scoring_examples()
        return subset_examples(exs, self.n_per_decile, self.n_negatives) if self.uses_llm else exs

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Simulate every chosen window, then correlate."""
        chosen = [self.examples(t) for t in tasks]
        if not self.uses_llm:
            judge = shared_judge(env)
            e = judge.explanation_vectors([t.explanation.text or "" for t in tasks])
            sims = judge.token_similarity(e)  # [n_tasks, vocab]
            preds = [[(sims[i][ex.tokens].astype(np.float64), None) for ex, _ in exs] for i, exs in enumerate(chosen)]
            return [self._finish(t, exs, p, [], {}) for t, exs, p in zip(tasks, chosen, preds, strict=True)]
        return await self._score_llm(tasks, chosen, env)

    async def _score_llm(self, tasks, chosen, env: ScoringEnv) -> list[Outcome]:
        from core.autointerp.examples import example_token_texts
        from core.llm.client import LLMRequest, supports_logprobs

        want_lp = self.use_logprobs and supports_logprobs(self.model)
        requests, where = [], []
        for ti, (task, exs) in enumerate(zip(tasks, chosen, strict=True)):
            for j, (ex, _) in enumerate(exs):
                msgs = prompt.build_messages(task.explanation.text or "", example_token_texts(ex, env.texts))
                params = {"temperature": 0.0, "max_tokens": 12 * len(ex.tokens) + 20}
                if want_lp:
                    params.update(logprobs=True, top_logprobs=self.top_logprobs)
                requests.append(
                    LLMRequest(
                        self.model, msgs, params, self.name, task.explanation.dictionary, task.explanation.latent
                    )
                )
                where.append((ti, j))
        replies = await env.client.acomplete_many(requests)
        preds: list[list] = [[(None, None)] * len(exs) for exs in chosen]
        failures: list[list[dict]] = [[] for _ in tasks]
        n_lp = [0 for _ in tasks]
        for pi, ((ti, j), reply) in enumerate(zip(where, replies, strict=True)):
            pred, source = self._parse(reply, len(chosen[ti][j][0].tokens))
            if pred is None:
                failures[ti].append({"prompt": pi, "error": source, "raw": reply.text, "transient": reply.transient})
                continue
            preds[ti][j] = (pred, source)
            n_lp[ti] += int(source == "logprobs")
        return [
            self._finish(t, exs, p, f, {"windows_with_logprobs": k})
            for t, exs, p, f, k in zip(tasks, chosen, preds, failures, n_lp, strict=True)
        ]

    def _parse(self, reply: LLMReply, n: int) -> tuple[np.ndarray | None, str]:
        problem = reply.problem()
        if problem:
            return None, problem
        parsed = parse_simulation(reply.text, n)
        if parsed is None:
            return None, f"reply is not {n} lines of index<TAB>value (0-10)"
        values, spans = parsed
        if reply.logprobs:
            ev, used = expected_values(reply.logprobs, spans, values)
            if used == n:
                return ev, "logprobs"
            return ev, "parsed" if used == 0 else "logprobs-partial"
        return values, "parsed"

    def _finish(self, task: ScoreTask, exs, preds, failures: list[dict], extra: dict) -> Outcome:
        rows, all_pred, all_true = [], [], []
        for j, ((ex, kind), (pred, _)) in enumerate(zip(exs, preds, strict=True)):
            if pred is None:
                rows.append(example_record(j, ex, kind, None, float(ex.activations[ex.center])))
                continue
            rows.append(
                example_record(
                    j,
                    ex,
                    kind,
                    float(pred[ex.center]),
                    float(ex.activations[ex.center]),
                    # per-token predictions are kept for LLM replies; the judge's are recomputable and would bloat the store
                    {"pred": [round(float(v), 3) for v in pred]} if self.uses_llm else None,
                )
            )
            all_pred.append(pred)
            all_true.append(ex.activations.astype(np.float64))
        error = None
        if not exs:
            error = "no examples to score"
        elif failures:
            error = f"{len(failures)} of {len(exs)} windows got no usable simulation"
        value = pearson(np.concatenate(all_pred), np.concatenate(all_true)) if all_pred and error is None else None
        return self.outcome(task, value, rows, failures, error, extra if self.uses_llm else None)
