"""Concurrency of core/llm/client.py against a local OpenAI-compatible test server, and LLM cost per latent.

1. Starts a test server (aiohttp, its own process) on 127.0.0.1 that answers
   POST /v1/chat/completions after a fixed latency, with a reply that fits the prompt (an
   `[EXPLANATION]:` line, a 0/1 list of the asked length, or simulation lines) and usage counted with
   litellm's gpt-4o-mini tokenizer.
2. Throughput through `core.llm.client.LLMClient` (litellm model "openai/test", api_base = the server,
   workspace cache and usage log on, every request distinct so nothing is served from the cache):
   requests/s at concurrency 1 and at 16. `scaling_16` = throughput(16) / (16 × throughput(1)).
3. Explains and scores (detection + fuzzing) a few latents of a temporary workspace (one dictionary, as many tokens as the default workspace) of the default
   model with the defaults, through the same server, and reports LLM calls and tokens per latent.

Last line: one JSON object. Usage: python bench/llm_concurrency.py [--latency 0.3] [--latents 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SERVER = r"""
import asyncio, json, os, re, sys, time
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
from aiohttp import web
import litellm

LATENCY = float(sys.argv[2])

def reply_for(messages):
    system = messages[0]["content"] if messages else ""
    user = messages[-1]["content"] if messages else ""
    if "[EXPLANATION]" in system:
        return "[EXPLANATION]: common function words"
    m = re.search(r"Python list of (\d+) integers", system)
    if m:
        n = int(m.group(1))
        return "[" + ", ".join("1" if i % 2 == 0 else "0" for i in range(n)) + "]"
    if "index<TAB>activation" in system:
        n = len([ln for ln in user.split("Text:\n", 1)[-1].splitlines() if ln.strip()])
        return "\n".join(f"{i + 1}\t0" for i in range(n))
    return "ok"

async def handle(request):
    body = await request.json()
    await asyncio.sleep(LATENCY)
    text = reply_for(body.get("messages", []))
    pt = litellm.token_counter(model="gpt-4o-mini", messages=body.get("messages", []))
    ct = litellm.token_counter(model="gpt-4o-mini", text=text)
    return web.json_response({
        "id": "x", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "test"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    })

app = web.Application()
app.router.add_post("/v1/chat/completions", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, int]:
    """Start the test server; returns (process, port) once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(latency)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"test server died: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("test server did not start within 120 s")


async def throughput(workspace: Path, port: int, concurrency: int, n: int, tag: str) -> float:
    """Requests per second for `n` distinct requests at `concurrency` (after one warm-up call)."""
    from core.llm.client import LLMClient, LLMRequest

    params = {"api_base": f"http://127.0.0.1:{port}/v1", "api_key": "test-key", "temperature": 0.0}
    client = LLMClient(workspace, concurrency=concurrency)
    await client.acomplete("openai/test", [{"role": "user", "content": f"warm-up {tag}"}], **params)
    reqs = [LLMRequest("openai/test", [{"role": "user", "content": f"{tag} request {i}"}], params) for i in range(n)]
    t0 = time.perf_counter()
    replies = await client.acomplete_many(reqs)
    dt = time.perf_counter() - t0
    bad = [r for r in replies if not r.ok or r.cached]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} calls failed or were cached: {bad[0]}")
    return n / dt


def per_latent_cost(port: int, n_latents: int, tmp: Path) -> dict:
    """Explain + detection + fuzzing at the defaults for `n_latents` latents of a small temporary workspace."""
    import litellm

    from core import store
    from core.autointerp.engine import RunSpec, run
    from core.cache.plan import CacheParams, plan_corpus_contexts, resolve_dictionaries
    from core.cache.run import run_cache
    from core.paths import default_paths
    from core.subjects.models import load_model

    ws = tmp / "bench.duckdb"
    model = load_model("default", device="cpu")
    dicts = resolve_dictionaries(model, "default", ["resid:blocks.2.hook_resid_pre"], neurons=False, device="cpu")
    params = CacheParams(n_tokens=32_768)  # the default workspace's size, so example counts match it
    plan = plan_corpus_contexts(model.tokenizer, params.n_tokens, params.ctx_len, default_paths()["corpus"])
    run_cache(model, dicts, ws, plan, params, model_name="default")
    # route the test model to the server through litellm's defaults (the engine passes no api_base)
    litellm.api_base = f"http://127.0.0.1:{port}/v1"
    os.environ["OPENAI_API_KEY"] = "test-key"  # the test server ignores it; check_credentials wants one
    spec = RunSpec(
        explainer="openai/test",
        scorers=("detection", "fuzzing"),
        scorer_model="openai/test",
        random_explanations=False,
        concurrency=16,
    )
    run(ws, [dicts[0].id], spec, sample=n_latents)
    usage = store.llm_usage_summary(ws, by="purpose")
    frame = store.scores_frame(ws, status=None)
    n = int(frame["latent"].nunique()) if len(frame) else n_latents
    out = {"latents": n}
    for _, row in usage.iterrows():
        out[f"{row['purpose']}_calls"] = round(float(row["calls"]) / n, 2)
        out[f"{row['purpose']}_tokens"] = round(float(row["prompt_tokens"] + row["completion_tokens"]) / n, 1)
    out["calls_per_latent"] = round(float(usage["calls"].sum()) / n, 2)
    out["prompt_tokens_per_latent"] = round(float(usage["prompt_tokens"].sum()) / n, 1)
    out["completion_tokens_per_latent"] = round(float(usage["completion_tokens"].sum()) / n, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3, help="server latency per request, seconds")
    parser.add_argument("--n1", type=int, default=12, help="requests at concurrency 1")
    parser.add_argument("--n16", type=int, default=192, help="requests at concurrency 16")
    parser.add_argument("--latents", type=int, default=8, help="latents for the per-latent cost (0 to skip)")
    args = parser.parse_args()
    proc, port = start_server(args.latency)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            from core.llm.client import run_sync

            t1 = run_sync(throughput(tmp / "ws.duckdb", port, 1, args.n1, "c1"))
            t16 = run_sync(throughput(tmp / "ws.duckdb", port, 16, args.n16, "c16"))
            result = {
                "latency_s": args.latency,
                "throughput_1": round(t1, 3),
                "throughput_16": round(t16, 3),
                "scaling_16": round(t16 / (16 * t1), 3),
            }
            print(json.dumps(result), flush=True)
            if args.latents:
                result["per_latent"] = per_latent_cost(port, args.latents, tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
