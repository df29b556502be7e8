"""Analyses and overlaps stored in a workspace, the analyze/overlap/report commands, and their bad-input messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import analysis_workspace
import numpy as np
import pytest

from core import store
from core.analysis import analyses as analysis
from core.analysis import overlap
from core.cli import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return analysis_workspace.build(tmp_path_factory.mktemp("aw") / "ws.duckdb")


def _copy(ws: Path, dest: Path) -> Path:
    shutil.copy(ws, dest)
    return dest


def test_stored_results_match_a_direct_computation_and_go_stale(ws, tmp_path):
    w = _copy(ws, tmp_path / "w.duckdb")
    computed = analysis.analyze_workspace(w)
    assert set(computed) == set(analysis.ANALYSES)
    loaded = analysis.load_results(w)
    scores = store.scores_frame(w, status=None)
    direct = analysis.spearman_matrix(scores)
    assert np.allclose(loaded["spearman"].result.rho, direct.rho, equal_nan=True)
    assert loaded["deciles"].result.curves[0].accuracy == computed["deciles"].curves[0].accuracy
    assert loaded["units"].result.strategy == "top" and not loaded["units"].stale
    rec = store.scores_for_explanations(w, [scores["explanation_id"].iloc[0]])[0]
    store.write_scores(
        w, [(store.ScoreRecord(rec.score_id, rec.explanation_id, rec.scorer, rec.scorer_model, 0.123, "v1", {}), [])]
    )
    assert all(r.stale for r in analysis.load_results(w).values())


def test_analyze_command_says_how_many_latents_it_has_and_needs(tmp_path, capsys):
    small = analysis_workspace.build(tmp_path / "small.duckdb", n_latents=1, overlaps=False, examples=False)
    assert main(["analyze", "--workspace", str(small), "--what", "spearman"]) == 2
    err = capsys.readouterr().err
    assert "needs at least 10 scored latents" in err and "has 4" in err  # 1 latent in each of 4 dictionaries
    assert main(["analyze", "--workspace", str(small)]) == 2  # every analysis lacks latents: each says so
    out = capsys.readouterr().out
    assert "distributions: score distributions needs at least 5 scored latents (latents); the workspace has 4" in out
    assert main(["analyze", "--workspace", str(tmp_path / "nope.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_overlap_resumes_and_recomputes_only_what_changed(ws, tmp_path):
    w = _copy(ws, tmp_path / "o.duckdb")
    dicts = analysis_workspace.fake_dictionaries()
    again = overlap.overlap_workspace(w, dicts, kinds=("resid", "transcoder"))
    assert not again.computed and len(again.skipped) == 4  # 2 decoder + 2 explanation pairs, all stored
    dicts["resid:blocks.1.hook_resid_pre"].W_dec = dicts["resid:blocks.0.hook_resid_pre"].W_dec[::-1].copy()
    changed = overlap.overlap_workspace(w, dicts, similarities=("decoder",), kinds=("resid", "transcoder"))
    assert [r.dict_b for r in changed.computed] == ["resid:blocks.1.hook_resid_pre"]
    assert changed.computed[0].mean_similarity == pytest.approx(1.0)  # a reversed copy: a known permutation
    layers, mat, _ = overlap.stored_layer_matrix(w, "resid")
    assert layers == [0, 1] and mat[0, 1] == pytest.approx(1.0)
    pairs = store.read_overlap_pairs(
        w, overlap.overlap_id("decoder", "resid:blocks.0.hook_resid_pre", "resid:blocks.1.hook_resid_pre")
    )
    assert sorted(pairs["latent_a"]) == list(range(48)) and (pairs["latent_a"] + pairs["latent_b"] == 47).all()
    forced = overlap.overlap_workspace(w, dicts, similarities=("explanation",), kinds=("resid",), force=True)
    assert len(forced.computed) == 1 and forced.computed[0].params["strategy"] == "top"


def test_overlap_command_refuses_another_model(ws, capsys):
    assert main(["overlap", "--workspace", str(ws), "--model", "gpt2", "--similarity", "decoder"]) == 2
    assert "built from model 'default', not 'gpt2'" in capsys.readouterr().err


def test_report_is_reproducible_and_has_the_claims_table(ws, tmp_path):
    from core.analysis import report

    w = _copy(ws, tmp_path / "r.duckdb")
    first = report.write_report(w, tmp_path / "out1", images="html", overlap=False).read_text()
    second = report.write_report(w, tmp_path / "out2", images="html", overlap=False).read_text()
    assert first.replace("out1", "out2") == second
    assert "## The seed paper's claims on this workspace" in first
    assert (
        "| Sampling from the whole activation range (random, quantile) gives better explanations than top activations"
        in first
    )
    assert "**not measurable here**" in first and "**confirmed**" in first
    for name in (
        "distributions",
        "spearman",
        "units",
        "deciles_detection",
        "overlap_decoder_resid",
        "overlap_explanation_transcoder",
    ):
        assert (tmp_path / "out1" / f"{name}.html").exists()
    assert "No LLM took part" in first


@pytest.mark.slow
def test_report_writes_png_figures_with_kaleido(ws, tmp_path):
    """PNG export needs kaleido and a Chrome/Chromium (Debian `chromium` here); slow: it starts a browser."""
    from core.analysis import report

    w = _copy(ws, tmp_path / "p.duckdb")
    text = report.write_report(w, tmp_path / "png", images="png", overlap=False).read_text()
    assert "![distributions](distributions.png)" in text
    png = (tmp_path / "png" / "distributions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_agreement_claim_needs_fuzzing_detection_to_be_the_highest_pair():
    from core.analysis.report import agreement_verdict

    fd = (0.38, 0.33, 0.42, 1659)
    clearly_higher = [(("fuzzing", "simulation"), (0.77, 0.74, 0.79, 1701))]
    overlapping = [(("detection", "simulation"), (0.41, 0.36, 0.45, 1659))]
    lower = [(("embedding", "fuzzing"), (0.13, 0.08, 0.18, 1659))]
    assert agreement_verdict(fd, clearly_higher + lower)[0] == "not confirmed"
    assert agreement_verdict(fd, overlapping + lower)[0] == "inconclusive"
    assert agreement_verdict(fd, lower)[0] == "confirmed"
    assert agreement_verdict((0.02, -0.03, 0.07, 100), [(("a", "b"), (0.0, -0.05, 0.05, 100))])[0] == "inconclusive"
    assert "fuzzing–simulation 0.77" in agreement_verdict(fd, clearly_higher)[1]
