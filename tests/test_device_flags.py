"""`--device` and `--dtype` on every stage that runs a model (cache, trace, circuits, steer): one shared
definition (`core.subjects.models.add_device_arguments`), checked before anything loads."""

from __future__ import annotations

import pytest
import torch

from core.cli import main
from core.subjects.models import check_device, check_dtype

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@NO_CUDA
@pytest.mark.parametrize(
    "argv",
    [
        ["cache", "--workspace", "{ws}", "--tokens", "10"],
        ["trace", "--prompt", "The cat sat"],
        ["circuits", "--task", "ioi", "--n", "2"],
        ["steer", "--prompt", "The cat sat", "--latent", "transcoder:blocks.0.ln2.hook_normalized:1=zero"],
    ],
    ids=["cache", "trace", "circuits", "steer"],
)
def test_cuda_without_cuda_is_one_line_before_loading(argv, tmp_path, capsys):
    ws = tmp_path / "ws.duckdb"
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    assert main([*argv, "--device", "cuda"]) == 2
    assert _one_error_line(capsys) == "error: --device cuda: CUDA is not available on this machine; use --device cpu"
    assert not ws.exists()


@pytest.mark.parametrize(
    ("argv", "dtype", "allowed"),
    [
        (["cache", "--workspace", "{ws}", "--tokens", "10"], "float16", "float32, float64, bfloat16"),
        (["trace", "--prompt", "The cat sat"], "float64", "float32"),
        (["trace", "--prompt", "The cat sat"], "bfloat16", "float32"),
    ],
)
def test_unsupported_dtype_is_refused_with_what_is_supported(argv, dtype, allowed, tmp_path, capsys):
    ws = tmp_path / "ws.duckdb"
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    assert main([*argv, "--device", "cpu", "--dtype", dtype]) == 2
    assert _one_error_line(capsys) == f"error: --dtype {dtype!r} is not supported here; use one of {allowed}"
    assert not ws.exists()


def test_device_and_dtype_helpers():
    assert check_device("cpu") == "cpu"
    assert check_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"--device 'tpu0' is not a device torch knows"):
        check_device("tpu0")
    assert check_dtype(None) is torch.float32 and check_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"--dtype 'int8' is not supported here"):
        check_dtype("int8")


def test_cache_in_float64_and_bfloat16_on_the_default(tmp_path, capsys):
    from core import store

    for dtype in ("float64", "bfloat16"):
        ws = tmp_path / f"{dtype}.duckdb"
        argv = ["cache", "--workspace", str(ws), "--tokens", "31", "--ctx-len", "32", "--threads", "1"]
        argv += ["--dictionaries", "resid:blocks.1.hook_resid_pre", "--no-neurons", "--device", "cpu"]
        assert main([*argv, "--dtype", dtype]) == 0, capsys.readouterr().err
        (rec,) = store.list_dictionaries(ws, ready_only=True)
        assert rec.id == "resid:blocks.1.hook_resid_pre" and rec.n_activations > 0


@NO_CUDA
@pytest.mark.parametrize("command", ["explain", "score", "explain-default"])
def test_autointerp_cuda_without_cuda_is_one_line(command, tmp_path, capsys):
    ws = tmp_path / "ws.duckdb"
    argv = [command, "--workspace", str(ws)] + (["--scorers", "surprisal"] if command == "score" else [])
    assert main([*argv, "--device", "cuda"]) == 2
    assert _one_error_line(capsys) == "error: --device cuda: CUDA is not available on this machine; use --device cpu"
    assert main([*argv, "--device", "cpu", "--dtype", "float16"]) == 2
    assert (
        _one_error_line(capsys)
        == "error: --dtype 'float16' is not supported here; use one of float32, float64, bfloat16"
    )
    assert not ws.exists()


def test_surprisal_scores_with_the_subject_in_float64(tmp_path, capsys, monkeypatch):
    import json

    from core.autointerp.scorers import surprisal

    monkeypatch.setattr(surprisal, "_LMS", {})  # this test's model only
    ws = tmp_path / "ws.duckdb"
    argv = ["cache", "--workspace", str(ws), "--tokens", "2000", "--ctx-len", "32", "--threads", "1", "--no-neurons"]
    assert main([*argv, "--dictionaries", "resid:blocks.1.hook_resid_pre", "--device", "cpu"]) == 0
    common = ["--workspace", str(ws), "--sample", "2", "--n-train", "5", "--no-random-explanations", "--device", "cpu"]
    assert main(["explain", *common]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["score", *common, "--scorers", "surprisal", "--dtype", "float64"]) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["scored"] > report["scores_failed"], report  # at least one latent scored in float64
    assert next(surprisal._LMS["lm:default"].parameters()).dtype == torch.float64
