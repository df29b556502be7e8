"""The caching job on a tiny random model: stored rows and statistics against a direct recomputation,
resume after kill -9, rerun does nothing, concurrent reader, and the bad-input errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tiny_cache

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(tiny_cache.__file__)


@pytest.fixture(scope="module")
def setup(tiny_cache_setup):
    """tests/conftest.py's `tiny_cache_setup`: (model, dictionaries, plan, params)."""
    return tiny_cache_setup


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Path:
    """An uninterrupted run of every tiny dictionary."""
    from core.cache.run import run_cache

    model, dicts, plan, params = setup
    ws = tmp_path_factory.mktemp("ref") / "ws.duckdb"
    result = run_cache(model, list(dicts.values()), ws, plan, params)
    assert sorted(result.cached) == sorted(d.id for d in dicts.values())
    return ws


def _dense(model, d, plan, params) -> np.ndarray:
    """Activations `[n_contexts, ctx_len - 1, d_sae]` computed directly, batch by batch as the job does.

    SAEs encode their hook_in; neurons are the MLP's hook_post (top-k: the k largest per token), which
    the job reads from the forward pass instead of encoding hook_in again.
    """
    import torch

    hook = f"blocks.{d.layer}.mlp.hook_post" if d.is_baseline else d.hook_in
    out = []
    with torch.inference_mode():
        for b0 in range(0, plan.n_contexts, params.batch_contexts):
            toks = torch.from_numpy(plan.tokens[b0 : b0 + params.batch_contexts].astype(np.int64))
            _, cache = model.run_with_cache(toks, names_filter=[hook, d.hook_in])
            x = cache[hook][:, 1:, :]
            if not d.is_baseline:
                x = d.encode(x)
            elif d.topk:
                vals, idx = x.topk(d.topk, dim=-1)
                x = torch.zeros_like(x).scatter_(-1, idx, vals)
            if d.is_baseline:  # the same neurons as the dictionary's own encoder (tests/test_dictionaries.py)
                np.testing.assert_allclose(x.numpy(), d.encode(cache[d.hook_in][:, 1:, :]).numpy(), atol=1e-5)
            out.append(x.numpy())
    return np.concatenate(out)


def _table(ws: Path, dict_id: str):
    from core import store
    from core.cache import files

    rec = next(r for r in store.list_dictionaries(ws) if r.id == dict_id)
    return pq.read_table(files.activations_dir(ws) / rec.activations_file)


def _stats(ws: Path, dict_id: str) -> list[tuple]:
    from core import store

    with store.session(ws) as con:
        rec = store.dictionary_record(con, dict_id)
        return con.execute("SELECT * FROM latent_stats WHERE dict_idx = ? ORDER BY latent", [rec.index]).fetchall()


def test_rows_and_statistics_match_direct_recomputation(setup, reference):
    from core import store
    from core.cache.stats import N_OUTPUT_TOKENS

    model, dicts, plan, params = setup
    for name in ("resid1", "attn0", "neurons0", "neurons0_topk"):
        d = dicts[name]
        dense = _dense(model, d, plan, params)  # [n_ctx, L-1, d_sae]
        ctx, pos, lat = np.nonzero(dense > 0)
        table = _table(reference, d.id)
        got = np.stack([table["latent"].to_numpy(), table["context"].to_numpy(), table["position"].to_numpy()], 1)
        want = np.stack([lat, ctx, pos + 1], 1)
        want = want[np.lexsort((want[:, 2], want[:, 1], want[:, 0]))]
        np.testing.assert_array_equal(got, want)  # same rows, in (latent, context, position) order
        np.testing.assert_allclose(table["value"].to_numpy(), dense[want[:, 1], want[:, 2] - 1, want[:, 0]], rtol=1e-6)

        with store.session(reference) as con:
            rec = store.dictionary_record(con, d.id)
            assert rec.n_activations == len(want)
            n_tokens = plan.n_contexts * (plan.ctx_len - 1)
            flat = dense.reshape(-1, d.d_sae)
            W = (d.W_dec.detach() @ model.W_U.detach()).numpy()
            dead = 0
            for latent in range(d.d_sae):
                s = store.latent_stats(con, rec, latent)
                v = flat[:, latent][flat[:, latent] > 0]
                assert s.n_fires == len(v)
                assert s.frequency == pytest.approx(len(v) / n_tokens)
                if len(v) == 0:
                    dead += 1
                    assert s.max_activation == 0 and s.hist_counts.sum() == 0
                    continue
                assert s.max_activation == pytest.approx(v.max(), rel=1e-6)
                assert s.mean_activation == pytest.approx(v.mean(), rel=1e-4)
                np.testing.assert_allclose(
                    s.quantile_edges, np.quantile(v, np.linspace(0, 1, 11), method="lower"), rtol=1e-6
                )
                hist, _ = np.histogram(v, bins=params.hist_bins, range=(0, v.max()))
                np.testing.assert_array_equal(s.hist_counts, hist)
                assert s.top_output_tokens == np.argsort(-W[latent], kind="stable")[:N_OUTPUT_TOKENS].tolist()
                assert s.bottom_output_tokens == np.argsort(W[latent], kind="stable")[:N_OUTPUT_TOKENS].tolist()
                # row_start points at the latent's rows in the Parquet file
                assert (table["latent"].to_numpy()[s.row_start : s.row_start + s.n_fires] == latent).all()
        if name == "resid1":
            assert dead > 0  # the fixture's bias makes some latents dead; they still get a stats row


def test_top_tokens_table_counts_tokens_at_top_activations(setup, reference):
    from core import store
    from core.cache.stats import TOP_ROWS

    model, dicts, plan, params = setup
    d = dicts["attn0"]
    dense = _dense(model, d, plan, params).reshape(-1, d.d_sae)
    token_ids = plan.tokens[:, 1:].reshape(-1)
    with store.session(reference) as con:
        rec = store.dictionary_record(con, d.id)
        for latent in (0, 5, 17):
            col = dense[:, latent]
            fired = np.flatnonzero(col > 0)
            top = fired[np.argsort(-col[fired], kind="stable")][:TOP_ROWS]
            want = dict(zip(*np.unique(token_ids[top], return_counts=True), strict=True))
            got = dict(store.top_activating_tokens(con, rec.index, latent, limit=100))
            assert got == {int(k): int(v) for k, v in want.items()}


def test_rerun_of_finished_run_does_nothing(setup, reference):
    from core.cache.run import run_cache

    model, dicts, plan, params = setup
    before = {p: p.stat().st_mtime_ns for p in reference.parent.rglob("*") if p.is_file() and p.suffix == ".parquet"}
    result = run_cache(model, list(dicts.values()), reference, plan, params)
    assert result.nothing_to_do and len(result.skipped) == len(dicts)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def _assert_same(a: Path, b: Path, dict_ids: list[str]) -> None:
    from core import store
    from core.cache import files

    for dict_id in dict_ids:
        ta, tb = _table(a, dict_id), _table(b, dict_id)
        assert ta.equals(tb), dict_id
        assert _stats(a, dict_id) == _stats(b, dict_id)
    ctx = []
    for ws in (a, b):
        with store.session(ws) as con:
            ctx.append(store.all_context_tokens(con))
            runs = store.runs(con)
            assert all(r.status == "finished" and r.committed_chunks == r.n_chunks for r in runs)
            n_chunk_rows = con.execute("SELECT count(*), count(DISTINCT (run_id, chunk)) FROM cache_chunks").fetchone()
            assert n_chunk_rows[0] == n_chunk_rows[1]  # each chunk committed once
        assert not (files.data_dir(ws) / "scratch").exists() or not any((files.data_dir(ws) / "scratch").iterdir())
    np.testing.assert_array_equal(ctx[0], ctx[1])


def test_storage_threads_do_not_change_the_rows(setup, reference, tmp_path, monkeypatch):
    """Storage work shared by one thread or by several (with tiny dense batches, so every batch is
    flushed in pieces) stores the same rows and statistics as the reference run."""
    from core import cache

    model, dicts, plan, params = setup
    ws = tmp_path / "one.duckdb"
    cache.run_cache(model, list(dicts.values()), ws, plan, params, storage_threads=1)
    _assert_same(reference, ws, [d.id for d in dicts.values()])

    real = cache._ChunkBuilder.__init__

    def tiny_batches(self, *a, **k):
        real(self, *a, **{**k, "threads": 3, "max_dense_bytes": 1})

    ws3 = tmp_path / "three.duckdb"
    monkeypatch.setattr(cache._ChunkBuilder, "__init__", tiny_batches)
    cache.run_cache(model, list(dicts.values()), ws3, plan, params)
    _assert_same(reference, ws3, [d.id for d in dicts.values()])


@pytest.mark.parametrize(
    ("rows", "d_sae", "density"), [(300, 2048, 0.01), (300, 1024, 0.6), (64, 3000, 0.02), (64, 3000, 0.7), (0, 16, 0.5)]
)
def test_positive_entries_match_a_direct_scan(rows, d_sae, density):
    """The numpy scan (sparse and dense paths, power-of-two and other widths) and the on-device torch
    scan (run here on the CPU) both return each row's positive entries in row-major order."""
    import torch

    from core.cache.compute import positive_entries, positive_entries_on_device

    rng = np.random.default_rng(rows + d_sae)
    dense = np.where(rng.random((rows, d_sae)) < density, rng.random((rows, d_sae)) + 0.01, -rng.random((rows, d_sae)))
    dense[: rows // 3] = 0.0  # rows with nothing positive
    dense = dense.astype(np.float32)
    r, c = np.nonzero(dense > 0)
    want = (np.bincount(r, minlength=rows), c, dense[r, c])
    vals, idx = torch.from_numpy(dense).topk(min(8, d_sae), dim=-1)
    topk_mask = vals.numpy() > 0
    want_topk = (topk_mask.sum(1), idx.numpy()[topk_mask], vals.numpy()[topk_mask])
    for fn in (positive_entries, positive_entries_on_device):
        for piece, expected in ((torch.from_numpy(dense), want), ((vals, idx), want_topk)):
            got = fn(piece, d_sae)
            assert got[1].dtype == np.uint16 and got[2].dtype == np.float32
            for g, w in zip(got, expected, strict=True):
                np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(("rows", "d_sae", "density"), [(300, 3072, 0.45), (64, 1000, 0.02), (0, 16, 0.5)])
def test_dense_baseline_runs_merge_to_the_rows_of_one_sorted_chunk(rows, d_sae, density, tmp_path):
    """Raw neurons are scanned by latent, slice by slice, and written as runs: finalising's merge of the runs
    gives the rows `group_by_latent` gives the whole chunk (latent order, token order within), and a
    chunk written in the one-run layout of earlier versions still reads."""
    import torch

    from core.cache import files
    from core.cache.compute import (
        BY_LATENT_MIN_SHARE,
        _chunk_runs,
        positive_entries,
        positive_entries_by_latent,
        positive_entries_by_latent_on_device,
        positive_share,
    )

    rng = np.random.default_rng(rows + d_sae)
    dense = np.where(rng.random((rows, d_sae)) < density, rng.random((rows, d_sae)) + 0.01, -rng.random((rows, d_sae)))
    dense = dense.astype(np.float32)
    row_token = (np.arange(rows, dtype=np.uint32) * 7 + 3).astype(np.uint32)  # increasing, not contiguous
    cnt, lat, val = positive_entries(torch.from_numpy(dense), d_sae)
    whole = files.group_by_latent(lat, np.repeat(row_token, cnt), val, d_sae)
    cuts = [0, rows // 3, rows // 3, rows]  # an empty run too
    runs = [
        positive_entries_by_latent(torch.from_numpy(dense[a:b]), row_token[a:b], d_sae)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    for run, a, b in zip(runs, cuts[:-1], cuts[1:], strict=True):  # the accelerator's path, run here on the CPU
        on_device = positive_entries_by_latent_on_device(torch.from_numpy(dense[a:b]), row_token[a:b])
        for name in ("token", "value", "counts"):
            np.testing.assert_array_equal(getattr(on_device, name), getattr(run, name))
    # a chunk whose slices were scanned both ways (the choice is per slice, by its positive share)
    mixed = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        if k == 2:
            mixed.append(runs[k])
        else:
            c, lt, v = positive_entries(torch.from_numpy(dense[a:b]), d_sae)
            mixed.append((np.repeat(row_token[a:b], c), lt, v))
    if rows:  # the dense case is scanned by latent, the sparse one row by row
        assert (positive_share(torch.from_numpy(dense)) >= BY_LATENT_MIN_SHARE) == (density > 0.3)
    workspace = tmp_path / "w.duckdb"
    folder = files.chunk_dir(workspace, "run", 0)
    folder.mkdir(parents=True)
    files.write_chunk_runs(folder, 1, runs)
    files.write_chunk_runs(folder, 2, [whole])
    assert np.load(folder / "d002.counts.npy").shape == (d_sae,)  # one run: the layout before runs existed
    files.write_chunk_runs(folder, 3, _chunk_runs(mixed, d_sae))
    for idx, n_runs in ((1, 3), (2, 1), (3, 2)):
        readers = files.open_chunk(workspace, "run", 0, idx)
        assert len(readers) == n_runs
        token, value, counts = files.merge_latent_range(readers, 0, d_sae)
        np.testing.assert_array_equal(counts, whole.counts)
        np.testing.assert_array_equal(token, whole.token)
        np.testing.assert_array_equal(value, whole.value)


def test_only_dense_raw_neuron_slices_are_scanned_by_latent(tmp_path):
    """The chunk builder picks the scan per slice: by latent for raw neurons at least BY_LATENT_MIN_SHARE
    positive, row order for sparser raw neurons and for every other dictionary however dense."""
    from types import SimpleNamespace

    import torch

    from core.cache.compute import BY_LATENT_MIN_SHARE, _ChunkBuilder

    builder = _ChunkBuilder(tmp_path, "run", {}, threads=1, max_dense_bytes=1 << 40)
    rng = np.random.default_rng(0)
    tokens = np.arange(100, dtype=np.uint32)
    for kind, share, want in (("neurons", 0.5, True), ("neurons", 0.1, False), ("sae", 0.5, False)):
        d = SimpleNamespace(id=f"{kind}{share}", d_sae=256, kind=kind)
        piece = torch.from_numpy(np.where(rng.random((100, 256)) < share, 1.0, -1.0).astype(np.float32))
        builder.add(d, tokens, piece)
        assert builder.held[-1][4] is want, (kind, share)
    assert 0.1 < BY_LATENT_MIN_SHARE < 0.5
    builder.close()


def test_balanced_groups_cover_every_item_once():
    from core.cache.compute import _balanced_groups

    costs = [5.0, 1.0, 4.0, 4.0, 2.0, 0.0]
    groups = _balanced_groups(costs, 2)
    assert sorted(i for g in groups for i in g) == list(range(len(costs)))
    assert sorted(sum(costs[i] for i in g) for g in groups) == [8.0, 8.0]
    assert _balanced_groups([1.0], 3) == [[0], [], []]


def _child(ws: Path, tokdir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(HELPER), str(ws), str(tokdir), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resume_after_kill_matches_uninterrupted_run(setup, reference, tokdir, tmp_path):
    from core import store
    from core.cache.run import run_cache

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    n_chunks = -(-plan.n_contexts // params.chunk_contexts)

    crashed = _child(ws, tokdir, "--kill-at", f"caching:{plan.n_cached_tokens // 2}")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    (run,) = store.cache_status(ws)
    assert 0 < run.committed_chunks < n_chunks  # killed mid-computation, some chunks safe

    # dies after its first commit of finalised dictionaries (at most one per finalising worker)
    crashed = _child(ws, tokdir, "--kill-at", "finalizing:1")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    recs = store.list_dictionaries(ws)
    n_ready = sum(r.status == "ready" for r in recs)
    assert 1 <= n_ready <= 2 < len(dicts) and store.cache_status(ws)

    result = run_cache(model, list(dicts.values()), ws, plan, params)
    assert result.chunks_computed == 0  # the second child had computed everything
    assert len(result.rows) == len(dicts) - n_ready  # only the unfinished dictionaries were finalised again
    _assert_same(reference, ws, [d.id for d in dicts.values()])
    assert run_cache(model, list(dicts.values()), ws, plan, params).nothing_to_do


def test_resume_after_disk_full_and_no_damage(setup, reference, tmp_path, monkeypatch):
    from core import store
    from core.cache import files
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    real_save = np.save
    calls = {"n": 0}

    def failing_save(path, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] > 12:  # after a few chunks were written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(files.np, "save", failing_save)
    with pytest.raises(WorkspaceError, match="disk full"):
        run_cache(model, list(dicts.values()), ws, plan, params)
    monkeypatch.setattr(files.np, "save", real_save)
    (run,) = store.cache_status(ws)
    assert run.committed_chunks >= 1
    assert not list(files.scratch_dir(ws, run.run_id).glob("*.tmp"))  # the partial chunk was removed
    result = run_cache(model, list(dicts.values()), ws, plan, params)
    assert 0 < result.chunks_computed < run.n_chunks
    _assert_same(reference, ws, [d.id for d in dicts.values()])


def test_disk_full_while_finalising_or_committing_loses_nothing(setup, reference, tmp_path, monkeypatch):
    """ENOSPC in the Parquet writer and in a DuckDB commit: a clear error, no partial file, and a rerun completes."""
    import duckdb

    from core import store
    from core.cache import files
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    real_write, real_commit = files.pq.ParquetWriter.write_table, store.commit_chunk
    calls = {"write": 0, "commit": 0}

    def failing_write(self, *a, **k):
        calls["write"] += 1
        if calls["write"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *a, **k)

    def failing_commit(*a, **k):
        calls["commit"] += 1
        if calls["commit"] > 2:
            raise duckdb.IOException("IO Error: No space left on device")
        return real_commit(*a, **k)

    monkeypatch.setattr(store, "commit_chunk", failing_commit)
    with pytest.raises(WorkspaceError, match="disk full"):
        run_cache(model, list(dicts.values()), ws, plan, params)
    monkeypatch.setattr(store, "commit_chunk", real_commit)
    (run,) = store.cache_status(ws)
    assert run.committed_chunks == 2  # the failed transaction was rolled back, the earlier ones kept

    monkeypatch.setattr(files.pq.ParquetWriter, "write_table", failing_write)
    with pytest.raises(WorkspaceError, match="disk full"):
        run_cache(model, list(dicts.values()), ws, plan, params)
    monkeypatch.setattr(files.pq.ParquetWriter, "write_table", real_write)
    assert not list(files.activations_dir(ws).glob("*.tmp"))  # partial Parquet files were removed
    (run,) = store.cache_status(ws)
    assert run.committed_chunks == run.n_chunks  # every computed chunk is still there

    real_stats = store.store_latent_stats

    def failing_stats(*a, **k):  # the commit of finalised dictionaries' statistics
        raise duckdb.IOException("IO Error: No space left on device")

    monkeypatch.setattr(store, "store_latent_stats", failing_stats)
    with pytest.raises(WorkspaceError, match="disk full"):
        run_cache(model, list(dicts.values()), ws, plan, params)
    monkeypatch.setattr(store, "store_latent_stats", real_stats)
    recs = store.list_dictionaries(ws)
    ready = [r for r in recs if r.status == "ready"]
    assert len(ready) < len(recs)  # the failed transaction marked nothing ready ...
    with store.session(ws) as con:  # ... and left no statistics of dictionaries that are not
        n_stats = con.execute("SELECT count(DISTINCT dict_idx) FROM latent_stats").fetchone()[0]
    assert n_stats == len(ready)
    result = run_cache(model, list(dicts.values()), ws, plan, params)
    assert result.chunks_computed == 0
    _assert_same(reference, ws, [d.id for d in dicts.values()])


def test_reader_process_works_while_writer_process_writes(setup, reference, tokdir, tmp_path):
    import shutil

    from core import store
    from core.cache.run import run_cache
    from core.latents.cards import latent_card

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    run_cache(model, [dicts["attn0"]], ws, plan, params)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, str(HELPER), str(ws), str(tokdir), "--dicts", "resid1,neurons0", "--sleep", "0.03"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads = 0
    saw_running = False
    try:
        deadline = time.monotonic() + 240
        while writer.poll() is None and time.monotonic() < deadline:
            card = latent_card(ws, dicts["attn0"].id, reads % 80)
            assert card.stats.latent == reads % 80
            status = store.cache_status(ws)
            saw_running |= bool(status and status[0].committed_chunks > 0)
            reads += 1
    finally:
        if writer.poll() is None:
            writer.kill()
    out, err = writer.communicate()
    assert writer.returncode == 0, err[-2000:]
    assert saw_running and reads >= 10
    ready = {r.id for r in store.list_dictionaries(ws, ready_only=True)}
    assert ready == {dicts[n].id for n in ("attn0", "resid1", "neurons0")}
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_workspace_from_another_model_is_refused(setup, reference, tokdir):
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    _, _, plan, params = setup
    other, other_dicts = tiny_cache.build(tokdir, model_seed=5)
    with pytest.raises(WorkspaceError, match="another model"):
        run_cache(other, [other_dicts["neurons0"]], reference, plan, params)


def test_other_corpus_slice_is_refused(setup, reference):
    from core.cache.plan import CacheParams, plan_contexts
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    model, dicts, _, params = setup
    plan = plan_contexts(model.tokenizer, tiny_cache.docs(), 600, params.ctx_len)
    with pytest.raises(WorkspaceError, match="another corpus slice"):
        run_cache(model, [dicts["neurons0"]], reference, plan, CacheParams(n_tokens=600, ctx_len=params.ctx_len))


def test_unfinished_run_with_other_parameters_needs_restart(setup, tmp_path):
    from core import store
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"

    def stop(phase, done, total):
        if done > 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cache(model, [dicts["resid1"]], ws, plan, params, progress=stop)
    with pytest.raises(WorkspaceError, match="unfinished cache run"):
        run_cache(model, [dicts["attn0"]], ws, plan, params)
    result = run_cache(model, [dicts["attn0"]], ws, plan, params, restart=True)
    assert result.cached == [dicts["attn0"].id]
    assert [r.id for r in store.list_dictionaries(ws)] == [dicts["attn0"].id]


def test_corrupt_workspace_is_reported_and_left_alone(setup, tmp_path):
    from core.cache.run import run_cache
    from core.latents.cards import latent_card
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    ws.write_bytes(b"not a database" * 500)
    with pytest.raises(WorkspaceError, match="not a readable DuckDB workspace"):
        run_cache(model, [dicts["neurons0"]], ws, plan, params)
    with pytest.raises(WorkspaceError, match="not a readable DuckDB workspace"):
        latent_card(ws, dicts["neurons0"].id, 0)
    assert ws.read_bytes() == b"not a database" * 500


def test_bad_inputs_give_clear_errors(setup, tmp_path):
    from core.cache.plan import check_dictionaries, plan_contexts, resolve_dictionaries
    from core.subjects.dictionaries import neuron_dictionary

    model, dicts, _, _ = setup
    with pytest.raises(ValueError, match="larger than the corpus"):
        plan_contexts(model.tokenizer, tiny_cache.docs(), 10_000_000, 24)
    with pytest.raises(ValueError, match="does not exist"):
        resolve_dictionaries(model, "custom", ["neurons:blocks.7.mlp.hook_post"])
    with pytest.raises(ValueError, match="unknown dictionary"):
        resolve_dictionaries(model, "custom", ["neurons_top:blocks.0.mlp.hook_post"])
    with pytest.raises(ValueError, match="model custom needs --releases"):
        resolve_dictionaries(model, "custom", ["resid:blocks.0.hook_resid_pre"])
    got = resolve_dictionaries(model, "custom", ["neurons:blocks.1.mlp.hook_post"], neuron_topk=4)
    assert [d.id for d in got] == ["neurons:blocks.1.mlp.hook_post", "neurons_topk4:blocks.1.mlp.hook_post"]
    bad = neuron_dictionary(model, 1)
    bad.hook_in = "blocks.5.ln2.hook_normalized"
    with pytest.raises(ValueError, match="does not have"):
        check_dictionaries(model, [bad])


def test_cli_reports_unknown_model_and_missing_workspace(tmp_path, capsys):
    from core.cli import main

    assert main(["cache", "--model", "nope", "--tokens", "10", "--workspace", str(tmp_path / "w.duckdb")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["workspace-info", "--workspace", str(tmp_path / "missing.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_latent_card_and_find_by_token(setup, reference):
    from core.latents.cards import find_latents_by_token, latent_card
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    d = dicts["attn0"]
    dense = _dense(model, d, plan, params).reshape(-1, d.d_sae)
    latent = int(np.argsort((dense > 0).sum(0))[-3])  # a frequent latent, so every decile has examples
    assert (dense[:, latent] > 0).sum() > 50
    card = latent_card(reference, d.id, latent, k_top=5, k_per_decile=2)
    assert len(card.top_examples) == 5
    acts = [e.activation for e in card.top_examples]
    assert acts == sorted(acts, reverse=True) and acts[0] == pytest.approx(card.stats.max_activation)
    for dec, exs in card.decile_examples.items():
        assert len(exs) == 2 and all(e.decile == dec for e in exs)
    for ex in card.top_examples:
        np.testing.assert_array_equal(ex.tokens, plan.tokens[ex.context, ex.start : ex.start + len(ex.tokens)])
        assert all(t in card.token_text for t in ex.tokens.tolist())
    assert card.hist_counts.sum() == card.stats.n_fires
    assert len(card.top_output) == 10

    tok_id = int(card.top_examples[0].tokens[card.top_examples[0].center])
    matches = find_latents_by_token(reference, tok_id, dictionary=d.id)
    assert any(m.latent == latent for m in matches)
    text = card.token_text[tok_id]
    assert any(m.latent == latent for m in find_latents_by_token(reference, text.strip(), dictionary=d.id, limit=500))
    with pytest.raises(WorkspaceError, match="not in this workspace"):
        latent_card(reference, "resid:blocks.9.hook_resid_pre", 0)
    with pytest.raises(WorkspaceError, match="out of range"):
        latent_card(reference, d.id, 10_000)


def test_second_job_on_the_same_workspace_is_refused(setup, tmp_path):
    from core.cache.run import _JobLock, run_cache
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    with _JobLock(ws):  # as if another cache job were running
        with pytest.raises(WorkspaceError, match="another job is writing this workspace"):
            run_cache(model, [dicts["neurons0"]], ws, plan, params)
    assert run_cache(model, [dicts["neurons0"]], ws, plan, params).cached == [dicts["neurons0"].id]


@pytest.fixture(scope="module")
def default_root(tmp_path_factory, tokdir) -> Path:
    """A tiny embedded default (model, tokenizer, corpus; no dictionaries, so neuron baselines only)."""
    root = tmp_path_factory.mktemp("default")
    tiny_cache.make_default_root(root, tokdir)
    return root


def test_default_workspace_is_built_once_with_progress(default_root, tmp_path):
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace
    from core.latents.cards import latent_card

    ws = tmp_path / "workspace.duckdb"
    seen: list[tuple[str, int, int]] = []
    params = tiny_cache.default_params()
    assert not default_workspace_ready(ws, default_root)
    assert ensure_default_workspace(lambda *a: seen.append(a), path=ws, root=default_root, params=params) == ws
    assert default_workspace_ready(ws, default_root)
    assert seen[0] == ("loading", 0, 1)
    assert seen[-1][0] == "finalizing" and seen[-1][1] == seen[-1][2]
    assert any(p == "caching" and done == total for p, done, total in seen)
    n_before = len(seen)
    ensure_default_workspace(lambda *a: seen.append(a), path=ws, root=default_root, params=params)
    assert len(seen) == n_before  # nothing to do the second time
    card = latent_card(ws, "neurons_topk32:blocks.0.mlp.hook_post", 1)
    assert card.stats.n_fires > 0


def test_two_callers_build_the_default_workspace_once(default_root, tokdir, tmp_path):
    """A second caller (here this process, while another process builds) waits and reports the builder's progress."""
    from core import store
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    ws = tmp_path / "workspace.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    builder = subprocess.Popen(
        [sys.executable, str(HELPER), str(ws), str(tokdir), "--default-root", str(default_root), "--sleep", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = ws.with_name(ws.name + ".build-lock")
        deadline = time.monotonic() + 240
        while not (lock.exists() and lock.read_text().startswith("process")) and builder.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        seen: list[tuple[str, int, int]] = []
        assert (
            ensure_default_workspace(
                lambda *a: seen.append(a), path=ws, root=default_root, params=tiny_cache.default_params()
            )
            == ws
        )
    finally:
        out, err = builder.communicate(timeout=300)
    assert builder.returncode == 0, err[-2000:]
    assert seen and {p for p, _, _ in seen} == {"waiting"}  # it only waited: the other process built it
    assert any(total > 0 and 0 < done for _, done, total in seen)  # and showed the builder's chunks
    assert default_workspace_ready(ws, default_root)
    with store.session(ws) as con:
        assert len(store.runs(con)) == 1


def test_waiting_for_a_stuck_default_build_times_out_with_a_clear_error(default_root, tmp_path):
    from core.cache.workspace import _BuildLock, ensure_default_workspace
    from core.store.schema import WorkspaceLockedError

    ws = tmp_path / "workspace.duckdb"
    seen: list[tuple[str, int, int]] = []
    with _BuildLock(ws, None, timeout=1.0):  # as if another process were building (flock is per open file)
        with pytest.raises(WorkspaceLockedError, match="has been building the default workspace"):
            ensure_default_workspace(
                lambda *a: seen.append(a),
                path=ws,
                root=default_root,
                params=tiny_cache.default_params(),
                wait_timeout=0.6,
            )
    assert seen and all(p == ("waiting", 0, 0) for p in seen) and not ws.exists()


def test_stale_default_workspace_is_rebuilt_and_kept_aside(default_root, tokdir, tmp_path):
    import shutil

    from core import store
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    root = tmp_path / "default"
    shutil.copytree(default_root, root)
    ws = tmp_path / "workspace.duckdb"
    params = tiny_cache.default_params()
    ensure_default_workspace(path=ws, root=root, params=params)
    with store.session(ws) as con:
        old_model = store.get_info(con, "model")["fingerprint"]
    tiny_cache.make_default_root(root, tokdir, model_seed=5)  # the default's model is replaced
    assert not default_workspace_ready(ws, root)
    seen: list[tuple[str, int, int]] = []
    ensure_default_workspace(lambda *a: seen.append(a), path=ws, root=root, params=params)
    assert default_workspace_ready(ws, root) and any(p == "caching" for p, _, _ in seen)
    with store.session(ws) as con:
        assert store.get_info(con, "model")["fingerprint"] != old_model
    stale = tmp_path / "workspace.stale.duckdb"
    with store.session(stale) as con:  # the old one, with whatever was stored in it, is kept aside
        assert store.get_info(con, "model")["fingerprint"] == old_model
    ws.write_bytes(b"garbage" * 100)  # a corrupt default workspace is set aside and rebuilt too
    assert not default_workspace_ready(ws, root)
    ensure_default_workspace(path=ws, root=root, params=params)
    assert default_workspace_ready(ws, root) and stale.read_bytes() == b"garbage" * 100


def test_cli_bad_inputs_name_the_cause_and_damage_nothing(default_root, tokdir, tmp_path, capsys, monkeypatch):
    """Each bad input of the cache command exits 2 with a one-line cause (no traceback); a workspace
    already holding a cached dictionary keeps it byte for byte through every failure, full disk included."""
    from core import store
    from core.cache import files
    from core.cache.run import _JobLock
    from core.cli import main

    other_root = tmp_path / "other_default"
    tiny_cache.make_default_root(other_root, tokdir, model_seed=5)
    ws = tmp_path / "ws.duckdb"
    base = ["cache", "--model", "default", "--root", str(default_root), "--tokens", "200", "--ctx-len", "16"]

    def cli(*extra: str, root: list[str] = base) -> str:
        code = main([*root, *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        last = err.strip().splitlines()[-1]  # after any progress bar
        assert last.startswith("error: ") and "Traceback" not in err
        return last

    assert (
        main([*base, "--workspace", str(ws), "--dictionaries", "neurons:blocks.0.mlp.hook_post", "--no-neurons"]) == 0
    )
    capsys.readouterr()
    stored = {p: p.read_bytes() for p in files.activations_dir(ws).glob("*.parquet")}
    assert stored

    def unchanged() -> None:
        assert {p: p.read_bytes() for p in files.activations_dir(ws).glob("*.parquet")} == stored
        ready = [r.id for r in store.list_dictionaries(ws) if r.status == "ready"]
        assert ready == ["neurons:blocks.0.mlp.hook_post"]

    assert "unknown dictionary 'neurons_top:blocks.0.mlp.hook_post'" in cli(
        "--workspace", str(ws), "--dictionaries", "neurons_top:blocks.0.mlp.hook_post"
    )
    assert "hook blocks.7.mlp.hook_post does not exist" in cli(
        "--workspace", str(ws), "--dictionaries", "neurons:blocks.7.mlp.hook_post"
    )
    assert "larger than the corpus" in cli("--workspace", str(ws), "--tokens", "10000000", root=base[:-4] + base[-2:])
    other = ["cache", "--model", "default", "--root", str(other_root), "--tokens", "200", "--ctx-len", "16"]
    assert "built from another model" in cli("--workspace", str(ws), root=other)
    with _JobLock(ws):
        assert "another job is writing this workspace" in cli("--workspace", str(ws))
    unchanged()

    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"not a database" * 300)
    assert "not a readable DuckDB workspace" in cli("--workspace", str(corrupt))
    assert corrupt.read_bytes() == b"not a database" * 300

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.np, "save", full_disk)  # scratch chunks
    assert "disk full" in cli(
        "--workspace", str(ws), "--dictionaries", "neurons:blocks.1.mlp.hook_post", "--no-neurons"
    )
    monkeypatch.undo()
    monkeypatch.setattr(files.pq.ParquetWriter, "write_table", lambda self, *a, **k: full_disk())  # final files
    assert "disk full" in cli(
        "--workspace", str(ws), "--dictionaries", "neurons:blocks.1.mlp.hook_post", "--no-neurons", "--restart"
    )
    monkeypatch.undo()
    unchanged()
    assert not list(files.activations_dir(ws).glob("*.tmp"))
    # with space again, the same command finishes the interrupted run
    assert (
        main([*base, "--workspace", str(ws), "--dictionaries", "neurons:blocks.1.mlp.hook_post", "--no-neurons"]) == 0
    )
    assert all(r.status == "ready" for r in store.list_dictionaries(ws))
    assert all(p.read_bytes() == b for p, b in stored.items())
