"""Fake OpenAI-compatible chat endpoints on 127.0.0.1 for router tests and bench/llm_router.py.

Each `FakeEndpoint` is a threaded HTTP server that answers POST .../chat/completions after `delay_s`,
serving at most `slots` requests at once (the rest queue, as on a GPU server), and counts requests
and answers per prompt. `kill()` stops it as a crash would: new connections are refused and requests
in flight (or arriving on kept-alive connections) get no reply.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEndpoint:
    """One OpenAI-compatible endpoint; `api_base` is its URL (with /v1)."""

    def __init__(
        self,
        name: str = "a",
        delay_s: float = 0.05,
        slots: int = 4,
        reply: Callable[[list[dict]], str] | None = None,
    ):
        """`reply(messages) -> str` writes the answer (default: "<name>: reply to <last message>")."""
        self.name = name
        self.reply = reply or (lambda messages: f"{name}: reply to {messages[-1]['content']}")
        self.delay_s = delay_s
        self.requests: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.dead = False
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(slots)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                if server.dead:
                    return self._drop()
                with server._lock:
                    server.requests[prompt] += 1
                with server._slots:
                    time.sleep(server.delay_s)
                if server.dead:  # crashed while working on it: no reply
                    return self._drop()
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": server.reply(body["messages"])},
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
                    server.answered[prompt] += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def n_answered(self) -> int:
        """Requests answered so far."""
        with self._lock:
            return sum(self.answered.values())

    def kill(self) -> None:
        """Stop as a crashed server does: refuse new connections, answer nothing more."""
        self.dead = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def close(self) -> None:
        """Stop (idempotent)."""
        if not self.dead:
            self.kill()
