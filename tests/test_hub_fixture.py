"""The GPT-2-small fixture (reduced scale) in a local Hugging Face cache: the hub-path loaders, unchanged.

`make_hub_fixture` writes a cache at GPT-2 small's layout, vocabulary and file formats (d_model 64,
256 latents); these tests point huggingface_hub at it (offline) and load through `load_model('gpt2')`
and `load_dictionaries('gpt2', ...)` as a user would, then cache, open a card and trace through them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.subjects.models import ArtifactError, HubUnreachableError

RELEASES = ("gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k")


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    from core.subjects.hub_fixture import make_hub_fixture

    return make_hub_fixture(tmp_path_factory.mktemp("hf") / "cache", scale="reduced", seed=0, releases=RELEASES)


def _use_cache(mp: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Point huggingface_hub (and everything reading its constants: transformers, SAE-Lens) at `hf_home`, offline."""
    from huggingface_hub import constants

    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(constants, "HF_HUB_OFFLINE", True)
    mp.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))


@pytest.fixture(scope="module")
def loaded(fixture_dir):
    """(model, dictionaries by id) loaded from the fixture through the hub path."""
    import torch

    from core.subjects.dictionaries import load_dictionaries
    from core.subjects.models import load_model

    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        _use_cache(mp, fixture_dir)
        model = load_model("gpt2", device="cpu")
        dicts = load_dictionaries(
            "gpt2", releases=list(RELEASES), transcoder_dir=fixture_dir / "transcoders", device="cpu"
        )
    return model, dicts


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _commit(root: Path) -> str:
    return (root / "hub" / "models--gpt2" / "refs" / "main").read_text()


def _weights(root: Path) -> bytes:
    return (root / "hub" / "models--gpt2" / "snapshots" / _commit(root) / "model.safetensors").read_bytes()


def test_same_seed_same_bytes(fixture_dir, tmp_path):
    from core.subjects.hub_fixture import make_hub_fixture

    again = make_hub_fixture(tmp_path / "a", scale="reduced", seed=0, releases=RELEASES[:1], transcoders=False)
    first, second = _digests(fixture_dir), _digests(again)
    assert len(second) > 20 and all(first[name] == digest for name, digest in second.items())
    other = make_hub_fixture(tmp_path / "b", scale="reduced", seed=1, releases=(), transcoders=False)
    assert _weights(other) != _weights(fixture_dir)


def test_hub_layout_and_gpt2_tokenizer(fixture_dir, loaded):
    model, _ = loaded
    snap = fixture_dir / "hub" / "models--gpt2" / "snapshots" / _commit(fixture_dir)
    assert {p.name for p in snap.iterdir()} == {
        "config.json",
        "generation_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    }
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.d_vocab) == (12, 64, 50257)
    assert model.to_tokens("Hello world", prepend_bos=False).tolist() == [[15496, 995]]  # GPT-2's real BPE
    from safetensors import safe_open

    with safe_open(str(snap / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert (
        "wte.weight" in keys
        and "h.11.attn.bias" in keys
        and not any(k.startswith(("transformer.", "lm_head")) for k in keys)
    )


def test_release_dictionaries_load_with_realistic_sparsity(fixture_dir, loaded):
    import torch

    model, dicts = loaded
    assert len(dicts) == 13 + 12 + 12  # res-jb (12 resid_pre + resid_post 11), attn-out v5, transcoders
    res = dicts["resid:blocks.3.hook_resid_pre"]
    assert res.source == "gpt2-small-res-jb/blocks.3.hook_resid_pre" and (res.d_in, res.d_sae) == (64, 256)
    attn = dicts["attn:blocks.5.hook_attn_out"]
    tc = dicts["transcoder:blocks.7.ln2.hook_normalized"]
    assert tc.hook_out == "blocks.7.hook_mlp_out" and tc.source == str(fixture_dir / "transcoders" / "L7")
    with torch.inference_mode():
        _, cache = model.run_with_cache(model.to_tokens("The quick brown fox jumps over the lazy dog. " * 3))
        l0 = {d.id: (d.encode(cache[d.hook_in][0, 1:]) > 0).sum(-1).float().mean().item() for d in (res, attn, tc)}
    assert l0[attn.id] == 8  # TopK, k=8 at this scale
    assert all(1 <= v <= 32 for v in l0.values()), l0  # ~8 of 256 fire: sparse, not dense


def test_cache_card_and_trace_through_the_hub_path(loaded, tmp_path):
    import torch

    from core.cache.plan import CacheParams, plan_corpus_contexts
    from core.cache.run import run_cache
    from core.latents.cards import latent_card
    from core.paths import default_paths
    from core.tracing.api import trace_prompt

    model, dicts = loaded
    chosen = [dicts[i] for i in ("resid:blocks.2.hook_resid_pre", "attn:blocks.2.hook_attn_out")]
    plan = plan_corpus_contexts(model.tokenizer, 186, 32, default_paths()["corpus"])
    ws = tmp_path / "ws.duckdb"
    result = run_cache(
        model,
        chosen,
        ws,
        plan,
        CacheParams(n_tokens=186, ctx_len=32, batch_contexts=3, chunk_contexts=3),
        model_name="gpt2",
    )
    assert sorted(result.cached) == sorted(d.id for d in chosen)

    res = chosen[0]
    with torch.inference_mode():
        toks = torch.from_numpy(plan.tokens[:1].astype(np.int64))
        _, cache = model.run_with_cache(toks, names_filter=[res.hook_in])
        latent = int(res.encode(cache[res.hook_in][0, 1:]).amax(0).argmax())
    card = latent_card(ws, res.id, latent)
    assert card.top_examples and card.stats.n_fires > 0 and card.stats.max_activation > 0

    layers = [d for d in dicts.values() if d.kind in ("transcoder", "attn")]
    out = trace_prompt(
        model, layers, "When Mary and John went to the store, John gave a drink to", faithfulness=False, ablation="zero"
    )
    assert out.graph.graph["target"]["kind"] == "logit"


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming what and where, before any work


def test_unknown_release_and_unusable_hooks(fixture_dir, monkeypatch):
    from core.subjects.dictionaries import load_dictionaries

    _use_cache(monkeypatch, fixture_dir)
    with pytest.raises(
        ValueError, match=r"unknown SAE-Lens release 'gpt2-small-nope' .*valid releases: .*gpt2-small-res-jb"
    ):
        load_dictionaries("gpt2", releases=["gpt2-small-nope"])
    with pytest.raises(ValueError, match=r"release 'gpt2-small-hook-z-kk' has blocks\.0\.hook_z: cannot use"):
        load_dictionaries("gpt2", releases=["gpt2-small-hook-z-kk"])


def test_dictionaries_of_another_model_are_refused_before_caching(loaded, tmp_path):
    from core.cache.plan import CacheParams, plan_corpus_contexts
    from core.cache.run import run_cache
    from core.paths import default_paths
    from core.subjects.dictionaries import load_dictionaries
    from core.subjects.models import load_model

    model, dicts = loaded
    default_model = load_model("default", device="cpu")
    plan = plan_corpus_contexts(default_model.tokenizer, 62, 32, default_paths()["corpus"])
    params = CacheParams(n_tokens=62, ctx_len=32)
    ws = tmp_path / "ws.duckdb"
    # GPT-2's layer-9 SAE on the 4-layer default: its hook does not exist there.
    with pytest.raises(
        ValueError,
        match=r"resid:blocks\.9\.hook_resid_pre reads hook blocks\.9\.hook_resid_pre, which this model \(4 layers\)",
    ):
        run_cache(default_model, [dicts["resid:blocks.9.hook_resid_pre"]], ws, plan, params)
    # The default's dictionaries (its width) on the GPT-2 fixture (d_model 64).
    other = load_dictionaries("default", ids=["resid:blocks.1.hook_resid_pre"], device="cpu")[
        "resid:blocks.1.hook_resid_pre"
    ]
    assert other.d_in != model.cfg.d_model
    gpt2_plan = plan_corpus_contexts(model.tokenizer, 62, 32, default_paths()["corpus"])
    with pytest.raises(ValueError, match=rf"expects d_in {other.d_in} but blocks\.1\.hook_resid_pre has width 64"):
        run_cache(model, [other], ws, gpt2_plan, params)
    assert not ws.exists()  # nothing was stored


def _copy_hub(src: Path, dst: Path, repos: list[str]) -> Path:
    for repo in repos:
        shutil.copytree(src / "hub" / repo, dst / "hub" / repo)
    return dst


def test_missing_release_file_names_it_before_loading(fixture_dir, tmp_path, monkeypatch):
    import sae_lens

    from core.subjects.dictionaries import load_dictionaries

    home = _copy_hub(fixture_dir, tmp_path / "hf", ["models--jbloom--GPT2-Small-SAEs-Reformatted"])
    snap = next((home / "hub" / "models--jbloom--GPT2-Small-SAEs-Reformatted" / "snapshots").iterdir())
    (snap / "blocks.3.hook_resid_pre" / "sae_weights.safetensors").unlink()
    _use_cache(monkeypatch, home)
    loads = []
    real = sae_lens.SAE.from_pretrained
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", lambda *a, **k: loads.append(a) or real(*a, **k))
    with pytest.raises(HubUnreachableError) as err:
        load_dictionaries("gpt2", releases=["gpt2-small-res-jb"])
    msg = str(err.value)
    assert str(snap / "blocks.3.hook_resid_pre" / "sae_weights.safetensors") in msg and "nothing was loaded" in msg
    assert loads == []
    # A release that is not in the cache at all is named once, with its cache folder.
    with pytest.raises(
        HubUnreachableError,
        match=r"models--jbloom--GPT2-Small-OAI-v5-32k-attn-out-SAEs \(all of gpt2-small-attn-out-v5-32k\)",
    ):
        load_dictionaries("gpt2", releases=["gpt2-small-attn-out-v5-32k"])


def test_missing_or_damaged_model_file_is_named(fixture_dir, tmp_path, monkeypatch):
    from core.subjects.models import load_model

    home = _copy_hub(fixture_dir, tmp_path / "hf", ["models--gpt2"])
    snap = next((home / "hub" / "models--gpt2" / "snapshots").iterdir())
    _use_cache(monkeypatch, home)
    weights = snap / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=rf"cannot read model 'gpt2' from the local Hugging Face cache {snap}"):
        load_model("gpt2", device="cpu")
    weights.unlink()
    with pytest.raises(HubUnreachableError, match=rf"{weights} is missing"):
        load_model("gpt2", device="cpu")


def test_make_hub_fixture_cli_errors(tmp_path, capsys):
    from core.cli import main

    assert main(["make-hub-fixture", "--out", str(tmp_path / "x"), "--reduced", "--releases", "gpt2-small-nope"]) == 2
    assert (
        main(["make-hub-fixture", "--out", str(tmp_path / "x"), "--reduced", "--releases", "gpt2-small-hook-z-kk"]) == 2
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: unknown SAE-Lens release 'gpt2-small-nope'")
    assert err[1].startswith("error: release 'gpt2-small-hook-z-kk' is stored in a converted format")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# The cache command on the GPT-2 path, and output tokens after the job


def _cache_args(ws: Path, fixture_dir: Path, *extra: str) -> list[str]:
    return [
        "cache",
        "--model",
        "gpt2",
        "--workspace",
        str(ws),
        "--tokens",
        "62",
        "--ctx-len",
        "32",
        "--threads",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def _direct_output_tokens(d, model, latent: int) -> list[int]:
    import torch

    with torch.inference_mode():
        logits = (d.W_dec[latent].float() @ model.W_U.float()).numpy()
    return np.argsort(-logits, kind="stable")[:10].tolist()


def test_cache_command_runs_the_gpt2_hub_path(fixture_dir, loaded, tmp_path, monkeypatch, capsys):
    from core import store
    from core.cli import main
    from core.latents.cards import latent_card

    model, dicts = loaded
    _use_cache(monkeypatch, fixture_dir)
    ws = tmp_path / "ws.duckdb"
    wanted = ["resid:blocks.2.hook_resid_pre", "transcoder:blocks.2.ln2.hook_normalized"]
    args = _cache_args(ws, fixture_dir, "--releases", "gpt2-small-res-jb", "--transcoder-dir")
    assert main([*args, str(fixture_dir / "transcoders"), "--dictionaries", *wanted]) == 0
    capsys.readouterr()
    ready = {d.id for d in store.list_dictionaries(ws, ready_only=True)}
    assert ready == {*wanted, "neurons:blocks.2.mlp.hook_post", "neurons_topk32:blocks.2.mlp.hook_post"}
    assert store.workspace_summary(ws)["model"]["name"] == "gpt2"
    res = dicts[wanted[0]]
    frame = store.latent_stats_frame(ws, res.id)
    latent = int(frame.loc[frame["n_fires"] > 0, "latent"].iloc[0])
    card = latent_card(ws, res.id, latent)
    assert card.top_examples and [t for t, _ in card.top_output] == [
        model.tokenizer.decode([t]) for t in _direct_output_tokens(res, model, latent)
    ]


def test_output_tokens_are_a_step_after_the_job(loaded, tmp_path):
    from core.cache.outputs import add_output_tokens
    from core.cache.plan import CacheParams, plan_corpus_contexts
    from core.cache.run import run_cache
    from core.latents.cards import latent_card
    from core.paths import default_paths
    from core.subjects.dictionaries import neuron_dictionary

    model, dicts = loaded
    chosen = [dicts["resid:blocks.4.hook_resid_pre"], dicts["attn:blocks.4.hook_attn_out"]]
    chosen += [neuron_dictionary(model, 4), neuron_dictionary(model, 4, 8)]
    plan = plan_corpus_contexts(model.tokenizer, 62, 32, default_paths()["corpus"])
    ws = tmp_path / "ws.duckdb"
    params = CacheParams(n_tokens=62, ctx_len=32)
    result = run_cache(model, chosen, ws, plan, params, model_name="gpt2", output_tokens=False)
    assert "output_tokens" not in result.seconds
    card = latent_card(ws, chosen[0].id, 3)
    assert card.top_output == [] and card.bottom_output == []  # the job itself computes none
    filled, _ = add_output_tokens(ws, model, chosen)
    assert sorted(filled) == sorted(d.id for d in chosen)
    for d in chosen:
        card = latent_card(ws, d.id, 3)
        assert [t for t, _ in card.top_output] == [
            model.tokenizer.decode([t]) for t in _direct_output_tokens(d, model, 3)
        ]
    assert add_output_tokens(ws, model, chosen)[0] == []  # stored once; a second call does nothing
    # run_cache fills them for a workspace whose job finished without them (e.g. killed in between)
    ws2 = tmp_path / "ws2.duckdb"
    run_cache(model, chosen[:1], ws2, plan, params, model_name="gpt2", output_tokens=False)
    again = run_cache(model, chosen[:1], ws2, plan, params, model_name="gpt2")
    assert again.nothing_to_do and latent_card(ws2, chosen[0].id, 3).top_output


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown-release", r"error: unknown SAE-Lens release 'gpt2-small-nope' for model 'gpt2'; valid releases: "),
        ("hook-not-in-model", r"error: SAE-Lens release 'gpt2-small-hook-z-kk' has blocks\.0\.hook_z: cannot use"),
        (
            "other-width",
            r"error: dictionary resid:blocks\.0\.hook_resid_pre expects d_in \d+ but blocks\.0\.hook_resid_pre has width 64",
        ),
        (
            "missing-file",
            r"error: the Hugging Face Hub is unreachable and the local cache lacks 1 file\(s\) .*cfg\.json",
        ),
        ("no-folder", r"error: --transcoder-dir .*nowhere is not a folder"),
        ("device", r"error: --device cuda: CUDA is not available on this machine; use --device cpu"),
        ("dtype", r"error: --dtype 'float16' is not supported here; use one of float32, float64, bfloat16"),
    ],
)
def test_cache_command_bad_input_is_one_line_before_any_work(case, message, fixture_dir, tmp_path, monkeypatch, capsys):
    import torch

    from core.cli import main
    from core.paths import default_paths

    home = fixture_dir
    extra = ["--releases", "gpt2-small-res-jb", "--dictionaries", "resid:blocks.0.hook_resid_pre"]
    if case == "unknown-release":
        extra[1] = "gpt2-small-nope"
    elif case == "hook-not-in-model":
        extra = ["--releases", "gpt2-small-hook-z-kk"]
    elif case == "other-width":  # the embedded default's dictionaries on GPT-2
        extra = ["--transcoder-dir", str(default_paths()["dictionaries_dir"]), "--dictionaries", extra[-1]]
    elif case == "missing-file":
        home = _copy_hub(fixture_dir, tmp_path / "hf", ["models--gpt2", "models--jbloom--GPT2-Small-SAEs-Reformatted"])
        snap = next((home / "hub" / "models--jbloom--GPT2-Small-SAEs-Reformatted" / "snapshots").iterdir())
        (snap / "blocks.0.hook_resid_pre" / "cfg.json").unlink()
    elif case == "no-folder":
        extra = ["--transcoder-dir", str(tmp_path / "nowhere")]
    elif case == "device":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra += ["--device", "cuda"]
    elif case == "dtype":
        extra += ["--dtype", "float16"]
    _use_cache(monkeypatch, home)
    ws = tmp_path / "ws.duckdb"
    assert main(_cache_args(ws, fixture_dir, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(message, err[0]), err
    assert not ws.exists() and not (tmp_path / "ws.duckdb.data").exists()  # nothing stored


def test_cache_command_accepts_float64(fixture_dir, tmp_path, monkeypatch, capsys):
    from core import store
    from core.cli import main

    _use_cache(monkeypatch, fixture_dir)
    ws = tmp_path / "ws.duckdb"
    args = _cache_args(ws, fixture_dir, "--releases", "gpt2-small-res-jb", "--dtype", "float64", "--no-neurons")
    assert main([*args, "--dictionaries", "resid:blocks.1.hook_resid_pre"]) == 0
    capsys.readouterr()
    assert [d.id for d in store.list_dictionaries(ws, ready_only=True)] == ["resid:blocks.1.hook_resid_pre"]


# ---------------------------------------------------------------------------------------------
# trace and steer on the GPT-2 path (`--model gpt2 --releases ... --transcoder-dir ...`)


def _trace_model_args(fixture_dir: Path) -> list[str]:
    return [
        "--model",
        "gpt2",
        "--releases",
        "gpt2-small-attn-out-v5-32k",
        "--transcoder-dir",
        str(fixture_dir / "transcoders"),
        "--threads",
        "1",
        "--device",
        "cpu",
    ]


def test_trace_and_steer_commands_run_the_gpt2_hub_path(fixture_dir, tmp_path, monkeypatch, capsys):
    import json

    from core.cli import main

    _use_cache(monkeypatch, fixture_dir)
    out = tmp_path / "graph.json"
    prompt = "When Mary and John went to the store, John gave a drink to"
    argv = ["trace", "--prompt", prompt, *_trace_model_args(fixture_dir), "--ablation", "zero", "--no-faithfulness"]
    assert main([*argv, "--json", "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_latents"] > 0 and summary["n_edges"] > 0
    graph = json.loads(out.read_text())
    kinds = {n.get("kind") for n in graph["nodes"]}
    assert "transcoder" in kinds and "resid" not in kinds, kinds  # transcoders and attention SAEs only

    latent = "transcoder:blocks.2.ln2.hook_normalized:3=zero"
    argv = ["steer", "--prompt", prompt, "--latent", latent, "--tokens", "2", *_trace_model_args(fixture_dir)]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    steered = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert steered["interventions"] and "before" in steered and "after" in steered


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-transcoders", r"error: tracing gpt2 needs transcoders: pass --transcoder-dir"),
        ("unknown-release", r"error: unknown SAE-Lens release 'gpt2-small-nope' for model 'gpt2'"),
        (
            "other-width",
            r"error: dictionary transcoder:blocks\.0\.ln2\.hook_normalized expects d_in \d+ but .* has width 64",
        ),
        ("no-folder", r"error: --transcoder-dir .*nowhere is not a folder"),
        ("default-with-releases", r"error: --releases and --transcoder-dir are for --model gpt2"),
    ],
)
def test_trace_command_bad_gpt2_input_is_one_line_before_loading(
    case, message, fixture_dir, tmp_path, monkeypatch, capsys
):
    from core.cli import main
    from core.paths import default_paths

    _use_cache(monkeypatch, fixture_dir)
    args = _trace_model_args(fixture_dir)
    if case == "no-transcoders":
        args = args[:4] + args[6:]
    elif case == "unknown-release":
        args[3] = "gpt2-small-nope"
    elif case == "other-width":  # one of the embedded default's transcoders on GPT-2
        (tmp_path / "tc").mkdir()
        (tmp_path / "tc" / "transcoder-L0").symlink_to(default_paths()["dictionaries_dir"] / "transcoder-L0")
        args[5] = str(tmp_path / "tc")
    elif case == "no-folder":
        args[5] = str(tmp_path / "nowhere")
    elif case == "default-with-releases":
        args[1] = "default"
    loads = []
    monkeypatch.setattr("core.subjects.models.load_hub_model", lambda *a, **k: loads.append(a))
    assert main(["trace", "--prompt", "The cat sat", *args, "--ablation", "zero", "--no-faithfulness"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(message, err[0]), err
    assert loads == []  # refused before the model loads
