"""What every scorer shares, and the base of the two classification scorers (detection, fuzzing).

A scorer turns (explanation, the latent's test examples) into one `ScoreRecord` plus one
`ScoreExampleRecord` per example (with its decile: 1..10 activating, 0 non-activating). Scorers run
on batches of latents (`score(tasks, env)`), so offline judges can vectorise and LLM scorers can
send all their prompts at once through one `LLMClient` (bounded concurrency, cache).

`ClassifierScorer` owns batching (seeded shuffle, `n_per_prompt` examples per prompt), prompt
building, reply parsing (a Python list of 0/1, one per example) and the metric (balanced accuracy).
Detection and fuzzing only say how an example is shown (`prepare`) and which prompt module to use.
With `model = judge:minilm-similarity` no LLM is called: `judge_predict` decides instead.

A prompt whose reply is unusable (transport failure, empty, truncated, not a list of the right
length) gives no predictions: its examples keep prediction NULL and the reply is kept in
`failures` with its raw text. The score's status is 'ok' only if at least `min_answered` of the
examples got predictions (default: all), else 'failed' with no value.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from core.autointerp.examples import DEFAULT_NEGATIVES, ExampleSets
from core.autointerp.explainers import stable_id
from core.autointerp.metrics import balanced_accuracy
from core.latents.sampling import Example
from core.store.explanations import ExplanationRecord, ScoreExampleRecord, ScoreRecord

JUDGE = "judge:minilm-similarity"
OFFLINE_PREFIXES = ("judge:", "lm:", "embedding:")  # scorer models that are not litellm ids


@dataclass(frozen=True)
class ScoreTask:
    """One explanation to score, with its latent's examples and largest activation."""

    explanation: ExplanationRecord
    sets: ExampleSets
    max_activation: float
    decoder: np.ndarray | None = None  # [d_out] the latent's decoder direction (intervention scoring)
    hook_out: str | None = None  # where the decoder writes (TransformerLens hook name)


@dataclass
class ScoringEnv:
    """What scorers share in one run: vocabulary, tokens, workspace, LLM client and lazily built judges/LMs."""

    workspace: Path | None
    texts: list[str]
    tokens: Any  # core.latents.sampling.TokenSource
    client: Any = None  # core.llm.client.LLMClient
    n_contexts: int = 0
    ctx_len: int = 0
    cache: dict = field(default_factory=dict)  # lazily built shared resources (judge, LM, ...)

    def shared(self, name: str, build):
        """A resource built once per run (`build()` on first use)."""
        if name not in self.cache:
            self.cache[name] = build()
        return self.cache[name]


Outcome = tuple[ScoreRecord, list[ScoreExampleRecord]]


@dataclass
class Item:
    """One example as a classifier scorer shows it: the text, the truth, and where it came from."""

    example: Example
    kind: str
    truth: bool
    text: str
    marked: np.ndarray | None = None  # [length] bool: tokens shown between << >> (fuzzing)


class Scorer(ABC):
    """A scorer: a name, the model (or judge) that predicts, a prompt version and parameters."""

    name: ClassVar[str]
    prompt_version: ClassVar[str]
    uses_negatives: ClassVar[bool] = (
        True  # scores the latent's non-activating examples (`ExampleSets.scoring_examples`)
    )

    def __init__(self, model: str):
        self.model = model

    @property
    def is_judge(self) -> bool:
        """True when predictions come from an offline judge rather than an LLM."""
        return not self.uses_llm

    @property
    def uses_llm(self) -> bool:
        """True when this scorer calls `self.model` through litellm."""
        return not self.model.startswith(OFFLINE_PREFIXES)

    def params(self) -> dict:
        """Parameters that change the result (stored in the score row and hashed into its id)."""
        return {}

    def score_id(self, task: ScoreTask) -> str:
        """The id of this scorer's score of `task` (a rerun with the same inputs finds it).

        Non-default negatives are part of the id; the default's ids are those of rows stored before the option existed."""
        negatives = task.sets.negatives if self.uses_negatives else DEFAULT_NEGATIVES
        return stable_id(
            "score",
            task.explanation.explanation_id,
            self.name,
            self.model,
            self.prompt_version,
            self.params(),
            task.sets.strategy,
            *(() if negatives == DEFAULT_NEGATIVES else (negatives,)),
        )

    @abstractmethod
    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Score every task; one outcome per task, in order."""

    def outcome(
        self,
        task: ScoreTask,
        value: float | None,
        examples: list[ScoreExampleRecord],
        failures: list[dict] | None = None,
        error: str | None = None,
        extra_params: dict | None = None,
    ) -> Outcome:
        """Assemble the score row: failed (value NULL) when there is an error or the value is not finite."""
        failures = failures or []
        transient = any(f.get("transient") for f in failures)
        if error is None and (value is None or not math.isfinite(value)):
            error = "metric undefined (need both activating and non-activating examples with predictions)"
        ok = error is None
        rec = ScoreRecord(
            score_id=self.score_id(task),
            explanation_id=task.explanation.explanation_id,
            scorer=self.name,
            scorer_model=self.model,
            value=float(value) if ok else None,
            prompt_version=self.prompt_version,
            params={
                **self.params(),
                **({"negatives": task.sets.negatives} if self.uses_negatives else {}),
                **(extra_params or {}),
            },
            status="ok" if ok else "failed",
            error=error,
            failures=failures or None,
            transient=transient,
            n_examples=len(examples),
        )
        return rec, examples


def failed_outcome(scorer: Scorer, task: ScoreTask, error: str) -> Outcome:
    """A failed score with no examples (e.g. the latent has too few examples to score)."""
    return scorer.outcome(task, None, [], error=error)


def example_record(
    i: int, ex: Example, kind: str, prediction: float | None, truth: float, detail: dict | None = None
) -> ScoreExampleRecord:
    """The stored row of one scored example."""
    return ScoreExampleRecord(
        example=i,
        decile=int(ex.decile) if kind == "activating" else 0,
        kind=kind,
        prediction=None if prediction is None else float(prediction),
        truth=float(truth),
        context=int(ex.context),
        start=int(ex.start),
        length=len(ex.tokens),
        activation=ex.max_activation,
        detail=detail,
    )


_LIST = re.compile(r"\[([^\[\]]*)\]")


def parse_binary_list(text: str | None, n: int) -> list[int] | None:
    """The last bracketed list in `text` if it holds exactly `n` values that are each 0 or 1; else None."""
    if not text:
        return None
    for body in reversed(_LIST.findall(text)):
        parts = [p.strip() for p in body.split(",") if p.strip()]
        if len(parts) != n:
            continue
        try:
            vals = [int(float(p)) if p not in ("True", "False") else int(p == "True") for p in parts]
        except ValueError:
            continue
        if all(v in (0, 1) for v in vals) and all(p in ("0", "1", "True", "False", "0.0", "1.0") for p in parts):
            return vals
    return None


class ClassifierScorer(Scorer):
    """Detection and fuzzing: show `n_per_prompt` examples at once, ask which are positive, score balanced accuracy."""

    prompt_module: ClassVar[Any]

    def __init__(
        self, model: str, n_per_prompt: int = 5, seed: int = 0, min_answered: float = 1.0, judge_quantile: float = 0.9
    ):
        super().__init__(model)
        if n_per_prompt < 1:
            raise ValueError("n_per_prompt must be at least 1")
        self.n_per_prompt = n_per_prompt
        self.seed = seed
        self.min_answered = min_answered
        self.judge_quantile = judge_quantile

    def params(self) -> dict:
        """Examples per prompt, seed, min_answered (LLM) or the judge's threshold quantile (judge)."""
        p: dict = {"seed": self.seed}
        if self.uses_llm:
            p.update(n_per_prompt=self.n_per_prompt, min_answered=self.min_answered, temperature=0.0)
        else:
            p.update(judge_quantile=self.judge_quantile)
        return p

    @abstractmethod
    def prepare(self, task: ScoreTask, env: ScoringEnv) -> list[Item]:
        """The examples as this scorer shows them, with their truth."""

    @abstractmethod
    def judge_predict(self, tasks: list[ScoreTask], items: list[list[Item]], env: ScoringEnv) -> list[np.ndarray]:
        """Offline judge: a bool prediction per item, per task."""

    def batches(self, task: ScoreTask, n_items: int) -> list[list[int]]:
        """Item indices per prompt: a seeded shuffle cut into chunks of `n_per_prompt`."""
        order = np.random.default_rng([self.seed, int(task.explanation.latent)]).permutation(n_items)
        return [order[i : i + self.n_per_prompt].tolist() for i in range(0, n_items, self.n_per_prompt)]

    def messages(self, explanation: str, items: list[Item]) -> list[dict]:
        """The chat messages of one prompt."""
        return self.prompt_module.build_messages(explanation, [it.text for it in items])

    async def score(self, tasks: list[ScoreTask], env: ScoringEnv) -> list[Outcome]:
        """Score every task with the judge (vectorised) or the LLM (all prompts concurrently)."""
        prepared = [self.prepare(t, env) for t in tasks]
        if self.is_judge:
            preds = self.judge_predict(tasks, prepared, env)
            return [
                self._finish(t, items, [None if p is None else bool(p) for p in pred], [])
                for t, items, pred in zip(tasks, prepared, preds, strict=True)
            ]
        from core.llm.client import LLMRequest

        requests, where = [], []
        for ti, (task, items) in enumerate(zip(tasks, prepared, strict=True)):
            for b in self.batches(task, len(items)):
                msgs = self.messages(task.explanation.text or "", [items[i] for i in b])
                requests.append(
                    LLMRequest(
                        self.model,
                        msgs,
                        {"temperature": 0.0, "max_tokens": 20 + 4 * len(b)},
                        self.name,
                        task.explanation.dictionary,
                        task.explanation.latent,
                    )
                )
                where.append((ti, b))
        replies = await env.client.acomplete_many(requests)
        preds: list[list[bool | None]] = [[None] * len(items) for items in prepared]
        failures: list[list[dict]] = [[] for _ in tasks]
        for pi, ((ti, b), reply) in enumerate(zip(where, replies, strict=True)):
            problem = reply.problem()
            vals = None if problem else parse_binary_list(reply.text, len(b))
            if vals is None:
                failures[ti].append(
                    {
                        "prompt": pi,
                        "error": problem or f"reply is not a list of {len(b)} zeros and ones",
                        "raw": reply.text,
                        "transient": reply.transient,
                    }
                )
                continue
            for i, v in zip(b, vals, strict=True):
                preds[ti][i] = bool(v)
        return [self._finish(t, items, p, f) for t, items, p, f in zip(tasks, prepared, preds, failures, strict=True)]

    def _finish(self, task: ScoreTask, items: list[Item], pred: list[bool | None], failures: list[dict]) -> Outcome:
        rows = [
            example_record(i, it.example, it.kind, None if p is None else float(p), float(it.truth))
            for i, (it, p) in enumerate(zip(items, pred, strict=True))
        ]
        answered = [i for i, p in enumerate(pred) if p is not None]
        error = None
        if not items:
            error = "no examples to score"
        elif len(answered) < self.min_answered * len(items):
            error = f"{len(items) - len(answered)} of {len(items)} examples got no usable prediction"
        value = None
        if error is None:
            value = balanced_accuracy(
                np.asarray([pred[i] for i in answered]), np.asarray([items[i].truth for i in answered])
            )
        return self.outcome(task, value, rows, failures, error)
