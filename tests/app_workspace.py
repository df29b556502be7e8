"""A tiny workspace for the app's tests: the tiny model and dictionaries of `tiny_cache`, over text that
contains an HTML probe which the tokenizer keeps as ONE token, so a page that forgot to escape a token
would inject it."""

from __future__ import annotations

from pathlib import Path

import tiny_cache

PROBE = "<img src=x onerror=alert(1)>"
TEXTS = [*tiny_cache.TEXTS, f"Then Mary wrote {PROBE} on the wall, and John read {PROBE} aloud."]


def build_app_workspace(directory: Path) -> Path:
    """Cache the tiny dictionaries over the probe text into `directory/app.duckdb`; returns its path (a few seconds)."""
    from core.build.corpus import BrownDocument
    from core.build.tokenizer import save_tokenizer, train_bpe
    from core.cache.plan import CacheParams, plan_contexts
    from core.cache.run import run_cache

    tokdir = directory / "tokenizer"
    tok = train_bpe(TEXTS * 20, 300)
    tok.add_tokens([PROBE])
    save_tokenizer(tok, tokdir, model_max_length=32)
    model, dicts = tiny_cache.build(tokdir)
    docs = [BrownDocument(f"doc{i}", "a", " ".join(TEXTS[(i + j) % len(TEXTS)] for j in range(12))) for i in range(30)]
    plan = plan_contexts(
        model.tokenizer, docs, tiny_cache.N_TOKENS, tiny_cache.CTX_LEN, {"corpus": "app-test", "split": "train"}
    )
    params = CacheParams(n_tokens=tiny_cache.N_TOKENS, ctx_len=tiny_cache.CTX_LEN, batch_contexts=8, chunk_contexts=16)
    workspace = directory / "app.duckdb"
    run_cache(model, list(dicts.values()), workspace, plan, params, model_name="tiny-test")
    return workspace


def copy_workspace(src: Path, directory: Path) -> Path:
    """A copy of workspace `src` (its .duckdb file and data folder) in `directory`, for tests that write to it."""
    import shutil

    from core import store

    dst = directory / src.name
    shutil.copy2(src, dst)
    shutil.copytree(store.data_dir(src), store.data_dir(dst))
    return dst


def store_explanations(workspace: Path, dictionary: str, latent: int) -> tuple[list, list]:
    """Store two explanations of one latent through core.store (an LLM one whose text holds the probe, and a
    baseline) and three scores of them; returns (explanations, scores) as written."""
    from core import store

    llm = store.ExplanationRecord(
        "e-llm", dictionary, latent, "openai/gpt-4o-mini", False, None, "top", f"the token {PROBE} in quotes", "v1", {}
    )
    base = store.ExplanationRecord(
        "e-base", dictionary, latent, "baseline:token-stats", True, None, "top", "fires on: Mary, John", "v1", {}
    )
    scores = [
        store.ScoreRecord("s1", "e-llm", "detection", "openai/gpt-4o-mini", 0.8125, "v1", {}, n_examples=40),
        store.ScoreRecord("s2", "e-llm", "embedding", "embedding:all-MiniLM-L6-v2", 0.6, "v1", {}, n_examples=40),
        store.ScoreRecord("s3", "e-base", "detection", "judge:minilm-similarity", 0.55, "v1", {}, n_examples=40),
    ]
    store.write_explanations(workspace, [llm, base])
    store.write_scores(workspace, [(s, []) for s in scores])
    return [llm, base], scores
