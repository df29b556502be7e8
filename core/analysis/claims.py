"""The seed paper's claims next to our numbers, each with a verdict computed by a fixed rule.

`claims(results, overlaps, provenance)` builds the table row by row: (1) sampling strategies, (2) accuracy
per decile, (3) scorer agreement, (4/5) latents vs neurons and random latents, explanations vs random
explanations, (6) adjacent-layer overlap, and the explainer-size claim that is not measurable offline.
A difference is confirmed when its 95% CI excludes 0 in the paper's direction, not confirmed when it
excludes 0 the other way, inconclusive otherwise; several differences combine with `_combine`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from core import store
from core.analysis import analyses as an

Rho = tuple[float, float, float, int]  # (rho, ci_low, ci_high, n) of one scorer pair
KINDS = ("resid", "attn", "transcoder", "mlp")


@dataclass
class Claim:
    """One claim of the seed paper, the paper's number, ours, and the verdict."""

    claim: str
    paper: str
    ours: str
    verdict: str  # confirmed | not confirmed | inconclusive | not measurable here
    note: str = ""


def fmt(v: float, digits: int = 3) -> str:
    """`v` with `digits` decimals; "–" for None or NaN."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def fmt_ci(lo: float, hi: float) -> str:
    """A confidence interval as "[lo, hi]"."""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _with_caveat(note: str, caveat: str) -> str:
    return note + (f"; {caveat}" if caveat else "")


def _contrast(dist: an.Distributions | None, scorer: str, group: str) -> an.Contrast | None:
    if dist is None:
        return None
    return next((c for c in dist.contrasts if c.scorer == scorer and c.group == group), None)


def _ci_verdict(lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    return "confirmed" if lo > 0 else "not confirmed" if hi < 0 else "inconclusive"


def agreement_verdict(fd: Rho, others: list[tuple[tuple[str, str], Rho]]) -> tuple[str, str, str]:
    """Verdict on "fuzzing and detection agree, the highest correlation among scorers": (verdict, ours, note).

    `fd` and each of `others` are (rho, ci_low, ci_high, n). Confirmed when fd's CI excludes 0 and no
    other pair's CI lies wholly above fd's; not confirmed when fd's CI includes or is below 0 with
    another pair clearly higher, or another pair's CI lies wholly above fd's; else inconclusive."""
    ours = f"{fmt(fd[0], 2)} {fmt_ci(fd[1], fd[2])}, n={fd[3]}"
    if not others:
        return _ci_verdict(fd[1], fd[2]), ours, "no other scorer pair to compare with"
    (a, b), best = max(others, key=lambda o: o[1][0])
    ours += f"; highest other pair {a}–{b} {fmt(best[0], 2)} {fmt_ci(best[1], best[2])}"
    if best[1] > fd[2]:
        return "not confirmed", ours, f"{a}–{b} agree more than fuzzing–detection"
    positive = _ci_verdict(fd[1], fd[2])
    if positive != "confirmed":
        return positive, ours, ""
    if fd[0] >= best[0]:
        return "confirmed", ours, ""
    return "inconclusive", ours, f"{a}–{b} is higher, but their intervals overlap"


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return "not measurable here"
    if all(v == "confirmed" for v in verdicts):
        return "confirmed"
    if any(v == "not confirmed" for v in verdicts):
        return "not confirmed"
    return "inconclusive"


def _main_scorers(keys: Iterable[str]) -> list[str]:
    return [k for k in ("detection", "fuzzing") if k in keys] or sorted(keys)[:2]


def claims(results: dict, overlaps: list[store.OverlapRecord], prov: an.Provenance) -> list[Claim]:
    """The seed paper's claims with our numbers and a verdict computed from the stored results (rules in each helper)."""
    caveat = "offline baselines (see above)" if prov.offline_baselines else ""
    dist = results.get("distributions")
    out = [_sampling_claim(dist, caveat), _decile_claim(results.get("deciles"), caveat)]
    out += _agreement_claims(results.get("spearman"), caveat)
    out += _unit_claims(results.get("units"), caveat)
    if dist is not None:
        out.append(_random_explanation_claim(dist, caveat))
    out += [_overlap_claim(overlaps, similarity, paper, caveat) for similarity, paper in _OVERLAP_PAPER]
    out.append(
        Claim(
            "Larger explainer models give better explanations (Llama 70b ≈ Claude Sonnet 3.5)",
            "Sec. 4",
            "–",
            "not measurable here",
            "no LLM explainer is available offline; with an API key, `python -m core explain --model MODEL` makes it measurable",
        )
    )
    return out


# 1. Sampling: random/quantile beat top (paired over latents explained both ways; CI of the mean difference).
def _sampling_claim(dist: an.Distributions | None, caveat: str) -> Claim:
    if dist is None or not dist.contrasts:
        return Claim(
            "Sampling from the whole activation range gives better explanations than top activations",
            "Fig. 3a,b",
            "–",
            "not measurable here",
            "fewer than two sampling strategies scored on the same latents",
        )
    parts, verdicts = [], []
    for scorer in _main_scorers({c.scorer for c in dist.contrasts}):
        for g in ("random", "quantile"):
            c = _contrast(dist, scorer, g)
            if c is not None:
                parts.append(f"{scorer} {g}−top {fmt(c.mean_difference)} {fmt_ci(c.ci_low, c.ci_high)} (n={c.n})")
                verdicts.append(_ci_verdict(c.ci_low, c.ci_high))
    return Claim(
        "Sampling from the whole activation range (random, quantile) gives better explanations than top activations",
        "higher median fuzzing and detection for random/quantile than top (Fig. 3a,b)",
        "; ".join(parts) or "–",
        _combine(verdicts),
        caveat,
    )


# 2. Deciles: top-sampled explanations are best on non-activating examples and fall most on low deciles.
def _decile_claim(dec: an.Deciles | None, caveat: str) -> Claim:
    curves = {} if dec is None else {(c.scorer, c.group): c for c in dec.curves}
    scorer = next((s for s in ("detection", "fuzzing") if (s, "top") in curves), None)
    if scorer is None or not any((scorer, g) in curves for g in ("random", "quantile")):
        return Claim(
            "Top-sampled explanations are best on non-activating examples but lose most on low deciles",
            "Fig. 3c,d",
            "–",
            "not measurable here",
            "needs a yes/no scorer's per-example results for 'top' and another strategy",
        )
    top = curves[(scorer, "top")]
    others = [curves[(scorer, g)] for g in ("random", "quantile") if (scorer, g) in curves]
    drop = lambda c: c.accuracy[10] - c.accuracy[1]  # noqa: E731
    best_non_act = all(top.accuracy[0] >= o.accuracy[0] for o in others)
    steeper = all(drop(top) > drop(o) for o in others)
    ours = f"{scorer}: non-activating top {fmt(top.accuracy[0])} vs " + ", ".join(
        f"{o.group} {fmt(o.accuracy[0])}" for o in others
    )
    ours += f"; decile 10 − decile 1: top {fmt(drop(top))} vs " + ", ".join(f"{o.group} {fmt(drop(o))}" for o in others)
    return Claim(
        "Top-sampled explanations are best on non-activating examples but lose most accuracy on low deciles",
        "Fig. 3c,d (detection)",
        ours,
        "confirmed" if best_non_act and steeper else "not confirmed",
        _with_caveat("point estimates (per-decile 95% CIs are in the decile table)", caveat),
    )


# 3. Scorer agreement.
def _rho(sp: an.SpearmanMatrix, a: str, b: str) -> Rho | None:
    """(rho, ci_low, ci_high, n) of scorers `a` and `b` in the Spearman matrix, None if either is missing."""
    idx = {s: i for i, s in enumerate(sp.scorers)}
    if a in idx and b in idx:
        i, j = idx[a], idx[b]
        return sp.rho[i][j], sp.ci_low[i][j], sp.ci_high[i][j], sp.n[i][j]
    return None


def _agreement_claims(sp: an.SpearmanMatrix | None, caveat: str) -> list[Claim]:
    if sp is None:
        return [
            Claim(
                "Scorers agree (fuzzing–detection 0.73, embedding lowest)",
                "Table 1",
                "–",
                "not measurable here",
                "fewer latents scored by two scorers than the Spearman matrix needs",
            )
        ]
    scorers = set(sp.scorers)
    out = []
    fd = _rho(sp, "fuzzing", "detection")
    if fd is not None and not math.isnan(fd[0]):
        out.append(_fuzzing_detection_claim(sp, fd, caveat))
    if "simulation" in scorers and "fuzzing" in scorers:
        fs = _rho(sp, "fuzzing", "simulation")
        out.append(
            Claim(
                "Fuzzing correlates with simulation",
                "0.70 (Table 1)",
                f"{fmt(fs[0], 2)} {fmt_ci(fs[1], fs[2])}, n={fs[3]}",
                _ci_verdict(fs[1], fs[2]),
                caveat,
            )
        )
    if "embedding" in scorers and len(scorers) > 2:
        out.append(_embedding_claim(sp, caveat))
    if "intervention" in scorers and "fuzzing" in scorers:
        fi = _rho(sp, "intervention", "fuzzing")
        out.append(
            Claim(
                "Intervention scores are negatively correlated with fuzzing (they find output features context methods miss)",
                "r = −0.37 (Fig. 4 right)",
                f"Spearman {fmt(fi[0], 2)} {fmt_ci(fi[1], fi[2])}, n={fi[3]}",
                _ci_verdict(-fi[2], -fi[1]) if not math.isnan(fi[0]) else "inconclusive",
                caveat,
            )
        )
    return out


def _fuzzing_detection_claim(sp: an.SpearmanMatrix, fd: Rho, caveat: str) -> Claim:
    """Fuzzing–detection against every other scorer pair (see `agreement_verdict`)."""
    pairs = [(a, b) for a in sp.scorers for b in sp.scorers if a < b and {a, b} != {"fuzzing", "detection"}]
    others = [(p, _rho(sp, *p)) for p in pairs if not math.isnan(_rho(sp, *p)[0])]
    verdict, ours, note = agreement_verdict(fd, others)
    if caveat:
        note = "; ".join(x for x in (note, "both judged by the same embedding similarity here") if x)
    return Claim(
        "Fuzzing and detection scores agree (the highest correlation among scorers)",
        "Spearman 0.73 over 600 latents (Table 1)",
        ours,
        verdict,
        note,
    )


def _embedding_claim(sp: an.SpearmanMatrix, caveat: str) -> Claim:
    """Embedding has the lowest mean off-diagonal rho of all scorers."""
    idx = {s: i for i, s in enumerate(sp.scorers)}
    r = np.asarray(sp.rho, dtype=float)
    mean_off = {s: np.nanmean(np.delete(r[i], i)) for s, i in idx.items()}
    lowest = min(mean_off, key=lambda s: mean_off[s])
    return Claim(
        "Embedding scores agree least with the other scorers",
        "lowest correlations, e.g. 0.20 with surprisal (Table 1)",
        "mean ρ with the others: " + ", ".join(f"{s} {fmt(v, 2)}" for s, v in mean_off.items()),
        "confirmed" if lowest == "embedding" else "not confirmed",
        caveat,
    )


# 4/5. Latents vs neurons vs top-k neurons vs random latents; explanations vs random explanations.
_UNIT_CLAIMS = (
    ("neurons", "SAE latents are more interpretable than MLP neurons", "much more interpretable (abstract; Fig. 5)"),
    ("top-k neurons", "… even than top-k sparsified neurons", "still more interpretable (abstract)"),
    ("random latents", "Trained SAE latents score higher than random latents", "Fig. 4 left"),
)


def _unit_claims(units: an.UnitComparison | None, caveat: str) -> list[Claim]:
    if units is None or not units.contrasts:
        return [
            Claim(
                "SAE latents are more interpretable than neurons (even top-k)",
                "abstract; Fig. 5",
                "–",
                "not measurable here",
                "needs scored latents and scored neurons",
            )
        ]
    scorers = _main_scorers({c.scorer for c in units.contrasts})
    out = []
    for ref, claim, paper in _UNIT_CLAIMS:
        cs = [c for c in units.contrasts if c.reference == ref and c.scorer in scorers]
        if not cs:
            out.append(Claim(claim, paper, "–", "not measurable here", f"no scored {ref} in this workspace"))
            continue
        ours = "; ".join(f"{c.scorer} latents−{ref} {fmt(c.mean_difference)} {fmt_ci(c.ci_low, c.ci_high)}" for c in cs)
        note = "; ".join(x for x in (f"'{units.strategy}' explanations only", caveat) if x)
        out.append(Claim(claim, paper, ours, _combine([_ci_verdict(c.ci_low, c.ci_high) for c in cs]), note))
    return out


def _random_explanation_claim(dist: an.Distributions, caveat: str) -> Claim:
    """Each real strategy's mean against the random-explanation baseline's: confirmed when the CIs do not overlap."""
    parts, verdicts = [], []
    for scorer in _main_scorers({g.scorer for g in dist.groups}):
        base = next((g for g in dist.groups if g.scorer == scorer and g.group == "random-explanation"), None)
        real = [g for g in dist.groups if g.scorer == scorer and not g.is_baseline]
        if base is None or not real:
            continue
        for g in real:
            parts.append(
                f"{scorer} {g.group} {fmt(g.mean)} {fmt_ci(g.ci_low, g.ci_high)} vs random explanation {fmt(base.mean)} {fmt_ci(base.ci_low, base.ci_high)}"
            )
            verdicts.append(
                "confirmed"
                if g.ci_low > base.ci_high
                else "not confirmed"
                if g.ci_high < base.ci_low
                else "inconclusive"
            )
    return Claim(
        "Explanations score higher than random explanations (another latent's)",
        "Fig. 4 left; Fig. 3 baseline",
        "; ".join(parts) or "–",
        _combine(verdicts) if verdicts else "not measurable here",
        _with_caveat("CIs of the two means must not overlap", caveat),
    )


# 6. Layer overlap: adjacent residual SAEs overlap more than MLP dictionaries.
_OVERLAP_PAPER = (
    (
        "explanation",
        "higher semantic overlap for adjacent residual-stream SAEs than MLP SAEs (Sec. 4, Hungarian + Frobenius)",
    ),
    ("decoder", "(the paper compares explanations; decoder directions are our addition)"),
)


def _adjacent_overlap(overlaps: list[store.OverlapRecord], similarity: str) -> dict[str, float]:
    """Mean overlap of adjacent layers (|layer_b - layer_a| == 1) per dictionary kind that has any."""
    adj = {}
    for kind in KINDS:
        vals = [
            r.mean_similarity
            for r in overlaps
            if r.similarity == similarity and r.kind == kind and abs(r.layer_b - r.layer_a) == 1
        ]
        if vals:
            adj[kind] = float(np.mean(vals))
    return adj


def _overlap_claim(overlaps: list[store.OverlapRecord], similarity: str, paper: str, caveat: str) -> Claim:
    adj = _adjacent_overlap(overlaps, similarity)
    mlp_kind = "mlp" if "mlp" in adj else "transcoder"
    if "resid" not in adj or mlp_kind not in adj:
        return Claim(
            f"Adjacent residual-stream dictionaries overlap more than MLP ones ({similarity} similarity)",
            paper,
            "–",
            "not measurable here",
            "overlap not computed for residual and MLP dictionaries",
        )
    ours = ", ".join(f"{k} {fmt(v)}" for k, v in adj.items())
    chance = {
        r.params.get("chance") for r in overlaps if r.similarity == similarity and r.params.get("chance") is not None
    }
    if chance:
        ours += "; chance (random directions of the same shape) " + "/".join(fmt(c) for c in sorted(chance))
    note = "the default has MLP transcoders, not MLP-output SAEs" if mlp_kind == "transcoder" else ""
    if similarity == "explanation" and caveat:
        note = (note + "; explanations are token statistics, so this measures shared top tokens").strip("; ")
    return Claim(
        f"Adjacent residual-stream dictionaries overlap more than MLP ones ({similarity} similarity)",
        paper,
        f"mean adjacent-layer overlap: {ours}",
        "confirmed" if adj["resid"] > adj[mlp_kind] else "not confirmed",
        note,
    )


# ---------------------------------------------------------------------------------------------
# The same claims with neighbour negatives beside random ones


def negatives_of(params: str | None) -> str:
    """The `negatives` a score row was made with (its params JSON; rows from before the option: 'random+hard')."""
    import json

    return (json.loads(params) if params else {}).get("negatives", "random+hard")


def claims_by_negatives(workspace, kinds: tuple[str, ...], prompt_version: str | None = None) -> dict[str, list[Claim]]:
    """The claims table once per kind of non-activating examples (`kinds`, e.g. ('random+hard',
    'neighbours:cooccurrence')), each computed in memory from the scores made with that kind (nothing is stored).

    Only latents scored with every kind count (paired), and scorers that use no negatives (simulation, surprisal,
    intervention) enter every table alike. `prompt_version`: only explanations of that version (e.g. the current
    offline explainer's), so older rows in the workspace do not mix in."""
    import pandas as pd

    scores = store.scores_frame(workspace, status=None)
    examples = store.score_examples_frame(workspace)
    if prompt_version is not None:
        scores = scores[scores["explainer_prompt_version"] == prompt_version]
    scores = scores.assign(negatives=scores["params"].map(negatives_of))
    examples = examples[examples["score_id"].isin(scores["score_id"])]
    by_kind = {k: scores[scores["negatives"] == k] for k in kinds}
    shared = None
    for frame in by_kind.values():
        keys = set(zip(frame["dictionary"], frame["latent"], strict=True))
        shared = keys if shared is None else shared & keys
    shared = shared or set()
    neutral = scores[scores["negatives"] == kinds[0]]  # scorers without negatives carry the default kind

    def paired(frame):
        return frame[[(d, lat) in shared for d, lat in zip(frame["dictionary"], frame["latent"], strict=True)]]

    overlaps = store.read_overlaps(workspace)
    prov = an.provenance(workspace)
    out: dict[str, list[Claim]] = {}
    for kind, frame in by_kind.items():
        frame = paired(frame)
        if kind != kinds[0]:  # scorers without negatives: the same rows in every table
            frame = pd.concat(
                [frame, paired(neutral[~neutral["scorer"].isin(set(frame["scorer"]))])], ignore_index=True
            )
        ex = examples[examples["score_id"].isin(frame["score_id"])]
        results: dict = {}
        for name in an.ANALYSES:
            try:
                results[name] = an.compute(name, frame, ex)
            except an.NotEnoughScores:
                continue
        out[kind] = claims(results, overlaps, prov)
    return out


def verdict_moves(tables: dict[str, list[Claim]]) -> list[dict]:
    """Per claim: its verdict and our number under each kind of negatives, and whether the verdict moved."""
    kinds = list(tables)
    rows = []
    for i, c in enumerate(tables[kinds[0]]):
        row = {"claim": c.claim, "moved": False}
        for k in kinds:
            other = tables[k][i]
            row[k] = {"verdict": other.verdict, "ours": other.ours}
            row["moved"] |= other.verdict != c.verdict
        rows.append(row)
    return rows
