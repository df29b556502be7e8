"""Throughput of the LLM stage through a litellm Router: two endpoints against one, and failover.

1. Starts fake OpenAI-compatible endpoints (tests/fake_endpoints.py: 127.0.0.1, `--delay` s per
   request, at most `--slots` requests at once each, the rest queue, as on a GPU server), in a child
   process so the servers do not share the client's interpreter.
2. Warms up litellm, then sends `--requests` distinct chat requests through
   `core.llm.client.complete_many(router=CONFIG)` (workspace cache and journal on, `--concurrency`
   at once): first with a config listing one endpoint, then with two. `router_speedup` =
   throughput(two) / throughput(one); the ideal is 2.
3. Failover: the same with two endpoints, killing one after a quarter of the requests were answered;
   reports whether every request got a reply and how many finished calls were paid twice (goal 0).

Last line: one JSON object. Usage: python bench/llm_router.py [--requests 192] [--delay 1.0] [--slots 4] [--strategy least-busy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("NO_PROXY", "127.0.0.1")

SERVERS = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from tests.fake_endpoints import FakeEndpoint

delay, slots = float(sys.argv[2]), int(sys.argv[3])
eps = [FakeEndpoint(name, delay, slots) for name in ("a", "b")]
print(json.dumps([e.api_base for e in eps]), flush=True)
for line in sys.stdin:  # commands: "kill a", "counts"
    cmd = line.split()
    if cmd[0] == "kill":
        next(e for e in eps if e.name == cmd[1]).kill()
        print("killed", flush=True)
    elif cmd[0] == "counts":
        print(json.dumps({e.name: [dict(e.requests), dict(e.answered)] for e in eps}), flush=True)
"""


class Servers:
    """The two fake endpoints in a child process, driven over its stdin."""

    def __init__(self, delay: float, slots: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVERS, str(ROOT), str(delay), str(slots)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.api_bases = json.loads(self.proc.stdout.readline())

    def ask(self, cmd: str) -> str:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def counts(self) -> dict:
        return json.loads(self.ask("counts"))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def write_config(path: Path, api_bases: list[str], strategy: str) -> Path:
    entries = "".join(
        f"  - model_name: local-llm\n    model: openai/fake-model\n    api_base: {b}\n" for b in api_bases
    )
    path.write_text(f"routing_strategy: {strategy}\nnum_retries: 3\nallowed_fails: 0\nmodel_list:\n{entries}")
    return path


def run(config: Path, tag: str, n: int, concurrency: int, workdir: Path, on_progress=None) -> tuple[float, list]:
    from core.llm import client as llm

    reqs = [
        llm.LLMRequest("local-llm", [{"role": "user", "content": f"{tag} prompt {i}"}], {"temperature": 0.0})
        for i in range(n)
    ]
    t0 = time.perf_counter()
    replies = llm.complete_many(
        workdir / f"{tag}.duckdb", reqs, concurrency=concurrency, router=config, progress=on_progress
    )
    return time.perf_counter() - t0, replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=192)
    ap.add_argument("--delay", type=float, default=1.0, help="seconds per request at an endpoint")
    ap.add_argument("--slots", type=int, default=4, help="requests an endpoint serves at once")
    ap.add_argument("--concurrency", type=int, default=32, help="client concurrency (well above 2 x slots)")
    ap.add_argument("--strategy", default="least-busy")
    args = ap.parse_args()

    servers = Servers(args.delay, args.slots)
    out: dict = {"requests": args.requests, "delay_s": args.delay, "slots": args.slots, "strategy": args.strategy}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            one = write_config(work / "one.yaml", servers.api_bases[:1], args.strategy)
            two = write_config(work / "two.yaml", servers.api_bases, args.strategy)
            run(two, "warmup", 2 * args.concurrency, args.concurrency, work)
            t1, r1 = run(one, "one", args.requests, args.concurrency, work)
            t2, r2 = run(two, "two", args.requests, args.concurrency, work)
            assert all(r.ok for r in r1 + r2), [r.problem() for r in r1 + r2 if not r.ok][:3]
            counts = servers.counts()
            split = [sum(k for p, k in counts[e][1].items() if p.startswith("two ")) for e in ("a", "b")]
            out |= {
                "one_endpoint_rps": round(args.requests / t1, 2),
                "two_endpoints_rps": round(args.requests / t2, 2),
                "ideal_one_endpoint_rps": round(args.slots / args.delay, 2),
                "router_speedup": round(t1 / t2, 3),
                "two_endpoints_split": split,
            }

            killed = []

            def kill_a(phase: str, done: int, total: int) -> None:
                if not killed and done >= total // 4:
                    killed.append(done)
                    servers.ask("kill a")

            t3, r3 = run(two, "failover", args.requests, args.concurrency, work, on_progress=kill_a)
            counts = servers.counts()
            answered: dict[str, int] = {}
            for name in ("a", "b"):
                for prompt, k in counts[name][1].items():
                    if prompt.startswith("failover "):
                        answered[prompt] = answered.get(prompt, 0) + k
            _, again = run(two, "failover", args.requests, args.concurrency, work)
            out |= {
                "failover_completed": all(r.ok for r in r3),
                "failover_s": round(t3, 2),
                "failover_killed_after": killed[0] if killed else None,
                "failover_paid_twice": sum(k - 1 for k in answered.values() if k > 1),
                "failover_rerun_cached": sum(r.cached for r in again),
            }
    finally:
        servers.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
