"""The planted bracket head: it attends to an open bracket however far back, and says whether it is closed."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from core.build.bracket_init import (
    BUILT_IN_HEAD,
    RESERVED_COLUMNS,
    bracket_positions,
    plant_bracket_columns,
    plant_bracket_head,
)
from core.build.train_model import ModelTrainingConfig, _new_model, _optimizer, _training_step, training_config

OPEN, CLOSE, BOS = 5, 6, 0


def _model():
    cfg = ModelTrainingConfig(n_layers=2, d_model=96, n_heads=3, d_mlp=192, n_ctx=80, vocab_size=512)
    torch.manual_seed(0)
    return _new_model(cfg, None).eval()


def _random_tokens(gen: torch.Generator, n: int) -> list[int]:
    return (torch.randint(10, 512, (n,), generator=gen)).tolist()


def _calibration_rows(n: int = 32, length: int = 64) -> torch.Tensor:
    """BOS, then `<words> ( <words> ) <words>` again and again, cut at `length`."""
    gen = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(n):
        row = [BOS]
        while len(row) < length:
            a, b, c = (int(torch.randint(2, 9, (1,), generator=gen)) for _ in range(3))
            row += _random_tokens(gen, a) + [OPEN] + _random_tokens(gen, b) + [CLOSE] + _random_tokens(gen, c)
        rows.append(row[:length])
    return torch.tensor(rows)


def _row(gen: torch.Generator, span: int, closed: bool) -> list[int]:
    """BOS, 3 words, "(", `span` words (the fifth of them ")" when `closed`)."""
    inside = _random_tokens(gen, span)
    if closed:
        inside[4] = CLOSE
    return [BOS] + _random_tokens(gen, 3) + [OPEN] + inside


def _last_token_reading(model, rows: torch.Tensor, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's attention from the last token to the "(" `[n]` and its value component 0 there `[n]`."""
    with torch.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    pattern = cache["blocks.0.attn.hook_pattern"][:, head, -1]  # [n, k]
    open_at = (rows == OPEN).int().argmax(dim=1)
    return pattern[torch.arange(len(rows)), open_at], cache["blocks.0.attn.hook_z"][:, -1, head, 0]


def test_bracket_positions_mark_inside_and_after():
    rows = torch.tensor([[BOS, 11, OPEN, 12, 13, CLOSE, 14, OPEN, 15]])
    where = bracket_positions(rows, [OPEN], [CLOSE])
    assert where["inside"][0].tolist() == [False, False, False, True, True, False, False, False, True]
    assert where["after"][0].tolist() == [False, False, False, False, False, False, True, False, False]
    assert where["other"][0].tolist() == [False, True, False, True, True, False, True, False, True]


def test_planted_head_finds_an_open_bracket_at_any_distance_and_sees_it_closed():
    model, head = _model(), 2
    gen = torch.Generator().manual_seed(3)
    # the last token is 11 or 75 tokens after the "("
    near_open = torch.tensor([_row(gen, 11, closed=False) for _ in range(8)])
    far_open = torch.tensor([_row(gen, 75, closed=False) for _ in range(8)])
    far_closed = torch.tensor([_row(gen, 75, closed=True) for _ in range(8)])
    before, _ = _last_token_reading(model, far_open, head)
    assert float(before.mean()) < 0.1  # a random head does not single the bracket out
    plant_bracket_head(model, _calibration_rows(), [OPEN], [CLOSE], layer=0, head=head)
    attention_far, open_far = _last_token_reading(model, far_open, head)
    attention_near, open_near = _last_token_reading(model, near_open, head)
    _, closed_far = _last_token_reading(model, far_closed, head)
    no_bracket = torch.tensor([[BOS] + _random_tokens(gen, 79) for _ in range(8)])
    with torch.no_grad():
        _, cache = model.run_with_cache(no_bracket, names_filter="blocks.0.attn.hook_z")
    none = cache["blocks.0.attn.hook_z"][:, -1, head, 0]
    assert float(attention_far.min()) > 0.9 and float(attention_near.min()) > 0.9
    assert float(open_far.mean()) > 0.8 * float(open_near.mean()) > 0  # no dilution with distance
    assert float(closed_far.max()) < 0.35 * float(open_near.mean())  # ")" cancels "(" (or outweighs it)
    assert float(none.abs().max()) < 0.35 * float(open_near.mean())  # values are centred: no bracket, no signal


def test_planting_needs_rows_with_closed_brackets():
    rows = torch.tensor([[BOS] + list(range(10, 40))])
    with pytest.raises(ValueError, match="open bracket"):
        plant_bracket_head(_model(), rows, [OPEN], [CLOSE])


def _depth_reading(model, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's built-in head at the last token: its attention to the brackets `[n]` and what it writes into
    the residual's "depth" column `[n]`."""
    with torch.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
        z = cache["blocks.0.attn.hook_z"][:, -1, BUILT_IN_HEAD]  # [n, d_head]
        written = z @ model.blocks[0].attn.W_O[BUILT_IN_HEAD][:, -1]  # [n]
    pattern = cache["blocks.0.attn.hook_pattern"][:, BUILT_IN_HEAD, -1]  # [n, k]
    on_brackets = (pattern * ((rows == OPEN) | (rows == CLOSE))).sum(dim=1)
    return on_brackets, written


def test_built_in_bracket_head_writes_open_closed_and_none_into_its_column_at_any_distance():
    model = _model()
    gen = torch.Generator().manual_seed(4)
    far_open = torch.tensor([_row(gen, 75, closed=False) for _ in range(8)])
    assert float(_depth_reading(model, far_open)[0].mean()) < 0.1  # before: no head singles brackets out
    plant_bracket_columns(model, [OPEN], [CLOSE])
    near_open = torch.tensor([_row(gen, 11, closed=False) for _ in range(8)])
    far_closed = torch.tensor([_row(gen, 75, closed=True) for _ in range(8)])
    no_bracket = torch.tensor([[BOS] + _random_tokens(gen, 79) for _ in range(8)])
    attention_far, open_far = _depth_reading(model, far_open)
    attention_near, open_near = _depth_reading(model, near_open)
    _, closed_far = _depth_reading(model, far_closed)
    attention_none, none = _depth_reading(model, no_bracket)
    assert float(attention_far.min()) > 0.95 and float(attention_near.min()) > 0.95
    assert float(open_far.min()) > 0.8 and float(open_near.min()) > 0.8  # an open bracket writes about 1
    assert float(closed_far.abs().max()) < 0.25 and float(none.abs().max()) < 0.05
    assert float(attention_none.max()) == 0.0


def test_built_in_bracket_head_survives_training_while_the_rest_learns():
    model = _model().train()
    frozen = plant_bracket_columns(model, [OPEN], [CLOSE])
    model.frozen_weights = frozen
    kept = [value.clone() for _, _, value in frozen.slices]
    other_head = model.blocks[0].attn.W_Q[2].detach().clone()
    cfg = ModelTrainingConfig(n_layers=2, d_model=96, n_heads=3, d_mlp=192, n_ctx=80, vocab_size=512)
    optimiser = _optimizer(model, cfg)
    batch = torch.tensor([_row(torch.Generator().manual_seed(i), 75, closed=i % 2 == 0) for i in range(8)])
    for _ in range(5):
        _training_step(model, optimiser, batch)
    for (param, index, _), value in zip(frozen.slices, kept, strict=True):
        assert torch.equal(param.detach()[index], value)
    assert not torch.allclose(model.blocks[0].attn.W_Q[2], other_head)  # the rest of the model trained
    assert int(model.embed.W_E[:, -RESERVED_COLUMNS:].count_nonzero()) == 4  # 2 tokens x (bracket, sign)
    attention, depth = _depth_reading(model.eval(), batch)
    assert float(attention.min()) > 0.95 and float(depth[1::2].min()) > 0.8  # odd rows: still open
    assert float(depth[::2].abs().max()) < 0.25  # even rows: closed


def test_v12_is_v11_with_a_built_in_bracket_head_which_needs_the_tokenizer():
    assert asdict(training_config("v12")) == {
        **asdict(training_config("v11")),
        "task_text": "v12",
        "plant_bracket_head": True,
    }
    cfg = ModelTrainingConfig(n_layers=2, d_model=96, n_heads=3, d_mlp=192, n_ctx=80, vocab_size=512)
    with pytest.raises(ValueError, match="tokenizer"):
        _new_model(ModelTrainingConfig(**{**asdict(cfg), "plant_bracket_head": True}), None)


def test_v13_is_v12_with_a_built_in_head_that_writes_its_gain():
    assert asdict(training_config("v13")) == {
        **asdict(training_config("v12")),
        "task_text": "v13",
        "bracket_head_gain": 16.0,
    }
    gen = torch.Generator().manual_seed(5)
    near_open = torch.tensor([_row(gen, 11, closed=False) for _ in range(8)])
    written = {}
    for gain in (1.0, 16.0):
        model = _model()
        plant_bracket_columns(model, [OPEN], [CLOSE], gain=gain)
        written[gain] = _depth_reading(model, near_open)[1]
    assert float(written[1.0].min()) > 0.8
    assert torch.allclose(written[16.0], 16 * written[1.0], rtol=1e-4)
