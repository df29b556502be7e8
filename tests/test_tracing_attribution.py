"""Direct effects: each equals an explicit linear ablation on the frozen model; batching changes nothing."""

from __future__ import annotations

import pytest
import torch
from tracing_helpers import random_dictionaries


@pytest.fixture(scope="module")
def setup(tiny_model):
    from core.tracing.replacement import ReplacementModel

    torch.manual_seed(1)
    rm = ReplacementModel(tiny_model, random_dictionaries(tiny_model, seed=1))
    tokens = torch.tensor([0] + torch.randint(1, tiny_model.cfg.d_vocab, (9,)).tolist())
    state = rm.prepare(tokens)
    return rm, state


def _targets(state):
    from core.tracing.attribution import target_for_node
    from core.tracing.nodes import LogitTarget

    last = state.n_positions - 1
    lat = [i for i, n in enumerate(state.nodes) if n.is_latent]
    attn1 = next(
        i
        for i in lat
        if state.nodes[i].kind == "attn" and state.nodes[i].layer == 1 and state.nodes[i].position == last
    )
    tc1 = next(i for i in lat if state.nodes[i].kind == "transcoder" and state.nodes[i].layer == 1)
    tc0 = next(i for i in lat if state.nodes[i].kind == "transcoder" and state.nodes[i].layer == 0)
    return [
        LogitTarget(3, last, 7),
        target_for_node(state, attn1),
        target_for_node(state, tc1),
        target_for_node(state, tc0),
    ]


def _remove_node(state, j: int) -> tuple[str, torch.Tensor]:
    """The site hook and its value with node j's vector removed."""
    site = next(s for s in state.sites if s.node_offset <= j < s.node_offset + s.n_nodes)
    k = j - site.node_offset
    value = site.value.clone()
    if k < site.n_features:
        value[site.feat_pos[k]] -= site.feat_act[k] * site.feat_dec[k]
    else:
        value[k - site.n_features] -= site.residual[k - site.n_features]
    return site.hook, value


def test_direct_effects_equal_linear_ablations(setup):
    from core.tracing.attribution import direct_effects

    rm, state = setup
    targets = _targets(state)
    effects = direct_effects(rm, state, targets, batch_size=4)  # [n_targets, n_nodes]
    with torch.no_grad():
        base = rm.target_values(rm.frozen_forward(state, len(targets)), targets)
    g = torch.Generator().manual_seed(0)
    strongest = effects.abs().argmax(dim=1).tolist()
    sample = torch.randint(0, state.n_nodes, (25,), generator=g).tolist()
    checked_nonzero = 0
    for j in sorted(set(strongest + sample)):
        hook, value = _remove_node(state, j)
        with torch.no_grad():
            ablated = rm.target_values(rm.frozen_forward(state, len(targets), {hook: value}), targets)
        assert torch.allclose(base - ablated, effects[:, j], atol=1e-4, rtol=1e-4), state.nodes[j].node_id
        checked_nonzero += int((effects[:, j].abs() > 1e-3).sum())
    assert checked_nonzero >= len(targets)


def test_effects_plus_constants_sum_to_the_target(setup):
    """The frozen map is affine: all effects plus the value with every node removed give the target."""
    from core.tracing.attribution import direct_effects

    rm, state = setup
    targets = _targets(state)
    effects = direct_effects(rm, state, targets)
    with torch.no_grad():
        base = rm.target_values(rm.frozen_forward(state, len(targets)), targets)
        only_bias = {s.hook: s.bias.expand_as(s.value) for s in state.sites}
        const = rm.target_values(rm.frozen_forward(state, len(targets), only_bias), targets)
    assert torch.allclose(effects.sum(1) + const, base, atol=1e-4)


def test_parents_respect_the_architecture(setup):
    """A transcoder latent's parents share its position; an attention latent reads earlier positions too."""
    from core.tracing.attribution import direct_effects

    rm, state = setup
    logit, attn1, tc1, tc0 = _targets(state)
    effects = direct_effects(rm, state, [attn1, tc1, tc0])
    pos = torch.tensor([n.position for n in state.nodes])
    layer = torch.tensor([n.layer for n in state.nodes])
    nz = effects.abs() > 0
    assert (pos[nz[1]] == tc1.position).all() and (pos[nz[2]] == tc0.position).all()
    assert (pos[nz[0]] < attn1.position).any() and (pos[nz[0]] <= attn1.position).all()
    assert (layer[nz[2]] <= 0).all()  # layer-0 transcoder: embeddings and layer-0 attention only
    assert not nz[2][[i for i, n in enumerate(state.nodes) if n.kind == "transcoder"]].any()


def test_batch_size_does_not_change_effects(setup):
    from core.tracing.attribution import Attributor

    rm, state = setup
    targets = _targets(state)
    one = Attributor(rm, state, batch_size=1)
    big = Attributor(rm, state, batch_size=8)
    assert torch.allclose(one.effects(targets), big.effects(targets), atol=1e-5)
    assert one.n_backward == len(targets) and big.n_backward == 1
