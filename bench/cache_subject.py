"""The model and dictionaries the cache benchmarks run on.

The embedded default (`load_model('default')`, `load_default_dictionaries()`) plus its neuron
baselines when its dictionaries exist; before they do, the default model (or the first model found
under --root) with random JumpReLU SAEs of the trained ones' shape (resid, attn and transcoder
positions of every layer, d_sae 2048), thresholds set so about 32 latents fire per token. Either way
the subject is named in the benchmark's output.

`gpt2_small_shape_subject`: the scale the project is designed for, without the Hub. A randomly
initialised model of GPT-2 small's shape (12 layers, d_model 768, d_mlp 3072, 50,257-token
unembedding) reading the default tokenizer's ids, with random JumpReLU SAEs of d_sae 24,576 at the
chosen layers' resid, attn and transcoder inputs (thresholds set so ~`l0` latents fire per token)
and those layers' neuron baselines. Random weights give no meaningful latents, but the shapes, the
rows stored per token and the costs per token are those of the real thing (raw neurons fire on
~half the tokens, more than trained GPT-2's, so storage is if anything overstated).
"""

from __future__ import annotations

from pathlib import Path

FALLBACK_ROOTS = (Path("/tmp/run1/default"), Path("/tmp/pilot"))


def _model_root(root: Path | None) -> Path | None:
    from core.paths import default_paths

    if root is not None or default_paths()["model_weights"].exists():
        return root
    for r in FALLBACK_ROOTS:
        if default_paths(r)["model_weights"].exists():
            return r
    return None


def random_sparse_dictionaries(
    model, tokens, d_sae: int = 2048, l0: int = 32, seed: int = 0, layers: list[int] | None = None
) -> list:
    """Random JumpReLU SAEs at the resid/attn/transcoder inputs of `layers` (default all), ~`l0` latents firing per token of `tokens`."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from core.subjects.dictionaries import dictionary_from_sae

    torch.manual_seed(seed)
    d_model = model.cfg.d_model
    out = []
    for layer in layers if layers is not None else range(model.cfg.n_layers):
        for kind in ("resid", "attn", "transcoder"):
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=d_sae, apply_b_dec_to_input=False))
            with torch.no_grad():
                sae.W_enc.copy_(torch.randn_like(sae.W_enc) / d_model**0.5)
                sae.W_dec.copy_(torch.randn_like(sae.W_dec) / d_model**0.5)
            out.append(dictionary_from_sae(sae, kind, layer, source=f"random JumpReLU d_sae {d_sae}, L0~{l0}"))
    hooks = sorted({d.hook_in for d in out})
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=hooks)
        for d in out:
            pre = cache[d.hook_in][:, 1:].reshape(-1, d.d_in) @ d.module.W_enc + d.module.b_enc  # [T, d_sae]
            k = max(1, min(pre.shape[0], round((1 - l0 / d_sae) * pre.shape[0])))  # the (1 - l0/d_sae) quantile
            d.module.threshold.copy_(pre.kthvalue(k, dim=0).values.clamp_min(1e-3))
    return out


def gpt2_small_shape_subject(
    layers: list[int], root: Path | None = None, calibration_contexts: int = 16, d_sae: int = 24_576, l0: int = 64
):
    """(model, dictionaries, label): GPT-2 small's shape with random weights and random SAEs at `layers` (see the module doc)."""
    import numpy as np
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.build.tokenizer import load_tokenizer
    from core.cache.plan import plan_corpus_contexts, resolve_dictionaries
    from core.paths import default_paths

    paths = default_paths(root)
    tokenizer = load_tokenizer(paths["tokenizer_dir"])
    cfg = HookedTransformerConfig(
        n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50_257, n_ctx=1024,
        act_fn="gelu_new", normalization_type="LN", seed=0, device="cpu",
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.eval()
    plan = plan_corpus_contexts(tokenizer, calibration_contexts * 127, 128, paths["corpus"])
    calib = torch.from_numpy(plan.tokens[:calibration_contexts].astype(np.int64))
    sparse = random_sparse_dictionaries(model, calib, d_sae=d_sae, l0=l0, layers=layers)
    neurons = resolve_dictionaries(model, "custom", None, neuron_layers=layers)
    label = (
        f"GPT-2 small shape, random weights (12 layers, d_model 768, d_vocab 50,257); {len(sparse)} random JumpReLU SAEs "
        f"(d_sae {d_sae:,}, L0~{l0}) at layer(s) {', '.join(map(str, layers))} + {len(neurons)} neuron baselines"
    )
    return model, sparse + neurons, label


def load_subject_model(root: Path | None) -> tuple:
    """(model, root it came from): the default model, or the first fallback model found before data/ is built."""
    from core.subjects.models import load_default_model

    mroot = _model_root(root)
    return load_default_model(root=mroot, device="cpu"), mroot


def subject_dictionaries(model, root: Path | None, calibration_tokens) -> tuple[list, str]:
    """(dictionaries incl. neuron baselines, label): the default's trained ones if built, else random sparse SAEs."""
    from core.cache.plan import resolve_dictionaries
    from core.subjects.dictionaries import list_default_dictionaries

    if list_default_dictionaries(root):
        dicts = resolve_dictionaries(model, "default", None, root=root, device="cpu")
        return dicts, f"default model and its {len(dicts)} dictionaries incl. neuron baselines"
    sparse = random_sparse_dictionaries(model, calibration_tokens)
    dicts = resolve_dictionaries(model, "custom", None, neuron_layers=list(range(model.cfg.n_layers)))
    label = (
        f"{model.cfg.n_layers}-layer default model with {len(sparse)} random JumpReLU SAEs (d_sae 2048, L0~32; "
        f"trained dictionaries not built yet) + {len(dicts)} neuron baselines"
    )
    return sparse + dicts, label
