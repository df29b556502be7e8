"""Neighbour non-activating examples: neighbour lists, the sampler, score ids/params, the engine option and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core import store
from core.autointerp import engine
from core.autointerp.engine import RunSpec, run
from core.autointerp.examples import DEFAULT_NEGATIVES, SamplingParams, example_sets, with_neighbour_negatives
from core.autointerp.explainers import stable_id
from core.autointerp.scorers import make_scorer
from core.errors import UserError
from core.latents.neighbours import cooccurrence_neighbours, cosine_neighbours
from core.latents.sampling import LatentActivations, WindowSpec, sample_neighbour_negatives
from tests.app_workspace import copy_workspace as _copy
from tests.autointerp_helpers import synthetic_latent, task_and_env, tiny_workspace

SMALL = SamplingParams(n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16)


def test_cosine_neighbours_match_brute_force_and_skip_dead_latents():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((30, 6))
    live = np.ones(30, bool)
    live[[3, 7]] = False
    ids, sims = cosine_neighbours(w, 4, live, batch=7)
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    full = u @ u.T
    for i in range(30):
        cand = [j for j in range(30) if j != i and live[j]]
        best = sorted(cand, key=lambda j: -full[i, j])[:4]
        assert ids[i].tolist() == best
        assert np.allclose(sims[i], full[i, best], atol=1e-5)


def test_cooccurrence_neighbours_are_jaccard_of_firing_positions():
    # latent 0 fires at positions 0..9, latent 1 at 0..4, latent 2 at 5..19, latent 3 at 100 (never with 0)
    latent = np.array([0] * 10 + [1] * 5 + [2] * 15 + [3])
    key = np.concatenate([np.arange(10), np.arange(5), np.arange(5, 20), [100]])
    ids, sims = cooccurrence_neighbours(latent, key, 4, 3)
    assert ids[0].tolist() == [1, 2, -1]  # 5/10 = 0.5, 5/20 = 0.25; latent 3 never fires with it
    assert np.allclose(sims[0][:2], [0.5, 0.25])
    assert ids[3].tolist() == [-1, -1, -1]


def test_neighbour_windows_never_hold_the_latent_and_centre_on_the_neighbour():
    acts, tokens = synthetic_latent()
    # a neighbour firing on " apple" in contexts 0-49, where the synthetic latent is silent on it
    c, p = np.nonzero(tokens.tokens[:50] == 7)
    keep = p >= 1
    c, p = c[keep], p[keep]
    order = np.lexsort((p, c))
    nb = LatentActivations(
        "test:dict",
        6,
        c[order].astype(np.int64),
        p[order].astype(np.int64),
        np.linspace(5, 1, len(c)).astype(np.float32)[order],
        acts.edges,
        acts.n_contexts,
        acts.ctx_len,
    )
    neg = sample_neighbour_negatives(acts, [nb], tokens, 8, WindowSpec(16))
    assert len(neg) == 8
    for ex in neg:
        assert ex.decile == 0 and ex.activations.max() == 0 and not acts.fires_in(ex.context, ex.start, 16)
        assert ex.tokens[ex.center] == 7  # the neighbour's token
    spans = sorted((e.context, e.start) for e in neg)
    assert all(a[0] != b[0] or b[1] >= a[1] + 16 for a, b in zip(spans, spans[1:], strict=False))
    assert sample_neighbour_negatives(acts, [], tokens, 8) == []


def test_default_score_ids_are_unchanged_and_neighbour_ones_differ_and_are_recorded():
    task, env = task_and_env()
    scorer = make_scorer("detection")
    old_formula = stable_id(
        "score",
        task.explanation.explanation_id,
        "detection",
        scorer.model,
        scorer.prompt_version,
        scorer.params(),
        task.sets.strategy,
    )
    assert scorer.score_id(task) == old_formula  # existing workspaces keep their stored scores
    acts, tokens = synthetic_latent()
    sets = with_neighbour_negatives(task.sets, acts, [acts], tokens, SamplingParams(window=16), "neighbours:decoder")
    ntask = replace(task, sets=sets)
    assert scorer.score_id(ntask) != old_formula
    assert make_scorer("intervention").score_id(ntask) == make_scorer("intervention").score_id(task)
    rec, rows = scorer.outcome(ntask, 0.7, [])
    assert rec.params["negatives"] == "neighbours:decoder" and rec.score_id == scorer.score_id(ntask)
    assert scorer.outcome(task, 0.7, [])[0].params["negatives"] == DEFAULT_NEGATIVES
    # the latent itself as its own "neighbour" never gives a window where it is silent
    assert sets.neighbour_negatives == [] and sets.random_negatives == [] and sets.hard_negatives == []


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_workspace(tmp_path_factory)


@pytest.fixture
def weights(tiny_ws, monkeypatch):
    d = tiny_ws[1]
    monkeypatch.setattr(engine, "load_decoder", lambda m, x: d.W_dec.detach().numpy())
    monkeypatch.setattr(engine, "load_encoder", lambda m, x: d.W_enc.detach().numpy().T)
    return d


@pytest.mark.parametrize("method", ["decoder", "encoder", "cooccurrence"])
def test_engine_scores_with_neighbour_negatives_beside_random_ones(tiny_ws, tmp_path, weights, method):
    ws = _copy(tiny_ws[0], tmp_path)
    base = RunSpec(scorers=("detection", "fuzzing", "embedding"), sampling=SMALL, random_explanations=False)
    run(ws, [weights.id], base, sample=5)
    neg = replace(base, negatives=f"neighbours:{method}", n_neighbours=5)
    report = run(ws, [weights.id], neg, sample=5)
    assert report.explained == 0 and report.scored == 15  # explanations reused, new scores beside the old
    frame = store.scores_frame(ws, status=None)
    kinds = frame["params"].map(lambda p: __import__("json").loads(p)["negatives"])
    assert sorted(set(kinds)) == sorted({DEFAULT_NEGATIVES, f"neighbours:{method}"}) and len(frame) == 30
    ex = store.score_examples_frame(ws, scorer="detection")
    assert "neighbour-negative" in set(ex["kind"]) and {"random-negative", "hard-negative"} <= set(ex["kind"])
    assert run(ws, [weights.id], neg, sample=5).scored == 0  # resumable


def test_too_few_neighbours_and_latents_without_neighbour_windows(tiny_ws, tmp_path, weights, monkeypatch, capsys):
    from core.cli import main

    ws = _copy(tiny_ws[0], tmp_path)
    live = int((store.latent_stats_frame(ws, weights.id)["n_fires"] > 0).sum())
    spec = RunSpec(scorers=("detection",), sampling=SMALL, negatives="neighbours:decoder", n_neighbours=live)
    with pytest.raises(UserError, match=f"has {live} live latents, too few for {live} decoder neighbours"):
        run(ws, [weights.id], spec, sample=3)
    assert store.list_explanations(ws, status=None, baseline=True) == []
    assert (
        main(
            [
                "score",
                "--workspace",
                str(ws),
                "--scorers",
                "detection",
                "--negatives",
                "neighbours:decoder",
                "--neighbours",
                str(live),
                "--sample",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and "too few" in err and "Traceback" not in err

    # neighbours that never fire apart from the latent: named latents -> an error before anything is stored
    monkeypatch.setattr(engine._RealSource, "neighbour_ids", lambda self, m, n: np.full((weights.d_sae, n), -1))
    spec = replace(spec, n_neighbours=3)
    first = int(np.flatnonzero(store.latent_stats_frame(ws, weights.id)["n_fires"].to_numpy() > 30)[0])
    with pytest.raises(UserError, match=f"latent {first} .* no non-activating windows of kind neighbours:decoder"):
        run(ws, [weights.id], spec, latents=[first])
    assert store.list_explanations(ws, status=None, baseline=True) == []
    # a sampled run stores each such latent's score as failed, saying why
    run(ws, [weights.id], replace(spec, random_explanations=False), sample=3)
    frame = store.scores_frame(ws, status=None)
    assert len(frame) == 3 and (frame["status"] == "failed").all()
    assert frame["error"].str.contains("no non-activating windows of kind neighbours:decoder").all()


@pytest.mark.parametrize("method", ["cooccurrence", "encoder", "decoder"])
def test_random_latents_get_neighbour_negatives_from_the_real_dictionary(tiny_ws, tmp_path, weights, method):
    """Random-direction latents (the random-latent baseline) are scored with neighbour negatives too: windows where
    their nearest real latents fire and the direction does not, recorded on every score row. (Before: refused.)"""
    ws = _copy(tiny_ws[0], tmp_path)
    spec = RunSpec(
        scorers=("detection",),
        sampling=SMALL,
        negatives=f"neighbours:{method}",
        n_neighbours=4,
        random_latents=2,
        random_explanations=False,
    )
    run(ws, [weights.id], spec, sample=2)
    frame = store.scores_frame(ws, status=None)
    rnd = frame[frame["baseline"] == "random-latent"]
    assert len(rnd) == 2
    assert (rnd["params"].map(lambda p: __import__("json").loads(p)["negatives"]) == f"neighbours:{method}").all()
    ok = rnd[rnd["status"] == "ok"]
    assert len(ok) >= 1  # at least one random direction got windows of its real neighbours
    ex = store.score_examples_frame(ws, scorer="detection")
    kinds = set(ex.loc[ex["score_id"].isin(ok["score_id"]), "kind"])
    assert "neighbour-negative" in kinds and "random-negative" not in kinds
    failed = rnd[rnd["status"] != "ok"]  # a direction whose neighbours never fire apart from it says so
    assert failed["error"].str.contains("no non-activating windows of kind|activating test windows").all()
    with pytest.raises(UserError, match="unknown negatives"):
        run(ws, [weights.id], replace(spec, negatives="nearby"), sample=2)


def test_random_latent_neighbours_are_nearest_live_real_latents():
    from core.autointerp.random_latents import RandomLatents, random_directions, random_latent_neighbours

    rng = np.random.default_rng(1)
    d_sae, d_in, d_out = 12, 5, 4
    # random latent 0 fires at keys 0..9, 1 at 50..51; real latent 2 shares 0..4, 3 shares 0..9 and more
    rl = RandomLatents(
        "d", "in", "out", 1, 100, 0.1, 7,
        [np.ones(10, np.float32), np.ones(2, np.float32)],
        [np.zeros(10, np.int64), np.zeros(2, np.int64)],
        [np.arange(10), np.array([50, 51])],
        random_directions(2, d_out, 8),
    )  # fmt: skip
    latent = np.array([2] * 5 + [3] * 12 + [5] * 3)
    key = np.concatenate([np.arange(5), np.arange(12), [0, 1, 2]])
    live = np.ones(d_sae, bool)
    live[5] = False  # dead latents are never neighbours (these firing rows are ignored)
    ids = random_latent_neighbours(rl, "cooccurrence", 3, live, fires=(latent, key))
    assert ids[0].tolist() == [3, 2, -1]  # Jaccard 10/12, then 5/10
    assert ids[1].tolist() == [-1, -1, -1]  # fires with no real latent
    w_enc = rng.standard_normal((d_sae, d_in))
    ids = random_latent_neighbours(rl, "encoder", 3, live, weights=w_enc)
    u = random_directions(2, d_in, rl.seed)
    cos = u @ (w_enc / np.linalg.norm(w_enc, axis=1, keepdims=True)).T
    cos[:, 5] = -np.inf
    assert ids.tolist() == np.argsort(-cos, axis=1)[:, :3].tolist()
    with pytest.raises(ValueError, match="width"):
        random_latent_neighbours(rl, "decoder", 3, live, weights=rng.standard_normal((d_sae, d_out + 1)))


def test_spec_key_of_default_job_unchanged():
    import json
    from dataclasses import asdict

    from core.autointerp.default import DEFAULT_SPEC, _spec_key, stage_spec

    spec = stage_spec("fast", DEFAULT_SPEC)
    old = {k: v for k, v in asdict(spec).items() if k not in ("negatives", "n_neighbours")}
    del old["explainer_params"]["contrastive"]  # the keys of workspaces marked done before these options existed
    assert _spec_key(spec, ["d"]) == json.dumps({"spec": old, "dictionaries": ["d"]}, sort_keys=True, default=str)
    assert _spec_key(replace(spec, negatives="neighbours:decoder"), ["d"]) != _spec_key(spec, ["d"])
    sets = example_sets(*synthetic_latent(), SamplingParams(window=16))
    assert sets.negatives == DEFAULT_NEGATIVES and sets.neighbour_negatives == []
