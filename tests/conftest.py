"""Shared fixtures: a tiny tokenizer and a tiny random HookedTransformer built offline."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_TEXT = [
    "When Mary and John went to the store, John gave a drink to Mary.",
    "The keys to the old cabinet are here. The key to the cabinets is lost.",
    "He left early (because it was late). She stayed.",
    "Tom and Anna met at the park, and Anna gave a book to Tom.",
] * 20


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory) -> Path:
    """A tokenizer folder for tests/tiny_cache.py's models, made once per test module."""
    import tiny_cache

    d = tmp_path_factory.mktemp("tinytok")
    tiny_cache.make_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def tiny_cache_setup(tokdir):
    """(model, dictionaries, context plan, cache params) of tests/tiny_cache.py, built once per test module."""
    import tiny_cache
    import torch

    torch.set_num_threads(1)
    model, dicts = tiny_cache.build(tokdir)
    plan, params = tiny_cache.plan_and_params(model)
    return model, dicts, plan, params


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A small BPE tokenizer folder trained on a few sentences."""
    from core.build.tokenizer import save_tokenizer, train_bpe

    d = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_bpe(TINY_TEXT, 400), d, model_max_length=32)
    return d


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    """The tokenizer of `tiny_tokenizer_dir`, loaded as a transformers fast tokenizer."""
    from core.build.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A random 2-layer HookedTransformer (d_model 32, n_ctx 32) with the tiny tokenizer."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_ctx=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        d_vocab=len(tiny_tokenizer),
        act_fn="gelu_new",
        normalization_type="LN",
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg, tokenizer=tiny_tokenizer)
    model.eval()
    return model


@pytest.fixture(scope="session")
def app_workspace(tmp_path_factory) -> Path:
    """A tiny cached workspace whose text holds an HTML probe token (see tests/app_workspace.py)."""
    from app_workspace import build_app_workspace

    return build_app_workspace(tmp_path_factory.mktemp("app-workspace"))


@pytest.fixture
def copying(tmp_path, monkeypatch):
    """The app's own seed copy (`ensure_default_workspace(seed=...)`), as another session of the app runs it:
    start copying the shipped seed as the (temporary) default workspace in another thread, held back until the
    returned event is set; returns (default workspace path, the thread, the event) once the thread holds the
    build lock."""
    import core.build.seed as seed
    import core.cache.workspace as workspace

    assert seed.seed_problem(seed.SEED_DIR) is None, "the shipped seed does not fit the default artifacts"
    default = tmp_path / "data" / "default" / "workspace.duckdb"
    default.parent.mkdir(parents=True)
    monkeypatch.setattr(workspace, "DEFAULT_WORKSPACE", default)
    monkeypatch.delenv("SAE_EXPLORER_WORKSPACE", raising=False)
    real = seed.install_seed
    started, release = threading.Event(), threading.Event()

    def held_install(*args, **kwargs):
        started.set()
        release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(seed, "install_seed", held_install)
    thread = threading.Thread(
        target=workspace.ensure_default_workspace,
        kwargs={"path": default, "seed": seed.SEED_DIR, "wait_for_other_processes": False},
        daemon=True,
    )
    thread.start()
    assert started.wait(60), "the copy did not start"
    assert workspace.build_lock_holder(default) is not None and not default.exists()
    yield default, thread, release
    release.set()
    thread.join(120)


@pytest.fixture
def copying_once_waited(copying, monkeypatch):
    """`copying`, let go the moment a page waits for it (`ui.boot.wait_for_default`): a page that does not wait
    never sees the copy finish."""
    import ui.boot

    release = copying[2]
    real_wait = ui.boot.wait_for_default

    def wait_then_copy(workspace):
        release.set()
        return real_wait(workspace)

    monkeypatch.setattr(ui.boot, "wait_for_default", wait_then_copy)
    return copying
