"""A hand-built model with a planted QK circuit, for the QK attribution tests and bench."""

from __future__ import annotations

import torch


def planted_qk_model(gain: float = 0.55):
    """A 2-layer, one-head model where a transcoder latent at the key position decides where layer 1's head looks.

    Tokens [BOS, A, C, Q]. Layer 0's MLP (equal to its transcoder) has latent 2 reading token A and
    writing a key-marker direction; latent 3 reads C and writes a dead-end direction. Layer 1's head
    has its query read token Q and its key read the marker, so at Q it attends to A's position; its
    value reads A (+) and C (-) and writes one output direction, read by latent 0 of layer 1's
    attention SAE, which the logit of token 8 reads. The marker is invisible to the value, so
    transcoder.0/2@1 has no direct effect anywhere: only its effect on the key moves the output.
    `gain` scales W_Q and W_K (0.55: the clean score at (3, 1) is about 2, pattern about 0.7).

    Returns (model, dictionaries, tokens, planted) with planted naming the nodes and the pair.
    """
    from sae_lens import StandardSAE, StandardSAEConfig, Transcoder, TranscoderConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.subjects.dictionaries import dictionary_from_sae

    torch.manual_seed(0)
    d_model, vocab = 16, 10
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=d_model,
        n_ctx=8,
        d_head=4,
        n_heads=1,
        d_mlp=8,
        d_vocab=vocab,
        act_fn="relu",
        normalization_type="LN",
        device="cpu",
        seed=0,
    )
    model = HookedTransformer(cfg)
    basis = torch.linalg.qr(torch.cat([torch.ones(d_model, 1), torch.randn(d_model, d_model - 1)], dim=1))[0][:, 1:]
    v = basis.T  # [15, d_model] unit, zero-mean, orthogonal
    A, C, Q, X = 3, 5, 6, 8
    marker, dead, out = v[9], v[10], v[6]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for blk in model.blocks:
            blk.ln1.w.fill_(1.0)
            blk.ln2.w.fill_(1.0)
        model.ln_final.w.fill_(1.0)
        model.embed.W_E.copy_(torch.stack([v[k % 4] * 4.0 for k in range(vocab)]))
        model.embed.W_E[A] = v[4] * 4.0
        model.embed.W_E[C] = v[5] * 4.0
        model.embed.W_E[Q] = v[7] * 4.0
        model.unembed.W_U[:, X] = out * 3.0
        attn = model.blocks[1].attn
        attn.W_Q[0, :, 0] = v[7] * gain
        attn.W_K[0, :, 0] = marker * gain
        attn.W_V[0, :, 0] = v[4]
        attn.W_V[0, :, 1] = v[5]
        attn.W_O[0, 0] = out
        attn.W_O[0, 1] = -out

    tc = Transcoder(
        TranscoderConfig(
            d_in=d_model,
            d_sae=8,
            d_out=d_model,
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(hook_name="blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out"),
        )
    )
    sae = StandardSAE(
        StandardSAEConfig(
            d_in=d_model, d_sae=4, apply_b_dec_to_input=True, metadata=SAEMetadata(hook_name="blocks.1.hook_attn_out")
        )
    )
    with torch.no_grad():
        for p in (*tc.parameters(), *sae.parameters()):
            p.zero_()
        tc.b_enc.fill_(-0.3)
        tc.W_enc[:, 2] = v[4]
        tc.W_dec[2] = marker * 2.0
        tc.W_enc[:, 3] = v[5]
        tc.W_dec[3] = dead
        mlp = model.blocks[0].mlp
        mlp.W_in.copy_(tc.W_enc)
        mlp.b_in.copy_(tc.b_enc)
        mlp.W_out.copy_(tc.W_dec)
        sae.W_enc[:, 0] = out
        sae.W_dec[0] = out
        sae.W_enc[:, 1] = -out
        sae.W_dec[1] = -out
    tc.eval()
    sae.eval()
    model.eval()
    dicts = [dictionary_from_sae(tc, "transcoder", 0), dictionary_from_sae(sae, "attn", 1)]
    tokens = torch.tensor([0, A, C, Q])
    planted = {
        "token": X,
        "q_pos": 3,
        "k_pos": 1,
        "layer": 1,
        "head": 0,
        "key_feature": "transcoder.0/2@1",
        "attn_latent": "attn.1/0@3",
    }
    return model, dicts, tokens, planted
