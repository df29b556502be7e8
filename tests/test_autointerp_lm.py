"""Subject-model pieces: surprisal losses, steering to a target KL, greedy generation, random-direction latents."""

from __future__ import annotations

import numpy as np
import torch

from core.autointerp.random_latents import random_directions, random_latent_activations
from core.autointerp.scorers.intervention import find_scales, generate
from core.autointerp.scorers.surprisal import sequence_losses


def test_batched_padded_losses_equal_one_sequence_at_a_time(tiny_model):
    rng = np.random.default_rng(0)
    vocab = tiny_model.cfg.d_vocab
    prefixes = [[0] + rng.integers(1, vocab, size=int(n)).tolist() for n in rng.integers(1, 6, size=7)]
    windows = [rng.integers(1, vocab, size=int(n)) for n in rng.integers(3, 12, size=7)]
    batched = sequence_losses(tiny_model, prefixes, windows, batch_tokens=40)  # several padded batches
    for p, w, got in zip(prefixes, windows, batched, strict=True):
        seq = torch.tensor([p + w.tolist()])
        with torch.inference_mode():
            logp = torch.log_softmax(tiny_model(seq)[0].float(), -1)
        expected = -logp[len(p) - 1 : len(p) + len(w) - 1].gather(-1, torch.tensor(w)[:, None]).mean()
        assert abs(got - float(expected)) < 1e-4


def test_steering_reaches_the_target_kl_and_zero_steering_is_clean(tiny_model):
    rng = np.random.default_rng(1)
    prompts = np.concatenate([np.zeros((3, 1), np.int64), rng.integers(1, tiny_model.cfg.d_vocab, (3, 6))], axis=1)
    hook = "blocks.1.hook_resid_pre"
    dirs = random_directions(4, tiny_model.cfg.d_model, seed=3)
    with torch.inference_mode():
        clean_logp = torch.log_softmax(tiny_model(torch.from_numpy(prompts))[:, -1].float(), -1)
    scales, kls = find_scales(
        tiny_model, hook, prompts, dirs, target_kl=0.05, steps=14, clean_logp=clean_logp, hi=200.0
    )
    assert np.all(np.abs(kls - 0.05) < 0.01), kls
    assert np.all(scales > 0)
    clean = generate(tiny_model, hook, prompts, None, None, 4)[0]
    zero = generate(tiny_model, hook, prompts, dirs[:2], np.zeros(2), 4)
    assert np.array_equal(zero[0], clean) and np.array_equal(zero[1], clean)


def test_random_latents_fire_at_the_requested_rate_with_projection_minus_threshold():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 11, 8)).astype(np.float32)
    dirs = random_directions(3, 8, seed=0)
    out = random_latent_activations(x, dirs, frequency=0.1)
    flat = x[:, 1:].reshape(-1, 8)
    proj = (flat - flat.mean(0)) @ dirs.T
    for r, (idx, val) in enumerate(out):
        assert len(idx) == 20  # 10% of 200 tokens
        theta = np.sort(proj[:, r])[-21]
        assert np.allclose(val, proj[idx, r] - theta, atol=1e-5) and (val > 0).all()


def test_starting_at_the_hooks_block_gives_the_same_scales_as_the_full_forward(tiny_model):
    rng = np.random.default_rng(4)
    prompts = np.concatenate([np.zeros((2, 1), np.int64), rng.integers(1, tiny_model.cfg.d_vocab, (2, 5))], axis=1)
    dirs = random_directions(3, tiny_model.cfg.d_model, seed=5)
    with torch.inference_mode():
        _, cache = tiny_model.run_with_cache(torch.from_numpy(prompts))
        clean_logp = torch.log_softmax(tiny_model(torch.from_numpy(prompts))[:, -1].float(), -1)
    for hook in ("blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out", "blocks.0.hook_attn_out"):
        layer = int(hook.split(".")[1])
        full = find_scales(tiny_model, hook, prompts, dirs, 0.05, 8, clean_logp, 100.0)
        fast = find_scales(
            tiny_model, hook, prompts, dirs, 0.05, 8, clean_logp, 100.0, cache[f"blocks.{layer}.hook_resid_pre"]
        )
        assert np.allclose(full[0], fast[0]) and np.allclose(full[1], fast[1], atol=1e-5)


def test_a_subject_in_another_dtype_is_recorded_in_the_scorers_params(tiny_model):
    """A score made with the subject in bfloat16 says so (and so gets its own id); a float32 one's params are unchanged."""
    import copy

    from core.autointerp.scorers import surprisal
    from core.autointerp.scorers.intervention import InterventionScorer

    intervention = InterventionScorer("judge:minilm-similarity", lm="lm:dtype-probe")
    surprisal_scorer = surprisal.SurprisalScorer("lm:dtype-probe")
    try:
        surprisal.register_lm("dtype-probe", tiny_model)
        float32 = intervention.params()
        assert "dtype" not in float32 and "dtype" not in surprisal_scorer.params()
        surprisal.register_lm("dtype-probe", copy.deepcopy(tiny_model).to(torch.bfloat16))
        assert intervention.params() == {**float32, "dtype": "bfloat16"}
        assert surprisal_scorer.params()["dtype"] == "bfloat16"
    finally:
        surprisal._LMS.pop("lm:dtype-probe", None)
