"""`export-neuronpedia`: Neuronpedia's bulk layout written, read back and checked; bad folders refused, workspace unchanged."""

from __future__ import annotations

import gzip
import json

import pytest

from core import store
from core.autointerp.engine import RunSpec, run
from core.autointerp.examples import SamplingParams
from core.autointerp.neuronpedia_export import ExportError, export_neuronpedia, read_export
from tests.app_workspace import copy_workspace as _copy
from tests.autointerp_helpers import tiny_workspace

SMALL = SamplingParams(n_train=10, n_test_per_decile=1, n_random_negatives=4, n_hard_negatives=4, window=16)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The tiny workspace with baseline explanations of 6 latents, each scored by detection."""
    ws, d = tiny_workspace(tmp_path_factory)
    run(ws, [d.id], RunSpec(scorers=("detection",), sampling=SMALL), sample=6)
    return ws, d


def _rows(path):
    return [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_export_writes_neuronpedia_rows_and_reads_them_back(scored, tmp_path, capsys):
    from core.cli import main

    ws, d = scored
    before = store.scores_frame(ws, status=None)
    out = tmp_path / "np"
    assert main(["export-neuronpedia", "--workspace", str(ws), "--out", str(out), "--examples", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    live = int((store.latent_stats_frame(ws, d.id)["n_fires"] > 0).sum())
    assert summary["features"] == live and summary["explanations"] == 6 and summary["scores"] == 6
    layer, hook = d.id.split(":")[1].split(".")[1], d.id.split("hook_")[1].replace("_", "-")
    assert summary["sources"] == [f"{layer}-sce-{d.id.split(':')[0]}-{hook}"]
    folder = next(out.glob("*/*/source.jsonl")).parent
    feats = _rows(next((folder / "features").glob("*.gz")))
    acts = _rows(next((folder / "activations").glob("*.gz")))
    expl = _rows(next((folder / "explanations").glob("*.gz")))
    scores = _rows(next((folder / "explanation_scores").glob("*.gz")))
    # an activation row is one whole context: token texts, the latent's value per token, its max
    a = acts[0]
    assert len(a["tokens"]) == len(a["values"]) and a["maxValue"] == max(a["values"]) > 0
    assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"]
    top = {f["index"]: f["maxActApprox"] for f in feats}
    assert pytest.approx(top[a["index"]], rel=1e-4) == max(r["maxValue"] for r in acts if r["index"] == a["index"])
    assert {e["typeName"] for e in expl} == {"baseline:token-stats"}  # who made it, baselines named
    assert json.loads(expl[0]["notes"])["is_baseline"] is True
    assert {s["explanationScoreTypeName"] for s in scores} == {"detection"}
    assert {s["explanationId"] for s in scores} <= {e["id"] for e in expl}
    assert store.scores_frame(ws, status=None).equals(before)  # the workspace is only read


def test_sample_and_read_back_catches_damage(scored, tmp_path):
    ws, _ = scored
    s = export_neuronpedia(ws, tmp_path / "s", sample=3, n_examples=2)
    assert s.features == 3 and s.activations <= 6
    folder = next((tmp_path / "s").glob("*/*/source.jsonl")).parent
    path = next((folder / "activations").glob("*.gz"))
    rows = _rows(path)
    rows[0]["values"] = rows[0]["values"][:-1]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    with pytest.raises(ExportError, match="mismatched values/tokens"):
        read_export(tmp_path / "s")


def test_existing_or_unwritable_folder_is_refused_and_nothing_changes(scored, tmp_path, capsys):
    from core.cli import main

    ws, _ = scored
    ws = _copy(ws, tmp_path)
    stamp = ws.stat().st_mtime_ns
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["export-neuronpedia", "--workspace", str(ws), "--out", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "already exists" in err and "Traceback" not in err
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["export-neuronpedia", "--workspace", str(ws), "--out", str(blocker / "sub")]) == 2
    assert "cannot create export folder" in capsys.readouterr().err
    assert main(["export-neuronpedia", "--workspace", str(ws), "--out", str(tmp_path / "n"), "--sample", "0"]) == 2
    assert not (tmp_path / "n").exists() and ws.stat().st_mtime_ns == stamp
