"""Analyses of explanation scores: the seed paper's comparisons, recomputed on our workspace.

Pure functions over two DataFrames that `core.store` reads (`scores_frame`, `score_examples_frame`):
- scores: one row per score of an explanation, with columns dictionary, latent, explainer,
  is_baseline, baseline (None | 'random-explanation' | 'random-latent'), strategy, scorer,
  scorer_model, value, status, explanation_id.
- examples: one row per scored example, with dictionary, latent, baseline, strategy, scorer,
  scorer_model, score_id, decile (1..10 activating, 0 non-activating), kind, prediction, truth.

Analyses (each returns a plain dataclass that `to_json` turns into what the workspace stores):
1. `score_distributions`: per scorer, the values of each sampling strategy and of the
   random-explanation and random-latent baselines (mean with a bootstrap CI, quartiles), plus
   paired contrasts between strategies over the latents explained by both.
2. `decile_curves`: per scorer and strategy, the recall on activating examples of each decile and
   the specificity on non-activating ones (decile 0), averaged over explanations (each latent weighs
   the same); fuzzing's rejection of mis-marked activating windows is reported apart, per decile.
3. `spearman_matrix`: Spearman's rho between every two scorers over the explanations both scored,
   with the number n and a 95% CI (Fisher z with the Bonett-Wright variance, or bootstrap).
4. `unit_comparison`: per scorer, SAE latents vs MLP neurons vs top-k neurons vs random latents.
An analysis with fewer scored latents than it needs raises `NotEnoughScores` saying both numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from core.errors import UserError
from core.progress import Progress

# Fewest latents (explanations with an ok score) an analysis needs: below this its numbers mean little.
MIN_LATENTS = {"distributions": 5, "deciles": 5, "spearman": 10, "units": 5}
BOOTSTRAP = 1000
SEED = 0
STRATEGY_ORDER = ("top", "random", "quantile")
BASELINE_GROUPS = ("random-explanation", "random-latent")
UNIT_GROUPS = ("latents", "neurons", "top-k neurons", "random latents")


class NotEnoughScores(UserError):
    """An analysis was asked of a workspace with too few scored latents."""

    def __init__(self, analysis: str, have: int, need: int, detail: str = "") -> None:
        self.have, self.need = have, need
        super().__init__(
            f"{analysis} needs at least {need} scored latents{detail}; the workspace has {have}. "
            "Explain and score more latents first (`python -m core explain --workspace W ...`)."
        )


def to_json(result) -> dict:
    """A result dataclass as plain JSON (numpy scalars and arrays converted, NaN as None)."""

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.ndarray):
            return clean(v.tolist())
        if isinstance(v, np.integer | np.bool_):
            return v.item()
        if isinstance(v, float | np.floating):
            return None if math.isnan(v) else float(v)
        return v

    return clean(asdict(result))


# ---------------------------------------------------------------------------------------------
# Statistics


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values: [n]` (NaN, NaN when n < 2); deterministic for a `seed`."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return math.nan, math.nan
    ci = bootstrap(
        (v,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks of `x: [n]` from 1, ties sharing their average rank."""
    from scipy.stats import rankdata

    return rankdata(x)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of paired samples `x, y: [n]` (average ranks for ties); NaN when either is constant."""
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(x, y).statistic)


def fisher_ci(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """CI of Spearman's rho from n pairs: Fisher z with the Bonett-Wright (2000) variance (1 + rho^2/2) / (n - 3)."""
    if n < 4 or math.isnan(rho):
        return math.nan, math.nan
    from scipy.stats import norm

    r = min(max(rho, -0.999999), 0.999999)
    se = math.sqrt((1 + r * r / 2) / (n - 3))
    z, q = math.atanh(r), float(norm.ppf((1 + level) / 2))
    return math.tanh(z - q * se), math.tanh(z + q * se)


def bootstrap_spearman_ci(
    x: np.ndarray, y: np.ndarray, n_boot: int = BOOTSTRAP, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of Spearman's rho over resampled pairs of `x, y: [n]`.

    Resampled by hand rather than with `scipy.stats.bootstrap`: a resample whose x or y is constant
    has no rho, and scipy's CI is then NaN, whereas this one leaves such resamples out.
    """
    n = len(x)
    if n < 4:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rhos = np.array([spearman(x[i], y[i]) for i in rng.integers(0, n, size=(n_boot, n))])
    rhos = rhos[~np.isnan(rhos)]
    if len(rhos) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(rhos, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------
# Grouping


def unit_group(dictionary: str, baseline: str | None) -> str:
    """'latents' | 'neurons' | 'top-k neurons' | 'random latents' for a score's dictionary id and baseline kind."""
    if baseline == "random-latent":
        return "random latents"
    kind = dictionary.split(":", 1)[0]
    if kind == "neurons":
        return "neurons"
    if kind.startswith("neurons_topk"):
        return "top-k neurons"
    return "latents"


def explanation_group(strategy: str, baseline: str | None) -> str:
    """The strategy of a real explanation, or the baseline kind of a baseline one."""
    return baseline if isinstance(baseline, str) and baseline else strategy


def _scorer_keys(frame: pd.DataFrame) -> pd.Series:
    """'scorer' where one scorer model made all of a scorer's rows, else 'scorer (model)'."""
    n_models = frame.groupby("scorer")["scorer_model"].transform("nunique")
    return frame["scorer"].where(n_models <= 1, frame["scorer"] + " (" + frame["scorer_model"] + ")")


def _ok(scores: pd.DataFrame) -> pd.DataFrame:
    out = scores
    if "status" in out:
        out = out[out["status"] == "ok"]
    return out[out["value"].notna()].copy()


def _order(groups) -> list[str]:
    known = list(STRATEGY_ORDER) + list(BASELINE_GROUPS)
    return sorted(groups, key=lambda g: (known.index(g) if g in known else len(known), g))


def _latent_count(frame: pd.DataFrame) -> int:
    return int(frame[["dictionary", "latent"]].drop_duplicates().shape[0]) if len(frame) else 0


# ---------------------------------------------------------------------------------------------
# 1. Score distributions per strategy, with baselines


@dataclass
class GroupSummary:
    """Summary of one scorer's values in one group (a strategy or a baseline)."""

    scorer: str
    group: str
    is_baseline: bool
    n: int
    mean: float
    ci_low: float
    ci_high: float
    median: float
    q25: float
    q75: float
    values: list[float]


@dataclass
class Contrast:
    """Difference `group - reference` of one scorer's mean values, with a bootstrap CI and a test's p-value.

    `p_value` is the Wilcoxon signed-rank p of the paired differences in `Distributions` (strategies
    over the same latents) and the Mann-Whitney U p of the two unpaired samples in `UnitComparison`.
    Results stored before the rename hold it under the key `wilcoxon_p` (see `from_json`).
    """

    scorer: str
    group: str
    reference: str
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass
class Distributions:
    """Score distributions per scorer and group, and strategy contrasts."""

    groups: list[GroupSummary]
    contrasts: list[Contrast]
    n_latents: int
    units: str  # which dictionaries' latents were included


def summarise(scorer: str, group: str, values: np.ndarray) -> GroupSummary:
    """Mean (bootstrap 95% CI), median and quartiles of `values: [n]`."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_mean_ci(v)
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75]) if len(v) else (math.nan,) * 3
    return GroupSummary(
        scorer,
        group,
        group in BASELINE_GROUPS,
        len(v),
        float(v.mean()) if len(v) else math.nan,
        lo,
        hi,
        float(med),
        float(q25),
        float(q75),
        v.tolist(),
    )


def score_distributions(
    scores: pd.DataFrame, units: str = "latents", min_latents: int = MIN_LATENTS["distributions"]
) -> Distributions:
    """Per scorer: summaries of every strategy's and baseline's values over `units` ('latents' = SAE dictionaries, or a unit group), and contrasts.

    Random-latent baseline rows are always included (they are their own unit group). Contrasts pair
    each non-'top' strategy with 'top' by (dictionary, latent, explainer) and report the mean
    difference with a bootstrap CI and the Wilcoxon signed-rank p-value.
    """
    from scipy.stats import wilcoxon

    s = _ok(scores)
    s["unit"] = [unit_group(d, b) for d, b in zip(s["dictionary"], s["baseline"], strict=True)]
    s = s[(s["unit"] == units) | (s["baseline"] == "random-latent")]
    s["group"] = [explanation_group(st, b) for st, b in zip(s["strategy"], s["baseline"], strict=True)]
    s["scorer_key"] = _scorer_keys(s) if len(s) else []
    real = s[s["baseline"].isna()]
    n = _latent_count(real)
    if n < min_latents:
        raise NotEnoughScores("score distributions", n, min_latents, f" ({units})")
    groups, contrasts = [], []
    for scorer in sorted(s["scorer_key"].unique()):
        per = s[s["scorer_key"] == scorer]
        for group in _order(per["group"].unique()):
            groups.append(summarise(scorer, group, per.loc[per["group"] == group, "value"].to_numpy()))
        r = per[per["baseline"].isna()]
        wide = r.pivot_table(
            index=["dictionary", "latent", "explainer"], columns="strategy", values="value", aggfunc="mean"
        )
        if "top" in wide:
            for group in _order(c for c in wide.columns if c != "top"):
                pair = wide[["top", group]].dropna()
                diff = (pair[group] - pair["top"]).to_numpy()
                if len(diff) == 0:
                    continue
                lo, hi = bootstrap_mean_ci(diff)
                p = float(wilcoxon(diff).pvalue) if len(diff) >= 2 and np.any(diff != 0) else math.nan
                contrasts.append(Contrast(scorer, group, "top", len(diff), float(diff.mean()), lo, hi, p))
    return Distributions(groups, contrasts, n, units)


# ---------------------------------------------------------------------------------------------
# 2. Decile curves


@dataclass
class DecileCurve:
    """Accuracy per decile for one scorer and group: index 0 = specificity on non-activating examples,
    1..10 = recall on activating examples of that activation decile (10 the highest).

    `mismarked_rejection` (fuzzing only, else all NaN): per decile 1..10, the share of activating
    windows shown with wrong marks (truth 0) that the scorer rejected; kept out of `accuracy`.
    """

    scorer: str
    group: str
    accuracy: list[float]  # [11], NaN where no example
    ci_low: list[float]
    ci_high: list[float]
    n_examples: list[int]
    n_explanations: list[int]
    mismarked_rejection: list[float] = field(default_factory=lambda: [math.nan] * 11)  # [11], index 0 NaN
    n_mismarked: list[int] = field(default_factory=lambda: [0] * 11)


@dataclass
class Deciles:
    """Decile curves of every yes/no scorer; scorers with continuous predictions are listed as skipped."""

    curves: list[DecileCurve]
    skipped_scorers: list[str]
    n_latents: int
    units: str


def _is_binary(pred: np.ndarray) -> bool:
    return bool(np.isin(pred, (0.0, 1.0)).all())


def _per_decile_means(per: pd.DataFrame) -> tuple[list[float], list[float], list[float], list[int], list[int]]:
    """(mean over explanations, CI low, CI high, examples, explanations) per decile 0..10 of per-score means."""
    by_decile = {int(d): rows for d, rows in per.groupby("decile")}
    acc, lo, hi, n_ex, n_expl = [], [], [], [], []
    for d in range(11):
        rows = by_decile.get(d)
        vals = rows["mean"].to_numpy() if rows is not None else np.zeros(0)
        acc.append(float(vals.mean()) if len(vals) else math.nan)
        ci = bootstrap_mean_ci(vals)
        lo.append(ci[0])
        hi.append(ci[1])
        n_ex.append(int(rows["size"].sum()) if rows is not None else 0)
        n_expl.append(len(vals))
    return acc, lo, hi, n_ex, n_expl


def decile_curves(examples: pd.DataFrame, units: str = "latents", min_latents: int = MIN_LATENTS["deciles"]) -> Deciles:
    """Per scorer and group: the mean over explanations of each explanation's accuracy within each decile.

    A decile's accuracy means one thing for every scorer: in deciles 1..10 the recall (the share of
    activating examples of that decile, truth 1, predicted yes), in decile 0 the specificity (the
    share of non-activating examples, truth 0, predicted no). Fuzzing also shows activating windows
    with wrong marks (truth 0, half of them): the share of those rejected is reported apart, per
    decile, as `mismarked_rejection`, rather than mixed into the recall. Examples without a
    prediction are left out, as are non-activating examples with truth 1 (none for yes/no scorers).
    """
    x = examples[examples["prediction"].notna()].copy()
    x["unit"] = [unit_group(d, b) for d, b in zip(x["dictionary"], x["baseline"], strict=True)]
    x = x[x["unit"] == units]
    n = _latent_count(x[x["baseline"].isna()])
    if n < min_latents:
        raise NotEnoughScores("decile curves", n, min_latents, f" ({units}) with per-example scores")
    x["group"] = [explanation_group(st, b) for st, b in zip(x["strategy"], x["baseline"], strict=True)]
    x["scorer_key"] = _scorer_keys(x)
    x["correct"] = ((x["prediction"] >= 0.5) == (x["truth"] >= 0.5)).astype(np.float64)
    activating, positive = x["decile"] > 0, x["truth"] >= 0.5
    x["measure"] = np.select([activating == positive, activating & ~positive], ["curve", "mismarked"], default="other")
    curves, skipped = [], []
    # One accuracy per (scorer, group, measure, decile, explanation's score), then summarised per decile.
    per_score = (
        x.groupby(["scorer_key", "group", "measure", "decile", "score_id"], observed=True)["correct"]
        .agg(["mean", "size"])
        .reset_index()
    )
    binary = x.groupby("scorer_key")["prediction"].agg(lambda p: _is_binary(p.to_numpy()))
    for scorer in sorted(x["scorer_key"].unique()):
        if not binary[scorer]:
            skipped.append(scorer)
            continue
        per = per_score[per_score["scorer_key"] == scorer]
        for group in _order(per["group"].unique()):
            mine = per[per["group"] == group]
            acc, lo, hi, n_ex, n_expl = _per_decile_means(mine[mine["measure"] == "curve"])
            rej, _, _, n_mis, _ = _per_decile_means(mine[mine["measure"] == "mismarked"])
            curves.append(DecileCurve(scorer, group, acc, lo, hi, n_ex, n_expl, rej, n_mis))
    return Deciles(curves, skipped, n, units)


# ---------------------------------------------------------------------------------------------
# 3. Scorer agreement


@dataclass
class SpearmanMatrix:
    """Spearman's rho `[s, s]` between scorers with 95% CI bounds and the number of explanations n per pair."""

    scorers: list[str]
    rho: list[list[float]]
    ci_low: list[list[float]]
    ci_high: list[list[float]]
    n: list[list[int]]
    ci_method: str
    n_latents: int
    units: str


def spearman_matrix(
    scores: pd.DataFrame, units: str = "latents", ci: str = "fisher", min_latents: int = MIN_LATENTS["spearman"]
) -> SpearmanMatrix:
    """Spearman's rho between every two scorers over the real explanations (baselines excluded) both scored.

    `ci` is 'fisher' (Fisher z, Bonett-Wright variance) or 'bootstrap'. n counts explanations (a
    latent explained with several strategies counts once per explanation); pairs whose common
    explanations cover fewer than `min_latents` distinct latents get NaN, and if no pair has that
    many, NotEnoughScores.
    """
    s = _ok(scores)
    s = s[s["baseline"].isna()]
    s = s[[unit_group(d, None) == units for d in s["dictionary"]]]
    if len(s) == 0:
        raise NotEnoughScores("the Spearman matrix", 0, min_latents, f" ({units}) scored by two scorers")
    s = s.assign(scorer_key=_scorer_keys(s))
    wide = s.pivot_table(index="explanation_id", columns="scorer_key", values="value", aggfunc="mean")
    lat_of = s.drop_duplicates("explanation_id").set_index("explanation_id")[["dictionary", "latent"]]
    keys = sorted(wide.columns)
    k = len(keys)
    rho = np.full((k, k), math.nan)
    lo, hi = rho.copy(), rho.copy()
    n = np.zeros((k, k), dtype=int)
    best = 0
    for i in range(k):
        for j in range(k):
            pair = wide[[keys[i], keys[j]]].dropna() if i != j else wide[[keys[i]]].dropna()
            n[i, j] = len(pair)
            if i == j:
                rho[i, j] = 1.0
                continue
            if j < i:
                rho[i, j], lo[i, j], hi[i, j] = rho[j, i], lo[j, i], hi[j, i]
                continue
            n_lat = lat_of.loc[pair.index].drop_duplicates().shape[0]
            best = max(best, n_lat)
            if n_lat < min_latents:
                continue
            x, y = pair[keys[i]].to_numpy(), pair[keys[j]].to_numpy()
            rho[i, j] = spearman(x, y)
            lo[i, j], hi[i, j] = fisher_ci(rho[i, j], len(x)) if ci == "fisher" else bootstrap_spearman_ci(x, y)
    if best < min_latents:
        raise NotEnoughScores("the Spearman matrix", best, min_latents, f" ({units}) scored by the same two scorers")
    return SpearmanMatrix(keys, rho.tolist(), lo.tolist(), hi.tolist(), n.tolist(), ci, _latent_count(s), units)


# ---------------------------------------------------------------------------------------------
# 4. Latents vs neurons vs top-k neurons vs random latents


@dataclass
class UnitComparison:
    """Per scorer: a summary of each unit group, and the difference of latents from each other group."""

    groups: list[GroupSummary]  # `group` holds the unit group
    contrasts: list[Contrast]  # unpaired: mean difference latents - group, bootstrap CI, Mann-Whitney p in `p_value`
    n_latents: dict[str, int] = field(default_factory=dict)
    strategy: str = "top"  # the one sampling strategy compared, so every group is explained the same way


def unit_comparison(scores: pd.DataFrame, min_latents: int = MIN_LATENTS["units"]) -> UnitComparison:
    """Scores of real explanations of SAE latents, MLP neurons, top-k neurons, and random latents, per scorer.

    Only explanations of one sampling strategy are compared ('top' when the latents and another
    group have it, else the strategy most rows share), so every group is explained the same way.
    Random-explanation baseline rows are left out (they measure the scorer, not the units). Needs
    `min_latents` scored SAE latents and at least one other group.
    """
    from scipy.stats import mannwhitneyu

    s = _ok(scores)
    s = s[s["baseline"].isna() | (s["baseline"] == "random-latent")]
    s = s.assign(unit=[unit_group(d, b) for d, b in zip(s["dictionary"], s["baseline"], strict=True)])
    shared = [
        st
        for st in s.loc[s["unit"] == "latents", "strategy"].unique()
        if (s.loc[s["unit"] != "latents", "strategy"] == st).any()
    ]
    strategy = (
        "top"
        if "top" in shared
        else (s[s["strategy"].isin(shared)]["strategy"].value_counts().index[0] if shared else "top")
    )
    s = s[s["strategy"] == strategy]
    counts = {g: _latent_count(s[s["unit"] == g]) for g in UNIT_GROUPS}
    if counts["latents"] < min_latents:
        raise NotEnoughScores("latents vs neurons", counts["latents"], min_latents, " of SAE dictionaries")
    others = [g for g in UNIT_GROUPS[1:] if counts[g]]
    if not others:
        raise NotEnoughScores("latents vs neurons", 0, 1, " of neurons, top-k neurons or random latents")
    s = s.assign(scorer_key=_scorer_keys(s))
    groups, contrasts = [], []
    rng = np.random.default_rng(SEED)
    for scorer in sorted(s["scorer_key"].unique()):
        per = s[s["scorer_key"] == scorer]
        lat = per.loc[per["unit"] == "latents", "value"].to_numpy()
        for g in UNIT_GROUPS:
            v = per.loc[per["unit"] == g, "value"].to_numpy()
            if len(v) == 0:
                continue
            groups.append(summarise(scorer, g, v))
            if g == "latents" or len(lat) == 0:
                continue
            # By hand: scipy.stats.bootstrap refuses a sample of one (one latent or neuron scored).
            boots = lat[rng.integers(0, len(lat), (BOOTSTRAP, len(lat)))].mean(1) - v[
                rng.integers(0, len(v), (BOOTSTRAP, len(v)))
            ].mean(1)
            lo, hi = np.quantile(boots, [0.025, 0.975])
            p = float(mannwhitneyu(lat, v).pvalue) if len(lat) > 1 and len(v) > 1 else math.nan
            contrasts.append(
                Contrast(
                    scorer, "latents", g, min(len(lat), len(v)), float(lat.mean() - v.mean()), float(lo), float(hi), p
                )
            )
    return UnitComparison(groups, contrasts, counts, strategy)


# ---------------------------------------------------------------------------------------------
# Provenance: who made the rows an analysis summarises


@dataclass
class Provenance:
    """Who made the rows the report summarises."""

    explainers: dict[str, bool]  # explainer -> is a baseline explainer
    scorer_models: dict[str, list[str]]  # scorer -> scorer models
    n_scores: int
    n_latents: int
    model: str

    @property
    def offline_baselines(self) -> bool:
        """True when every explainer is a baseline and every scorer model an offline judge (no LLM was used)."""
        models = [m for ms in self.scorer_models.values() for m in ms]
        return all(self.explainers.values()) and all(
            not m or m.startswith("judge:") or "minilm" in m.lower() for m in models
        )


def provenance(workspace) -> Provenance:
    """Explainers, scorer models and counts of the workspace's ok scores of real explanations (counted in SQL)."""
    from core import store
    from core.store.analyses import real_score_summary

    explainers, models, n_scores, n_latents = real_score_summary(workspace)
    with store.session(workspace) as con:
        model = (store.get_info(con, "model") or {}).get("name", "?")
    scorer_models: dict[str, list[str]] = {}
    for scorer, scorer_model in sorted(models):
        scorer_models.setdefault(scorer, []).append(scorer_model)
    return Provenance({e: bool(b) for e, b in sorted(explainers)}, scorer_models, n_scores, n_latents, model)


# ---------------------------------------------------------------------------------------------
# Workspace: compute, store, load

ANALYSES = ("distributions", "deciles", "spearman", "units")
_RESULT_TYPES = {
    "distributions": Distributions,
    "deciles": Deciles,
    "spearman": SpearmanMatrix,
    "units": UnitComparison,
}


def inputs_fingerprint(scores: pd.DataFrame) -> str:
    """A hash of the ok scores a result was computed from (score ids and values), to tell when it is stale."""
    s = _ok(scores)
    return _fingerprint(s["score_id"], s["value"])


def _fingerprint(score_ids, values) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    h.update("".join(f"{sid}={v:.12g};" for sid, v in sorted(zip(score_ids, values, strict=True))).encode())
    return h.hexdigest()


def workspace_fingerprint(workspace) -> str:
    """`inputs_fingerprint` of the workspace's scores, read with one narrow query (score ids and values of ok scores)."""
    from core.store.analyses import ok_score_values

    s = ok_score_values(workspace)
    return _fingerprint(s["score_id"].tolist(), s["value"].to_numpy("float64").tolist())


def compute(name: str, scores: pd.DataFrame, examples: pd.DataFrame | None = None, units: str = "latents"):
    """Run analysis `name` (one of ANALYSES) on score frames; NotEnoughScores if the frames hold too few latents."""
    if name == "distributions":
        return score_distributions(scores, units)
    if name == "deciles":
        if examples is None:
            raise ValueError("decile curves need the per-example frame")
        return decile_curves(examples, units)
    if name == "spearman":
        return spearman_matrix(scores, units)
    if name == "units":
        return unit_comparison(scores)
    raise ValueError(f"unknown analysis {name!r}; choose from {', '.join(ANALYSES)}")


def _n_latents(result) -> int:
    n = result.n_latents
    return int(n["latents"]) if isinstance(n, dict) else int(n)


def analyze_workspace(
    workspace, names: tuple[str, ...] = ANALYSES, units: str = "latents", progress: Progress | None = None
) -> dict[str, object]:
    """Compute the named analyses from the workspace's scores and store each; returns name -> result or the NotEnoughScores raised.

    When any analysis was stored, also stores the delphi conventions table
    (`core.autointerp.delphi_metrics.store_conventions`), which the Scores page then reads instead of computing.

    `progress("analyses", done, total)` (core.progress) is called before each analysis and at the end.
    """
    from core import store

    scores = store.scores_frame(workspace, status=None)
    fp = inputs_fingerprint(scores)
    examples = store.score_examples_frame(workspace) if "deciles" in names else None
    out: dict[str, object] = {}
    for i, name in enumerate(names):
        if progress:
            progress("analyses", i, len(names))
        try:
            result = compute(name, scores, examples, units)
        except NotEnoughScores as exc:
            out[name] = exc
            continue
        store.write_analysis(
            workspace,
            store.AnalysisRecord(
                name,
                "all" if name == "units" else units,
                {"bootstrap": BOOTSTRAP, "seed": SEED, "min_latents": MIN_LATENTS[name]},
                to_json(result),
                _n_latents(result),
                fp,
            ),
        )
        out[name] = result
    if any(not isinstance(r, NotEnoughScores) for r in out.values()):  # stored analyses: the table goes with them
        from core.autointerp.delphi_metrics import store_conventions

        store_conventions(workspace)  # the Scores page's "ours vs delphi" table, from the same scores
    if progress:
        progress("analyses", len(names), len(names))
    return out


_CONTRAST_KEYS = {"wilcoxon_p": "p_value"}  # old stored key -> `Contrast` field


def from_json(name: str, data: dict):
    """Rebuild a stored result (see `to_json`) as its dataclass; None in float fields becomes NaN."""

    def nan(v):
        if isinstance(v, list):
            return [nan(x) for x in v]
        return math.nan if v is None else v

    if name in ("distributions", "units"):
        groups = [GroupSummary(**{k: nan(v) for k, v in g.items()}) for g in data["groups"]]
        contrasts = [Contrast(**{_CONTRAST_KEYS.get(k, k): nan(v) for k, v in c.items()}) for c in data["contrasts"]]
        if name == "units":
            return UnitComparison(groups, contrasts, data["n_latents"], data.get("strategy", "top"))
        return Distributions(groups, contrasts, data["n_latents"], data["units"])
    if name == "deciles":
        curves = [DecileCurve(**{k: nan(v) for k, v in c.items()}) for c in data["curves"]]
        return Deciles(curves, data["skipped_scorers"], data["n_latents"], data["units"])
    if name == "spearman":
        return SpearmanMatrix(**{k: nan(v) if k in ("rho", "ci_low", "ci_high") else v for k, v in data.items()})
    raise ValueError(f"unknown analysis {name!r}")


@dataclass
class StoredResult:
    """A stored analysis as its dataclass, with when it was computed and whether the scores changed since."""

    name: str
    units: str
    result: object
    created_at: object
    stale: bool


def load_results(workspace, units: str = "latents") -> dict[str, StoredResult]:
    """The stored analyses of a workspace by name (those never computed are absent); `stale` if the scores changed since."""
    from core import store

    records = store.read_analyses(workspace)
    if not records:
        return {}
    fp = workspace_fingerprint(workspace)
    out = {}
    for r in records:
        if r.units in (units, "all") and r.name in _RESULT_TYPES:
            out[r.name] = StoredResult(r.name, r.units, from_json(r.name, r.result), r.created_at, r.inputs != fp)
    return out
