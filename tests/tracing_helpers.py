"""Random SAE-Lens dictionaries and a hand-built model with a planted feature path, for the tracing tests."""

from __future__ import annotations

import torch


def random_dictionaries(model, d_sae: int = 48, seed: int = 0, bias_scale: float = 0.1) -> list:
    """An attention-output SAE and a transcoder for every layer of `model`, random but with many active latents.

    Encoders are scaled to the typical norm of the model's activations so a good share of latents
    fire; decoder and encoder biases are random so the bias handling is exercised.
    """
    from sae_lens import StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    from core.subjects.dictionaries import dictionary_from_sae

    g = torch.Generator().manual_seed(seed)
    d_model = model.cfg.d_model
    out = []
    for layer in range(model.cfg.n_layers):
        attn = StandardSAE(
            StandardSAEConfig(
                d_in=d_model,
                d_sae=d_sae,
                apply_b_dec_to_input=True,
                metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_attn_out"),
            )
        )
        tc = Transcoder(
            TranscoderConfig(
                d_in=d_model,
                d_sae=d_sae,
                d_out=d_model,
                apply_b_dec_to_input=False,
                metadata=SAEMetadata(
                    hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out"
                ),
            )
        )
        for sae, in_scale, out_scale in ((attn, 0.05, 0.05), (tc, 1.0, 0.05)):
            with torch.no_grad():
                sae.W_enc.copy_(torch.randn(d_model, d_sae, generator=g) / d_model**0.5 / in_scale)
                sae.b_enc.copy_(torch.randn(d_sae, generator=g) * bias_scale)
                sae.W_dec.copy_(torch.randn(d_sae, d_model, generator=g) / d_sae**0.5 * out_scale)
                sae.b_dec.copy_(torch.randn(sae.b_dec.shape[0], generator=g) * bias_scale * out_scale)
            sae.eval()
        out.append(dictionary_from_sae(attn, "attn", layer))
        out.append(dictionary_from_sae(tc, "transcoder", layer))
    return out


def planted_model():
    """A 2-layer model whose only route to the logit of token 7 is embed(A) -> transcoder.0/2 -> transcoder.1/4.

    Returns (model, dictionaries, tokens, planted) where `planted` names the path's nodes. The MLPs
    are ReLU MLPs equal to their transcoders (no error), attention writes nothing, and every
    direction used is orthogonal to the all-ones vector so LayerNorm's centring keeps it.
    Distractor latents fire on the same token but write into directions the unembedding ignores,
    or weakly into the target's direction.
    """
    from sae_lens import Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.subjects.dictionaries import dictionary_from_sae

    torch.manual_seed(0)
    d_model, d_sae, vocab = 16, 8, 10
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=d_model,
        n_ctx=8,
        d_head=4,
        n_heads=1,
        d_mlp=d_sae,
        d_vocab=vocab,
        act_fn="relu",
        normalization_type="LN",
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg)
    # Orthonormal directions orthogonal to the all-ones vector.
    basis = torch.linalg.qr(torch.cat([torch.ones(d_model, 1), torch.randn(d_model, d_model - 1)], dim=1))[0][:, 1:]
    v = basis.T  # [15, d_model], v[k] unit, zero-mean, mutually orthogonal
    A, OTHER, X = 3, 5, 7  # token carrying the signal, a filler token, the output token
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for blk in model.blocks:
            blk.ln1.w.fill_(1.0)
            blk.ln2.w.fill_(1.0)
        model.ln_final.w.fill_(1.0)
        model.embed.W_E.copy_(torch.stack([v[k % 4] * 4.0 for k in range(vocab)]))  # tokens share 4 directions...
        model.embed.W_E[A] = v[4] * 4.0  # ...except A
        model.embed.W_E[OTHER] = v[5] * 4.0
        model.unembed.W_U[:, X] = v[6] * 3.0
        model.unembed.W_U[:, 1] = v[8] * 3.0

    def transcoder(layer: int, reads: dict[int, torch.Tensor], writes: dict[int, torch.Tensor], bias: float):
        tc = Transcoder(
            TranscoderConfig(
                d_in=d_model,
                d_sae=d_sae,
                d_out=d_model,
                apply_b_dec_to_input=False,
                metadata=SAEMetadata(
                    hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out"
                ),
            )
        )
        with torch.no_grad():
            tc.W_enc.zero_()
            tc.W_dec.zero_()
            tc.b_dec.zero_()
            tc.b_enc.fill_(bias)
            for i, r in reads.items():
                tc.W_enc[:, i] = r
            for i, w in writes.items():
                tc.W_dec[i] = w
            mlp = model.blocks[layer].mlp
            mlp.W_in.copy_(tc.W_enc)
            mlp.b_in.copy_(tc.b_enc)
            mlp.W_out.copy_(tc.W_dec)
            mlp.b_out.copy_(tc.b_dec)
        tc.eval()
        return dictionary_from_sae(tc, "transcoder", layer)

    # Layer 0: latent 2 reads A and writes v9 (the intermediate direction); latent 3 also reads A but
    # writes v10 (a dead end); latent 5 reads OTHER and writes v11.
    tc0 = transcoder(0, {2: v[4], 3: v[4] * 0.8, 5: v[5]}, {2: v[9] * 2.0, 3: v[10], 5: v[11]}, bias=-0.3)
    # Layer 1: latent 4 reads v9 and writes the output direction v6; latent 1 reads A directly and
    # writes a little into v6 (a weak side path); latent 6 reads v10 and writes v8 (another token's logit).
    tc1 = transcoder(1, {4: v[9], 1: v[4] * 0.5, 6: v[10]}, {4: v[6] * 2.0, 1: v[6] * 0.05, 6: v[8]}, bias=-0.1)
    model.eval()
    tokens = torch.tensor([0, OTHER, 2, A])
    planted = {"token": X, "position": 3, "layer0_latent": 2, "layer1_latent": 4}
    return model, [tc0, tc1], tokens, planted


def relu_model(
    tokenizer=None, n_layers: int = 2, d_model: int = 32, n_ctx: int = 64, d_vocab: int | None = None, seed: int = 0
):
    """A random HookedTransformer with ReLU MLPs (so transcoders can match them), weights scaled up to be non-trivial."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    vocab = d_vocab if d_vocab is not None else (len(tokenizer) if tokenizer is not None else 64)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        d_head=8,
        n_heads=d_model // 8,
        d_mlp=2 * d_model,
        d_vocab=vocab,
        act_fn="relu",
        normalization_type="LN",
        device="cpu",
        seed=seed,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("W_Q", "W_K")):
                p.mul_(20.0)  # sharper attention patterns
            elif name.endswith(("W_V", "W_O", "W_in", "W_out")):
                p.mul_(4.0)
            elif name.endswith("b_in"):
                p.normal_(0.0, 0.3)
    model.eval()
    return model


def exact_dictionaries(model, noise: float = 0.02, seed: int = 0) -> list:
    """Near-exact dictionaries for a `relu_model`: transcoders equal to the MLPs, attention SAEs splitting a
    random rotation into positive and negative halves; `noise` perturbs the decoders so errors are small but nonzero."""
    from sae_lens import StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    from core.subjects.dictionaries import dictionary_from_sae

    g = torch.Generator().manual_seed(seed)
    d_model = model.cfg.d_model
    out = []
    for layer in range(model.cfg.n_layers):
        q = torch.linalg.qr(torch.randn(d_model, d_model, generator=g))[0]
        attn = StandardSAE(
            StandardSAEConfig(
                d_in=d_model,
                d_sae=2 * d_model,
                apply_b_dec_to_input=True,
                metadata=SAEMetadata(hook_name=f"blocks.{layer}.hook_attn_out"),
            )
        )
        mlp = model.blocks[layer].mlp
        ln2 = model.blocks[layer].ln2
        tc = Transcoder(
            TranscoderConfig(
                d_in=d_model,
                d_sae=model.cfg.d_mlp,
                d_out=d_model,
                apply_b_dec_to_input=False,
                metadata=SAEMetadata(
                    hook_name=f"blocks.{layer}.ln2.hook_normalized", hook_name_out=f"blocks.{layer}.hook_mlp_out"
                ),
            )
        )
        with torch.no_grad():
            attn.W_enc.copy_(torch.cat([q, -q], dim=1))
            attn.b_enc.zero_()
            attn.W_dec.copy_(torch.cat([q.T, -q.T], dim=0) * (1 + noise * torch.randn(2 * d_model, 1, generator=g)))
            attn.b_dec.zero_()
            tc.W_enc.copy_(ln2.w[:, None] * mlp.W_in)  # hook_normalized is before LayerNorm's weight and bias
            tc.b_enc.copy_(ln2.b @ mlp.W_in + mlp.b_in)
            tc.W_dec.copy_(mlp.W_out * (1 + noise * torch.randn(model.cfg.d_mlp, 1, generator=g)))
            tc.b_dec.copy_(mlp.b_out)
        attn.eval()
        tc.eval()
        out += [dictionary_from_sae(attn, "attn", layer), dictionary_from_sae(tc, "transcoder", layer)]
    return out


@torch.no_grad()
def sparsify_(dictionaries: list, model, tokens: torch.Tensor, l0: int = 32, seed: int = 0) -> None:
    """Shift encoder biases so about `l0` latents fire per token of `tokens: [b, pos]` (in place).

    Each latent's threshold is the quantile that lets it fire on l0 / d_sae of the tokens; when there
    are too few tokens for that (each latent would still fire at least once), a random subset of
    latents is switched off, as if they belonged to other contexts.
    """
    g = torch.Generator().manual_seed(seed)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in {d.hook_in for d in dictionaries})
    for d in dictionaries:
        x = d.module.process_sae_in(cache[d.hook_in][:, 1:].reshape(-1, d.d_in))
        pre = x @ d.module.W_enc + d.module.b_enc  # [n, d_sae]
        n = pre.shape[0]
        q = torch.quantile(pre, max(0.0, 1 - l0 / d.d_sae), dim=0)
        d.module.b_enc.sub_(q)
        if n * l0 < d.d_sae:
            off = torch.randperm(d.d_sae, generator=g)[: d.d_sae - n * l0]
            d.module.b_enc[off] -= 1e4
