"""Examples for explaining and scoring: every latent of a dictionary loaded at once, split into sets, rendered as text.

For one latent and one sampling strategy (`SamplingParams`):
    train             what the explainer sees: `top` (the n strongest), `random` (n uniform draws from all
                      activations) or `quantile` (n/10 from each decile)
    test              `n_test_per_decile` activating windows from each decile, disjoint from `train`
    random_negatives  windows where the latent never fires
    hard_negatives    windows around the latent's typical tokens where it does not fire
    neighbour_negatives  (option `negatives="neighbours:<method>"`, instead of the two above) windows where
                      the latent's nearest latents (`core.latents.neighbours`) fire and it does not
All windows come from `core.latents.sampling` (seeded). Scorers use test + negatives, so an explanation is
never scored on the windows it was written from.

Rendering: a window's tokens are joined into text; marked tokens are wrapped in `<<` `>>`, consecutive
ones sharing a pair, with a leading space kept outside the marks (` <<the>>`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from core import store
from core.cache import files
from core.cache.stats import N_DECILES
from core.latents.sampling import (
    ArrayTokens,
    Example,
    LatentActivations,
    TokenSource,
    WindowSpec,
    sample_hard_negatives,
    sample_neighbour_negatives,
    sample_quantiles,
    sample_random,
    sample_random_negatives,
    sample_test,
    sample_top,
)

STRATEGIES = ("top", "random", "quantile")
DEFAULT_NEGATIVES = "random+hard"  # random windows + windows of the latent's typical tokens
NEGATIVES = (DEFAULT_NEGATIVES, "neighbours:decoder", "neighbours:encoder", "neighbours:cooccurrence")


@dataclass(frozen=True)
class SamplingParams:
    """How examples are drawn for one latent (stored in every row's params)."""

    strategy: str = "top"
    n_train: int = 20
    n_test_per_decile: int = 2
    n_random_negatives: int = 10
    n_hard_negatives: int = 10
    window: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")

    def to_dict(self) -> dict:
        """Plain JSON."""
        return asdict(self)

    def test_dict(self) -> dict:
        """The parameters that fix the test set (what scores depend on), without the strategy."""
        d = self.to_dict()
        del d["strategy"], d["n_train"]
        return d


@dataclass(frozen=True)
class ExampleSets:
    """One latent's examples: `train` for the explainer; `test` (activating) and negatives for scorers."""

    dictionary: str
    latent: int
    strategy: str
    train: list[Example]
    test: list[Example]
    random_negatives: list[Example]
    hard_negatives: list[Example]
    neighbour_negatives: list[Example] = field(default_factory=list)
    negatives: str = DEFAULT_NEGATIVES  # which kind of non-activating examples these are (one of NEGATIVES)
    train_negatives: list[Example] = field(default_factory=list)  # near misses for the contrastive explainer

    def scoring_examples(self) -> list[tuple[Example, str]]:
        """Test, random-negative, hard-negative and neighbour-negative examples with their kind, in that order."""
        return (
            [(e, "activating") for e in self.test]
            + [(e, "random-negative") for e in self.random_negatives]
            + [(e, "hard-negative") for e in self.hard_negatives]
            + [(e, "neighbour-negative") for e in self.neighbour_negatives]
        )


def with_train_negatives(
    sets: ExampleSets, acts: LatentActivations, tokens: TokenSource, params: SamplingParams, k: int | None = None
) -> ExampleSets:
    """`sets` with `k` (default n_train // 2) near misses for a contrastive explainer: windows around the latent's
    typical tokens where it does not fire, apart from every window the scorers use (so no test window is shown)."""
    k = max(1, params.n_train // 2) if k is None else k
    taken = sets.test + sets.random_negatives + sets.hard_negatives + sets.neighbour_negatives + sets.train
    near = sample_hard_negatives(acts, tokens, k, params.seed + 1, WindowSpec(params.window), exclude=taken)
    return replace(sets, train_negatives=near)


def with_neighbour_negatives(
    sets: ExampleSets,
    acts: LatentActivations,
    neighbours: list[LatentActivations],
    tokens: TokenSource,
    params: SamplingParams,
    negatives: str,
) -> ExampleSets:
    """`sets` with its random and hard negatives replaced by as many windows of its `neighbours`' activations
    where it does not fire (`negatives` names the neighbour method, e.g. 'neighbours:decoder')."""
    k = params.n_random_negatives + params.n_hard_negatives
    neg = sample_neighbour_negatives(acts, neighbours, tokens, k, WindowSpec(params.window))
    return replace(sets, random_negatives=[], hard_negatives=[], neighbour_negatives=neg, negatives=negatives)


def example_sets(acts: LatentActivations, tokens: TokenSource, params: SamplingParams) -> ExampleSets:
    """Draw train, test and negative windows for one latent (all seeded by `params.seed`).

    The test set and negatives depend only on `params.test_dict()` — not on the strategy — except that
    test windows avoid the strategy's training windows.
    """
    win = WindowSpec(params.window)
    if params.strategy == "top":
        train = sample_top(acts, tokens, params.n_train, win)
    elif params.strategy == "random":
        train = sample_random(acts, tokens, params.n_train, params.seed, win)
    else:
        train = sample_quantiles(acts, tokens, max(1, params.n_train // N_DECILES), params.seed, win)
    test = sample_test(acts, tokens, params.n_test_per_decile, params.seed, exclude=train, window=win)
    rneg = sample_random_negatives(acts, tokens, params.n_random_negatives, params.seed, win)
    hneg = (
        sample_hard_negatives(acts, tokens, params.n_hard_negatives, params.seed, win)
        if params.n_hard_negatives
        else []
    )
    return ExampleSets(acts.dictionary, acts.latent, params.strategy, train, test, rneg, hneg)


# ---------------------------------------------------------------------------------------------
# Loading a whole dictionary at once


class DictionaryLatents:
    """Every cached activation of one dictionary, read once; `activations(latent)` slices one latent.

    Much faster than one `core.latents.cards.load_latent` per latent when thousands are explained.
    """

    def __init__(self, workspace, dictionary: str):
        import pyarrow.parquet as pq

        with store.session(workspace) as con:
            rec = store.dictionary_record(con, dictionary)
            corpus = store.get_info(con, "corpus")
            stats = store.dictionary_latent_arrays(con, rec)
        if corpus is None or rec.activations_file is None:
            raise store.WorkspaceError(f"dictionary {dictionary} has no cached activations")
        self.record = rec
        self.dictionary = dictionary
        self.n_contexts = int(corpus["n_contexts"])
        self.ctx_len = int(corpus["ctx_len"])
        self.n_fires = stats["n_fires"]
        self.row_start = stats["row_start"]
        self.edges = stats["quantile_edges"]
        self.frequency = stats["frequency"]
        table = pq.read_table(
            files.activations_dir(workspace) / rec.activations_file, columns=["value", "context", "position"]
        )
        self.value = table.column("value").to_numpy().astype(np.float32)
        self.context = table.column("context").to_numpy().astype(np.int64)
        self.position = table.column("position").to_numpy().astype(np.int64)

    def live_latents(self, min_fires: int = 1) -> np.ndarray:
        """Latents that fire at least `min_fires` times in the cache, ascending."""
        return np.flatnonzero(self.n_fires >= min_fires)

    def activations(self, latent: int) -> LatentActivations:
        """One latent's activations (rows sorted by context, position)."""
        a, n = int(self.row_start[latent]), int(self.n_fires[latent])
        return LatentActivations(
            dictionary=self.dictionary,
            latent=int(latent),
            context=self.context[a : a + n],
            position=self.position[a : a + n],
            value=self.value[a : a + n],
            edges=self.edges[latent],
            n_contexts=self.n_contexts,
            ctx_len=self.ctx_len,
        )


def workspace_tokens(workspace) -> tuple[ArrayTokens, list[str]]:
    """Every cached context's tokens (as a TokenSource) and the decoded text of every token id."""
    from core.latents.cards import load_context_tokens

    tokens = load_context_tokens(workspace)
    with store.session(workspace) as con:
        texts = store.all_token_texts(con)
    return tokens, texts


# ---------------------------------------------------------------------------------------------
# Rendering


def _clean(text: str) -> str:
    return text.replace("\n", "\\n")


def render(token_texts: list[str], mask: np.ndarray | None = None) -> str:
    """Join tokens into one line of text; tokens where `mask: [length]` is true are wrapped in << >>."""
    out: list[str] = []
    inside = False
    for i, t in enumerate(token_texts):
        t = _clean(t)
        marked = bool(mask[i]) if mask is not None else False
        if marked and not inside:
            stripped = t.lstrip(" ")
            out.append(t[: len(t) - len(stripped)] + "<<" + stripped)
            inside = True
        elif not marked and inside:
            out.append(">>" + t)
            inside = False
        else:
            out.append(t)
    if inside:
        out.append(">>")
    return "".join(out)


def example_token_texts(example: Example, texts: list[str]) -> list[str]:
    """The decoded text of each token of an example's window."""
    return [texts[int(t)] if 0 <= int(t) < len(texts) else f"<{int(t)}>" for t in example.tokens]


def activation_listing(example: Example, texts: list[str], max_activation: float) -> str:
    """The marked tokens of an example with their activation on a 0-9 scale of the latent's maximum: `"the" 9, "a" 4`."""
    scale = 9.0 / max_activation if max_activation > 0 else 0.0
    toks = example_token_texts(example, texts)
    parts = [
        f'"{_clean(toks[i]).strip()}" {round(float(v) * scale)}' for i, v in enumerate(example.activations) if v > 0
    ]
    return ", ".join(parts)
