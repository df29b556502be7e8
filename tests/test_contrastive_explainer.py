"""The contrastive explainer: near misses apart from scoring windows, the offline baseline, the LLM prompt, the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from core import store
from core.autointerp.engine import RunSpec, run
from core.autointerp.examples import SamplingParams, example_sets, with_train_negatives
from core.autointerp.explainers import (
    CONTRASTIVE_BASELINE,
    ExplainerParams,
    contrastive_token_stats_explanation,
    explainer_messages,
    llm_explanation_record,
    token_stats_explanation,
)
from tests.app_workspace import copy_workspace as _copy
from tests.autointerp_helpers import WORDS, synthetic_latent, tiny_workspace
from tests.llm_helpers import scripted_llm

SMALL = SamplingParams(n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16)


def _sets():
    acts, tokens = synthetic_latent()
    params = SamplingParams(window=16)
    return with_train_negatives(example_sets(acts, tokens, params), acts, tokens, params), acts, params


def test_near_misses_are_silent_and_apart_from_every_scoring_window():
    sets, acts, _ = _sets()
    assert len(sets.train_negatives) == 10
    used = {(e.context, s) for e, _ in sets.scoring_examples() for s in range(e.start, e.start + 16)}
    for ex in sets.train_negatives:
        assert not acts.fires_in(ex.context, ex.start, 16)
        assert not any((ex.context, s) in used for s in range(ex.start, ex.start + 16))


def test_offline_contrastive_baseline_names_what_the_near_misses_lack():
    sets, _, params = _sets()
    rec = contrastive_token_stats_explanation(sets, WORDS, params)
    assert rec.explainer == CONTRASTIVE_BASELINE and rec.is_baseline and rec.status == "ok"
    assert rec.text.startswith('the token "apple"') and '; not "' in rec.text
    assert rec.explanation_id != token_stats_explanation(sets, WORDS, params).explanation_id


def test_llm_contrastive_prompt_and_ids():
    sets, _, params = _sets()
    plain, contrastive = ExplainerParams(), ExplainerParams(contrastive=True)
    assert "contrastive" not in plain.to_dict()  # ids of stored LLM explanations are unchanged
    msgs = explainer_messages(sets, WORDS, 8.0, contrastive)
    assert "Counter-example 1:" in msgs[1]["content"] and "<<" not in msgs[1]["content"].split("Counter-examples")[1]
    a = llm_explanation_record(sets, "m/x", params, plain, "[EXPLANATION]: apples", None, False)
    b = llm_explanation_record(sets, "m/x", params, contrastive, "[EXPLANATION]: apples", None, False)
    assert a.explanation_id != b.explanation_id and b.prompt_version == "contrastive-v1" and b.text == "apples"


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    return tiny_workspace(tmp_path_factory)


def test_engine_and_cli_run_the_contrastive_explainers_and_intruder(tiny_ws, tmp_path, capsys):
    from core.cli import main

    ws = _copy(tiny_ws[0], tmp_path)
    d = tiny_ws[1]
    spec = RunSpec(explainer="scripted/explainer", explainer_params=ExplainerParams(contrastive=True), sampling=SMALL)
    with scripted_llm(lambda m, p: "[EXPLANATION]: names") as calls:
        run(ws, [d.id], spec, sample=2)
    assert len(calls) == 2 and all("Counter-examples" in r[1][1]["content"] for r in calls.requests)
    rows = store.list_explanations(ws, explainer="scripted/explainer")
    assert {r.prompt_version for r in rows} == {"contrastive-v1"} and not any(r.is_baseline for r in rows)

    assert (
        main(
            [
                "explain",
                "--workspace",
                str(ws),
                "--sample",
                "3",
                "--contrastive",
                "--n-train",
                "10",
                "--window",
                "16",
                "--no-random-explanations",
            ]
        )
        == 0
    )
    base = store.list_explanations(ws, explainer=CONTRASTIVE_BASELINE)
    assert len(base) == 3 and all(r.is_baseline for r in base)
    capsys.readouterr()
    assert (
        main(
            [
                "score",
                "--workspace",
                str(ws),
                "--scorers",
                "intruder,detection",
                "--contrastive",
                "--sample",
                "3",
                "--n-train",
                "10",
                "--window",
                "16",
                "--no-random-explanations",
            ]
        )
        == 0
    )
    frame = store.scores_frame(ws, status=None)
    intr = frame[(frame["scorer"] == "intruder") & (frame["explainer"] == CONTRASTIVE_BASELINE)]
    assert len(intr) == 3 and (intr["scorer_model"] == "judge:minilm-similarity").all()
    ok = intr[intr["status"] == "ok"]
    assert len(ok) and np.all((ok["value"] >= 0) & (ok["value"] <= 1))
