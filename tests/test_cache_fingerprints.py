"""Weight fingerprints of the cache (core.cache.plan): XXH3 fingerprints that name their algorithm, the legacy
blake2b ones that workspaces written before them (and the shipped seed) store, and a legacy workspace that is
accepted and resumed without caching again."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator

import pytest
import tiny_cache


@pytest.fixture(scope="module")
def setup(tiny_cache_setup):
    """tests/conftest.py's `tiny_cache_setup`: (model, dictionaries, plan, params)."""
    return tiny_cache_setup


def _blake2b_as_before(header: str, groups: list[dict]) -> str:
    """The fingerprint as written before fingerprints named their algorithm: blake2b-128 of the header, then of
    each group's tensors sorted by name (name, shape, float32 values)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(header.encode())
    for tensors in groups:
        for name in sorted(tensors):
            t = tensors[name]
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def legacy_fingerprints() -> Iterator[None]:
    """Within: run_cache writes legacy (blake2b) fingerprints, as a workspace built before XXH3 has them."""
    from core.cache import plan, run

    with pytest.MonkeyPatch.context() as m:
        m.setattr(run, "model_fingerprint", lambda model, algorithm="blake2b": plan.model_fingerprint(model, algorithm))
        m.setattr(
            run, "dictionary_fingerprint", lambda d, algorithm="blake2b": plan.dictionary_fingerprint(d, algorithm)
        )
        yield


def test_new_fingerprints_name_their_algorithm(setup):
    from core.cache.plan import dictionary_fingerprint, fingerprint_algorithm, model_fingerprint

    model, dicts, _, _ = setup
    fps = [model_fingerprint(model)] + [dictionary_fingerprint(d) for d in dicts.values()]
    assert all(fp.startswith("xxh3:") and len(fp) == len("xxh3:") + 32 for fp in fps)
    assert len(set(fps)) == len(fps)
    assert {fingerprint_algorithm(fp) for fp in fps} == {"xxh3"}
    legacy = model_fingerprint(model, "blake2b")
    assert ":" not in legacy and len(legacy) == 32 and fingerprint_algorithm(legacy) == "blake2b"


def test_legacy_fingerprints_are_the_hashes_stored_before(setup):
    """The seed and old workspaces store these: the legacy algorithm must hash the same bytes as then."""
    from core.cache.plan import dictionary_fingerprint, model_fingerprint
    from core.subjects.models import model_config_fields

    model, dicts, _, _ = setup
    header = json.dumps(model_config_fields(model.cfg), sort_keys=True, default=str)
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith((".IGNORE", ".mask"))}
    assert model_fingerprint(model, "blake2b") == _blake2b_as_before(header, [weights])
    for d in dicts.values():
        groups = [dict(d.module.state_dict())]
        if d.ln is not None:
            groups.append({f"ln.{k}": v for k, v in d.ln.state_dict().items()})
        assert dictionary_fingerprint(d, "blake2b") == _blake2b_as_before(f"{d.id}|{d.topk}|{d.d_sae}", groups)


def test_one_changed_weight_changes_the_fingerprint(setup):
    import torch

    from core.cache.plan import dictionary_fingerprint, dictionary_matches

    _, dicts, _, _ = setup
    d = dicts["resid1"]
    other = copy.deepcopy(d)
    with torch.no_grad():
        w = other.module.W_enc
        w[3, 5] = torch.nextafter(w[3, 5], torch.tensor(float("inf")))  # the smallest change of one element
    for algorithm in ("xxh3", "blake2b"):
        assert dictionary_fingerprint(other, algorithm) != dictionary_fingerprint(d, algorithm)
        assert not dictionary_matches(other, dictionary_fingerprint(d, algorithm))


def test_new_and_legacy_fingerprints_of_the_same_weights_both_match(setup):
    from core.cache.plan import dictionary_fingerprint, dictionary_matches, same_weights

    _, dicts, _, _ = setup
    d, other = dicts["attn0"], dicts["resid1"]
    fresh, legacy = dictionary_fingerprint(d), dictionary_fingerprint(d, "blake2b")
    assert dictionary_matches(d, fresh) and dictionary_matches(d, legacy)
    assert not dictionary_matches(other, fresh) and not dictionary_matches(other, legacy)
    computed: list[str] = []

    def compute(algorithm: str) -> str:
        computed.append(algorithm)
        return dictionary_fingerprint(d, algorithm)

    assert same_weights(fresh, fresh, compute) and computed == []  # the legacy hash only for a legacy fingerprint
    assert same_weights(legacy, fresh, compute) and computed == ["blake2b"]


def test_legacy_workspace_is_accepted_without_caching_again(setup, tokdir, tmp_path):
    import torch

    from core import store
    from core.cache.run import run_cache
    from core.store.schema import WorkspaceError

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"
    old = [dicts["resid1"], dicts["neurons0"]]
    with legacy_fingerprints():
        run_cache(model, old, ws, plan, params)
    with store.session(ws) as con:
        assert ":" not in store.get_info(con, "model")["fingerprint"]
    assert all(":" not in r.fingerprint for r in store.list_dictionaries(ws))
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert len(files) == len(old)

    result = run_cache(model, old, ws, plan, params)  # new fingerprints against the stored legacy ones
    assert result.nothing_to_do and sorted(result.skipped) == sorted(d.id for d in old)
    assert {p: p.stat().st_mtime_ns for p in files} == files

    result = run_cache(model, old + [dicts["attn0"]], ws, plan, params)  # one more: only it is cached
    assert result.cached == [dicts["attn0"].id] and sorted(result.skipped) == sorted(d.id for d in old)
    got = {r.id: r.fingerprint for r in store.list_dictionaries(ws)}
    assert got[dicts["attn0"].id].startswith("xxh3:") and ":" not in got[dicts["resid1"].id]
    with store.session(ws) as con:
        assert ":" not in store.get_info(con, "model")["fingerprint"]  # the workspace's record is kept

    changed = copy.deepcopy(dicts["resid1"])  # other weights are still refused
    with torch.no_grad():
        changed.module.b_enc[0] += 1.0
    with pytest.raises(WorkspaceError, match="different weights"):
        run_cache(model, [changed], ws, plan, params)
    other, other_dicts = tiny_cache.build(tokdir, model_seed=5)
    with pytest.raises(WorkspaceError, match="another model"):
        run_cache(other, [other_dicts["neurons0"]], ws, plan, params)


def test_interrupted_legacy_run_resumes_where_it_stopped(setup, tmp_path):
    from core import store
    from core.cache.run import run_cache

    model, dicts, plan, params = setup
    ws = tmp_path / "ws.duckdb"

    def stop(phase, done, total):
        if done > 300:
            raise KeyboardInterrupt

    with legacy_fingerprints(), pytest.raises(KeyboardInterrupt):
        run_cache(model, [dicts["resid1"]], ws, plan, params, progress=stop)
    (run,) = store.cache_status(ws)
    assert run.status != "finished" and run.committed_chunks >= 1
    result = run_cache(model, [dicts["resid1"]], ws, plan, params)  # the same run key: resumed, not refused
    assert result.run_id == run.run_id and 0 < result.chunks_computed < run.n_chunks
    (rec,) = store.list_dictionaries(ws, ready_only=True)
    assert ":" not in rec.fingerprint
