"""Dataset-level comparison of circuit methods: the baselines choose among the right latents."""

from __future__ import annotations

import pytest
import torch
from tracing_helpers import exact_dictionaries, relu_model


@pytest.fixture(scope="module")
def prepared():
    from core.build.tasks import TaskItem
    from core.tracing.ablation import latent_means
    from core.tracing.dataset import PreparedItem
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    relu = relu_model(d_vocab=64, seed=3)
    torch.manual_seed(3)
    dicts = exact_dictionaries(relu, seed=3)
    rm = ReplacementModel(relu, dicts)
    tokens = torch.randint(1, 64, (3, 10))
    tokens[:, 0] = 0
    windows = torch.randint(1, 64, (6, 16))
    windows[:, 0] = 0
    means = latent_means(relu, dicts, windows)
    items = [
        PreparedItem(TaskItem("test", f"prompt {b}", "a", "b"), rm.prepare(tokens[b]), LogitTarget(4 + b, 9, 1 + b))
        for b in range(3)
    ]
    return rm, items, means


def _atp_selections(monkeypatch, rm, items, means, active_only: bool) -> list:
    """Run `compare_methods` and return every attribution-patching circuit it picked, in prompt order."""
    import core.tracing.dataset as dataset
    from core.tracing.graph import circuit_features
    from core.tracing.hierarchical import TraceParams

    picked: list = []
    real = dataset.top_features

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        picked.append(out)
        return out

    monkeypatch.setattr(dataset, "top_features", recording)
    sweep = (
        TraceParams(node_threshold=0.05, max_parents=4),
        TraceParams(node_threshold=0.0, max_parents=64, max_latents=400),
    )
    result, graphs = dataset.compare_methods(rm, items, sweep, means, random_seeds=(0,), active_only=active_only)
    assert len(picked) == len(sweep) * len(items)
    atp_sizes = [len(c) for c in picked]
    hier_sizes = [len(circuit_features(g)) for row in graphs for g in row]
    assert atp_sizes == hier_sizes  # equal size to the hierarchical circuit, prompt by prompt
    assert {r.method for r in result.rows} == {"hierarchical", "attribution_patching", "random"}
    return picked


def test_active_only_attribution_patching_picks_only_active_latents(prepared, monkeypatch):
    """Under active-only ablation every AtP-selected latent is active on its prompt; under standard mean
    ablation AtP does pick inactive latents on these prompts (so the restriction is what makes the difference)."""
    from core.tracing.baselines import active_features

    rm, items, means = prepared
    active = [set(active_features(p.state)) for p in items]
    n = len(items)
    fair = _atp_selections(monkeypatch, rm, items, means, active_only=True)
    assert sum(len(c) for c in fair) > 0
    for j, circuit in enumerate(fair):
        assert circuit <= active[j % n], f"inactive picks: {sorted(circuit - active[j % n])[:5]}"
    monkeypatch.undo()
    standard = _atp_selections(monkeypatch, rm, items, means, active_only=False)
    assert any(circuit - active[j % n] for j, circuit in enumerate(standard))


def test_top_features_among_candidates_ranks_only_them():
    from core.tracing.baselines import top_features

    scores = {"x": torch.tensor([[0.0, 0.0], [1.0, -5.0]]), "y": torch.tensor([[0.0, 3.0], [0.0, 0.0]])}
    among = [("x", 1, 0), ("y", 1, 1), ("y", 0, 1)]
    assert top_features(scores, 2, among) == frozenset({("y", 0, 1), ("x", 1, 0)})
    assert top_features(scores, 10, among) == frozenset(among)  # at most the candidates
    assert top_features(scores, 2, []) == frozenset()
    # Without candidates every latent can be chosen, the inactive ("x", 1, 1) first.
    assert ("x", 1, 1) in top_features(scores, 2)
