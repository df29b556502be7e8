"""Intruder scoring: prompts hold one intruder, known LLM answers, malformed replies kept, the offline judge baseline."""

from __future__ import annotations

import re

import pytest

from core.autointerp.prompts import intruder as prompt
from core.autointerp.scorers import make_scorer
from core.llm import client as llm
from tests.autointerp_helpers import task_and_env
from tests.llm_helpers import scripted_llm

EXAMPLE = re.compile(r"^Example (\d+): (.*)$", re.MULTILINE)


def test_each_prompt_holds_one_intruder_among_activating_windows():
    task, _ = task_and_env()
    scorer = make_scorer("intruder")
    ps = scorer.prompts(task)
    n_neg = sum(kind != "activating" for _, kind in task.sets.scoring_examples())
    assert len(ps) == n_neg
    for shown, at in ps:
        assert len(shown) == 5 and shown[at][1] != "activating"
        assert [k for i, (_, k, _) in enumerate(shown) if i != at] == ["activating"] * 4
        assert all(m.any() for _, _, m in shown)
        assert not (shown[at][2] & (shown[at][0].activations > 0)).any()


def _answer(policy):
    def fn(messages, params):
        n = len(EXAMPLE.findall(messages[-1]["content"]))
        return f"Thinking...\n[RESPONSE]: {policy(messages, n)}"

    return fn


def test_llm_known_answers_and_malformed_replies():
    task, env = task_and_env(client=llm.LLMClient(None))
    scorer = make_scorer("intruder", "scripted/judge")
    truth = {}
    for shown, at in scorer.prompts(task):
        from core.autointerp.examples import example_token_texts, render

        truth[render(example_token_texts(shown[at][0], env.texts), shown[at][2])] = at + 1

    def right(messages, n):
        texts = [t for _, t in EXAMPLE.findall(messages[-1]["content"])]
        return next(i + 1 for i, t in enumerate(texts) if t in truth and truth[t] == i + 1)

    with scripted_llm(_answer(right)) as calls:
        ((rec, rows),) = llm.run_sync(scorer.score([task], env))
    assert rec.status == "ok" and rec.value == 1.0 and len(calls) == len(truth)
    assert sum(r.truth for r in rows) == len(truth) and all(r.prediction == r.truth for r in rows)
    assert "Feature explanation: the word apple" in calls.requests[0][1][1]["content"]

    with scripted_llm(lambda m, p: "no idea"):
        ((bad, rows),) = llm.run_sync(make_scorer("intruder", "scripted/other").score([task], env))
    assert bad.status == "failed" and bad.value is None and bad.failures[0]["raw"] == "no idea"
    assert all(r.prediction is None for r in rows)


def test_parse_reply():
    assert prompt.parse_reply("x [RESPONSE]: 2 ... [RESPONSE]: 3", 5) == 2
    assert prompt.parse_reply("[RESPONSE]: 9", 5) is None and prompt.parse_reply(None, 5) is None


def test_offline_judge_finds_more_intruders_with_the_right_explanation():
    from dataclasses import replace

    def strong(text):  # the synthetic latent's deciles 6-10 fire on " apple"; lower ones on random tokens
        task, env = task_and_env(text)
        return replace(task, sets=replace(task.sets, test=[e for e in task.sets.test if e.decile >= 6])), env

    good, env = strong('the token " apple" (often after " of")')
    bad = [strong(t)[0] for t in ("numbers and dates in financial reports", 'the token " blue"', 'the token " river"')]
    scorer = make_scorer("intruder")
    assert scorer.model == "judge:minilm-similarity"
    (g, _), *others = llm.run_sync(scorer.score([good, *bad], env))
    assert g.status == "ok" and g.value >= 0.9
    assert all(b.status == "ok" and b.value < g.value for b, _ in others)
    with pytest.raises(ValueError, match="n_shown"):
        make_scorer("intruder", n_shown=1)
