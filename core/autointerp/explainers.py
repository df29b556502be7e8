"""Explainers: an LLM explainer (any litellm model) and the offline token-statistics baseline.

Both turn one latent's training examples (`ExampleSets.train`) into one `ExplanationRecord`.

LLM explainer: the seed paper's prompt (`prompts/explainer.py`): each example window with its
activating tokens marked <<like this>>, optionally followed by their activations on a 0-9 scale and
optionally asking for chain of thought; the explanation is the reply's last `[EXPLANATION]:` line.
A reply without one (or empty, or cut off at the token limit) is stored as a failed row with the raw text.

Baseline `baseline:token-stats` (no LLM): from the same training examples, the tokens the latent fires on
that are enriched at its firing positions over the positions where it is silent (ranked by how many windows
it fires on them in, then by log-odds), and a preceding token that predicts the activation (one that precedes
≥ 30% of the activations and is far more common there than elsewhere), written bare on one line, e.g.
`of, in (after one)` (`token_stats_summary`). It is labelled a baseline (`is_baseline = true`) in every row.
Version `token-stats-v2`; v1 ranked tokens by activation-weighted frequency and wrote `the token "of" (often after "one")`.

Contrastive (option; delphi's `ContrastiveExplainer`): the explainer also sees near misses
(`ExampleSets.train_negatives`, windows around the latent's typical tokens where it stays silent). With an LLM
(`ExplainerParams(contrastive=True)`) they follow the examples in the prompt (`prompts/contrastive.py`);
offline, `baseline:contrastive-token-stats` (a baseline) ranks tokens by how much more often they sit at
activating positions than in the near misses, and names the near misses' most common token the latent ignores,
e.g. `the token "apple" (often after "of"); not "apple" elsewhere`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from core.autointerp.examples import ExampleSets, SamplingParams, activation_listing, example_token_texts, render
from core.autointerp.prompts import explainer as explainer_prompt
from core.latents.sampling import Example
from core.store.explanations import ExplanationRecord

BASELINE_EXPLAINER = "baseline:token-stats"
TOKEN_STATS_VERSION = "token-stats-v2"  # v1: activation-weighted frequency, quoted
CONTRASTIVE_BASELINE = "baseline:contrastive-token-stats"
CONTRASTIVE_STATS_VERSION = "contrastive-token-stats-v1"
BASELINE_EXPLAINERS = (BASELINE_EXPLAINER, CONTRASTIVE_BASELINE)
RANDOM_EXPLANATION = "random-explanation"
RANDOM_LATENT = "random-latent"


@dataclass(frozen=True)
class ExplainerParams:
    """Options of the LLM explainer (stored in each row's params)."""

    activations: bool = True
    chain_of_thought: bool = False
    temperature: float = 0.0
    max_tokens: int = 400
    contrastive: bool = False  # show near misses too (prompts/contrastive.py)

    def to_dict(self) -> dict:
        """Plain JSON (`contrastive` only when set, so ids of explanations stored before it existed are unchanged)."""
        d = asdict(self)
        if not self.contrastive:
            del d["contrastive"]
        return d

    def litellm_params(self) -> dict:
        """The params passed to litellm."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens * (4 if self.chain_of_thought else 1)}


def stable_id(*parts: object) -> str:
    """A short deterministic id (16 hex digits) of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def explanation_id(
    dictionary: str, latent: int, explainer: str, baseline: str | None, strategy: str, prompt_version: str, params: dict
) -> str:
    """The id of the explanation these inputs define (a rerun with the same inputs finds it)."""
    return stable_id("explanation", dictionary, int(latent), explainer, baseline, strategy, prompt_version, params)


# ---------------------------------------------------------------------------------------------
# Token-statistics baseline


def _quote(token_text: str) -> str:
    t = token_text.replace("\n", "\\n").strip() or token_text.replace(" ", "␣")
    return f'"{t}"'


def _reader_key(token_text: str) -> str:
    """How a reader (and the offline judges' uncased embedder, which strips each token) sees a token: ` The` = `the`."""
    return (token_text.strip() or token_text).lower()


def _log_odds(count: float, total: float, bg_count: float, bg_total: float, prior: float = 0.5) -> float:
    """Log-odds ratio of a token's share of `total` against its share of `bg_total`, both add-`prior` smoothed."""
    a, b = count + prior, bg_count + prior
    return float(np.log(a / (total + 2 * prior - a)) - np.log(b / (bg_total + 2 * prior - b)))


@dataclass(frozen=True)
class TokenStats:
    """What `token_stats_summary` finds: reader keys (see `_reader_key`) of the latent's tokens and their context.

    `tokens`: the tokens it fires on, most windows first. `before`: a token that precedes its activations far more
    often than it occurs elsewhere in the windows, or None. `before_share`: the share of activations it precedes."""

    tokens: list[str]
    before: str | None
    before_share: float


def token_stats_summary(
    train: list[Example],
    texts: list[str],
    n_tokens: int = 3,
    min_before_share: float = 0.3,
    min_before_log_odds: float = 2.0,
) -> TokenStats:
    """Characteristic tokens of a latent's activating windows `train`, by enrichment rather than raw frequency.

    Tokens are compared as a reader sees them (case and surrounding space ignored). The background is every
    position of the windows where the latent is silent.
    - Fired-on tokens: ranked by the number of windows where the latent fires on them (a token repeated in one window
      counts once, so one long window cannot crowd out the rest), ties by their log-odds of firing vs the background;
      kept while they fire in ≥ 2 windows and are enriched (log-odds > 0: a token as common at the silent positions as
      at the firing ones says nothing), at most `n_tokens`; if none is, the one firing in most windows.
    - Preceding context: the token just before the activations, if it precedes ≥ `min_before_share` of them and its
      log-odds there against the background exceed `min_before_log_odds` (it predicts the activation, rather than
      being everywhere), and it is not itself a fired-on token.
    """
    windows: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    background: Counter[str] = Counter()
    prev: Counter[str] = Counter()
    for ex in train:
        active = ex.activations > 0
        keys = [_reader_key(texts[int(t)]) for t in ex.tokens]
        windows.update({keys[i] for i in np.flatnonzero(active)})
        for i, k in enumerate(keys):
            if active[i]:
                fired[k] += 1
                if i > 0:
                    prev[keys[i - 1]] += 1
            else:
                background[k] += 1
    if not fired:
        return TokenStats([], None, 0.0)
    n_fired, n_bg = sum(fired.values()), sum(background.values())
    lift = {k: _log_odds(fired[k], n_fired, background[k], n_bg) for k in fired}
    ranked = sorted(fired, key=lambda k: (-windows[k], -(lift[k] > 0), -lift[k], k))
    tokens = [k for k in ranked if windows[k] >= 2 and lift[k] > 0][:n_tokens] or ranked[:1]
    before, share = None, 0.0
    for k, c in prev.most_common():
        if c / n_fired < min_before_share:
            break
        if k not in tokens and _log_odds(c, n_fired, background[k], n_bg) > min_before_log_odds:
            before, share = k, c / n_fired
            break
    return TokenStats(tokens, before, share)


def _name(key: str) -> str:
    """A reader key as written in an explanation: line breaks as `\\n`, a bare space as `␣`."""
    return key.replace("\n", "\\n") if key.strip() else key.replace("\n", "\\n").replace(" ", "␣")


def token_stats_text(train: list[Example], texts: list[str]) -> str | None:
    """The baseline's one-line explanation, or None if the examples have no activating token.

    The fired-on tokens, bare and comma-separated, then `(after X)` for a predictive preceding token, e.g.
    `of, in (after one)`. Bare words on purpose: the offline judges compare the explanation's embedding with each
    token's, and quoting or boilerplate ("the token ...") pulls it away from the tokens it names."""
    stats = token_stats_summary(train, texts)
    if not stats.tokens:
        return None
    head = ", ".join(_name(k) for k in stats.tokens)
    if stats.before is not None:
        head += f" (after {_name(stats.before)})"
    return head


def token_stats_explanation(sets: ExampleSets, texts: list[str], sampling: SamplingParams) -> ExplanationRecord:
    """The `baseline:token-stats` explanation of one latent from its training examples."""
    params = {"sampling": sampling.to_dict()}
    eid = explanation_id(
        sets.dictionary, sets.latent, BASELINE_EXPLAINER, None, sets.strategy, TOKEN_STATS_VERSION, params
    )
    text = token_stats_text(sets.train, texts)
    return ExplanationRecord(
        eid,
        sets.dictionary,
        sets.latent,
        BASELINE_EXPLAINER,
        True,
        None,
        sets.strategy,
        text,
        TOKEN_STATS_VERSION,
        params,
        status="ok" if text else "failed",
        error=None if text else "no activating examples",
    )


def _weighted_preceding(train: list[Example]) -> list[int]:
    """Token ids just before the activations, weighted by activation, kept while each has ≥ 25% of the weight (≤ 2)."""
    prev: Counter[int] = Counter()
    for ex in train:
        for i in np.flatnonzero(ex.activations > 0):
            if i > 0:
                prev[int(ex.tokens[i - 1])] += float(ex.activations[i])
    total = sum(prev.values())
    return [tok for tok, w in prev.most_common(2) if total and w / total >= 0.25]


def contrastive_token_stats_text(train: list[Example], near: list[Example], texts: list[str]) -> str | None:
    """The contrastive baseline's sentence from activating `train` windows and near-miss windows, or None if no token fires.

    Tokens at activating positions (weighted by activation) are ranked by their share there minus their share of
    the near misses' tokens (add-one smoothed), at most 3, while each keeps ≥ 10% of the positive weight; the
    preceding tokens as in `token_stats_summary`; then the near misses' most common centre token, if any.
    """
    act: Counter[int] = Counter()
    for ex in train:
        for i in np.flatnonzero(ex.activations > 0):
            act[int(ex.tokens[i])] += float(ex.activations[i])
    if not act:
        return None
    total = sum(act.values())
    neg = Counter(int(t) for ex in near for t in ex.tokens)
    n_neg = sum(neg.values())
    lift = {t: w / total - (neg[t] + 1) / (n_neg + len(texts)) for t, w in act.items()}
    ranked = sorted(lift, key=lambda t: (-lift[t], t))
    tokens = [t for t in ranked[:3] if lift[t] > 0 and act[t] >= 0.1 * total] or ranked[:1]
    before = _weighted_preceding(train)
    names = [_quote(texts[t]) for t in tokens]
    head = f"the token {names[0]}" if len(names) == 1 else "the tokens " + ", ".join(names[:-1]) + f" and {names[-1]}"
    if before:
        head += " (often after " + " or ".join(_quote(texts[t]) for t in before) + ")"
    centres = Counter(int(ex.tokens[ex.center]) for ex in near)
    if centres:
        head += f"; not {_quote(texts[centres.most_common(1)[0][0]])} elsewhere"
    return head


def contrastive_token_stats_explanation(
    sets: ExampleSets, texts: list[str], sampling: SamplingParams
) -> ExplanationRecord:
    """The `baseline:contrastive-token-stats` explanation of one latent from its training examples and near misses."""
    params = {"sampling": sampling.to_dict(), "near_misses": len(sets.train_negatives)}
    eid = explanation_id(
        sets.dictionary, sets.latent, CONTRASTIVE_BASELINE, None, sets.strategy, CONTRASTIVE_STATS_VERSION, params
    )
    text = contrastive_token_stats_text(sets.train, sets.train_negatives, texts)
    return ExplanationRecord(
        eid,
        sets.dictionary,
        sets.latent,
        CONTRASTIVE_BASELINE,
        True,
        None,
        sets.strategy,
        text,
        CONTRASTIVE_STATS_VERSION,
        params,
        status="ok" if text else "failed",
        error=None if text else "no activating examples",
    )


def baseline_explanation(
    explainer: str, sets: ExampleSets, texts: list[str], sampling: SamplingParams
) -> ExplanationRecord:
    """The explanation of one of the offline `BASELINE_EXPLAINERS`."""
    if explainer == CONTRASTIVE_BASELINE:
        return contrastive_token_stats_explanation(sets, texts, sampling)
    return token_stats_explanation(sets, texts, sampling)


# ---------------------------------------------------------------------------------------------
# LLM explainer


def explainer_messages(
    sets: ExampleSets, texts: list[str], max_activation: float, params: ExplainerParams
) -> list[dict]:
    """The explainer's chat messages for one latent: its training windows, activating tokens marked."""
    rendered = [render(example_token_texts(ex, texts), ex.activations > 0) for ex in sets.train]
    listings = [activation_listing(ex, texts, max_activation) for ex in sets.train] if params.activations else None
    if params.contrastive:
        from core.autointerp.prompts import contrastive

        counter = [render(example_token_texts(ex, texts)) for ex in sets.train_negatives]
        return contrastive.build_messages(rendered, listings, counter, params.chain_of_thought)
    return explainer_prompt.build_messages(rendered, listings, params.chain_of_thought)


def llm_explanation_record(
    sets: ExampleSets,
    model: str,
    sampling: SamplingParams,
    params: ExplainerParams,
    reply_text: str | None,
    problem: str | None,
    transient: bool,
) -> ExplanationRecord:
    """The row for an LLM explainer's reply: ok with the parsed explanation, or failed with the raw reply and why."""
    p = {"sampling": sampling.to_dict(), "explainer": params.to_dict()}
    version = explainer_prompt.VERSION
    if params.contrastive:
        from core.autointerp.prompts import contrastive

        version = contrastive.VERSION
    eid = explanation_id(sets.dictionary, sets.latent, model, None, sets.strategy, version, p)
    text = None if problem else explainer_prompt.parse_reply(reply_text)
    if problem is None and text is None:
        problem = "reply has no [EXPLANATION]: line"
    return ExplanationRecord(
        eid,
        sets.dictionary,
        sets.latent,
        model,
        False,
        None,
        sets.strategy,
        text,
        version,
        p,
        status="ok" if text else "failed",
        error=problem,
        raw=reply_text,
        transient=transient,
    )


# ---------------------------------------------------------------------------------------------
# Baseline explanations for scoring


def random_explanations(explanations: list[ExplanationRecord], seed: int = 0) -> list[ExplanationRecord]:
    """For each explanation, a `random-explanation` row for the same latent carrying another latent's text.

    A seeded derangement over the given (ok) explanations: nobody keeps their own text. Needs ≥ 2.
    """
    ok = [e for e in explanations if e.status == "ok" and e.text]
    if len(ok) < 2:
        return []
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ok))
    shift = np.roll(perm, 1)  # each perm[i] borrows from perm[i-1]: a derangement
    donor = np.empty(len(ok), dtype=np.int64)
    donor[perm] = shift
    out = []
    for e, j in zip(ok, donor, strict=True):
        src = ok[int(j)]
        params = {**e.params, "random_explanation_seed": seed}
        eid = explanation_id(
            e.dictionary,
            e.latent,
            e.explainer,
            RANDOM_EXPLANATION,
            e.strategy,
            e.prompt_version,
            {**params, "source": src.explanation_id},
        )
        out.append(
            ExplanationRecord(
                eid,
                e.dictionary,
                e.latent,
                e.explainer,
                True,
                RANDOM_EXPLANATION,
                e.strategy,
                src.text,
                e.prompt_version,
                params,
                source_explanation_id=src.explanation_id,
            )
        )
    return out
