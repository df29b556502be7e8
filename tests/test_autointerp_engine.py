"""The explain/score engine on a tiny cached workspace: rows written, resumable, LLM failures kept, keys checked first."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core import store
from core.autointerp import engine
from core.autointerp.engine import RunSpec, explain_and_score_latent, run
from core.llm import client as llm
from tests.app_workspace import copy_workspace as _copy
from tests.autointerp_helpers import tiny_workspace
from tests.llm_helpers import scripted_llm


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory):
    """A workspace of the tiny model with one cached SAE (model name 'tiny', registered as lm:tiny)."""
    return tiny_workspace(tmp_path_factory)


def test_baseline_and_offline_scorers_write_rows_and_a_rerun_does_nothing(tiny_ws, tmp_path, monkeypatch):
    ws = _copy(tiny_ws[0], tmp_path)
    d = tiny_ws[1]
    monkeypatch.setattr(engine, "load_decoder", lambda model_name, dictionary: d.W_dec.detach().numpy())
    spec = RunSpec(
        scorers=("detection", "fuzzing", "embedding", "simulation", "surprisal", "intervention"),
        sampling=engine.SamplingParams(
            n_train=10, n_test_per_decile=1, n_random_negatives=5, n_hard_negatives=5, window=16
        ),
        scorer_options={"intervention": {"n_prompts": 2, "prompt_len": 6, "n_new": 3, "search_steps": 6}},
        random_latents=3,
    )
    first = run(ws, [d.id], spec, sample=6)
    assert first.explained == 6 + 6 + 3  # latents, random-explanation rows, random latents
    frame = store.scores_frame(ws, status=None)
    assert set(frame["scorer"]) == set(spec.scorers)
    assert set(frame["baseline"].dropna()) == {"random-explanation", "random-latent"}
    real = frame[frame["baseline"].isna()]
    assert (real["explainer"] == "baseline:token-stats").all() and real["is_baseline"].all()
    ok = frame[frame["status"] == "ok"]
    assert len(ok) > 0 and ok["value"].between(-1, 1).all()
    models = dict(zip(ok["scorer"], ok["scorer_model"], strict=False))
    assert models["detection"] == "judge:minilm-similarity" and models["surprisal"] == "lm:tiny"
    examples = store.score_examples_frame(ws, scorer="detection")
    assert (
        set(examples["decile"]) - {0} <= set(range(1, 11))
        and (examples.loc[examples["kind"] != "activating", "decile"] == 0).all()
    )

    second = run(ws, [d.id], spec, sample=6)
    assert second.explained == 0 and second.scored == 0
    assert second.scores_found == first.scored and second.explanations_found == 6 + 6 + 3


def test_llm_explainer_failures_are_stored_with_raw_text_and_reruns_pay_nothing(tiny_ws, tmp_path):
    ws = _copy(tiny_ws[0], tmp_path)
    d = tiny_ws[1]
    replies = iter(["Let me think.\n[EXPLANATION]: the token 'Mary'", "no explanation line at all"])

    with scripted_llm(lambda m, p: next(replies, "[EXPLANATION]: names of people")) as calls:
        report = run(ws, [d.id], RunSpec(explainer="scripted/explainer", random_explanations=False), sample=4)
    assert len(calls) == 4 and report.explanations_failed == 1
    rows = store.list_explanations(ws, status=None)
    failed = [r for r in rows if r.status == "failed"]
    assert len(failed) == 1 and failed[0].raw == "no explanation line at all" and failed[0].text is None
    assert all(r.explainer == "scripted/explainer" and not r.is_baseline for r in rows)
    assert "<<" in calls.requests[0][1][1]["content"]  # the activating tokens are marked
    usage = store.llm_usage_summary(ws, by="latent")
    assert len(usage) == 4 and (usage["calls"] == 1).all()

    with scripted_llm(lambda m, p: pytest.fail("provider called on a rerun")):
        again = run(ws, [d.id], RunSpec(explainer="scripted/explainer", random_explanations=False), sample=4)
    assert again.explained == 0 and again.explanations_found == 4


def test_missing_key_fails_before_any_work(tiny_ws, tmp_path, monkeypatch):
    ws = _copy(tiny_ws[0], tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(llm.MissingCredentialsError, match="ANTHROPIC_API_KEY"):
        run(ws, [tiny_ws[1].id], RunSpec(explainer="anthropic/claude-3-5-haiku-latest"), sample=2)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(llm.MissingCredentialsError, match="OPENAI_API_KEY"):
        run(ws, [tiny_ws[1].id], RunSpec(scorers=("detection",), scorer_model="openai/gpt-4o-mini"), sample=2)
    assert store.list_explanations(ws, status=None, baseline=True) == []


def test_explain_and_score_one_latent_for_the_app(tiny_ws, tmp_path):
    ws = _copy(tiny_ws[0], tmp_path)
    d = tiny_ws[1]
    live = int(np.flatnonzero(store.latent_stats_frame(ws, d.id)["n_fires"].to_numpy() > 30)[0])
    seen = []
    out = explain_and_score_latent(ws, d.id, live, None, ("detection", "embedding"), progress=lambda *a: seen.append(a))
    assert [e.latent for e in out] == [live] and out[0].explainer == "baseline:token-stats"
    scores = store.scores_for_explanations(ws, [out[0].explanation_id])
    assert {s.scorer for s in scores} == {"detection", "embedding"} and seen


def test_cli_reports_bad_input_without_a_traceback(tiny_ws, tmp_path, capsys):
    from core.cli import main

    assert main(["score", "--workspace", str(tmp_path / "none.duckdb"), "--scorers", "detection"]) == 2
    assert "does not exist" in capsys.readouterr().err
    ws = _copy(tiny_ws[0], tmp_path)
    assert main(["score", "--workspace", str(ws), "--scorers", "nonsense"]) == 2
    assert "unknown scorer 'nonsense'" in capsys.readouterr().err
    assert main(["explain", "--workspace", str(ws), "--latents", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["explain", "--workspace", str(ws), "--sample", "3", "--no-random-explanations"]) == 0
    assert '"explained": 3' in capsys.readouterr().out


def test_default_explanations_run_each_stage_once(tiny_ws, tmp_path):
    from core.autointerp.default import default_explanations_ready, ensure_default_explanations

    ws = _copy(tiny_ws[0], tmp_path)
    base = RunSpec(
        sampling=engine.SamplingParams(
            n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16
        ),
        random_latents=2,
    )
    reports = ensure_default_explanations(ws, stages=("fast",), base=base)
    assert (
        set(reports) == {"fast"}
        and reports["fast"].scored > 0
        and reports["fast"].scores_failed < reports["fast"].scored
    )
    assert default_explanations_ready(ws, ("fast",), base) and not default_explanations_ready(ws, ("slow",), base)
    assert set(store.scores_frame(ws, status=None)["scorer"]) == {"detection", "fuzzing", "simulation", "embedding"}
    assert ensure_default_explanations(ws, stages=("fast",), base=base) == {}


def test_random_latents_are_built_once_per_process_for_the_same_inputs(tiny_ws, tmp_path, monkeypatch):
    from core.autointerp import random_latents

    ws = _copy(tiny_ws[0], tmp_path)
    d = tiny_ws[1]
    calls = []
    real_build = random_latents.build_random_latents

    def counting_build(*args, **kwargs):
        calls.append(args[2])  # the dictionary id
        return real_build(*args, **kwargs)

    monkeypatch.setattr(engine, "build_random_latents", counting_build)
    monkeypatch.setattr(engine, "_RANDOM_LATENTS_MEMO", {})
    spec = RunSpec(
        sampling=engine.SamplingParams(
            n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16
        ),
        random_latents=2,
    )
    first = run(ws, [d.id], spec, sample=3)
    other = run(ws, [d.id], RunSpec(sampling=replace(spec.sampling, strategy="random"), random_latents=2), sample=3)
    assert calls == [d.id]  # the second run (another strategy) reused the first's random latents
    assert first.explained == 3 + 3 + 2 and other.explained == 3 + 3 + 2  # new explanations for the new strategy
