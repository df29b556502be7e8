"""Loading models by name: the embedded default, clear errors for missing/corrupt files and the offline hub."""

from __future__ import annotations

import shutil

import pytest
import torch

from core.paths import DEFAULT_DIR, default_paths
from core.subjects.models import ArtifactError, HubUnreachableError, load_default_model, load_model, save_model


@pytest.fixture(scope="module")
def default_model():
    return load_default_model(device="cpu")


def test_default_model_loads_with_tokenizer(default_model):
    assert default_model.cfg.n_layers >= 2
    tokens = default_model.to_tokens("When Mary and John went to the store, John gave a drink to")
    assert tokens.shape[1] <= default_model.cfg.n_ctx
    logits = default_model(tokens)
    assert logits.shape == (1, tokens.shape[1], default_model.cfg.d_vocab)
    assert torch.isfinite(logits).all()
    # every held-out name of the default is one token (IOI targets must be)
    from core.subjects.dictionaries import read_manifest

    for name in read_manifest()["task_split"]["heldout_names"]:
        assert len(default_model.tokenizer.encode(" " + name, add_special_tokens=False)) == 1, name


def test_save_load_round_trip(tmp_path, tiny_model, tiny_tokenizer_dir):
    paths = default_paths(tmp_path)
    save_model(tiny_model, paths["model_dir"])
    shutil.copytree(tiny_tokenizer_dir, paths["tokenizer_dir"])
    loaded = load_default_model(root=tmp_path, device="cpu")
    tokens = tiny_model.to_tokens("John gave a drink to Mary.")
    # weights are stored in float16: equal up to that rounding
    assert torch.allclose(loaded(tokens), tiny_model(tokens), atol=5e-2)
    assert loaded.to_string(tokens[0, 1:]) == "John gave a drink to Mary."


def test_missing_model_names_file_and_rebuild_command(tmp_path):
    with pytest.raises(ArtifactError, match=r"config\.json.*python -m core build-default"):
        load_default_model(root=tmp_path)


def test_corrupt_weights_name_folder_and_rebuild_command(tmp_path):
    src = default_paths(DEFAULT_DIR)["model_dir"]
    shutil.copytree(src, tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtifactError, match="python -m core build-default") as err:
        load_default_model(root=tmp_path)
    assert "model" in str(err.value)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="default, gpt2"):
        load_model("gpt-7")


def test_hub_model_fails_offline_with_guidance(monkeypatch, tmp_path):
    # The connection probe itself must notice there is no hub (bench/offline_hub.py times it):
    # no offline switch, an endpoint that refuses connections, an empty HF cache.
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(HubUnreachableError, match="Hub is unreachable.*embedded default"):
        load_model("gpt2")
