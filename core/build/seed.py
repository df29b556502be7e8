"""The shipped seed of the default workspace: built by `python -m core build-default`, copied into place on first start.

A seed is a complete default workspace at a reduced token count (`SEED_PARAMS`), with the fast stage of the
default explanations done (offline explainer; detection, fuzzing, simulation and embedding judges on every
live latent) and the example circuits, committed under `data/default/seed/`:

    data/default/seed/manifest.json                        format, source fingerprint, tokens, steps, file hashes
    data/default/seed/workspace.duckdb                     the catalog, explanations, scores, circuits (compacted)
    data/default/seed/workspace.duckdb.data/activations/   one zstd Parquet file per dictionary

Building it (`build_seed`) runs four resumable steps in a build folder (`data/_build/seed/`):
1. cache      `ensure_default_workspace` with `SEED_PARAMS` (resumes an interrupted cache run);
2. explain    `ensure_default_explanations(stages=("fast",))` (resumes: stored explanations and scores are found);
3. circuits   `core.circuits.examples.build_example_circuits(workspace)` when that module exists;
4. analyze    the Scores and Deciles pages' analyses and the Overlap page's layer pairs, stored in the workspace;
5. write      compact the catalog (COPY FROM DATABASE) leaving out what is only a cache or too bulky to ship
              (`PRUNED`), re-encode the Parquet files with zstd, make the stored paths relative to the project,
              hash every file, and rename the result into `data/default/seed/`.

Installing it (`install_seed`, the app's first start) copies the files to a temporary folder beside the
workspace, checking each file's hash as it copies, fsyncs them, then renames the data folder and finally the
catalog into place: the catalog's name appears last, so a start interrupted at any point leaves either no
workspace (the next start removes the half-copied folder and copies again) or a complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from core import store
from core.cache.plan import CacheParams
from core.paths import BUILD_CACHE_DIR, DEFAULT_DIR, PROJECT_ROOT, default_root_at
from core.progress import Progress

log = logging.getLogger(__name__)

SEED_FORMAT = 1  # bump when a seed's layout or meaning changes: older seeds are then not installed
# 8k Brown tokens (64 contexts, 8,255 cached): the seed's committed files are 55.5 MB (Parquet 37.8 MB with zstd,
# the catalog 57.4 MB packed to 17.7 MB), within the 150 MB budget of data/ (66 MB before the seed).
SEED_PARAMS = CacheParams(n_tokens=8_192)
SEED_STEPS = ("cache", "explain", "circuits", "analyze", "write")
SEED_DIR = DEFAULT_DIR / "seed"
SEED_BUILD_WORKSPACE = BUILD_CACHE_DIR / "seed" / "workspace.duckdb"
WORKSPACE_NAME = "workspace.duckdb"
CATALOG_FILE = WORKSPACE_NAME + ".zst"  # the catalog ships zstd-compressed (40 MB -> 13 MB); Parquet files are already
ZSTD_LEVEL = 9
MANIFEST_NAME = "manifest.json"
INSTALL_TMP_SUFFIX = (
    ".seed-install"  # workspace.duckdb.seed-install/: a copy in progress (removed and redone if left over)
)
_CIRCUITS_MARKER = "seed:example_circuits"
_INSTALLING = ".seed-installing"  # in a data folder renamed into place whose catalog is not yet there
# Left out of the shipped catalog (SQL run on a copy): caches rebuilt on demand (window and explanation
# embeddings) and the per-example rows of scorers with continuous predictions (simulation, embedding), which
# no page shows and no analysis reads (the Deciles analysis reads only the yes/no scorers' rows, all kept).
PRUNED = {
    "window_embeddings": "DELETE FROM dst.window_embeddings",
    "explanation_embeddings": "DELETE FROM dst.explanation_embeddings",
    "score_examples of continuous scorers": "DELETE FROM dst.score_examples WHERE score_id IN "
    "(SELECT score_id FROM dst.scores WHERE scorer NOT IN ('detection', 'fuzzing'))",
    "score_examples.detail": "UPDATE dst.score_examples SET detail = NULL WHERE detail IS NOT NULL",
}


def _store_conventions_again(workspace: Path) -> None:
    """Store the Scores page's conventions table again in the pruned copy `workspace`, if the analyze step stored it:
    its key (`store.scores_state`) counts score examples, and `PRUNED` drops those of continuous scorers, so the
    stored table would read as stale and the page would compute it on every first start (seconds) instead."""
    from core.autointerp.delphi_metrics import CONVENTIONS_ANALYSIS, store_conventions
    from core.store.analyses import read_analyses

    if read_analyses(workspace, name=CONVENTIONS_ANALYSIS, units="all"):
        store_conventions(workspace)


class SeedError(store.WorkspaceError):
    """The seed cannot be installed (missing, from other artifacts, or its files do not match its manifest)."""


def _hash_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_seed_manifest(seed_dir: Path = SEED_DIR) -> dict | None:
    """The seed's manifest, or None if there is no seed (or its manifest is unreadable)."""
    try:
        data = json.loads((Path(seed_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def seed_problem(seed_dir: Path = SEED_DIR, root: Path | None = None) -> str | None:
    """Why the seed in `seed_dir` cannot stand in for the default workspace built from `root`, or None if it can.

    Checks the manifest's format, its source fingerprint against `default_source_fingerprint(root)` and that
    every listed file exists with its size (hashes are checked while installing)."""
    from core.cache.workspace import default_source_fingerprint

    seed_dir = Path(seed_dir)
    manifest = read_seed_manifest(seed_dir)
    if manifest is None:
        return f"no seed in {seed_dir}"
    if manifest.get("format") != SEED_FORMAT:
        return f"the seed in {seed_dir} has format {manifest.get('format')}, this code reads {SEED_FORMAT}"
    if manifest.get("source") != default_source_fingerprint(root):
        return f"the seed in {seed_dir} was made from other default artifacts (model, dictionaries or corpus)"
    for rel, meta in (manifest.get("files") or {}).items():
        p = seed_dir / rel
        if not p.is_file() or p.stat().st_size != meta.get("bytes"):
            return f"the seed's file {p} is missing or has another size than its manifest says"
    if CATALOG_FILE not in (manifest.get("files") or {}) or "catalog" not in manifest:
        return f"the seed's manifest in {seed_dir} lists no {CATALOG_FILE}"
    return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_checked(src: Path, dst: Path, want: str) -> int:
    """Copy `src` to `dst`, hashing as it goes; fsync; raise SeedError if the hash is not `want`. Returns bytes."""
    h = hashlib.blake2b(digest_size=16)
    n = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for block in iter(lambda: fi.read(1 << 20), b""):
            h.update(block)
            fo.write(block)
            n += len(block)
        fo.flush()
        os.fsync(fo.fileno())
    if h.hexdigest() != want:
        raise SeedError(
            f"the seed's file {src} does not match its manifest (damaged or edited); rebuild it with "
            "`python -m core build-default --stage seed`"
        )
    return n


def _unpack_checked(src: Path, dst: Path, want: str, catalog: dict) -> int:
    """Decompress the zstd catalog `src` (hash `want`) to `dst` and check its own hash and size; fsync. Returns bytes read."""
    import pyarrow as pa

    packed = src.read_bytes()
    if hashlib.blake2b(packed, digest_size=16).hexdigest() != want:
        raise SeedError(
            f"the seed's file {src} does not match its manifest (damaged or edited); rebuild it with "
            "`python -m core build-default --stage seed`"
        )
    raw = pa.Codec("zstd").decompress(packed, decompressed_size=int(catalog["bytes"])).to_pybytes()
    if hashlib.blake2b(raw, digest_size=16).hexdigest() != catalog["blake2b"]:
        raise SeedError(f"the seed's catalog {src} unpacks to other bytes than its manifest says; rebuild the seed")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fo:
        fo.write(raw)
        fo.flush()
        os.fsync(fo.fileno())
    return len(packed)


def install_tmp(dest: Path) -> Path:
    """The temporary folder a seed is copied into beside workspace `dest`."""
    return Path(dest).with_name(Path(dest).name + INSTALL_TMP_SUFFIX)


def install_seed(
    dest: Path, seed_dir: Path = SEED_DIR, root: Path | None = None, progress: Progress | None = None
) -> Path:
    """Copy the seed in `seed_dir` to workspace `dest` (and its data folder), atomically; returns `dest`.

    The caller holds the default workspace's build lock and has checked that `dest` does not exist. A folder
    left by an interrupted copy, or a data folder without its catalog, is removed first (neither holds anything
    a user saved: that lives in the catalog). Raises SeedError if the seed does not fit (`seed_problem`) or a
    file's hash differs, PermissionError/OSError if the folder cannot be written (nothing is left behind)."""
    dest, seed_dir = Path(dest), Path(seed_dir)
    problem = seed_problem(seed_dir, root)
    if problem:
        raise SeedError(problem)
    if dest.exists():
        raise SeedError(f"{dest} exists already; the seed is only copied where there is no workspace")
    manifest = read_seed_manifest(seed_dir) or {}
    files: dict = manifest["files"]
    tmp = install_tmp(dest)
    if tmp.exists():
        log.warning("removing %s, left by an interrupted first start", tmp)
        shutil.rmtree(tmp)
    for leftover in (store.data_dir(dest), Path(str(dest) + ".wal")):
        if not leftover.exists():
            continue
        if (leftover / _INSTALLING).exists():  # ours, from a start interrupted between the two renames
            log.warning("removing %s, left by an interrupted first start", leftover)
            shutil.rmtree(leftover)
        else:  # someone else's (e.g. a workspace file moved away without it): kept under another name
            aside = leftover.with_name(f"{leftover.name}.orphan-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("moving %s, which has no workspace catalog beside it, to %s", leftover, aside)
            os.rename(leftover, aside)
    total = sum(int(m["bytes"]) for m in files.values())
    done = 0
    try:
        for rel in sorted(files, key=lambda r: r == CATALOG_FILE):  # the catalog last
            if rel == CATALOG_FILE:
                done += _unpack_checked(
                    seed_dir / rel, tmp / WORKSPACE_NAME, files[rel]["blake2b"], manifest["catalog"]
                )
            else:
                done += _copy_checked(seed_dir / rel, tmp / rel, files[rel]["blake2b"])
            if progress:
                progress("copying the seed", done, total)
        for d in sorted({p.parent for p in tmp.rglob("*") if p.is_file()}, key=lambda p: -len(p.parts)):
            _fsync_dir(d)
        data_src = store.data_dir(tmp / WORKSPACE_NAME)
        data_src.mkdir(parents=True, exist_ok=True)
        (data_src / _INSTALLING).touch()
        os.rename(data_src, store.data_dir(dest))
        os.rename(tmp / WORKSPACE_NAME, dest)  # the catalog's name appears last: now the workspace exists
        (store.data_dir(dest) / _INSTALLING).unlink()
        _fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    store.migrate(dest)  # a seed written by older code gets the tables added since (nothing stored changes)
    log.info("installed the seed from %s as %s (%.0f MB)", seed_dir, dest, total / 1e6)
    return dest


# ---------------------------------------------------------------------------------------------
# Building the seed


def _relative(path: str | None) -> str | None:
    """`path` relative to the project folder when it lies inside it (so a seed names no folder of the machine that built it)."""
    if not path:
        return path
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT.resolve()))
    except ValueError:
        return path


def _recompress(src: Path, dst: Path) -> None:
    """Rewrite an activations Parquet file with zstd (same encodings, row groups and statistics)."""
    import pyarrow.parquet as pq

    from core.cache.files import PARQUET_ROW_GROUP, PARQUET_SCHEMA

    dst.parent.mkdir(parents=True, exist_ok=True)
    source = pq.ParquetFile(str(src))
    with pq.ParquetWriter(
        str(dst),
        PARQUET_SCHEMA,
        compression="zstd",
        compression_level=9,
        use_dictionary=False,
        column_encoding={
            "latent": "DELTA_BINARY_PACKED",
            "context": "DELTA_BINARY_PACKED",
            "position": "DELTA_BINARY_PACKED",
            "value": "BYTE_STREAM_SPLIT",
        },
        write_statistics=["latent", "context"],
    ) as writer:
        for i in range(source.num_row_groups):
            writer.write_table(source.read_row_group(i), row_group_size=PARQUET_ROW_GROUP)


def write_seed(
    workspace: Path, seed_dir: Path = SEED_DIR, root: Path | None = None, steps: list[str] | None = None
) -> dict:
    """Write the built workspace `workspace` as the seed in `seed_dir` (replacing the one there); returns its manifest."""
    import duckdb

    from core.cache.workspace import default_source_fingerprint

    workspace, seed_dir = Path(workspace), Path(seed_dir)
    store.migrate(workspace)  # the seed ships with this code's schema
    with store.session(workspace) as con:
        info = store.get_info(con, "default_workspace") or {}
        corpus = store.get_info(con, "corpus") or {}
        dicts = store.dictionaries(con)
    if info.get("source") != default_source_fingerprint(root):
        raise SeedError(f"{workspace} was not built from the current default artifacts; rerun the seed's cache step")
    tmp = seed_dir.with_name(seed_dir.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = tmp / WORKSPACE_NAME
    con = duckdb.connect(":memory:")
    try:  # a fresh file: no free blocks left by the build's many transactions
        # pruned on a first copy, then copied again: deleted rows would otherwise still take blocks in the file
        mid = tmp / "pruning.duckdb"
        con.execute(f"ATTACH '{workspace}' AS src (READ_ONLY)")
        con.execute(f"ATTACH '{mid}' AS dst")
        con.execute("COPY FROM DATABASE src TO dst")
        con.execute("DETACH src")
        for sql in PRUNED.values():
            con.execute(sql)
        con.execute("DETACH dst")
        _store_conventions_again(mid)
        con.execute(f"ATTACH '{mid}' AS src (READ_ONLY)")
        con.execute(f"ATTACH '{out}' AS dst")
        con.execute("COPY FROM DATABASE src TO dst")
        con.execute("DETACH src")
        mid.unlink()
        Path(str(mid) + ".wal").unlink(missing_ok=True)
        activations = store.data_dir(out) / "activations"
        for d in dicts:
            if d.activations_file:
                _recompress(
                    store.data_dir(workspace) / "activations" / d.activations_file, activations / d.activations_file
                )
                con.execute(
                    "UPDATE dst.dictionaries SET source = ?, file_bytes = ? WHERE id = ?",
                    [_relative(d.source), (activations / d.activations_file).stat().st_size, d.id],
                )
        corpus["corpus"] = _relative(corpus.get("corpus"))
        con.execute("UPDATE dst.workspace_info SET value = ? WHERE key = 'corpus'", [json.dumps(corpus)])
        con.execute("CHECKPOINT dst")
    finally:
        con.close()
    import pyarrow as pa

    raw = out.read_bytes()
    catalog = {"bytes": len(raw), "blake2b": hashlib.blake2b(raw, digest_size=16).hexdigest()}
    (tmp / CATALOG_FILE).write_bytes(pa.Codec("zstd", compression_level=ZSTD_LEVEL).compress(raw).to_pybytes())
    out.unlink()
    files = {
        str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "blake2b": _hash_file(p)}
        for p in sorted(tmp.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "format": SEED_FORMAT,
        "source": info["source"],
        "params": asdict(SEED_PARAMS),
        "n_tokens": corpus.get("n_tokens"),
        "steps": steps or [],
        "pruned": list(PRUNED),
        "built_with": "python -m core build-default --stage seed",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bytes": sum(m["bytes"] for m in files.values()),
        "catalog": catalog,  # the unpacked workspace.duckdb
        "files": files,
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    old = seed_dir.with_name(seed_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if seed_dir.exists():
        os.rename(seed_dir, old)
    os.rename(tmp, seed_dir)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def temporary_copy(seed_dir: Path = SEED_DIR, root: Path | None = None) -> Path:
    """The seed installed in the system's temporary folder (installed once per seed; reused after), for a data
    folder this process cannot write: the app reads it there. Raises SeedError if the seed does not fit."""
    import tempfile

    manifest = read_seed_manifest(seed_dir) or {}
    key = hashlib.blake2b(json.dumps(manifest.get("catalog", {}), sort_keys=True).encode(), digest_size=6).hexdigest()
    dest = Path(tempfile.gettempdir()) / f"sae-explorer-seed-{key}" / WORKSPACE_NAME
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        install_seed(dest, seed_dir, root)
    return dest


def _example_circuits(workspace: Path, root: Path | None = None) -> str:
    """Run `core.circuits.examples.build_example_circuits(workspace)` once; 'done', 'skipped' (no such module) or 'found'."""
    with store.session(workspace) as con:
        if store.get_info(con, _CIRCUITS_MARKER):
            return "found"
    try:
        from core.circuits.examples import build_example_circuits
    except ImportError:
        log.warning(
            "core.circuits.examples.build_example_circuits does not exist yet: the seed has no example circuits"
        )
        return "skipped"
    result = build_example_circuits(workspace, root=root)
    with store.session(workspace, write=True) as con:
        store.set_info(con, _CIRCUITS_MARKER, {"done": True, "result": repr(result)[:500]})
    return "done"


def build_seed(
    root: Path | None = None,
    seed_dir: Path | None = None,
    steps: tuple[str, ...] = SEED_STEPS,
    workspace: Path = SEED_BUILD_WORKSPACE,
    params: CacheParams = SEED_PARAMS,
    progress: Progress | None = None,
) -> dict:
    """Run the seed's steps (`SEED_STEPS`, each resumable and a no-op once done) and return what each did.

    `root`: the default's artifacts (default data/default); the seed goes to `seed_dir` (default ROOT/seed)."""
    from core.autointerp.default import ensure_default_explanations
    from core.cache.workspace import ensure_default_workspace

    unknown = [s for s in steps if s not in SEED_STEPS]
    if unknown:
        raise ValueError(f"unknown seed step(s) {', '.join(unknown)}; valid: {', '.join(SEED_STEPS)}")
    seed_dir = Path(seed_dir) if seed_dir else (Path(root) if root else DEFAULT_DIR) / "seed"
    workspace = Path(workspace)
    report: dict = {"workspace": str(workspace), "seed_dir": str(seed_dir), "seconds": {}}
    done_steps: list[str] = []
    for step in SEED_STEPS:
        if step not in steps:
            continue
        t0 = time.perf_counter()
        log.info("seed step %s", step)
        if step == "cache":
            ensure_default_workspace(progress, path=workspace, root=root, params=params)
            done_steps.append("cache")
        elif step == "explain":
            # the autointerp engine resolves the model and dictionaries by the name "default": under `root`
            with default_root_at(root):
                ensure_default_explanations(workspace, progress, stages=("fast",))
            done_steps.append("explain:fast")
        elif step == "circuits":
            report["circuits"] = _example_circuits(workspace, root)
        elif step == "analyze":
            from core.autointerp.default_job import store_page_analyses

            report["analyze"] = store_page_analyses(workspace, root)
        elif step == "write":
            from core.autointerp.default import default_explanations_ready

            with store.session(workspace) as con:
                has_circuits = bool(store.get_info(con, _CIRCUITS_MARKER))
            made = ["cache"]
            if default_explanations_ready(workspace, ("fast",)):
                made.append("explain:fast")
            if has_circuits:
                made.append("circuits")
            if store.read_analyses(workspace) and store.read_overlaps(workspace):
                made.append("analyze")
            manifest = write_seed(workspace, seed_dir, root, made)
            report["seed_bytes"] = manifest["bytes"]
            report["steps"] = made
        report["seconds"][step] = round(time.perf_counter() - t0, 1)
    return report
