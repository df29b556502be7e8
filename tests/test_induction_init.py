"""The planted induction circuit: its heads attend as designed at init, and training keeps and uses them."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from core.build.induction_init import head_scores, model_induction_heads, plant_induction_circuit, repeated_rows
from core.build.train_model import ModelTrainingConfig, _new_model, _optimizer


def _tiny(plant: bool) -> ModelTrainingConfig:
    return ModelTrainingConfig(
        n_layers=2,
        d_model=96,
        n_heads=3,
        d_mlp=192,
        n_ctx=64,
        vocab_size=512,
        tie_embeddings=True,
        plant_induction=plant,
    )


def _repeat_loss(model, rows: torch.Tensor, period: int) -> float:
    """Mean loss on the tokens after the segment's first copy `[n, n_ctx]` -> float (nats)."""
    with torch.no_grad():
        loss = model(rows, return_type="loss", loss_per_token=True)  # [n, n_ctx - 1]
    return float(loss[:, period + 1 :].mean())


def test_repeated_rows_repeat_a_segment_after_bos_and_never_use_bos():
    rows = repeated_rows(np.random.default_rng(0), 5, 40, 30, 7, bos=3)
    assert rows.shape == (5, 40) and rows.dtype == torch.int64
    assert (rows[:, 0] == 3).all() and not (rows[:, 1:] == 3).any()
    assert torch.equal(rows[:, 8:], rows[:, 1:33])  # period 7


def test_planted_heads_attend_as_designed_at_init_and_an_unplanted_model_has_none():
    period = 11  # neither the calibration's period nor the figure's
    rows = repeated_rows(np.random.default_rng(1), 8, 64, 512, period, bos=0)
    planted = _new_model(_tiny(True), None)
    plain = _new_model(_tiny(False), None)
    got, base = head_scores(planted, rows, period), head_scores(plain, rows, period)
    assert got["best_prev_token_head"] > 0.5 and got["best_induction_head"] > 0.2, got
    assert base["best_prev_token_head"] < 0.15 and base["best_induction_head"] < 0.1, base
    # evaluate-default's figure: the same scores on its own rows (period 20, the whole vocabulary)
    figure = model_induction_heads(planted)
    assert figure["best_prev_token_head"] > 0.5 and figure["best_induction_head"] > 0.2, figure
    assert model_induction_heads(plain)["best_induction_head"] < 0.1
    # the planted circuit already copies: the repeats are likelier than a uniform guess, unlike the plain model
    uniform = math.log(511)
    assert _repeat_loss(planted, rows, period) < uniform - 0.3 < _repeat_loss(plain, rows, period) + 0.3


def test_the_induction_warm_up_keeps_the_planted_circuit_and_learns_to_copy():
    from dataclasses import replace

    from core.build.train_model import induction_warmup

    cfg = replace(_tiny(True), induction_warmup_steps=80, batch_size=8, warmup_steps=20)
    model = _new_model(cfg, None)
    probe = repeated_rows(np.random.default_rng(3), 8, 64, 512, 13, bos=0)
    before = _repeat_loss(model, probe, 13)
    report = induction_warmup(model, _optimizer(model, cfg), cfg, bos=0)
    after = _repeat_loss(model, probe, 13)
    scores = head_scores(model, probe, 13)
    assert after < 0.5 * before, (before, after)
    # uniform attention scores about 0.07 on rows of 64 tokens
    assert scores["best_prev_token_head"] > 0.3 and scores["best_induction_head"] > 0.2, scores
    assert report["steps"] == 80 and report["repeat_loss"] < 0.5 * before, report
    assert induction_warmup(model, _optimizer(model, cfg), replace(cfg, induction_warmup_steps=0), bos=0) == {}


def test_plant_refuses_a_model_too_small_and_keeps_build_5_key():
    from core.build.pipeline import model_config_hash
    from core.build.train_model import training_config

    one_layer = _new_model(
        ModelTrainingConfig(n_layers=1, d_model=96, n_heads=3, d_mlp=192, n_ctx=16, vocab_size=64), None
    )
    with pytest.raises(ValueError, match="2 layers"):
        plant_induction_circuit(one_layer, bos=0)
    assert model_config_hash(ModelTrainingConfig(plant_induction=False)) == "454cf3bd8d2c8a47"
    assert training_config("v6").plant_induction and training_config("v6").induction_rows
    assert training_config("v7").induction_warmup_steps and not training_config("v6").induction_warmup_steps
    assert model_config_hash(ModelTrainingConfig(induction_warmup_steps=0)) == "454cf3bd8d2c8a47"
    assert model_config_hash(training_config("v6")) != model_config_hash(training_config("v5"))
    # v8 is v4's text (vocabulary words kept in the split) trained exactly as v7
    from core.build.tasks import VOCABULARY_WORD_VERSIONS

    v7 = training_config("v7")
    for version in ("v8", "v9", "v10"):  # (v9 and v10 change v8's text only)
        other = training_config(version)
        assert {**asdict(v7), "task_text": version} == asdict(other) and version in VOCABULARY_WORD_VERSIONS
        assert model_config_hash(other) != model_config_hash(v7)
    # v11 is v9's text in a 6-layer model
    assert asdict(training_config("v11")) == {**asdict(v7), "task_text": "v11", "n_layers": 6}
