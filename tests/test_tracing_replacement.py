"""The replacement model: exact reconstruction at every site, exact logits, sensible rejections."""

from __future__ import annotations

import pytest
import torch
from tracing_helpers import random_dictionaries


@pytest.fixture(scope="module")
def setup(tiny_model):
    from core.tracing.replacement import ReplacementModel

    torch.manual_seed(0)
    dicts = random_dictionaries(tiny_model)
    rm = ReplacementModel(tiny_model, dicts)
    tokens = torch.tensor([0] + torch.randint(1, tiny_model.cfg.d_vocab, (11,)).tolist())
    return rm, rm.prepare(tokens), dicts


def test_every_site_is_the_sum_of_its_nodes(setup):
    rm, state, _ = setup
    for site in state.sites:
        recon = site.residual + site.bias
        for p, start, end in site.pos_slices:
            recon[p] = recon[p] + (site.feat_act[start:end, None] * site.feat_dec[start:end]).sum(0)
        assert torch.allclose(recon, site.value, atol=1e-5), site.hook
    # The dictionaries are not trivial: most of the output is explained by latents, not errors.
    mlp = next(s for s in state.sites if s.kind == "mlp")
    assert mlp.n_features > 20
    assert all(p > 0 for p, _, _ in mlp.pos_slices), "no latent nodes at the BOS position"


def test_replacement_reproduces_logits(setup, tiny_model):
    rm, state, _ = setup
    with torch.no_grad():
        real = tiny_model(state.tokens[None])[0]
    assert torch.allclose(state.logits, real, atol=1e-5)
    assert torch.allclose(rm.replacement_logits(state), real, atol=1e-4)


def test_replacement_logits_depend_on_the_error_nodes(setup, tiny_model):
    rm, state, _ = setup
    # Without the errors the reconstruction differs: the check above is not vacuous.
    saved = [s.residual.clone() for s in state.sites]
    try:
        for s in state.sites:
            if s.dictionary is not None:
                s.residual.zero_()
        assert not torch.allclose(rm.replacement_logits(state), state.logits, atol=1e-3)
    finally:
        for s, r in zip(state.sites, saved, strict=True):
            s.residual.copy_(r)


def test_nodes_are_numbered_like_sites(setup):
    _, state, _ = setup
    assert state.n_nodes == sum(s.n_nodes for s in state.sites)
    for (dict_id, p, i), idx in list(state.latent_index.items())[:50]:
        n = state.nodes[idx]
        assert (n.dictionary, n.position, n.latent) == (dict_id, p, i)
    kinds = {n.kind for n in state.nodes}
    assert kinds == {"embed", "pos_embed", "attn", "transcoder", "attn_error", "mlp_error"}


def test_resid_saes_are_left_out_and_bad_dictionaries_rejected(tiny_model):
    from dataclasses import replace

    from core.tracing.replacement import ReplacementModel

    dicts = random_dictionaries(tiny_model, d_sae=8)
    resid = replace(dicts[0], id="resid:blocks.0.hook_resid_pre", kind="resid")
    rm = ReplacementModel(tiny_model, [*dicts, resid])
    assert "resid:blocks.0.hook_resid_pre" not in rm.by_id
    with pytest.raises(ValueError, match="two attn dictionaries"):
        ReplacementModel(tiny_model, [dicts[0], dicts[0]])
    with pytest.raises(ValueError, match="layer 7"):
        ReplacementModel(tiny_model, [replace(dicts[0], layer=7)])


def test_layers_without_dictionaries_stay_exact(tiny_model):
    """A layer with no transcoder becomes one error node per position; no attention SAE keeps attention linear."""
    from core.tracing.replacement import ReplacementModel

    dicts = [d for d in random_dictionaries(tiny_model, d_sae=8) if d.layer == 1 and d.kind == "transcoder"]
    rm = ReplacementModel(tiny_model, dicts)
    state = rm.prepare(torch.tensor([0, 5, 9, 13, 2]))
    assert {s.kind for s in state.sites} == {"embed", "pos_embed", "mlp"}
    assert torch.allclose(rm.replacement_logits(state), state.logits, atol=1e-4)
