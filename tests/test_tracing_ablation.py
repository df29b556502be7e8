"""Faithfulness by ablation on the real model, latent means, and the baselines."""

from __future__ import annotations

import math

import pytest
import torch
from tracing_helpers import exact_dictionaries, random_dictionaries, relu_model


@pytest.fixture(scope="module")
def relu():
    return relu_model(d_vocab=64, seed=3)


@pytest.fixture(scope="module")
def setup(relu):
    from core.tracing.ablation import latent_means
    from core.tracing.nodes import LogitTarget
    from core.tracing.replacement import ReplacementModel

    torch.manual_seed(3)
    dicts = exact_dictionaries(relu, seed=3)
    rm = ReplacementModel(relu, dicts)
    V = relu.cfg.d_vocab
    tokens = torch.randint(1, V, (3, 10))
    tokens[:, 0] = 0
    windows = torch.randint(1, V, (6, 16))
    windows[:, 0] = 0
    means = latent_means(relu, dicts, windows)
    targets = [LogitTarget(4, 9, 5), LogitTarget(6, 9, 2), LogitTarget(8, 9, 1)]
    return rm, dicts, tokens, targets, means


def test_whole_model_is_faithful_and_empty_circuit_is_not(setup, relu):
    from core.tracing.ablation import all_latent_circuit, circuit_faithfulness, metric_values

    rm, dicts, tokens, targets, means = setup
    whole = all_latent_circuit(dicts, tokens.shape[1])
    res = circuit_faithfulness(relu, dicts, tokens, targets, [whole] * 3, means)
    assert res.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert res.complement_faithfulness == pytest.approx(0.0, abs=1e-4)
    empty = circuit_faithfulness(relu, dicts, tokens, targets, [frozenset()] * 3, means)
    assert empty.faithfulness == pytest.approx(0.0, abs=1e-6)
    assert empty.complement_faithfulness == pytest.approx(1.0, abs=1e-4)
    assert abs(res.metric_full - res.metric_empty) > 1e-3  # the ablation does something
    # m(M) is the real model's value.
    with torch.no_grad():
        logits = relu(tokens)
    real = torch.stack(
        [logits[b, t.position, t.token] - logits[b, t.position, t.contrast] for b, t in enumerate(targets)]
    )
    got = metric_values(relu, dicts, tokens, targets, None, "ablate", means)
    assert torch.allclose(got, real, atol=1e-4)


def test_latent_means_are_averages_over_non_bos_positions(tiny_model):
    from core.tracing.ablation import latent_means

    dicts = random_dictionaries(tiny_model, d_sae=8, seed=4)
    windows = torch.randint(1, tiny_model.cfg.d_vocab, (5, 12))
    windows[:, 0] = 0
    means = latent_means(tiny_model, dicts, windows, batch_size=2)
    _, cache = tiny_model.run_with_cache(windows)
    for d in dicts:
        expected = d.encode(cache[d.hook_in][:, 1:]).mean(dim=(0, 1))
        assert torch.allclose(means[d.id], expected, atol=1e-5)


def test_means_are_cached_on_disk(tiny_model, tmp_path):
    from core.build.corpus import BrownDocument, save_corpus
    from core.tracing.ablation import load_or_compute_means

    corpus = tmp_path / "corpus.jsonl.gz"
    text = "When Mary and John went to the store, John gave a drink to Mary. " * 20
    save_corpus([BrownDocument("ca10", "a", text)], corpus)
    dicts = random_dictionaries(tiny_model, d_sae=8, seed=5)
    first = load_or_compute_means(tiny_model, dicts, corpus, tmp_path / "cache", n_windows=4, ctx=16)
    assert len(list((tmp_path / "cache").glob("latent-means-*.safetensors"))) == 1
    second = load_or_compute_means(tiny_model, dicts, corpus, tmp_path / "cache", n_windows=4, ctx=16)
    for k in first:
        assert torch.equal(first[k], second[k])


def test_necessity_and_sufficiency_move_the_metric(setup, relu):
    """Ablating the latents AtP ranks highest changes the metric far more than ablating random ones."""
    from core.tracing.ablation import metric_values
    from core.tracing.baselines import attribution_patching_scores, top_features

    rm, dicts, tokens, targets, means = setup
    full = metric_values(relu, dicts, tokens[:1], targets[:1], None, "ablate", means)
    scores = attribution_patching_scores(relu, dicts, tokens[0], targets[0], means)
    top = top_features(scores, 5)
    worst = metric_values(relu, dicts, tokens[:1], targets[:1], [top], "ablate", means)
    # The 5 lowest-|score| latents (BOS excluded): flip the scores so the smallest rank first.
    flipped = {
        k: torch.where(torch.arange(s.shape[0])[:, None] == 0, torch.zeros_like(s), 1.0 / (s.abs() + 1e-9))
        for k, s in scores.items()
    }
    low = top_features(flipped, 5)
    assert not (low & top)
    mild = metric_values(relu, dicts, tokens[:1], targets[:1], [low], "ablate", means)
    assert abs(float(worst - full)) > 5 * abs(float(mild - full))


def test_attribution_patching_is_the_first_order_estimate(setup, relu):
    """AtP's score of the top latent approximates its actual mean-ablation effect."""
    from core.tracing.ablation import metric_values
    from core.tracing.baselines import attribution_patching_scores

    rm, dicts, tokens, targets, means = setup
    scores = attribution_patching_scores(relu, dicts, tokens[0], targets[0], means)
    assert all(float(s[0].abs().max()) == 0 for s in scores.values())  # BOS excluded
    k = max(scores, key=lambda i: float(scores[i].abs().max()))
    p, i = divmod(int(scores[k].abs().argmax()), scores[k].shape[1])
    full = metric_values(relu, dicts, tokens[:1], targets[:1], None, "ablate", means)
    ablated = metric_values(relu, dicts, tokens[:1], targets[:1], [[(k, p, i)]], "ablate", means)
    actual, est = float(ablated - full), float(scores[k][p, i])
    assert math.copysign(1, actual) == math.copysign(1, est)
    assert abs(actual - est) < 0.5 * abs(actual)


def test_random_and_top_features(setup):
    from core.tracing.baselines import active_features, random_features, top_features

    rm, dicts, tokens, targets, means = setup
    state = rm.prepare(tokens[0])
    cands = active_features(state)
    a = random_features(cands, 7, torch.Generator().manual_seed(0))
    b = random_features(cands, 7, torch.Generator().manual_seed(0))
    assert a == b and len(a) == 7 and a <= set(cands)
    scores = {"x": torch.tensor([[0.0, 0.0], [1.0, -5.0]]), "y": torch.tensor([[0.0, 3.0], [0.0, 0.0]])}
    assert top_features(scores, 2) == frozenset({("x", 1, 1), ("y", 0, 1)})


def test_missing_means_is_a_clear_error(setup, relu):
    from core.tracing.ablation import metric_values

    rm, dicts, tokens, targets, means = setup
    with pytest.raises(ValueError, match="no latent means"):
        metric_values(relu, dicts, tokens, targets, None, "keep", None, "mean")
    zero = metric_values(relu, dicts, tokens, targets, None, "keep", None, "zero")
    assert zero.shape == (3,)


def test_active_only_ablation_keeps_inactive_latents_at_zero(setup, relu):
    """With active_only, keeping every active latent is the whole model; plain mean ablation also moves inactive ones."""
    from core.tracing.ablation import circuit_faithfulness
    from core.tracing.baselines import active_features

    rm, dicts, tokens, targets, means = setup
    active = [frozenset(active_features(rm.prepare(t))) for t in tokens]
    only = circuit_faithfulness(relu, dicts, tokens, targets, active, means, active_only=True)
    assert only.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert only.ablation == "mean (active latents only)"
    plain = circuit_faithfulness(relu, dicts, tokens, targets, active, means)
    assert abs(plain.faithfulness - 1.0) > 1e-3
