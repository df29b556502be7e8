"""The model and dictionaries the cache benchmarks run on.

The embedded default (`load_model('default')`, `load_default_dictionaries()`) plus its neuron
baselines when its dictionaries exist; before they do, the default model (or the first model found
under --root) with random JumpReLU SAEs of the trained ones' shape (resid, attn and transcoder
positions of every layer, d_sae 2048), thresholds set so about 32 latents fire per token. Either way
the subject is named in the benchmark's output.
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


def random_sparse_dictionaries(model, tokens, d_sae: int = 2048, l0: int = 32, seed: int = 0) -> list:
    """Random JumpReLU SAEs at the resid/attn/transcoder inputs of every layer, ~`l0` latents firing per token of `tokens`."""
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from core.dictionaries import dictionary_from_sae

    torch.manual_seed(seed)
    out = []
    for layer in range(model.cfg.n_layers):
        for kind in ("resid", "attn", "transcoder"):
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=model.cfg.d_model, d_sae=d_sae, apply_b_dec_to_input=False))
            with torch.no_grad():
                sae.W_enc.copy_(torch.randn_like(sae.W_enc) / model.cfg.d_model**0.5)
                sae.W_dec.copy_(torch.randn_like(sae.W_dec) / model.cfg.d_model**0.5)
            out.append(dictionary_from_sae(sae, kind, layer, source=f"random JumpReLU d_sae {d_sae}, L0~{l0}"))
    hooks = sorted({d.hook_in for d in out})
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=hooks)
        for d in out:
            pre = cache[d.hook_in][:, 1:].reshape(-1, d.d_in) @ d.module.W_enc + d.module.b_enc
            d.module.threshold.copy_(torch.quantile(pre, 1 - l0 / d_sae, dim=0).clamp_min(1e-3))
    return out


def load_subject_model(root: Path | None) -> tuple:
    """(model, root it came from): the default model, or the first fallback model found before data/ is built."""
    from core.models import load_default_model

    mroot = _model_root(root)
    return load_default_model(root=mroot, device="cpu"), mroot


def subject_dictionaries(model, root: Path | None, calibration_tokens) -> tuple[list, str]:
    """(dictionaries incl. neuron baselines, label): the default's trained ones if built, else random sparse SAEs."""
    from core.cache import resolve_dictionaries
    from core.dictionaries import list_default_dictionaries

    if list_default_dictionaries(root):
        dicts = resolve_dictionaries(model, "default", None, root=root, device="cpu")
        return dicts, f"default model and its {len(dicts)} dictionaries incl. neuron baselines"
    sparse = random_sparse_dictionaries(model, calibration_tokens)
    dicts = resolve_dictionaries(model, "custom", None, neuron_layers=list(range(model.cfg.n_layers)))
    label = (f"{model.cfg.n_layers}-layer default model with {len(sparse)} random JumpReLU SAEs (d_sae 2048, L0~32; "
             f"trained dictionaries not built yet) + {len(dicts)} neuron baselines")
    return sparse + dicts, label
