"""GPT-2 small at its real scale, through the hub code path, offline: the whole pipeline, stage by stage.

    python bench/gpt2_scale.py [--scale full|reduced] [--tokens 16384] [--work /tmp/gpt2-scale]

Weights are random (`python -m core make-hub-fixture`): this measures scale and the loading path, not
meaning. Steps, each in its own subprocess so its peak resident memory (ru_maxrss) is its own:
1. fixture: the GPT-2-small fixture in a local HF cache (`core.subjects.hub_fixture`; reused if present):
   gpt2-small-res-jb, gpt2-small-attn-out-v5-32k and per-layer transcoders.
2. cache: `load_model('gpt2')` and `load_dictionaries('gpt2', releases=..., transcoder_dir=...)`, the
   36 dictionaries (12 resid_pre, 12 attn_out, 12 transcoders) plus raw and top-k neuron baselines;
   bare forward + encoders over the same batches (base), then the caching job; cache_ratio = base / job
   by wall clock. Then the output tokens (W_dec @ W_U, a step after the job) for `--output-dicts`
   dictionaries (all at reduced scale), timed per dictionary.
3. card: latent card loads of `--cards` random live latents across dictionaries: p95 in ms.
4. trace: hierarchical trace of a 64-token prompt with the 12 transcoders and 12 attention SAEs
   (zero ablation, faithfulness off), and its graph exported as JSON.
5. pages: the Latents page for a latent in headless Chromium, served by `streamlit run` on this workspace
   (`--no-browser` skips); its peak memory is the server's.
6. overlap: decoder overlap of two 24,576-latent dictionaries (resid_pre 5 and 6) with method `auto`:
   the method it picks, seconds, and the stage's peak memory.
7. router: bench/llm_router.py (two fake endpoints vs one) for `router_speedup`.
8. circuits_page: the Circuits page on this workspace in Chromium (`--no-browser` skips): a live trace of the
   64-token prompt on the page (GPT-2 through the hub path), and `circuits_page_s`, the page drawing the
   trace stage's saved JSON through its import path (`--trace-json`).
9. explain: explain and score (detection) `--explain-sample` latents through a local fake OpenAI-compatible
   endpoint via litellm: seconds and the rows stored.
Last line: one JSON object (`peak_rss_gb` is the max over stages; `stages` has each one's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RELEASES = ["gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k"]
PROMPT_64 = (
    "When Mary and John went to the store, John gave a drink to Mary because she was thirsty after the long "
    "walk through the busy market on a hot summer afternoon, and then they sat down together on a bench in "
    "the shade of an old oak tree near the river, where children were playing and a dog was chasing"
)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def _use_fixture(hf_home: Path) -> None:
    os.environ["HF_HOME"] = str(hf_home)
    os.environ["HF_HUB_OFFLINE"] = "1"


def _load(args, with_model: bool = True, ids: list[str] | None = None):
    import torch

    from core.subjects.dictionaries import load_dictionaries
    from core.subjects.models import load_model

    torch.set_num_threads(args.threads)
    model = load_model("gpt2", device="cpu") if with_model else None
    dicts = load_dictionaries(
        "gpt2", releases=RELEASES, transcoder_dir=Path(args.fixture) / "transcoders", ids=ids, device="cpu"
    )
    return model, dicts


def _chosen_ids(n_layers: int = 12) -> list[str]:
    return (
        [f"resid:blocks.{i}.hook_resid_pre" for i in range(n_layers)]
        + [f"attn:blocks.{i}.hook_attn_out" for i in range(n_layers)]
        + [f"transcoder:blocks.{i}.ln2.hook_normalized" for i in range(n_layers)]
    )


def stage_fixture(args) -> dict:
    from core.subjects.hub_fixture import make_hub_fixture

    done = Path(args.fixture) / "DONE"
    t0 = time.perf_counter()
    reused = done.exists()
    if not reused:
        make_hub_fixture(Path(args.fixture), scale=args.scale, seed=0, releases=tuple(RELEASES))
        done.write_text("ok")
    disk = sum(p.stat().st_size for p in Path(args.fixture).rglob("*") if p.is_file())
    return {"fixture_s": round(time.perf_counter() - t0, 1), "reused": reused, "fixture_gb": round(disk / 1e9, 2)}


def stage_cache(args) -> dict:
    import torch

    from core.cache.compute import reuse_freed_memory
    from core.cache.outputs import add_output_tokens
    from core.cache.plan import CacheParams, plan_corpus_contexts, resolve_dictionaries
    from core.cache.run import run_cache
    from core.paths import default_paths

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    from core.subjects.models import load_model

    model = load_model("gpt2", device="cpu")
    dicts = resolve_dictionaries(
        model,
        "gpt2",
        _chosen_ids(model.cfg.n_layers),
        releases=RELEASES,
        transcoder_dir=Path(args.fixture) / "transcoders",
        device="cpu",
    )
    load_s = time.perf_counter() - t0
    plan = plan_corpus_contexts(model.tokenizer, args.tokens, 128, default_paths()["corpus"])
    params = CacheParams(n_tokens=args.tokens, ctx_len=128, batch_contexts=16)
    reuse_freed_memory()

    from cache_throughput import bare_forward_and_encoders

    t_base, _ = bare_forward_and_encoders(model, dicts, plan, params)
    ws = Path(args.work) / "gpt2.duckdb"
    t = time.perf_counter()
    result = run_cache(model, dicts, ws, plan, params, model_name="gpt2", output_tokens=False, restart=True)
    t_job = time.perf_counter() - t
    sae = [d for d in dicts if not d.is_baseline]
    n_out = len(dicts) if args.output_dicts < 0 else args.output_dicts
    t = time.perf_counter()
    filled, _ = add_output_tokens(ws, model, dicts[:n_out], params.n_output_tokens)
    t_out = time.perf_counter() - t
    per_dict = t_out / max(1, len(filled))
    return {
        "load_s": round(load_s, 1),
        "tokens": plan.n_cached_tokens,
        "dictionaries": len(sae),
        "neuron_baselines": len(dicts) - len(sae),
        "latents": int(sum(d.d_sae for d in sae)),
        "latents_with_neurons": int(sum(d.d_sae for d in dicts)),
        "base_s": round(t_base, 1),
        "job_s": round(t_job, 1),
        "cache_ratio": round(t_base / t_job, 3),
        "job_phases_s": {k: round(v, 1) for k, v in result.seconds.items()},
        "activations": int(sum(result.rows.values())),
        "output_tokens_dicts": len(filled),
        "output_tokens_s_per_dict": round(per_dict, 2),
        "output_tokens_s_all_estimated": round(per_dict * len(dicts), 1),
        "workspace": str(ws),
    }


def stage_card(args) -> dict:
    import numpy as np

    from core import store
    from core.latents.cards import latent_card

    ws = Path(args.work) / "gpt2.duckdb"
    recs = [d for d in store.list_dictionaries(ws, ready_only=True) if not d.id.startswith("neurons")]
    rng = np.random.default_rng(0)
    live = {r.id: store.latent_stats_frame(ws, r.id) for r in recs}
    live = {k: f.loc[f["n_fires"] > 0, "latent"].to_numpy() for k, f in live.items()}
    live = {k: v for k, v in live.items() if len(v)}
    keys = sorted(live)
    latent_card(ws, keys[0], int(live[keys[0]][0]))  # warm-up: imports, contexts, vocabulary
    times = []
    for _ in range(args.cards):
        did = keys[rng.integers(len(keys))]
        latent = int(rng.choice(live[did]))
        t = time.perf_counter()
        latent_card(ws, did, latent)
        times.append((time.perf_counter() - t) * 1000)
    return {
        "card_p95_ms": round(float(np.percentile(times, 95)), 1),
        "card_median_ms": round(float(np.median(times)), 1),
        "cards": len(times),
        "first_dictionary": keys[0],
        "first_latent": int(live[keys[0]][0]),
    }


def stage_trace(args) -> dict:
    from core.tracing.api import trace_prompt
    from core.tracing.graph import graph_to_json

    ids = [i for i in _chosen_ids() if not i.startswith("resid")]
    model, dicts = _load(args, ids=ids)
    tokens = model.to_tokens(PROMPT_64, prepend_bos=False)[0, :63]
    prompt = model.tokenizer.decode(tokens)
    n_tok = int(model.to_tokens(prompt).shape[1])
    t = time.perf_counter()
    out = trace_prompt(model, list(dicts.values()), prompt, faithfulness=False, ablation="zero")
    t_trace = time.perf_counter() - t
    path = Path(args.work) / "trace64.json"
    t = time.perf_counter()
    path.write_text(json.dumps(graph_to_json(out.graph)))
    return {
        "trace_64_s": round(t_trace, 1),
        "trace_tokens_incl_bos": n_tok,
        "trace_dictionaries": len(dicts),
        "trace_nodes": out.graph.number_of_nodes(),
        "trace_edges": out.graph.number_of_edges(),
        "export_s": round(time.perf_counter() - t, 2),
        "export_bytes": path.stat().st_size,
        "graph_json": str(path),
    }


def stage_overlap(args) -> dict:
    import numpy as np

    from core.analysis.overlap import DENSE_BYTES_PER_CELL, DENSE_MEMORY_SHARE, available_memory, decoder_matrix, match

    a_id, b_id = "resid:blocks.5.hook_resid_pre", "resid:blocks.6.hook_resid_pre"
    _, dicts = _load(args, with_model=False, ids=[a_id, b_id])
    a, b = decoder_matrix(dicts[a_id]), decoder_matrix(dicts[b_id])
    del dicts
    dense_gb = DENSE_BYTES_PER_CELL * len(a) * len(b) / 1e9
    available_gb = available_memory() / 1e9
    rss0 = _rss_gb()
    t = time.perf_counter()
    m = match(a, b, "auto")
    secs = time.perf_counter() - t
    return {
        "overlap_method": m.method,
        "overlap_s": round(secs, 1),
        "overlap_latents": [len(a), len(b)],
        "overlap_mean_cos": round(float(np.mean(m.similarity)), 4),
        "overlap_dense_matrices_gb": round(dense_gb, 2),
        "overlap_available_gb": round(available_gb, 2),
        "overlap_dense_share": DENSE_MEMORY_SHARE,
        "overlap_rss_before_gb": round(rss0, 2),
    }


def stage_router(args) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "llm_router.py"), "--requests", str(args.router_requests)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return {"router_speedup": last.get("speedup", last.get("router_speedup")), "router": last}


def stage_pages(args) -> dict:
    import tempfile
    from urllib.parse import quote

    from latents_page import READY_JS
    from playwright.sync_api import sync_playwright

    from tests.browser.serve import launch_chromium, serve_app, wait_rendered

    card = json.loads((Path(args.work) / "stage-card.json").read_text())
    ws = Path(args.work) / "gpt2.duckdb"
    env = {"SAE_EXPLORER_WORKSPACE": str(ws), "HF_HOME": os.environ["HF_HOME"]}
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp, serve_app(Path(tmp) / "server.log", env=env) as served:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            url = f"{served.url}/Latents?dictionary={quote(card['first_dictionary'])}&latent={card['first_latent']}"
            t0 = time.monotonic()
            page.goto(url, wait_until="commit", timeout=600_000)
            out["latents_page_first_visit_s"] = round(wait_rendered(page, timeout=600, ready_js=READY_JS) - t0, 2)
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                page.goto(url, wait_until="commit", timeout=300_000)
                times.append(wait_rendered(page, timeout=300, ready_js=READY_JS) - t0)
            out["latents_page_s"] = round(sorted(times)[len(times) // 2], 2)
            out["latents_page_error"] = bool(
                page.query_selector('[data-testid="stException"]')
                or page.query_selector('[data-testid="stAlertContentError"]')
            )
            browser.close()
        out["server_peak_rss_gb"] = round(_hwm_gb(served.pid), 2)
    out["peak_rss_gb_server"] = out["server_peak_rss_gb"]
    return out


def _wait_graph_or_error(page, previous: str, timeout: float = 900.0) -> str:
    """Wait until an iframe's vis-network holds nodes other than `previous` (joined ids; returned), or raise
    SystemExit with the page's error when a trace failed."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for frame in page.frames:
            try:
                ids = frame.evaluate(
                    "typeof network !== 'undefined' && network.body.data.nodes.length > 0 ? nodes.getIds().join('|') : ''"
                )
            except Exception:  # a frame being replaced
                continue
            if ids and ids != previous:
                return ids
        failed = page.query_selector('[data-testid="stAlertContentError"]') or page.query_selector(
            '[data-testid="stException"]'
        )
        if failed:
            raise SystemExit(f"the page shows an error: {failed.inner_text()[:300]}")
        time.sleep(0.05)
    raise SystemExit("the page drew no new graph")


def stage_circuits_page(args) -> dict:
    """The Circuits page on this GPT-2 workspace in headless Chromium against `streamlit run` (the page's model
    set is the workspace's model, gpt2; releases and transcoders from $SAE_EXPLORER_RELEASES and
    $SAE_EXPLORER_TRANSCODER_DIR). Two figures:
    - live: the 64-token prompt of the `trace` stage's JSON typed in, zero ablation, a click on Trace until the
      graph is drawn: the first (loads the model and 24 dictionaries into the server) and a second (warm).
    - circuits_page_s: drawing the saved 64-token trace JSON through the page's import path (median of
      `--page-repeats`), from the file handed to the uploader until the vis-network canvas holds its nodes."""
    import tempfile

    from playwright.sync_api import sync_playwright

    from tests.browser.serve import launch_chromium, serve_app, wait_rendered

    graph_json = Path(args.trace_json or Path(args.work) / "trace64.json")
    if not graph_json.exists():
        raise SystemExit(f"{graph_json} is missing: run the trace stage first (or pass --trace-json)")
    saved = json.loads(graph_json.read_text())
    prompt = saved["metadata"]["prompt"]
    ws = Path(args.work) / "gpt2.duckdb"
    env = {
        "SAE_EXPLORER_WORKSPACE": str(ws),
        "HF_HOME": os.environ["HF_HOME"],
        "HF_HUB_OFFLINE": "1",
        "SAE_EXPLORER_RELEASES": " ".join(RELEASES),
        "SAE_EXPLORER_TRANSCODER_DIR": str(Path(args.fixture) / "transcoders"),
    }
    out: dict = {"circuits_page_graph_nodes_saved": len(saved["nodes"])}
    foreign: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, serve_app(Path(tmp) / "server.log", env=env, timeout=600) as served:
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.on("request", lambda r: foreign.append(r.url))
            t0 = time.monotonic()
            page.goto(served.url + "/Circuits", wait_until="commit", timeout=600_000)
            out["circuits_page_open_s"] = round(wait_rendered(page, timeout=600) - t0, 2)
            live = []
            for i in range(2 if args.page_live else 0):
                if i:  # a new session, so the same graph counts as new; the server keeps the loaded model
                    page.reload(wait_until="commit", timeout=600_000)
                    wait_rendered(page, timeout=600)
                page.get_by_role("textbox", name="Prompt", exact=True).fill(prompt)
                page.get_by_text("zero", exact=True).click()
                t = time.perf_counter()
                page.get_by_role("button", name="Trace").click()
                previous = _wait_graph_or_error(page, "")
                live.append(round(time.perf_counter() - t, 2))
            if live:
                out["circuits_page_live_trace_first_s"], out["circuits_page_live_trace_s"] = live
                out["circuits_page_live_nodes"] = len(previous.split("|"))
            times = []
            for _ in range(args.page_repeats):
                page.reload(wait_until="commit", timeout=600_000)
                wait_rendered(page, timeout=600)
                page.get_by_text("Import a graph (JSON from this app, circuit-tracer or Neuronpedia)").click()
                uploader = page.locator('[data-testid="stFileUploader"] input[type="file"]')
                t = time.perf_counter()
                uploader.set_input_files(str(graph_json))
                _wait_graph_or_error(page, "")
                times.append(time.perf_counter() - t)
            out["circuits_page_s"] = round(sorted(times)[len(times) // 2], 2)
            out["circuits_page_import_times_s"] = [round(t, 2) for t in times]
            out["circuits_page_error"] = bool(page.query_selector('[data-testid="stException"]'))
            browser.close()
        out["server_peak_rss_gb"] = round(_hwm_gb(served.pid), 2)
    out["peak_rss_gb_server"] = out["server_peak_rss_gb"]
    local = ("data:", "blob:", "about:", served.url, "http://localhost", "http://127.0.0.1")
    out["foreign_requests"] = sorted({u for u in foreign if not u.startswith(local)})
    return out


EXPLANATION_REPLY = "[EXPLANATION]: a fake explanation from a local endpoint"


def fake_llm_reply(messages: list[dict]) -> str:
    """A fake LLM's answer that our parsers read: `[EXPLANATION]: ...` to an explainer prompt, and to a
    detection prompt of n examples a list of n alternating 1s and 0s."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    n = len(re.findall(r"^Example \d+:", messages[-1]["content"], flags=re.M))
    return EXPLANATION_REPLY if "[EXPLANATION]" in text else str([(i + 1) % 2 for i in range(n)])


def stage_explain(args) -> dict:
    """Explain and score (detection) `--explain-sample` latents of one dictionary of the workspace through a
    local fake OpenAI-compatible endpoint, via litellm (a one-endpoint router config, `SAE_LLM_ROUTER`):
    `python -m core explain` then `python -m core score`, in this process. Reports each command's seconds and
    the rows stored by this explainer."""
    import contextlib
    import io
    import tempfile

    import duckdb

    from core.cli import main as cli

    ws = Path(args.work) / "gpt2.duckdb"
    dictionary = args.explain_dictionary
    from tests.fake_endpoints import FakeEndpoint

    fake = FakeEndpoint("local", delay_s=args.explain_delay, slots=64, reply=fake_llm_reply)
    out: dict = {"explain_dictionary": dictionary, "explain_sample": args.explain_sample}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "router.yaml"
        config.write_text(
            "num_retries: 2\nmodel_list:\n"
            f"  - model_name: local-llm\n    model: openai/fake-model\n    api_base: {fake.api_base}\n"
        )
        os.environ["SAE_LLM_ROUTER"] = str(config)
        os.environ.setdefault("NO_PROXY", "127.0.0.1")
        common = ["--workspace", str(ws), "--dictionary", dictionary, "--sample", str(args.explain_sample)]
        common += ["--no-random-explanations", "--device", "cpu"]
        for name, argv in (
            ("explain", ["explain", *common, "--model", "local-llm"]),
            ("score", ["score", *common, "--scorers", "detection", "--model", "local-llm", "--explainer", "local-llm"]),
        ):
            buf = io.StringIO()
            t = time.perf_counter()
            with contextlib.redirect_stdout(buf):
                rc = cli(argv)
            out[f"{name}_s"] = round(time.perf_counter() - t, 2)
            if rc != 0:
                raise SystemExit(f"{name} exited {rc}")
            out[f"{name}_report"] = json.loads(buf.getvalue().strip().splitlines()[-1])
    fake.close()
    out["llm_requests"] = sum(fake.requests.values())
    with duckdb.connect(str(ws), read_only=True) as con:
        out["explanations_stored"] = con.execute(
            "SELECT count(*) FROM explanations WHERE explainer = 'local-llm' AND status = 'ok'"
        ).fetchone()[0]
        out["scores_stored"] = con.execute(
            "SELECT count(*) FROM scores WHERE scorer = 'detection' AND scorer_model = 'local-llm' AND status = 'ok'"
        ).fetchone()[0]
    out["explain_score_s"] = round(out["explain_s"] + out["score_s"], 2)
    return out


def _hwm_gb(pid: int) -> float:
    """Peak resident memory (VmHWM) of process `pid` and its children, in GB (Linux /proc)."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) / 1e6)
        except OSError:
            pass
    return total


FORWARDED = (  # the options a stage's subprocess gets
    "scale",
    "tokens",
    "work",
    "fixture",
    "threads",
    "cards",
    "output_dicts",
    "router_requests",
    "trace_json",
    "page_repeats",
    "page_live",
    "explain_sample",
    "explain_dictionary",
    "explain_delay",
)

STAGES = {  # in order of importance: a run cut short keeps the first ones
    "fixture": stage_fixture,
    "cache": stage_cache,
    "card": stage_card,
    "trace": stage_trace,
    "pages": stage_pages,
    "overlap": stage_overlap,
    "router": stage_router,
    "circuits_page": stage_circuits_page,
    "explain": stage_explain,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["full", "reduced"], default="full")
    ap.add_argument("--tokens", type=int, help="corpus tokens to cache (default 16384 full, 2048 reduced)")
    ap.add_argument("--work", help="working folder (default /tmp/gpt2-scale-<scale>)")
    ap.add_argument("--fixture", help="the fixture's HF_HOME (default <work>/hf)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cards", type=int, default=200)
    ap.add_argument("--output-dicts", type=int, help="dictionaries whose output tokens are timed (-1: all)")
    ap.add_argument("--router-requests", type=int, default=192)
    ap.add_argument("--trace-json", help="circuits_page: the graph JSON to draw (default <work>/trace64.json)")
    ap.add_argument("--page-repeats", type=int, default=3, help="circuits_page: imports timed (median reported)")
    ap.add_argument("--page-live", type=int, default=1, help="circuits_page: 1 to also trace live on the page, 0 not")
    ap.add_argument("--explain-sample", type=int, default=20, help="explain: latents explained and scored")
    ap.add_argument("--explain-dictionary", default="resid:blocks.6.hook_resid_pre", help="explain: the dictionary")
    ap.add_argument("--explain-delay", type=float, default=0.05, help="explain: the fake endpoint's seconds per reply")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--stage-timeout", type=int, default=3600)
    args = ap.parse_args()
    args.tokens = args.tokens or (16_384 if args.scale == "full" else 2048)
    args.work = args.work or f"/tmp/gpt2-scale-{args.scale}"
    args.fixture = args.fixture or str(Path(args.work) / "hf")
    if args.output_dicts is None:
        args.output_dicts = 2 if args.scale == "full" else -1
    Path(args.work).mkdir(parents=True, exist_ok=True)
    _use_fixture(Path(args.fixture))

    if args.stage:  # child: run one stage, print its JSON with its peak RSS
        out = STAGES[args.stage](args)
        out["peak_rss_gb"] = round(_rss_gb(), 2)
        (Path(args.work) / f"stage-{args.stage}.json").write_text(json.dumps(out))
        print(json.dumps(out))
        return 0

    unknown = [s for s in args.stages.split(",") if s and s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    browser_stages = ("pages", "circuits_page")
    stages = [s for s in args.stages.split(",") if s and not (args.no_browser and s in browser_stages)]
    results: dict[str, dict] = {}
    loads = []
    for name in stages:
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--stage", name] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in FORWARDED and v is not None
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.stage_timeout)
            if done.returncode != 0:
                results[name] = {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "failed"}
            else:
                results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            results[name] = {"error": f"timed out after {args.stage_timeout} s"}
        results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        loads.append(os.getloadavg()[0])
        print(f"{name}: {json.dumps(results[name])}", flush=True)

    def get(stage: str, key: str):
        return results.get(stage, {}).get(key)

    summary = {
        "peak_rss_gb": max(
            (max(r.get("peak_rss_gb") or 0, r.get("peak_rss_gb_server") or 0) for r in results.values()), default=None
        ),
        "cache_ratio": get("cache", "cache_ratio"),
        "card_p95_ms": get("card", "card_p95_ms"),
        "latents_page_s": get("pages", "latents_page_s"),
        "trace_64_s": get("trace", "trace_64_s"),
        "circuits_page_s": get("circuits_page", "circuits_page_s"),
        "explain_score_s": get("explain", "explain_score_s"),
        "explanations_stored": get("explain", "explanations_stored"),
        "scores_stored": get("explain", "scores_stored"),
        "latents": get("cache", "latents"),
        "router_speedup": get("router", "router_speedup"),
        "overlap_method": get("overlap", "overlap_method"),
        "overlap_s": get("overlap", "overlap_s"),
        "overlap_peak_rss_gb": get("overlap", "peak_rss_gb"),
        "tokens": get("cache", "tokens"),
        "scale": args.scale,
        "load_average_after_each_stage": [round(x, 2) for x in loads],
        "cores": os.cpu_count(),
        "stages": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
