"""delphi's fuzzing variant: every activating window marked right, random marks on non-activating ones; recorded in params."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.autointerp.examples import with_neighbour_negatives
from core.autointerp.scorers import make_scorer
from core.autointerp.scorers.base import example_record
from tests.autointerp_helpers import synthetic_latent, task_and_env


def test_delphi_variant_marks_every_activating_window_right():
    task, env = task_and_env()
    scorer = make_scorer("fuzzing", variant="delphi")
    items = scorer.prepare(task, env)
    act = [it for it in items if it.kind == "activating"]
    neg = [it for it in items if it.kind != "activating"]
    assert act and neg
    assert all(it.truth and np.array_equal(it.marked, it.example.activations > 0) for it in act)
    n_marks = int(np.ceil(np.mean([(ex.activations > 0).sum() for ex in task.sets.test])))
    for it in neg:
        assert not it.truth and it.marked.sum() == min(n_marks, len(it.example.tokens))
        assert not (it.marked & (it.example.activations > 0)).any()
    default = make_scorer("fuzzing").prepare(task, env)
    assert sum(not it.truth for it in default if it.kind == "activating") > 0  # ours alternates
    assert sum(not it.truth for it in items if it.kind == "activating") == 0


def test_variant_is_recorded_and_default_ids_unchanged():
    task, _ = task_and_env()
    alt, delphi = make_scorer("fuzzing"), make_scorer("fuzzing", variant="delphi")
    assert "variant" not in alt.params() and delphi.params()["variant"] == "delphi"
    assert alt.score_id(task) != delphi.score_id(task)
    rec, _ = delphi.outcome(task, 0.6, [example_record(0, task.sets.test[0], "activating", 1.0, 1.0)])
    assert rec.params["variant"] == "delphi"
    with pytest.raises(ValueError, match="unknown fuzzing variant"):
        make_scorer("fuzzing", variant="nope")


def test_delphi_variant_marks_the_neighbour_token_on_neighbour_negatives():
    from core.autointerp.examples import SamplingParams
    from core.latents.sampling import LatentActivations

    task, env = task_and_env()
    acts, tokens = synthetic_latent()
    c, p = np.nonzero(tokens.tokens[:50] == 7)  # " apple" where the latent is silent: a neighbour fires there
    keep = p >= 1
    nb = LatentActivations(
        "test:dict",
        6,
        c[keep].astype(np.int64),
        p[keep].astype(np.int64),
        np.ones(int(keep.sum()), np.float32),
        acts.edges,
        acts.n_contexts,
        acts.ctx_len,
    )
    sets = with_neighbour_negatives(task.sets, acts, [nb], tokens, SamplingParams(window=16), "neighbours:decoder")
    items = make_scorer("fuzzing", variant="delphi").prepare(replace(task, sets=sets), env)
    neg = [it for it in items if it.kind == "neighbour-negative"]
    assert len(neg) == 20
    for it in neg:
        assert not it.truth and it.marked.sum() == 1 and it.example.tokens[it.marked][0] == 7


def test_cli_passes_the_variant(monkeypatch):
    import argparse

    from core.autointerp import commands

    ns = argparse.Namespace(
        explainer="baseline",
        strategy="top",
        n_train=20,
        window=32,
        seed=0,
        n_per_prompt=5,
        no_activations=False,
        cot=False,
        model="judge",
        no_random_explanations=False,
        random_latents=0,
        concurrency=8,
        fuzzing_variant="delphi",
        negatives="neighbours:cooccurrence",
        neighbours=4,
    )
    spec = commands._spec(ns, ("fuzzing",), False)
    assert spec.scorer_options["fuzzing"]["variant"] == "delphi"
    assert spec.negatives == "neighbours:cooccurrence" and spec.n_neighbours == 4
