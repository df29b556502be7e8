"""The cache command's summary after a resumed finalisation reports the workspace's totals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_cache


@pytest.fixture(scope="module")
def default_root(tmp_path_factory) -> Path:
    """A tiny embedded default (neuron baselines only: raw and top-k MLP neurons of 2 layers)."""
    tokdir = tmp_path_factory.mktemp("tinytok")
    tiny_cache.make_tokenizer(tokdir)
    root = tmp_path_factory.mktemp("default")
    tiny_cache.make_default_root(root, tokdir)
    return root


def test_summary_after_resumed_finalisation_reports_workspace_totals(default_root, tmp_path, capsys, monkeypatch):
    from core import cache, store
    from core.cli import main

    ws = tmp_path / "ws.duckdb"
    argv = ["cache", "--model", "default", "--root", str(default_root), "--tokens", "200", "--ctx-len", "16"]
    argv += ["--workspace", str(ws), "--threads", "1"]
    commit = cache._commit_finalized

    def commit_then_stop(workspace, done):  # Ctrl-C right after the first finalised dictionaries are committed
        commit(workspace, done)
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(cache.run, "_commit_finalized", commit_then_stop)
    assert main(argv) == 130
    monkeypatch.undo()
    before = {d.id: d.n_activations for d in store.list_dictionaries(ws, ready_only=True)}
    n_all = len(store.list_dictionaries(ws))
    assert 1 <= len(before) < n_all
    capsys.readouterr()

    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ready = store.list_dictionaries(ws, ready_only=True)
    assert len(ready) == n_all
    assert summary["dictionaries"] == n_all
    assert summary["activations"] == sum(d.n_activations for d in ready)
    assert summary["bytes_per_activation"] == round(sum(d.file_bytes for d in ready) / summary["activations"], 2)
    this = summary["this_command"]
    assert this["dictionaries_finalised"] == n_all - len(before)
    assert this["activations_finalised"] == sum(d.n_activations for d in ready if d.id not in before)
    assert this["activations_finalised"] < summary["activations"]
