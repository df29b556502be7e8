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
    from core.cache import CacheParams, plan_contexts, run_cache
    from core.corpus import BrownDocument
    from core.tokenizer import save_tokenizer, train_bpe

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
