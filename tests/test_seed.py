"""The shipped seed of the default workspace (core.build.seed): written by the build, copied into place on first
start instead of a cache run; a seed from other artifacts, an interrupted copy, an older default holding the
user's work and a folder without write permission."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests import tiny_cache


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, tokdir) -> tuple[Path, Path]:
    """(a tiny default root, its seed folder) built by the seed's cache and write steps."""
    from core.build.seed import build_seed

    base = tmp_path_factory.mktemp("seeded")
    root = base / "default"
    tiny_cache.make_default_root(root, tokdir)
    report = build_seed(
        root=root, steps=("cache", "write"), workspace=base / "build" / "ws.duckdb", params=tiny_cache.default_params()
    )
    assert report["steps"] == ["cache"]
    return root, root / "seed"


def _catalog_hash(ws: Path) -> str:
    import hashlib

    return hashlib.blake2b(ws.read_bytes(), digest_size=16).hexdigest()


def _copy_root(seeded, tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "default"
    shutil.copytree(seeded[0], root)
    return root, root / "seed"


def test_the_seed_is_written_with_a_manifest_and_relocatable_paths(seeded):
    from core import store
    from core.build.seed import SEED_FORMAT, _relative, read_seed_manifest, seed_problem, temporary_copy
    from core.cache.workspace import default_source_fingerprint
    from core.paths import PROJECT_ROOT

    root, seed = seeded
    manifest = read_seed_manifest(seed)
    assert manifest["format"] == SEED_FORMAT and manifest["source"] == default_source_fingerprint(root)
    assert "workspace.duckdb.zst" in manifest["files"] and any("activations/" in f for f in manifest["files"])
    assert not [p for p in seed.rglob("*") if p.name.endswith((".lock", ".wal", ".log")) or "scratch" in p.parts]
    assert seed_problem(seed, root) is None
    copy = temporary_copy(seed, root)  # unpacked in the temporary folder (as for a read-only data folder)
    with store.session(copy) as con:  # it names no build folder
        text = json.dumps([d.__dict__ for d in store.dictionaries(con)]) + json.dumps(store.get_info(con, "corpus"))
    assert "build" not in text
    assert _relative(str(PROJECT_ROOT / "data" / "default" / "corpus" / "brown.jsonl.gz")) == (
        "data/default/corpus/brown.jsonl.gz"
    )


def test_first_start_copies_the_seed_instead_of_caching(seeded, tmp_path):
    from core.build.seed import install_tmp, read_seed_manifest
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace
    from core.latents.cards import latent_card

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    seen: list[tuple[str, int, int]] = []
    ensure_default_workspace(
        lambda *a: seen.append(a), path=ws, root=root, params=tiny_cache.default_params(), seed=seed
    )
    assert default_workspace_ready(ws, root)
    assert seen and {p for p, _, _ in seen} == {"copying the seed"}  # no model load, no cache run
    assert not install_tmp(ws).exists()
    card = latent_card(ws, "neurons:blocks.0.mlp.hook_post", 0)
    assert card is not None
    assert _catalog_hash(ws) == read_seed_manifest(seed)["catalog"]["blake2b"]  # the unpacked catalog


def test_an_interrupted_copy_is_removed_and_redone(seeded, tmp_path):
    from core.build.seed import install_tmp
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    half = install_tmp(ws) / "workspace.duckdb.data" / "activations"
    half.mkdir(parents=True)
    (half / "d000-x.parquet").write_bytes(b"half a file")
    orphan = ws.with_name("workspace.duckdb.data")  # renamed into place, then the start was killed
    (orphan / "activations").mkdir(parents=True)
    (orphan / "activations" / "junk.parquet").write_bytes(b"junk")
    (orphan / ".seed-installing").touch()
    ensure_default_workspace(path=ws, root=root, params=tiny_cache.default_params(), seed=seed)
    assert default_workspace_ready(ws, root) and not install_tmp(ws).exists()
    assert not (orphan / "activations" / "junk.parquet").exists() and not (orphan / ".seed-installing").exists()
    assert not list(ws.parent.glob("*.orphan-*"))


def test_a_data_folder_left_without_its_catalog_is_kept_aside(seeded, tmp_path):
    """A data folder whose catalog someone moved away is not the seed's: it is renamed, never deleted."""
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    theirs = ws.with_name("workspace.duckdb.data") / "activations" / "theirs.parquet"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"their activations")
    ensure_default_workspace(path=ws, root=root, params=tiny_cache.default_params(), seed=seed)
    assert default_workspace_ready(ws, root)
    (kept,) = ws.parent.glob("workspace.duckdb.data.orphan-*")
    assert (kept / "activations" / "theirs.parquet").read_bytes() == b"their activations"


def test_a_damaged_seed_file_is_not_installed_and_the_build_runs(seeded, tmp_path):
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    target = next((seed / "workspace.duckdb.data" / "activations").iterdir())
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(data))
    ws = tmp_path / "data" / "workspace.duckdb"
    seen: list[tuple[str, int, int]] = []
    ensure_default_workspace(
        lambda *a: seen.append(a), path=ws, root=root, params=tiny_cache.default_params(), seed=seed
    )
    assert default_workspace_ready(ws, root) and any(p == "caching" for p, _, _ in seen)


def test_a_seed_from_other_artifacts_falls_back_to_the_build(seeded, tmp_path, tokdir):
    from core.build.seed import seed_problem
    from core.cache.workspace import default_workspace_ready, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    tiny_cache.make_default_root(root, tokdir, model_seed=5)  # someone rebuilt the model
    assert "other default artifacts" in seed_problem(seed, root)
    ws = tmp_path / "data" / "workspace.duckdb"
    seen: list[tuple[str, int, int]] = []
    ensure_default_workspace(
        lambda *a: seen.append(a), path=ws, root=root, params=tiny_cache.default_params(), seed=seed
    )
    assert default_workspace_ready(ws, root) and any(p == "caching" for p, _, _ in seen)


def _save_circuit(ws: Path) -> None:
    """A circuit saved by hand (a row in circuits and its version 1; filler values of each column's type)."""
    from core import store

    def filler(column: str, kind: str) -> str:
        if column == "created_by":
            return "'hand'"
        if "VARCHAR" in kind:
            return "'user circuit'"
        return {"TIMESTAMP": "now()", "JSON": "'{}'", "BOOLEAN": "false"}.get(kind, "1")

    with store.session(ws, write=True) as con:
        for table in ("circuits", "circuit_versions"):
            described = con.execute(f"DESCRIBE {table}").fetchall()
            cols = [r[0] for r in described]
            values = [filler(r[0], r[1]) for r in described]
            con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(values)})")


def test_an_older_default_holding_user_work_is_kept_aside_and_named(seeded, tmp_path, tokdir):
    """A rebuilt default replaces the workspace; one holding a saved circuit is kept under a new name each time
    (never replaced) and listed in the set-aside note the app reads; one holding nothing of the user's is not listed."""
    from core.cache.workspace import ensure_default_workspace, set_aside_notes, user_content

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    params = tiny_cache.default_params()
    ensure_default_workspace(path=ws, root=root, params=params, seed=seed)
    _save_circuit(ws)
    assert user_content(ws) == {"circuits": 1}
    tiny_cache.make_default_root(root, tokdir, model_seed=5)
    ensure_default_workspace(path=ws, root=root, params=params, seed=seed)  # seed no longer fits: build
    notes = set_aside_notes(ws)
    assert len(notes) == 1 and notes[0]["content"] == {"circuits": 1}
    first = Path(notes[0]["path"])
    assert first.name == "workspace.stale.duckdb" and user_content(first) == {"circuits": 1}
    assert user_content(ws) == {}
    _save_circuit(ws)
    tiny_cache.make_default_root(root, tokdir, model_seed=6)
    ensure_default_workspace(path=ws, root=root, params=params, seed=seed)
    notes = set_aside_notes(ws)
    assert len(notes) == 2 and user_content(first) == {"circuits": 1}  # the first one is still there
    assert Path(notes[0]["path"]).name.startswith("workspace.stale-") and user_content(Path(notes[0]["path"]))


def test_an_unfinished_build_is_replaced_by_the_seed(seeded, tmp_path):
    from core import store
    from core.build.seed import read_seed_manifest
    from core.cache.workspace import DEFAULT_WAIT_S, default_workspace_ready, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    params = tiny_cache.default_params()

    class Stop(Exception):
        pass

    def stop(phase, done, total):
        if phase == "caching" and done:
            raise Stop

    with pytest.raises(Stop):
        ensure_default_workspace(stop, path=ws, root=root, params=params, wait_timeout=DEFAULT_WAIT_S)
    assert ws.exists() and not default_workspace_ready(ws, root)
    with store.session(ws) as con:
        assert store.unfinished_runs(con)
    ensure_default_workspace(path=ws, root=root, params=params, seed=seed)
    assert default_workspace_ready(ws, root)
    assert _catalog_hash(ws) == read_seed_manifest(seed)["catalog"]["blake2b"]  # the unpacked catalog


def test_a_folder_without_write_permission_is_a_clear_error(seeded, tmp_path, monkeypatch):
    import core.cache.workspace as workspace
    from core.cache.workspace import DataFolderReadOnlyError, ensure_default_workspace

    root, seed = _copy_root(seeded, tmp_path)
    ws = tmp_path / "data" / "workspace.duckdb"
    ws.parent.mkdir()
    monkeypatch.setattr(workspace.os, "access", lambda p, mode: Path(p) != ws.parent)  # (tests run as root)
    with pytest.raises(DataFolderReadOnlyError, match="no write permission.*SAE_EXPLORER_WORKSPACE"):
        ensure_default_workspace(path=ws, root=root, params=tiny_cache.default_params(), seed=seed)
    assert not ws.exists() and list(ws.parent.iterdir()) == []


def test_the_manifest_lists_every_file_with_its_hash(seeded):
    from core.build.seed import read_seed_manifest

    _, seed = seeded
    manifest = read_seed_manifest(seed)
    on_disk = {str(p.relative_to(seed)) for p in seed.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert all(len(m["blake2b"]) == 32 for m in manifest["files"].values())
    assert json.loads((seed / "manifest.json").read_text())["bytes"] == sum(
        (seed / f).stat().st_size for f in manifest["files"]
    )


def test_the_stored_conventions_table_is_still_current_in_the_seed(seeded, tmp_path):
    """The seed drops the examples of continuous scorers, which the stored conventions table's key
    (`store.scores_state`) counts: the seed must hold it stored from what it ships, so the Scores page reads it
    (milliseconds) instead of computing it (seconds) on the first start."""
    import analysis_workspace

    from core.autointerp import delphi_metrics
    from core.build.seed import install_seed, write_seed

    root, seed = _copy_root(seeded, tmp_path)
    built = install_seed(tmp_path / "built" / "workspace.duckdb", seed, root)
    analysis_workspace.build(built, overlaps=False)  # explanations; detection, fuzzing and embedding scores
    delphi_metrics.store_conventions(built)  # as the seed's analyze step does
    assert delphi_metrics._stored_rows(built) is not None
    write_seed(built, tmp_path / "seed2", root=root)
    shipped = install_seed(tmp_path / "data" / "workspace.duckdb", tmp_path / "seed2", root)
    rows = delphi_metrics._stored_rows(shipped)
    assert rows is not None, "the seed's stored conventions table reads as stale: the Scores page would compute it"
    assert delphi_metrics._frame(rows).equals(delphi_metrics.conventions_table(shipped))


def test_a_seed_built_outside_data_default_is_explained_with_its_own_model(seeded, tmp_path):
    """The explain step resolves the model and dictionaries by the name "default"; for a root elsewhere
    (`build-default --out DIR`) it must read that root's, not data/default's (a 6-layer build crashed on the
    shipped 4-layer model's hooks; a 4-layer one would have mixed it into its random-latent baseline)."""
    from core.autointerp.scorers import surprisal
    from core.build.seed import build_seed, read_seed_manifest
    from core.paths import DEFAULT_DIR, default_root
    from core.subjects.models import load_default_model

    root, seed = _copy_root(seeded, tmp_path)
    shutil.rmtree(seed)
    report = build_seed(
        root=root,
        steps=("cache", "explain", "write"),
        workspace=tmp_path / "build" / "ws.duckdb",
        params=tiny_cache.default_params(),
    )
    assert report["steps"] == ["cache", "explain:fast"] and "skipped" not in report
    assert read_seed_manifest(seed)["steps"] == ["cache", "explain:fast"]
    assert default_root() == DEFAULT_DIR  # the root is data/default again after the step
    # the model the baselines ran is this root's (held under its own name), not the shipped one
    used = surprisal._LMS[f"lm:default@{root.resolve()}"]
    own = load_default_model(root)
    assert used.cfg.d_model == own.cfg.d_model and used.cfg.n_layers == own.cfg.n_layers
    assert torch.equal(used.W_E, own.W_E)
