"""The explain/score engine: latents → example sets → explanations → scores, resumable, in chunks.

`run(workspace, dictionaries, spec, latents=..., sample=..., progress=...)` for each dictionary:
1. loads every cached activation of the dictionary once (`DictionaryLatents`) and picks the latents
   (explicit ids, or a seeded sample of n, or every live latent);
2. per chunk of latents: draws example sets (`examples.example_sets`), explains each latent (the
   `baseline:token-stats` explainer, or an LLM through one `LLMClient`: cache, bounded concurrency,
   retries), and stores the explanations;
3. scores every ok explanation with each requested scorer and stores score + per-example rows;
4. baselines, scored the same way: `random-explanation` rows (another latent's explanation for this
   latent) and `random-latent` rows (random directions, `random_latents.py`).

Resumable: explanation and score ids are hashes of everything that defines them, so a rerun skips
whatever is stored (ok, or failed for a non-transient reason) and pays for nothing twice (LLM replies
are also cached by prompt). Work is written per chunk, so an interrupted run loses at most one chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from core import store
from core.autointerp.examples import (
    DEFAULT_NEGATIVES,
    NEGATIVES,
    DictionaryLatents,
    ExampleSets,
    SamplingParams,
    example_sets,
    with_neighbour_negatives,
    with_train_negatives,
    workspace_tokens,
)
from core.autointerp.explainers import (
    BASELINE_EXPLAINER,
    BASELINE_EXPLAINERS,
    CONTRASTIVE_BASELINE,
    RANDOM_LATENT,
    ExplainerParams,
    baseline_explanation,
    explainer_messages,
    llm_explanation_record,
    random_explanations,
)
from core.autointerp.random_latents import RANDOM_LATENT_SEED, RandomLatents, build_random_latents
from core.autointerp.scorers import ALL_SCORERS, LLM_CAPABLE, SCORERS, make_scorer
from core.autointerp.scorers.base import Outcome, Scorer, ScoreTask, ScoringEnv, failed_outcome
from core.errors import UserError
from core.paths import default_root
from core.progress import Progress
from core.store.explanations import ExplanationRecord

log = logging.getLogger(__name__)

MIN_TEST_EXAMPLES = 2  # activating test windows a latent needs to be scored


@dataclass(frozen=True)
class RunSpec:
    """What to do: which explainer, how to sample, which scorers with which model, which baselines."""

    explainer: str = BASELINE_EXPLAINER
    sampling: SamplingParams = field(default_factory=SamplingParams)
    explainer_params: ExplainerParams = field(default_factory=ExplainerParams)
    scorers: tuple[str, ...] = ()
    scorer_model: str | None = None  # None: each scorer's offline default
    scorer_options: dict = field(default_factory=dict)  # scorer name -> constructor options
    random_explanations: bool = True
    random_latents: int = 0  # random-direction latents per dictionary
    concurrency: int = 8
    chunk: int = 256
    explain_missing: bool = True  # False (`score` command): score only explanations already stored
    negatives: str = DEFAULT_NEGATIVES  # non-activating examples for scoring: one of examples.NEGATIVES
    n_neighbours: int = 10  # neighbours per latent when `negatives` is 'neighbours:<method>'

    @property
    def explainer_is_llm(self) -> bool:
        """True unless the explainer is one of the offline baselines (token statistics, contrastive token statistics)."""
        return self.explainer not in BASELINE_EXPLAINERS

    @property
    def contrastive(self) -> bool:
        """True when the explainer is shown near misses (the contrastive baseline, or an LLM with the contrastive prompt)."""
        return self.explainer == CONTRASTIVE_BASELINE or (self.explainer_is_llm and self.explainer_params.contrastive)


@dataclass
class RunReport:
    """Counts of a run (what was done now vs found done) and its LLM usage."""

    explained: int = 0
    explanations_found: int = 0
    explanations_failed: int = 0
    scored: int = 0
    scores_found: int = 0
    scores_failed: int = 0
    seconds: float = 0.0
    llm: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        """Accumulate wall time per phase."""
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds


# ---------------------------------------------------------------------------------------------
# Latent sources: real dictionary latents or random directions


class _Source:
    """Latents of one dictionary as the engine needs them: activations, max, decoder direction, baseline kind."""

    baseline: str | None = None

    def __init__(self, dictionary: str, hook_out: str):
        self.dictionary = dictionary
        self.hook_out = hook_out

    def activations(self, latent: int):  # -> LatentActivations
        raise NotImplementedError

    def max_activation(self, latent: int) -> float:
        raise NotImplementedError

    def decoder(self, latent: int) -> np.ndarray | None:
        raise NotImplementedError

    def extra_params(self) -> dict:
        return {}

    def neighbour_ids(self, method: str, n: int) -> np.ndarray:
        raise UserError(f"neighbour negatives ({method}) need a cached dictionary, not {self.baseline} latents")

    def neighbour_activations(self, latent: int):  # -> LatentActivations of a neighbour id from `neighbour_ids`
        return self.activations(latent)


class _RealSource(_Source):
    def __init__(self, workspace: Path, dictionary: str, model_name: str):
        self.dl = DictionaryLatents(workspace, dictionary)
        super().__init__(dictionary, self.dl.record.hook_out)
        self.model_name = model_name
        self._w_dec: np.ndarray | None = None

    def activations(self, latent: int):
        return self.dl.activations(latent)

    def max_activation(self, latent: int) -> float:
        return float(self.dl.edges[latent][-1])

    def decoder(self, latent: int) -> np.ndarray | None:
        if self._w_dec is None:
            self._w_dec = load_decoder(self.model_name, self.dictionary)
        return self._w_dec[latent]

    def neighbour_ids(self, method: str, n: int) -> np.ndarray:
        """`[d_sae, n]` each latent's n nearest live latents by `method` (core.latents.neighbours), -1 padded; memoised."""
        from core.latents import neighbours as nb

        key = (method, n)
        memo = self.__dict__.setdefault("_neighbours", {})
        if key in memo:
            return memo[key]
        live = self.dl.n_fires > 0
        nb.check_enough(n, method, self.dictionary, int(live.sum()))
        if method == "decoder":
            if self._w_dec is None:
                self._w_dec = load_decoder(self.model_name, self.dictionary)
            ids, _ = nb.cosine_neighbours(self._w_dec, n, live)
        elif method == "encoder":
            ids, _ = nb.cosine_neighbours(load_encoder(self.model_name, self.dictionary), n, live)
        elif method == "cooccurrence":
            ids, _ = nb.cooccurrence_neighbours(*self.firing_keys(), len(self.dl.n_fires), n)
        else:
            raise UserError(f"unknown neighbour method {method!r}; valid: {', '.join(nb.METHODS)}")
        memo[key] = ids
        return ids

    def firing_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(latent `[n_acts]`, context · ctx_len + position `[n_acts]`) of every cached activation."""
        dl = self.dl
        latent = np.repeat(np.arange(len(dl.n_fires)), dl.n_fires)
        offset = np.arange(len(latent)) - np.repeat(np.cumsum(dl.n_fires) - dl.n_fires, dl.n_fires)
        rows = np.repeat(dl.row_start.astype(np.int64), dl.n_fires) + offset
        return latent, dl.context[rows] * dl.ctx_len + dl.position[rows]


class _RandomSource(_Source):
    baseline = RANDOM_LATENT

    def __init__(self, rl: RandomLatents, real: _RealSource | None = None):
        super().__init__(rl.dictionary, rl.hook_out)
        self.rl = rl
        self.real = real  # the dictionary the random latents imitate: their neighbours are its latents

    def neighbour_ids(self, method: str, n: int) -> np.ndarray:
        """`[n_random, n]` the real dictionary's live latents nearest each random latent (`random_latent_neighbours`)."""
        from core.autointerp.random_latents import random_latent_neighbours
        from core.latents import neighbours as nb

        if self.real is None:
            return super().neighbour_ids(method, n)
        real = self.real
        live = real.dl.n_fires > 0
        nb.check_enough(n, method, self.dictionary, int(live.sum()))
        if method == "decoder":
            weights, fires = (
                real._w_dec if real._w_dec is not None else load_decoder(real.model_name, real.dictionary),
                None,
            )
        elif method == "encoder":
            weights, fires = load_encoder(real.model_name, real.dictionary), None
        else:
            weights, fires = None, real.firing_keys()
        try:
            return random_latent_neighbours(self.rl, method, n, live, fires, weights)
        except ValueError as exc:
            raise UserError(f"random latents of {self.dictionary}: {exc}") from None

    def neighbour_activations(self, latent: int):
        return self.real.activations(latent) if self.real is not None else self.activations(latent)

    def activations(self, latent: int):
        return self.rl.activations(latent)

    def max_activation(self, latent: int) -> float:
        return self.rl.max_activation(latent)

    def decoder(self, latent: int) -> np.ndarray | None:
        return self.rl.decoders[latent]

    def extra_params(self) -> dict:
        return {"random_latent": {"seed": self.rl.seed, "n": self.rl.n, "frequency": round(self.rl.frequency, 8)}}


def subject_model(name: str):
    """The workspace's subject model by name (loaded once per process, CPU, eval mode)."""
    from core.autointerp.scorers.surprisal import load_lm

    return load_lm(f"lm:{name}")


def load_encoder(model_name: str, dictionary: str) -> np.ndarray:
    """Encoder directions `[d_sae, d_in]` (the transpose of `W_enc`) of a dictionary of the workspace's model."""
    from core.cache.plan import resolve_dictionaries

    model = subject_model(model_name)
    d = resolve_dictionaries(model, model_name, [dictionary], neurons=False, device="cpu")[0]
    return d.W_enc.detach().float().cpu().numpy().T


def load_decoder(model_name: str, dictionary: str) -> np.ndarray:
    """Decoder directions `[d_sae, d_out]` of a dictionary of the workspace's model (neurons: the MLP's W_out)."""
    from core.cache.plan import resolve_dictionaries

    model = subject_model(model_name)
    d = resolve_dictionaries(model, model_name, [dictionary], neurons=False, device="cpu")[0]
    return d.W_dec.detach().float().cpu().numpy()


_RANDOM_LATENTS_MEMO: dict[tuple, RandomLatents] = {}
_RANDOM_LATENTS_MEMO_SIZE = 64


def _random_source(workspace: Path, real: _RealSource, model_name: str, n: int, tokens) -> _RandomSource:
    """Random latents shaped like `real`'s dictionary. Memoised in this process on everything they depend on
    (the model and the root "default" resolves under, the dictionary's hooks, the cached tokens, the firing rate, n, the seed), so explain and
    score runs of several strategies in one process run the subject model over the corpus once per dictionary."""
    import hashlib

    live = real.dl.frequency[real.dl.n_fires > 0]
    freq = float(np.median(live)) if len(live) else 1e-3
    rec = real.dl.record
    toks = np.ascontiguousarray(tokens.tokens)
    args = (rec.id, rec.hook_in, rec.hook_out, rec.d_out, freq, n, RANDOM_LATENT_SEED)
    key = (
        model_name,
        str(default_root()),
        *args,
        toks.shape,
        hashlib.blake2b(toks.tobytes(), digest_size=16).hexdigest(),
    )
    if key in _RANDOM_LATENTS_MEMO:
        return _RandomSource(_RANDOM_LATENTS_MEMO[key], real)
    rl = build_random_latents(subject_model(model_name), tokens.tokens, *args)
    if len(_RANDOM_LATENTS_MEMO) >= _RANDOM_LATENTS_MEMO_SIZE:
        _RANDOM_LATENTS_MEMO.pop(next(iter(_RANDOM_LATENTS_MEMO)))
    _RANDOM_LATENTS_MEMO[key] = rl
    return _RandomSource(rl, real)


# ---------------------------------------------------------------------------------------------
# Explaining


def _with_source(rec: ExplanationRecord, source: _Source) -> ExplanationRecord:
    """Mark a record made from a random-latent source as such (id recomputed so it differs from a real latent's)."""
    if source.baseline is None:
        return rec
    from core.autointerp.explainers import explanation_id

    params = {**rec.params, **source.extra_params()}
    eid = explanation_id(
        rec.dictionary, rec.latent, rec.explainer, source.baseline, rec.strategy, rec.prompt_version, params
    )
    return replace(rec, explanation_id=eid, is_baseline=True, baseline=source.baseline, params=params)


async def _explain_chunk(
    spec: RunSpec,
    source: _Source,
    sets: list[ExampleSets],
    texts: list[str],
    client,
    workspace: Path,
    report: RunReport,
) -> list[ExplanationRecord]:
    """Explanations of a chunk of latents: stored ones are read back, missing ones made and stored."""
    if not spec.explain_missing:
        if spec.explainer_is_llm:
            ids = [
                _with_source(
                    llm_explanation_record(
                        s, spec.explainer, spec.sampling, spec.explainer_params, None, "probe", False
                    ),
                    source,
                ).explanation_id
                for s in sets
            ]
        else:
            ids = [
                _with_source(baseline_explanation(spec.explainer, s, texts, spec.sampling), source).explanation_id
                for s in sets
            ]
        stored = [r for r in store.explanations_by_id(workspace, ids) if r.status == "ok"]
        report.explanations_found += len(stored)
        return stored
    if not spec.explainer_is_llm:
        recs = [_with_source(baseline_explanation(spec.explainer, s, texts, spec.sampling), source) for s in sets]
        done = store.done_ids(workspace, "explanations", [r.explanation_id for r in recs])
        new = [r for r in recs if r.explanation_id not in done]
        report.explanations_found += len(recs) - len(new)
        store.write_explanations(workspace, new)
        report.explained += len(new)
        report.explanations_failed += sum(r.status != "ok" for r in new)
        return [r for r in recs if r.status == "ok"]

    from core.llm.client import LLMRequest

    # ids do not depend on the reply: compute them from an empty reply to find what is stored
    probes = [
        _with_source(
            llm_explanation_record(s, spec.explainer, spec.sampling, spec.explainer_params, None, "probe", False),
            source,
        )
        for s in sets
    ]
    done = store.done_ids(workspace, "explanations", [p.explanation_id for p in probes])
    redo = [
        i
        for i, p in enumerate(probes)
        if p.explanation_id not in done or (done[p.explanation_id][0] != "ok" and done[p.explanation_id][1])
    ]
    report.explanations_found += len(sets) - len(redo)
    requests = [
        LLMRequest(
            spec.explainer,
            explainer_messages(sets[i], texts, source.max_activation(sets[i].latent), spec.explainer_params),
            spec.explainer_params.litellm_params(),
            "explain",
            source.dictionary,
            sets[i].latent,
        )
        for i in redo
    ]
    replies = await client.acomplete_many(requests)
    new = [
        _with_source(
            llm_explanation_record(
                sets[i], spec.explainer, spec.sampling, spec.explainer_params, r.text, r.problem(), r.transient
            ),
            source,
        )
        for i, r in zip(redo, replies, strict=True)
    ]
    store.write_explanations(workspace, new)
    report.explained += len(new)
    report.explanations_failed += sum(r.status != "ok" for r in new)
    ids = [p.explanation_id for p in probes]
    stored = {r.explanation_id: r for r in store.explanations_by_id(workspace, ids)}
    return [stored[i] for i in ids if i in stored and stored[i].status == "ok"]


# ---------------------------------------------------------------------------------------------
# Scoring


def _unscorable(scorer: Scorer, task: ScoreTask) -> str | None:
    """Why `task` cannot be scored (too few test windows, no neighbour negatives), or None."""
    if len(task.sets.test) < MIN_TEST_EXAMPLES:
        return f"latent has {len(task.sets.test)} activating test windows outside its training examples; need {MIN_TEST_EXAMPLES}"
    if scorer.uses_negatives and task.sets.negatives != DEFAULT_NEGATIVES and not task.sets.neighbour_negatives:
        return f"no non-activating windows of kind {task.sets.negatives}: the latent's nearest latents never fire apart from it"
    return None


async def _score(
    scorers: list[Scorer],
    tasks: list[ScoreTask],
    env: ScoringEnv,
    workspace: Path,
    report: RunReport,
    progress: Progress | None,
    label: str,
) -> None:
    """Score `tasks` with every scorer, skipping stored scores; writes each scorer's results at once."""
    for scorer in scorers:
        t0 = time.perf_counter()
        ids = [scorer.score_id(t) for t in tasks]
        done = store.done_ids(workspace, "scores", ids)
        todo = [t for t, i in zip(tasks, ids, strict=True) if i not in done or (done[i][0] != "ok" and done[i][1])]
        report.scores_found += len(tasks) - len(todo)
        problems = [_unscorable(scorer, t) for t in todo]
        scorable = [t for t, p in zip(todo, problems, strict=True) if p is None]
        outcomes: list[Outcome] = [
            failed_outcome(scorer, t, p) for t, p in zip(todo, problems, strict=True) if p is not None
        ]
        if scorable:
            outcomes += await scorer.score(scorable, env)
        store.write_scores(workspace, outcomes)
        report.scored += len(outcomes)
        report.scores_failed += sum(o[0].status != "ok" for o in outcomes)
        report.add_time(scorer.name, time.perf_counter() - t0)
        if progress is not None:
            progress(f"{label} {scorer.name}", len(tasks), len(tasks))


def _tasks(
    explanations: list[ExplanationRecord], sets_by_latent: dict[int, ExampleSets], source: _Source, need_decoder: bool
) -> list[ScoreTask]:
    out = []
    for e in explanations:
        s = sets_by_latent.get(e.latent)
        if s is None:
            continue
        out.append(
            ScoreTask(
                e,
                s,
                source.max_activation(e.latent),
                source.decoder(e.latent) if need_decoder else None,
                source.hook_out,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Running


def select_latents(
    n_fires: np.ndarray, latents: list[int] | None = None, sample: int | None = None, seed: int = 0
) -> np.ndarray:
    """The latents to work on: `latents` if given (checked against `n_fires: [d_sae]`), else every live one,
    or a seeded random `sample` of n live ones (ascending)."""
    d_sae = len(n_fires)
    if latents is not None:
        bad = [int(x) for x in latents if not 0 <= int(x) < d_sae]
        if bad:
            raise UserError(f"latent {bad[0]} is out of range (0..{d_sae - 1})")
        return np.asarray(sorted(set(int(x) for x in latents)), dtype=np.int64)
    live = np.flatnonzero(n_fires > 0)
    if sample is not None and sample < len(live):
        live = np.sort(np.random.default_rng([seed, 3]).choice(live, size=sample, replace=False))
    return live


def _check_models(spec: RunSpec, subject: str = "default") -> list[Scorer]:
    from core.llm.client import check_credentials

    unknown = [s for s in spec.scorers if s not in ALL_SCORERS]
    if unknown:
        raise UserError(f"unknown scorer {unknown[0]!r}; valid: {', '.join(ALL_SCORERS)}")
    if spec.negatives not in NEGATIVES:
        raise UserError(f"unknown negatives {spec.negatives!r}; valid: {', '.join(NEGATIVES)}")
    if spec.negatives != DEFAULT_NEGATIVES:
        if spec.n_neighbours < 1:
            raise UserError(f"--neighbours must be at least 1 (got {spec.n_neighbours})")
    if spec.explainer_is_llm and spec.explain_missing:
        check_credentials(spec.explainer)
    try:
        scorers = []
        for name in spec.scorers:
            options = dict(spec.scorer_options.get(name, {}))
            model = spec.scorer_model if name in LLM_CAPABLE else None
            if name == "surprisal":
                model = options.pop("lm", f"lm:{subject}")  # the causal LM: the workspace's own model by default
            if name == "intervention":
                options.setdefault("lm", f"lm:{subject}")
            scorers.append(make_scorer(name, model, **options))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for s in scorers:
        if s.uses_llm:
            check_credentials(s.model)
    return scorers


async def arun(
    workspace: Path,
    dictionaries: list[str],
    spec: RunSpec,
    latents: list[int] | None = None,
    sample: int | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Explain and score latents of `dictionaries` as `spec` says (see the module docstring); returns counts."""
    from core.llm.client import LLMClient

    t_start = time.perf_counter()
    workspace = Path(workspace)
    if not workspace.exists():
        raise UserError(
            f"workspace {workspace} does not exist; build it with `python -m core cache --workspace {workspace} ...`"
        )
    with store.session(workspace) as con:
        corpus = store.get_info(con, "corpus")
        model_info = store.get_info(con, "model") or {"name": "default"}
        known = [d.id for d in store.dictionaries(con) if d.status == "ready"]
    scorers = _check_models(spec, model_info["name"])  # before any work: unknown scorers, missing keys
    missing = [d for d in dictionaries if d not in known]
    if missing:
        raise UserError(f"dictionary {missing[0]!r} is not cached in {workspace}; it has: {', '.join(known) or 'none'}")
    if corpus is None:
        raise UserError(f"{workspace} has no cached contexts; run `python -m core cache` first")
    tokens, texts = workspace_tokens(workspace)
    client = LLMClient(workspace, concurrency=spec.concurrency)
    env = ScoringEnv(workspace, texts, tokens, client, int(corpus["n_contexts"]), int(corpus["ctx_len"]))
    need_decoder = any(s.name == "intervention" for s in scorers)
    report = RunReport()
    try:
        for dictionary in dictionaries:
            t0 = time.perf_counter()
            source = _RealSource(workspace, dictionary, model_info["name"])
            report.add_time("load", time.perf_counter() - t0)
            chosen = select_latents(source.dl.n_fires, latents, sample, spec.sampling.seed)
            explanations, sets_by_latent = await _explain_and_score(
                spec,
                source,
                chosen,
                env,
                scorers,
                need_decoder,
                report,
                progress,
                dictionary,
                strict=latents is not None,
            )
            if spec.random_explanations and explanations:
                rnd = random_explanations(explanations, seed=spec.sampling.seed)
                found = store.done_ids(workspace, "explanations", [r.explanation_id for r in rnd])
                store.write_explanations(workspace, [r for r in rnd if r.explanation_id not in found])
                report.explained += len(rnd) - len(found)
                report.explanations_found += len(found)
                await _score(
                    scorers,
                    _tasks(rnd, sets_by_latent, source, need_decoder),
                    env,
                    workspace,
                    report,
                    progress,
                    f"{dictionary} random-explanation",
                )
            if spec.random_latents:
                t0 = time.perf_counter()
                rsource = _random_source(workspace, source, model_info["name"], spec.random_latents, tokens)
                report.add_time("random latents", time.perf_counter() - t0)
                await _explain_and_score(
                    spec,
                    rsource,
                    np.arange(rsource.rl.n),
                    env,
                    scorers,
                    need_decoder,
                    report,
                    progress,
                    f"{dictionary} random-latent",
                )
    finally:
        await asyncio.to_thread(client.flush)
    report.llm = dict(client.stats)
    report.seconds = time.perf_counter() - t_start
    return report


def _neighbour_sets(spec: RunSpec, source: _Source, sets: list[ExampleSets], tokens, strict: bool) -> list[ExampleSets]:
    """`sets` with neighbour negatives (spec.negatives 'neighbours:<method>'). `strict` (latents named by the user):
    a UserError before anything is stored if a latent gets no neighbour window; otherwise such a latent's
    scores fail, each saying why."""
    method = spec.negatives.split(":", 1)[1]
    ids = source.neighbour_ids(method, spec.n_neighbours)
    out = []
    for s in sets:
        near = [int(j) for j in ids[s.latent] if j >= 0]
        ns = with_neighbour_negatives(
            s,
            source.activations(s.latent),
            [source.neighbour_activations(j) for j in near],
            tokens,
            spec.sampling,
            spec.negatives,
        )
        if strict and not ns.neighbour_negatives:
            raise UserError(
                f"latent {s.latent} of {source.dictionary} has no non-activating windows of kind {spec.negatives}: "
                f"its {len(near)} nearest latents by {method} never fire apart from it; nothing was stored. "
                f"Try another --negatives method or {DEFAULT_NEGATIVES}"
            )
        out.append(ns)
    return out


async def _explain_and_score(
    spec,
    source: _Source,
    chosen: np.ndarray,
    env: ScoringEnv,
    scorers,
    need_decoder,
    report,
    progress,
    label,
    strict: bool = False,
) -> tuple[list, dict]:
    explanations: list[ExplanationRecord] = []
    sets_by_latent: dict[int, ExampleSets] = {}
    for a in range(0, len(chosen), spec.chunk):
        chunk = chosen[a : a + spec.chunk]
        t0 = time.perf_counter()
        sets = [example_sets(source.activations(int(lat)), env.tokens, spec.sampling) for lat in chunk]
        if spec.negatives != DEFAULT_NEGATIVES and scorers:
            sets = _neighbour_sets(spec, source, sets, env.tokens, strict)
        if spec.contrastive:  # near misses apart from every scoring window
            sets = [with_train_negatives(s, source.activations(s.latent), env.tokens, spec.sampling) for s in sets]
        report.add_time("sampling", time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = await _explain_chunk(spec, source, sets, env.texts, env.client, env.workspace, report)
        report.add_time("explain", time.perf_counter() - t0)
        for s in sets:
            sets_by_latent[s.latent] = s
        explanations += got
        if scorers:
            await _score(
                scorers, _tasks(got, sets_by_latent, source, need_decoder), env, env.workspace, report, None, label
            )
        if progress is not None:
            progress(label, min(a + spec.chunk, len(chosen)), len(chosen))
    return explanations, sets_by_latent


def run(
    workspace: Path,
    dictionaries: list[str],
    spec: RunSpec,
    latents: list[int] | None = None,
    sample: int | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """Synchronous `arun` (CLI, Streamlit)."""
    from core.llm.client import run_sync

    return run_sync(arun(workspace, dictionaries, spec, latents, sample, progress))


def explain_and_score_latent(
    workspace: Path,
    dictionary: str,
    latent: int,
    explainer_model: str | None = None,
    scorers: list[str] | tuple[str, ...] = SCORERS,
    progress: Progress | None = None,
    strategy: str = "top",
    scorer_model: str | None = None,
    contrastive: bool = False,
) -> list[ExplanationRecord]:
    """Explain one latent now (LLM `explainer_model`, or the baseline when None) and score it with `scorers`
    (`scorer_model` for those that can use an LLM, else offline judges); returns the latent's explanations.
    `contrastive`: the contrastive explainer (near misses shown too; offline, the contrastive baseline).
    For the app: a missing API key raises a UserError naming the variable before any work."""
    from core.autointerp.explainers import CONTRASTIVE_BASELINE, ExplainerParams

    explainer = explainer_model or (CONTRASTIVE_BASELINE if contrastive else BASELINE_EXPLAINER)
    spec = RunSpec(
        explainer=explainer,
        explainer_params=ExplainerParams(contrastive=contrastive and explainer != CONTRASTIVE_BASELINE),
        sampling=SamplingParams(strategy=strategy),
        scorers=tuple(scorers),
        scorer_model=scorer_model,
        random_explanations=False,
    )
    run(workspace, [dictionary], spec, latents=[int(latent)], progress=progress)
    return store.explanations_for_latent(workspace, dictionary, int(latent))
