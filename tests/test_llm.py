"""core.llm.client: cache, retries, failures, credentials, logprobs — through a scripted in-process provider."""

from __future__ import annotations

import asyncio

import pytest

from core import store
from core.llm import client as llm
from tests.llm_helpers import Scripted, scripted_llm

MSG = [{"role": "user", "content": "Explain latent 3"}]


def test_cache_key_ignores_connection_params_and_depends_on_the_rest():
    k = llm.cache_key("m/x", MSG, {"temperature": 0})
    assert k == llm.cache_key("m/x", MSG, {"temperature": 0, "api_key": "sk-secret", "api_base": "http://h"})
    assert k != llm.cache_key("m/x", MSG, {"temperature": 1})
    assert k != llm.cache_key("m/y", MSG, {"temperature": 0})
    assert k != llm.cache_key("m/x", [{"role": "user", "content": "other"}], {"temperature": 0})


def test_rerun_hits_the_workspace_cache_and_costs_nothing(tmp_path):
    ws = tmp_path / "ws.duckdb"
    with scripted_llm(lambda m, p: "the word 'the'") as calls:
        first = llm.complete(ws, "scripted/test", MSG, temperature=0, api_key="sk-never-stored")
        second = llm.complete(ws, "scripted/test", MSG, temperature=0)
    assert len(calls) == 1  # the second call never reached the provider
    assert not first.cached and second.cached and second.text == first.text == "the word 'the'"
    usage = store.llm_usage_summary(ws, by="model")
    assert int(usage["calls"].iloc[0]) == 2 and int(usage["cached"].iloc[0]) == 1
    # the key given as a param is nowhere in the workspace
    with store.session(ws) as con:
        dump = str(con.execute("SELECT * FROM llm_responses").fetchall()) + str(
            con.execute("SELECT * FROM llm_usage").fetchall()
        )
    assert "sk-never-stored" not in dump


def test_rate_limits_are_retried_with_backoff_then_recorded_as_failure(tmp_path):
    import litellm

    attempts = []

    def flaky(messages, params):
        attempts.append(1)
        if len(attempts) < 3:
            raise litellm.RateLimitError("slow down", llm_provider="scripted", model="test")
        return "ok now"

    sleeps: list[float] = []

    async def fake_sleep(s):
        sleeps.append(s)

    client = llm.LLMClient(tmp_path / "ws.duckdb", max_retries=4, backoff_s=1.0, sleep=fake_sleep)
    with scripted_llm(flaky):
        reply = llm.run_sync(client.acomplete("scripted/test", MSG))
    assert reply.ok and reply.text == "ok now" and len(attempts) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 1.0  # exponential: [0.5,1) then [1,2)

    def always(messages, params):
        raise litellm.RateLimitError("429", llm_provider="scripted", model="test")

    client = llm.LLMClient(tmp_path / "ws.duckdb", max_retries=2, sleep=fake_sleep)
    with scripted_llm(always) as calls:
        reply = llm.run_sync(client.acomplete("scripted/test", [{"role": "user", "content": "again"}]))
        client.flush()
    assert not reply.ok and reply.transient and "RateLimitError" in reply.error and len(calls) == 3
    # a failure is not cached: the next run tries again
    with scripted_llm(lambda m, p: "fine") as calls:
        again = llm.complete(tmp_path / "ws.duckdb", "scripted/test", [{"role": "user", "content": "again"}])
    assert again.ok and len(calls) == 1


def test_truncated_and_empty_replies_are_not_ok():
    with scripted_llm(lambda m, p: Scripted("cut off mid", finish_reason="length")):
        r = llm.complete(None, "scripted/test", MSG)
    assert r.truncated and not r.ok and "truncated" in r.problem()
    with scripted_llm(lambda m, p: "   "):
        r = llm.complete(None, "scripted/test", MSG)
    assert not r.ok and r.problem() == "empty reply"


def test_missing_key_fails_before_any_call_naming_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(llm.MissingCredentialsError, match="OPENAI_API_KEY"):
        llm.check_credentials("openai/gpt-4o-mini")
    with pytest.raises(llm.LLMConfigError, match="provider"):
        llm.check_credentials("nosuchprovider/model")
    with pytest.raises(llm.MissingCredentialsError, match="OPENAI_API_KEY"):
        llm.complete(None, "openai/gpt-4o-mini", MSG)


def test_logprobs_round_trip_through_the_cache(tmp_path):
    ws = tmp_path / "ws.duckdb"
    lp = [("7", -0.2, [("7", -0.2), ("8", -1.8)])]
    with scripted_llm(lambda m, p: Scripted("7", logprobs=lp)):
        a = llm.complete(ws, "scripted/test", MSG, logprobs=True, top_logprobs=2)
    b = llm.complete(
        ws, "scripted/test", MSG, logprobs=True, top_logprobs=2
    )  # no provider registered: must come from the cache
    assert b.cached and a.logprobs == b.logprobs and b.logprobs[0].top == [("7", -0.2), ("8", -1.8)]


def test_concurrency_is_bounded():
    running = {"now": 0, "max": 0}

    async def main():
        client = llm.LLMClient(None, concurrency=3)

        def fn(m, p):
            return "x"

        orig = client._call_with_retries

        async def tracked(req, key):
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
            await asyncio.sleep(0.01)
            running["now"] -= 1
            return await orig(req, key)

        client._call_with_retries = tracked
        with scripted_llm(fn):
            reqs = [llm.LLMRequest("scripted/test", [{"role": "user", "content": str(i)}]) for i in range(12)]
            replies = await client.acomplete_many(reqs)
        return replies

    replies = llm.run_sync(main())
    assert all(r.ok for r in replies) and running["max"] == 3


def test_run_sync_works_inside_a_running_event_loop():
    """Callers inside a running loop (Jupyter, Playwright's sync API in the test session) still get a result."""
    import concurrent.futures

    from core.llm.client import run_sync

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def caller() -> int:
        return run_sync(answer())

    # A thread of its own, so the test also holds when the session already runs a loop in the main thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(asyncio.run, caller()).result() == 42
