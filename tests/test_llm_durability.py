"""core.llm.client keeps every finished call across a kill: no paid reply is paid twice, the usage log is complete.

The end-to-end test runs an LLM batch in a subprocess against a local OpenAI-compatible HTTP server
(127.0.0.1, counting requests per prompt), kills it with SIGKILL after some replies were handed to
the caller, and reruns it to completion. The others check the journal's pieces in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from core import store
from core.llm import client as llm
from tests.llm_helpers import scripted_llm

ROOT = Path(__file__).resolve().parent.parent
MSG = [{"role": "user", "content": "Explain latent 3"}]


class FakeOpenAI:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that counts requests and replies per prompt.

    It answers the first `answer_limit` requests and holds every further one unanswered (as a slow
    provider would) until `next_run()`, which drops the held ones without a reply.
    """

    def __init__(self, delay_s: float = 0.02):
        self.delay_s = delay_s
        self.requests: Counter[str] = Counter()
        self.answered: list[Counter[str]] = [Counter()]  # per run
        self.admitted = 0
        self.held = 0
        self.answer_limit: int | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server._lock:
                    server.requests[prompt] += 1
                    run = len(server.answered) - 1
                    hold = server.answer_limit is not None and server.admitted >= server.answer_limit
                    server.held += hold
                    server.admitted += not hold
                if hold:
                    server._release.wait()
                    self.close_connection = True  # never answered: the client that sent it is gone
                    return
                time.sleep(server.delay_s)
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f"reply to {prompt}"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                with server._lock:
                    server.answered[run][prompt] += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def next_run(self) -> None:
        """Drop the held requests unanswered and answer everything from now on."""
        with self._lock:
            self.answer_limit = None
            self.answered.append(Counter())
        self._release.set()

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


CHILD = r"""
import sys
from core.llm import client as llm

ws, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "dummy-key", "temperature": 0.0}
reqs = [llm.LLMRequest("openai/fake-model", [{"role": "user", "content": f"prompt {i}"}], params, "explain", "d", i)
        for i in range(n)]

def progress(phase, done, total):
    print(f"done {done}", flush=True)

replies = llm.complete_many(ws, reqs, concurrency=4, progress=progress)
assert all(r.ok for r in replies), [r.problem() for r in replies if not r.ok]
print("finished", flush=True)
"""


def _child(ws: Path, port: int, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ws), str(port), str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_run_pays_no_finished_call_twice_and_logs_every_call(tmp_path):
    n_prompts, n_before_kill = 24, 9
    ws = tmp_path / "ws.duckdb"
    server = FakeOpenAI()
    try:
        server.answer_limit = n_before_kill
        child = _child(ws, server.port, n_prompts)
        done = 0
        for line in child.stdout:  # the caller has these replies in hand
            if line.startswith("done "):
                done = int(line.split()[1])
            if done == n_before_kill:
                break
        assert done == n_before_kill, child.stderr.read()[-3000:]
        deadline = time.monotonic() + 30
        while server.held < 4 and time.monotonic() < deadline:  # every slot waits on the stalled provider
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        first = dict(server.answered[0])
        assert sum(first.values()) == n_before_kill

        server.next_run()
        rerun = _child(ws, server.port, n_prompts)
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0 and "finished" in out, err[-3000:]
    finally:
        server.close()

    # zero finished calls paid twice: each prompt answered before the kill was requested once in all
    assert {p: server.requests[p] for p in first} == dict.fromkeys(first, 1)
    answered = sum(sum(c.values()) for c in server.answered)
    assert answered == n_prompts  # and every prompt was answered exactly once over both runs
    with store.session(ws) as con:
        paid = con.execute(
            "SELECT count(*), count(DISTINCT key) FROM llm_usage WHERE NOT cached AND error IS NULL"
        ).fetchall()[0]
        n_replies = con.execute("SELECT count(*) FROM llm_responses").fetchall()[0][0]
    assert paid == (answered, answered)  # one usage row per request the server answered
    assert n_replies == n_prompts
    assert not list(llm.ResponseCache(ws).journal_dir.glob("*.jsonl"))


def _usage_rows(ws: Path) -> int:
    with store.session(ws) as con:
        return con.execute("SELECT count(*) FROM llm_usage").fetchall()[0][0]


def _ask(client: llm.LLMClient, i: int) -> llm.LLMReply:
    return llm.run_sync(client.acomplete("scripted/test", [{"role": "user", "content": f"q{i}"}]))


def test_flush_every_counts_calls(tmp_path):
    ws = tmp_path / "ws.duckdb"
    client = llm.LLMClient(ws, flush_every=4)
    with scripted_llm(lambda m, p: "ok"):
        for i in range(3):
            _ask(client, i)
        assert not ws.exists() or _usage_rows(ws) == 0  # three calls: still only in the journal
        _ask(client, 3)
        assert _usage_rows(ws) == 4
        _ask(client, 0)  # a cache hit counts as a call too
        assert _usage_rows(ws) == 4
        client.flush()
    assert _usage_rows(ws) == 5


def test_journal_of_a_dead_client_is_merged_once(tmp_path):
    """A client that dies before flushing leaves its journal; the next client merges it before reading."""
    ws = tmp_path / "ws.duckdb"
    dead = llm.LLMClient(ws)
    with scripted_llm(lambda m, p: "paid once") as calls:
        _ask(dead, 1)
        _ask(dead, 2)
        os.close(dead.cache._journal.fd)  # the process "dies": its lock is released, nothing was flushed
        dead.cache._journal = None
        assert not ws.exists()
        fresh = llm.LLMClient(ws)
        again = _ask(fresh, 1)
        fresh.flush()
    assert len(calls) == 2 and again.cached and again.text == "paid once"
    assert _usage_rows(ws) == 3  # two paid calls of the dead client, one cache hit
    assert not list(fresh.cache.journal_dir.glob("*"))


def test_journal_left_between_commit_and_removal_is_not_stored_twice(tmp_path, monkeypatch):
    ws = tmp_path / "ws.duckdb"
    client = llm.LLMClient(ws)
    with scripted_llm(lambda m, p: "ok"):
        for i in range(3):
            _ask(client, i)
    journal = client.cache._journal
    # the process dies right after the commit: the file stays, its lock goes
    monkeypatch.setattr(llm._Journal, "remove", lambda self: os.close(self.fd))
    client.flush()
    monkeypatch.undo()
    assert journal.path.exists() and _usage_rows(ws) == 3
    assert llm.ResponseCache(ws).recover() == 1  # removed without storing its rows again
    assert _usage_rows(ws) == 3 and not journal.path.exists()
    with scripted_llm(lambda m, p: "ok"):
        llm.complete(ws, "scripted/test", [{"role": "user", "content": "later"}])
    with store.session(ws) as con:  # the next merge drops marks of journals that are gone
        marks = con.execute("SELECT count(*) FROM workspace_info WHERE starts_with(key, 'llm-journal/')").fetchall()
    assert marks[0][0] <= 1


def test_live_journal_is_left_alone_and_a_torn_line_is_skipped(tmp_path):
    ws = tmp_path / "ws.duckdb"
    live = llm.LLMClient(ws)
    with scripted_llm(lambda m, p: "ok"):
        _ask(live, 1)
        other = llm.ResponseCache(ws)
        assert other.recover() == 0  # the live client's lock is held
        live.flush()
    assert _usage_rows(ws) == 1
    # a journal whose writer died in the middle of a line
    folder = other.journal_dir
    row = {"key": "k", "model": "m", "purpose": "p", "dictionary": None, "latent": 1, "cached": True}
    row |= {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "latency_s": 0.0, "error": None}
    (folder / "999-dead-0.jsonl").write_text(json.dumps({"reply": None, "usage": row}) + '\n{"reply": {"key": "x", "mo')
    assert llm.ResponseCache(ws).recover() == 1
    assert _usage_rows(ws) == 2


def test_cache_hits_stay_cheap(tmp_path):
    """The journal's cost on cache hits, the fastest calls there are (~0.05 ms each here): bounded loosely."""
    n = 500
    ws = tmp_path / "ws.duckdb"
    reqs = [llm.LLMRequest("scripted/test", [{"role": "user", "content": f"q{i}"}]) for i in range(n)]
    with scripted_llm(lambda m, p: "ok"):
        llm.complete_many(ws, reqs, concurrency=16)
        t0 = time.perf_counter()
        replies = llm.complete_many(ws, reqs, concurrency=16)
        dt = time.perf_counter() - t0
    assert all(r.cached for r in replies) and _usage_rows(ws) == 2 * n
    assert dt / n < 0.01
