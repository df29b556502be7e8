"""Analysis math on synthetic scores with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.analysis import analyses as an


def _scores(rows: list[dict]) -> pd.DataFrame:
    base = {
        "explainer": "baseline:token-stats",
        "is_baseline": False,
        "baseline": None,
        "strategy": "top",
        "scorer_model": "judge:x",
        "status": "ok",
    }
    out = pd.DataFrame([{**base, **r} for r in rows])
    if "explanation_id" not in out:
        out["explanation_id"] = [
            f"{d}/{lat}/{s}/{b}"
            for d, lat, s, b in zip(out["dictionary"], out["latent"], out["strategy"], out["baseline"], strict=True)
        ]
    return out


def test_spearman_agrees_with_scipy_including_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 60).astype(float)  # many ties
    y = x + rng.normal(0, 2, 60)
    assert an.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert an.spearman(np.array([1, 2, 3, 4, 5.0]), np.array([5, 6, 7, 8, 7.0])) == pytest.approx(0.8207826816681233)
    assert an.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert an.spearman(x, -x) == pytest.approx(-1.0)


def test_spearman_ci_covers_the_known_population_value():
    # For a bivariate normal with Pearson r, Spearman's rho is (6/pi) asin(r/2).
    rng = np.random.default_rng(1)
    r = 0.6
    xy = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=3000)
    truth = 6 / math.pi * math.asin(r / 2)
    rho = an.spearman(xy[:, 0], xy[:, 1])
    lo, hi = an.fisher_ci(rho, 3000)
    assert lo < truth < hi
    assert hi - lo < 0.07
    blo, bhi = an.bootstrap_spearman_ci(xy[:500, 0], xy[:500, 1], n_boot=300)
    flo, fhi = an.fisher_ci(an.spearman(xy[:500, 0], xy[:500, 1]), 500)
    assert blo == pytest.approx(flo, abs=0.03) and bhi == pytest.approx(fhi, abs=0.03)  # two ways agree
    assert math.isnan(an.fisher_ci(0.5, 3)[0])


def test_spearman_matrix_pairs_scorers_on_common_explanations():
    rng = np.random.default_rng(2)
    rows = []
    for lat in range(40):
        v = rng.uniform()
        rows.append({"dictionary": "resid:blocks.0.hook_resid_pre", "latent": lat, "scorer": "detection", "value": v})
        rows.append({"dictionary": "resid:blocks.0.hook_resid_pre", "latent": lat, "scorer": "fuzzing", "value": v**3})
        if lat < 30:
            rows.append(
                {"dictionary": "resid:blocks.0.hook_resid_pre", "latent": lat, "scorer": "embedding", "value": -v}
            )
        # A baseline and a neuron row that must not enter the matrix.
        rows.append(
            {
                "dictionary": "resid:blocks.0.hook_resid_pre",
                "latent": lat,
                "scorer": "detection",
                "value": 0.5,
                "baseline": "random-explanation",
                "is_baseline": True,
            }
        )
        rows.append(
            {
                "dictionary": "neurons:blocks.0.mlp.hook_post",
                "latent": lat,
                "scorer": "detection",
                "value": rng.uniform(),
            }
        )
    m = an.spearman_matrix(_scores(rows))
    assert m.scorers == ["detection", "embedding", "fuzzing"]
    rho, n = np.array(m.rho), np.array(m.n)
    assert rho[0, 2] == pytest.approx(1.0) and rho[0, 1] == pytest.approx(-1.0) and rho[1, 2] == pytest.approx(-1.0)
    assert n[0, 2] == 40 and n[0, 1] == 30 and n[1, 1] == 30
    assert np.allclose(rho, rho.T)
    assert m.n_latents == 40
    with pytest.raises(an.NotEnoughScores, match="needs at least 50 .* has 40"):
        an.spearman_matrix(_scores(rows), min_latents=50)


def test_score_distributions_summaries_and_paired_contrasts():
    rows = []
    for lat in range(10):
        for strategy, v in (("top", 0.6), ("random", 0.7), ("quantile", 0.6 + 0.01 * lat)):
            rows.append(
                {
                    "dictionary": "attn:blocks.1.hook_attn_out",
                    "latent": lat,
                    "strategy": strategy,
                    "scorer": "detection",
                    "value": v,
                }
            )
        rows.append(
            {
                "dictionary": "attn:blocks.1.hook_attn_out",
                "latent": lat,
                "scorer": "detection",
                "value": 0.5,
                "baseline": "random-explanation",
                "is_baseline": True,
            }
        )
        rows.append(
            {
                "dictionary": "attn:blocks.1.hook_attn_out",
                "latent": 5000 + lat,
                "scorer": "detection",
                "value": 0.4,
                "baseline": "random-latent",
                "is_baseline": True,
            }
        )
    rows.append(
        {
            "dictionary": "attn:blocks.1.hook_attn_out",
            "latent": 99,
            "scorer": "detection",
            "value": 0.9,
            "status": "failed",
        }
    )
    d = an.score_distributions(_scores(rows))
    by = {g.group: g for g in d.groups}
    assert list(by) == ["top", "random", "quantile", "random-explanation", "random-latent"]
    assert by["top"].mean == pytest.approx(0.6) and by["random"].mean == pytest.approx(0.7) and by["top"].n == 10
    assert by["quantile"].median == pytest.approx(0.645) and by["quantile"].q25 == pytest.approx(0.6225)
    assert by["random-latent"].is_baseline and by["random-latent"].mean == pytest.approx(0.4)
    assert by["quantile"].ci_low < 0.645 < by["quantile"].ci_high
    c = {x.group: x for x in d.contrasts}
    assert c["random"].mean_difference == pytest.approx(0.1) and c["random"].n == 10
    assert c["quantile"].mean_difference == pytest.approx(0.045)
    assert d.n_latents == 10
    with pytest.raises(an.NotEnoughScores, match="has 10"):
        an.score_distributions(_scores(rows), min_latents=11)


def _examples(
    pattern: dict[int, bool], n_expl: int, strategy: str = "top", scorer: str = "detection", pred_scale: float = 1.0
) -> list[dict]:
    """Examples of `n_expl` explanations, 2 per decile; predictions correct exactly where pattern[decile]."""
    rows = []
    for e in range(n_expl):
        for d, correct in pattern.items():
            truth = 0.0 if d == 0 else 1.0
            for i in range(2):
                pred = truth if correct else 1.0 - truth
                rows.append(
                    {
                        "dictionary": "resid:blocks.2.hook_resid_pre",
                        "latent": e,
                        "baseline": None,
                        "strategy": strategy,
                        "scorer": scorer,
                        "scorer_model": "judge:x",
                        "score_id": f"{strategy}{scorer}{e}",
                        "example": 2 * d + i,
                        "decile": d,
                        "kind": "activating" if d else "random-negative",
                        "prediction": pred * pred_scale,
                        "truth": truth,
                    }
                )
    return rows


def test_decile_curves_recover_known_accuracy_pattern():
    top = {d: d == 0 or d >= 6 for d in range(11)}  # right on non-activating and the top half only
    rnd = dict.fromkeys(range(11), True)
    rows = (
        _examples(top, 6, "top")
        + _examples(rnd, 6, "random")
        + _examples(rnd, 6, "top", scorer="embedding", pred_scale=0.7)
    )
    rows.append({**rows[0], "prediction": None, "decile": 3})  # an unusable reply: left out
    dc = an.decile_curves(pd.DataFrame(rows))
    curves = {(c.scorer, c.group): c for c in dc.curves}
    assert curves[("detection", "top")].accuracy == [1.0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert curves[("detection", "random")].accuracy == [1.0] * 11
    assert (
        curves[("detection", "top")].n_examples == [12] * 11 and curves[("detection", "top")].n_explanations == [6] * 11
    )
    assert dc.skipped_scorers == ["embedding"]  # continuous predictions: no yes/no accuracy
    mixed = _examples({0: True, 1: True}, 1, "top") + _examples({0: True, 1: False}, 1, "top")
    for r in mixed[4:]:
        r["score_id"], r["latent"] = "other", 1
    one = an.decile_curves(pd.DataFrame(mixed), min_latents=1).curves[0]
    assert one.accuracy[:2] == [1.0, 0.5] and math.isnan(one.accuracy[5])
    with pytest.raises(an.NotEnoughScores, match="has 6"):
        an.decile_curves(pd.DataFrame(rows), min_latents=7)


def test_unit_comparison_groups_and_differences():
    rows = []
    for lat in range(8):
        rows.append(
            {"dictionary": "transcoder:blocks.0.ln2.hook_normalized", "latent": lat, "scorer": "fuzzing", "value": 0.8}
        )
        rows.append({"dictionary": "neurons:blocks.0.mlp.hook_post", "latent": lat, "scorer": "fuzzing", "value": 0.6})
        rows.append(
            {"dictionary": "neurons_topk32:blocks.0.mlp.hook_post", "latent": lat, "scorer": "fuzzing", "value": 0.65}
        )
        rows.append(
            {
                "dictionary": "transcoder:blocks.0.ln2.hook_normalized",
                "latent": 900 + lat,
                "scorer": "fuzzing",
                "value": 0.5,
                "baseline": "random-latent",
                "is_baseline": True,
            }
        )
        rows.append(
            {
                "dictionary": "transcoder:blocks.0.ln2.hook_normalized",
                "latent": lat,
                "scorer": "fuzzing",
                "value": 0.1,
                "baseline": "random-explanation",
                "is_baseline": True,
            }
        )
    u = an.unit_comparison(_scores(rows))
    means = {g.group: g.mean for g in u.groups}
    assert means == pytest.approx({"latents": 0.8, "neurons": 0.6, "top-k neurons": 0.65, "random latents": 0.5})
    diffs = {c.reference: c.mean_difference for c in u.contrasts}
    assert diffs == pytest.approx({"neurons": 0.2, "top-k neurons": 0.15, "random latents": 0.3})
    assert u.n_latents == {"latents": 8, "neurons": 8, "top-k neurons": 8, "random latents": 8}
    assert an.unit_group("neurons_topk8:blocks.3.mlp.hook_post", None) == "top-k neurons"
    only_latents = _scores([r for r in rows if r["dictionary"].startswith("transcoder") and r.get("baseline") is None])
    with pytest.raises(an.NotEnoughScores, match="neurons, top-k neurons or random latents"):
        an.unit_comparison(only_latents)


def test_results_serialise_to_plain_json():
    import json

    rows = [
        {
            "dictionary": "resid:blocks.0.hook_resid_pre",
            "latent": i,
            "scorer": s,
            "value": float(i % 7) + (s == "fuzzing"),
        }
        for i in range(12)
        for s in ("detection", "fuzzing")
    ]
    m = an.spearman_matrix(_scores(rows))
    data = json.loads(json.dumps(an.to_json(m)))
    assert data["rho"][0][1] == pytest.approx(1.0) and data["n"][0][1] == 12
