"""Scorers with scripted LLM replies and the offline judge: known answers, failures kept raw, cache reuse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from core import store
from core.autointerp.scorers import make_scorer
from core.llm import client as llm
from tests.autointerp_helpers import task_and_env
from tests.llm_helpers import Scripted, scripted_llm

EXAMPLE = re.compile(r"^Example \d+: (.*)$", re.MULTILINE)


def _judge_from_truth(scorer, task, env, policy):
    """A scripted LLM that answers each example by `policy(truth)` (it looks the example's text up)."""
    truth = {it.text: it.truth for it in scorer.prepare(task, env)}

    def fn(messages, params):
        texts = EXAMPLE.findall(messages[-1]["content"])
        return "[" + ", ".join(str(int(policy(truth[t]))) for t in texts) + "]"

    return fn


@pytest.mark.parametrize("name", ["detection", "fuzzing"])
@pytest.mark.parametrize(("policy", "expected"), [(lambda t: t, 1.0), (lambda t: not t, 0.0), (lambda t: True, 0.5)])
def test_classifiers_known_answers(name, policy, expected):
    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer(name, "scripted/judge", n_per_prompt=5)
    with scripted_llm(_judge_from_truth(scorer, task, env, policy)) as calls:
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    n = len(rows)
    assert rec.status == "ok" and rec.value == expected and rec.scorer_model == "scripted/judge"
    assert len(calls) == -(-n // 5)  # ceil(n / 5) prompts of 5 examples
    assert {r.decile for r in rows if r.kind == "activating"} <= set(range(1, 11)) and all(
        r.decile == 0 for r in rows if r.kind != "activating"
    )
    assert sum(r.kind == "activating" for r in rows) == len(task.sets.test)


def test_n_per_prompt_is_configurable():
    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer("detection", "scripted/judge", n_per_prompt=3)
    with scripted_llm(_judge_from_truth(scorer, task, env, lambda t: t)) as calls:
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    assert rec.value == 1.0 and len(calls) == -(-len(rows) // 3)
    assert all("Python list of" in m[0]["content"] for _, m, _ in calls.requests)


def test_malformed_replies_are_failures_with_raw_text_and_reruns_cost_nothing(tmp_path):
    ws = tmp_path / "ws.duckdb"
    task, env = task_and_env(client=llm.LLMClient(ws))
    scorer = make_scorer("detection", "scripted/judge")
    replies = iter(["[1, 0]", "I think the first one", Scripted("[1, 0, 0,", finish_reason="length"), "   "])

    def fn(messages, params):
        return next(replies, "[1, 1, 1, 1, 1]")

    with scripted_llm(fn):
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
        env.client.flush()
    assert rec.status == "failed" and rec.value is None
    raws = {f["raw"] for f in rec.failures}
    assert len(rec.failures) == 4 and {"[1, 0]", "I think the first one", "[1, 0, 0,", "   "} == raws
    assert any("truncated" in f["error"] for f in rec.failures) and any("empty" in f["error"] for f in rec.failures)
    sizes = [len(b) for b in scorer.batches(task, len(rows))]
    assert sum(r.prediction is None for r in rows) == sum(
        sizes[f["prompt"]] for f in rec.failures
    )  # bad prompts predict nothing
    # the same scoring again: every reply comes from the workspace cache, none from the provider
    env2 = task_and_env(client=llm.LLMClient(ws))[1]
    with scripted_llm(lambda m, p: pytest.fail("provider called on a rerun")):
        ((rec2, _),) = llm.run_sync(scorer.score([task], env2))
    assert rec2.failures == rec.failures and env2.client.stats["cached"] == env2.client.stats["calls"] > 0
    assert int(store.llm_usage_summary(ws, by="model")["cached"].iloc[0]) == env2.client.stats["calls"]


def test_simulation_with_a_perfect_simulator_scores_one_with_parsed_numbers_and_with_logprobs():
    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer("simulation", "scripted/sim", n_per_decile=1, n_negatives=3)
    truth = {}
    for ex, _ in scorer.examples(task):
        key = tuple(env.texts[int(t)] for t in ex.tokens)
        truth[key] = np.rint(10 * ex.activations / task.max_activation).astype(int)

    def lines(messages):
        body = messages[-1]["content"].split("Text:\n", 1)[1]
        toks = tuple(line.split("\t", 1)[1] for line in body.splitlines())
        return [f"{i + 1}\t{v}" for i, v in enumerate(truth[toks])]

    with scripted_llm(lambda m, p: "\n".join(lines(m))):
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    assert rec.status == "ok" and rec.value > 0.97  # only rounding to 0..10 separates it from 1
    assert rec.params["windows_with_logprobs"] == 0

    def with_logprobs(messages, params):
        out = lines(messages)
        text = "\n".join(out)
        lp = []
        for k, line in enumerate(out):
            i, v = line.split("\t")
            lp += [(i, 0.0, []), ("\t", 0.0, []), (v, 0.0, [(v, 0.0), ("0" if v != "0" else "1", -50.0)])]
            if k < len(out) - 1:
                lp.append(("\n", 0.0, []))
        assert params.get("logprobs") is True
        return Scripted(text, logprobs=lp)

    scorer_lp = make_scorer("simulation", "scripted/sim", n_per_decile=1, n_negatives=3)
    env.client = llm.LLMClient(None)  # a fresh cache: the same prompts must reach the provider again
    import core.llm.client as core_llm

    orig = core_llm.supports_logprobs
    core_llm.supports_logprobs = lambda model: True
    try:
        with scripted_llm(with_logprobs):
            ((rec_lp, _),) = llm.run_sync(scorer_lp.score([task], env))
    finally:
        core_llm.supports_logprobs = orig
    assert rec_lp.status == "ok" and abs(rec_lp.value - rec.value) < 1e-6
    assert rec_lp.params["windows_with_logprobs"] == len(scorer_lp.examples(task))


def test_simulation_malformed_reply_fails():
    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer("simulation", "scripted/sim", n_per_decile=1, n_negatives=0)
    with scripted_llm(lambda m, p: "1\t3\n2\t0"):
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    assert rec.status == "failed" and rec.value is None and all(r.prediction is None for r in rows)
    assert rec.failures[0]["raw"] == "1\t3\n2\t0"


def test_offline_judge_separates_a_good_explanation_from_a_wrong_one():
    good, env = task_and_env('the token " apple" (often after " of")')
    bad, _ = task_and_env("numbers and dates in financial reports")
    out = {}
    for name in ("detection", "fuzzing", "embedding", "simulation"):
        scorer = make_scorer(name)
        (g, _), (b, _) = llm.run_sync(scorer.score([good, bad], env))
        assert g.status == b.status == "ok" and g.scorer_model in (
            "judge:minilm-similarity",
            "embedding:all-MiniLM-L6-v2",
        )
        out[name] = (g.value, b.value)
    # naming the firing token must beat an unrelated explanation where the judge reads tokens or windows;
    # embedding AUROC is not compared: hard negatives hold " of apple" too, so windows alone cannot separate them
    assert all(out[k][0] > out[k][1] for k in ("detection", "fuzzing", "simulation")), out
    assert 0.0 <= out["embedding"][0] <= 1.0
