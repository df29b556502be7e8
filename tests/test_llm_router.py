"""The LLM stage across several endpoints: a litellm Router configured in one file (core.llm.client).

Two fake OpenAI-compatible endpoints on 127.0.0.1 (tests/fake_endpoints.py); one is killed mid-run.
Throughput against one endpoint is measured by bench/llm_router.py, not asserted here.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core import store
from core.llm import client as llm
from tests.fake_endpoints import FakeEndpoint


@pytest.fixture
def endpoints():
    eps = [FakeEndpoint("a", delay_s=0.05, slots=4), FakeEndpoint("b", delay_s=0.05, slots=4)]
    yield eps
    for e in eps:
        e.close()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv(llm.ROUTER_ENV, raising=False)


def _yaml(path: Path, bases: list[str], extra: str = "", strategy: str = "least-busy") -> Path:
    entries = "".join(f"  - model_name: local-llm\n    model: openai/fake-model\n    api_base: {b}\n" for b in bases)
    path.write_text(f"routing_strategy: {strategy}\nnum_retries: 3\nallowed_fails: 0\n{extra}model_list:\n{entries}")
    return path


def _requests(n: int, tag: str = "p") -> list[llm.LLMRequest]:
    return [
        llm.LLMRequest(
            "local-llm", [{"role": "user", "content": f"{tag} {i}"}], {"temperature": 0.0}, "explain", "d", i
        )
        for i in range(n)
    ]


def test_yaml_and_toml_configs_read_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "secret-value")
    y = tmp_path / "r.yaml"
    y.write_text(
        "routing_strategy: least-busy\nnum_retries: 2\ntimeout: 30\nmodel_list:\n"
        "  - model_name: m\n    model: openai/qwen\n    api_base: http://10.0.0.1:8000/v1\n    api_key_env: VLLM_KEY\n"
        "  - model_name: m\n    model: openai/qwen\n    api_base: http://10.0.0.2:8000/v1\n    max_parallel_requests: 8\n"
    )
    t = tmp_path / "r.toml"
    t.write_text(
        'routing_strategy = "least-busy"\nnum_retries = 2\ntimeout = 30\n'
        '[[model_list]]\nmodel_name = "m"\nmodel = "openai/qwen"\napi_base = "http://10.0.0.1:8000/v1"\napi_key_env = "VLLM_KEY"\n'
        '[[model_list]]\nmodel_name = "m"\nmodel = "openai/qwen"\napi_base = "http://10.0.0.2:8000/v1"\nmax_parallel_requests = 8\n'
    )
    a, b = llm.load_router_config(y), llm.load_router_config(t)
    assert a.endpoints == b.endpoints and (a.routing_strategy, a.num_retries, a.timeout) == ("least-busy", 2, 30)
    assert a.model_names == {"m"} and a.key_model("m") == "m=openai/qwen"
    listed = a.model_list()
    assert (
        listed[0]["litellm_params"]["api_key"] == "secret-value"
        and listed[1]["litellm_params"]["max_parallel_requests"] == 8
    )
    assert "secret-value" not in repr(a)  # the config holds the variable's name, never the key


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, r"router config .*missing\.yaml does not exist"),
        ("bad.yaml", "model_list: [\n  - {model_name: m", r"bad\.yaml is not valid YAML"),
        ("bad.toml", "model_list = [", r"bad\.toml is not valid TOML"),
        ("r.json", "{}", r"use a \.yaml, \.yml or \.toml file"),
        ("list.yaml", "- a\n- b\n", r"must be a mapping with a model_list"),
        ("empty.yaml", "routing_strategy: least-busy\n", r"has no model_list"),
        (
            "key.yaml",
            "model_list:\n  - {model_name: m, model: openai/x, api_key: sk-1}\n",
            r"entry 1: api_key is not read from the file; .*api_key_env",
        ),
        ("top.yaml", "retries: 2\nmodel_list: []\n", r"unknown key 'retries'"),
        (
            "strategy.yaml",
            "routing_strategy: fastest\nmodel_list:\n  - {model_name: m, model: openai/x}\n",
            r"unknown routing_strategy 'fastest'",
        ),
        (
            "provider.yaml",
            "model_list:\n  - {model_name: m, model: notaprovider/x}\n",
            r"entry 1: model 'notaprovider/x': litellm knows no provider 'notaprovider'",
        ),
        (
            "bare.yaml",
            "model_list:\n  - {model_name: m, model: gpt-4o-mini}\n",
            r"entry 1: model 'gpt-4o-mini' is not provider/model",
        ),
        ("noname.yaml", "model_list:\n  - {model: openai/x}\n", r"entry 1 has no model_name"),
        (
            "base.yaml",
            "model_list:\n  - {model_name: m, model: openai/x, api_base: 10.0.0.1:8000}\n",
            r"api_base '10\.0\.0\.1:8000' is not an http\(s\) URL",
        ),
        (
            "type.yaml",
            "num_retries: many\nmodel_list:\n  - {model_name: m, model: openai/x}\n",
            r"num_retries must be an integer",
        ),
        (
            "env.yaml",
            "model_list:\n  - {model_name: m, model: openai/x, api_key_env: NO_SUCH_KEY_VAR_21}\n",
            r"entry 1 needs the environment variable NO_SUCH_KEY_VAR_21",
        ),
    ],
)
def test_bad_config_is_a_clear_error_before_any_call(tmp_path, endpoints, monkeypatch, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(llm.LLMConfigError, match=message):
        llm.LLMClient(tmp_path / "ws.duckdb", router=path)
    monkeypatch.setenv(llm.ROUTER_ENV, str(path))  # the same through the environment variable
    with pytest.raises(llm.LLMConfigError, match=message):
        llm.complete_many(tmp_path / "ws.duckdb", _requests(2))
    assert all(sum(e.requests.values()) == 0 for e in endpoints)
    assert not (tmp_path / "ws.duckdb").exists()  # nothing stored


def test_router_spreads_calls_and_caches_by_group(tmp_path, endpoints):
    cfg = _yaml(tmp_path / "r.yaml", [e.api_base for e in endpoints])
    ws = tmp_path / "ws.duckdb"
    replies = llm.complete_many(ws, _requests(24), concurrency=8, router=cfg)
    assert all(r.ok for r in replies) and all(r.model == "local-llm" for r in replies)
    assert all(e.n_answered > 0 for e in endpoints)  # both endpoints served
    again = llm.complete_many(ws, _requests(24), concurrency=8, router=cfg)
    assert [r.text for r in again] == [r.text for r in replies] and all(r.cached for r in again)
    assert sum(e.n_answered for e in endpoints) == 24  # the rerun paid nothing
    # Without the router the group name is not a litellm model: a clear error, not a call.
    with pytest.raises(llm.LLMConfigError, match="'local-llm' is not a litellm model id"):
        llm.complete_many(ws, _requests(1))


def test_endpoint_killed_mid_run_completes_and_pays_no_call_twice(tmp_path, endpoints):
    a, b = endpoints
    cfg = _yaml(tmp_path / "r.yaml", [a.api_base, b.api_base])
    ws = tmp_path / "ws.duckdb"
    n = 40

    def kill_a() -> None:
        deadline = time.monotonic() + 30
        while a.n_answered < 4 and time.monotonic() < deadline:
            time.sleep(0.002)
        a.kill()

    killer = threading.Thread(target=kill_a)
    killer.start()
    replies = llm.complete_many(ws, _requests(n), concurrency=8, router=cfg)
    killer.join()
    assert a.dead and 4 <= a.n_answered < n
    assert all(r.ok for r in replies), [r.problem() for r in replies if not r.ok]
    answered = a.answered + b.answered
    assert len(answered) == n and set(answered.values()) == {1}  # every prompt answered once, by one endpoint
    assert sum(a.requests.values()) > a.n_answered  # some were in flight at a when it died, and were redone at b
    with store.session(ws) as con:
        paid, keys = con.execute(
            "SELECT count(*), count(DISTINCT key) FROM llm_usage WHERE NOT cached AND error IS NULL"
        ).fetchall()[0]
        n_replies = con.execute("SELECT count(*) FROM llm_responses").fetchall()[0][0]
    assert paid == keys == n_replies == n
    # A rerun (the dead endpoint still listed) is served from the cache: no call is paid twice.
    again = llm.complete_many(ws, _requests(n), concurrency=8, router=cfg)
    assert all(r.cached for r in again) and sum(b.answered.values()) == n - a.n_answered
    assert not list(llm.ResponseCache(ws).journal_dir.glob("*.jsonl"))


def test_router_named_by_the_environment_reaches_every_llm_caller(tmp_path, endpoints, monkeypatch):
    cfg = _yaml(tmp_path / "r.yaml", [e.api_base for e in endpoints])
    with pytest.raises(llm.LLMConfigError, match="'local-llm' is not a litellm model id"):
        llm.check_credentials("local-llm")  # the pipeline's own credential check, before the variable is set
    monkeypatch.setenv(llm.ROUTER_ENV, str(cfg))
    llm.check_credentials("local-llm")  # checked with its config
    assert llm.supports_logprobs("local-llm") == llm.supports_logprobs("openai/fake-model")
    reply = llm.complete(tmp_path / "ws.duckdb", "local-llm", [{"role": "user", "content": "hello"}])
    assert reply.ok and reply.text.endswith("reply to hello")
    assert sum(e.n_answered for e in endpoints) == 1
