"""A planted induction circuit: an initialisation from which the default model copies in context.

Trained from a GPT-2 initialisation on the default's ~8M tokens, no model of this project formed an
induction head, even on rows of nothing but repeated random tokens (`bench/induction_sanity.py`): the
previous-token head never appears, and one planted alone is unlearned again. Planting the whole circuit
works: the model keeps it, sharpens it and copies from the first hundred steps. All of it stays learned.

The circuit (layer 0, head 0 and layer 1, head 0; `d_head` columns each, `d_model - 2 * d_head` left free):
- positions: W_pos's first `d_head` columns are sin/cos pairs at frequencies spread over 0.3-2.8 rad per
  position; its other columns start at zero.
- previous-token head: queries read those pairs rotated back one step, keys read them as they are, so
  q_p . k_j ~ sum_i cos(w_i (p - 1 - j)), a sharp peak at j = p - 1. Its OV writes a random projection
  (`read`) of the free columns of the token it attends to into residual columns S = [d_head, 2 d_head).
- induction head: queries read the same projection of the current token, keys read S (K-composition),
  so a key scores high where the token before it is the current token. Its OV is a rank-`d_head`
  projection: with tied embeddings it raises the logit of the token it attends to, whatever the token.
- the other heads' and the MLPs' outputs in layers 0 and 1 start at zero, so random branches do not
  drown the planted ones.
Both heads' QK are scaled on random repeated rows so their targets lead the best wrong key by a margin.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

PLANT_MARGIN = 6.0  # attention-score lead of each planted head's target over the best wrong key
CALIBRATION_PERIOD = 17  # segment length of the rows the induction QK is scaled on
SCORE_PERIOD = 20  # segment length of the rows `head_scores` measures on


def repeated_segment_row(rng: np.random.Generator, n_ctx: int, vocab: int, period: int, bos: int) -> np.ndarray:
    """`[n_ctx]` int64: `bos`, then a segment of `period` uniformly random ids (never `bos`) repeated to the end."""
    segment = rng.integers(0, vocab - 1, size=period)
    segment += segment >= bos  # skip BOS's id
    row = np.empty(n_ctx, dtype=np.int64)
    row[0] = bos
    row[1:] = np.resize(segment, n_ctx - 1)
    return row


def repeated_rows(rng: np.random.Generator, n_rows: int, n_ctx: int, vocab: int, period: int, bos: int) -> torch.Tensor:
    """`[n_rows, n_ctx]` int64 rows of `repeated_segment_row`, each its own segment."""
    return torch.from_numpy(np.stack([repeated_segment_row(rng, n_ctx, vocab, period, bos) for _ in range(n_rows)]))


def head_scores(model: HookedTransformer, rows: torch.Tensor, period: int) -> dict[str, float]:
    """The best previous-token score of any head (mean attention from q to q - 1) and the best induction
    score of a head after layer 0 (attention from q to q - period + 1: the token after the current token's
    last occurrence), on `rows` `[n, n_ctx]` repeating with `period`. Uniform attention scores ~0.04 / 0.02."""
    with torch.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=lambda n: n.endswith("hook_pattern"))
    prev, induction = 0.0, 0.0
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [n, heads, q, k]
        q = torch.arange(2, pattern.shape[-1])
        prev = max(prev, float(pattern[:, :, q, q - 1].mean(dim=(0, 2)).max()))
        if layer:
            q = torch.arange(period + 1, pattern.shape[-1])
            induction = max(induction, float(pattern[:, :, q, q - period + 1].mean(dim=(0, 2)).max()))
    return {"best_prev_token_head": round(prev, 3), "best_induction_head": round(induction, 3)}


def model_induction_heads(model: HookedTransformer, seed: int = 0) -> dict[str, float]:
    """`head_scores` of `model` on 16 rows of a random `SCORE_PERIOD`-token segment repeated (shorter when the
    context is), ids from the whole vocabulary but BOS (`evaluate-default`'s "induction_heads")."""
    tokenizer = model.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    period = min(SCORE_PERIOD, max(1, (model.cfg.n_ctx - 2) // 2))  # at least one repeat after the first copy
    rng = np.random.default_rng(seed)
    rows = repeated_rows(rng, 16, model.cfg.n_ctx, model.cfg.d_vocab, period, 0 if bos is None else bos)
    return head_scores(model, rows.to(model.cfg.device), period)


def _rotation_back(freq: torch.Tensor) -> torch.Tensor:
    """`[2k, 2k]` block-diagonal map taking [sin(p w), cos(p w)] pairs to [sin((p-1) w), cos((p-1) w)]."""
    back = torch.zeros(2 * len(freq), 2 * len(freq))
    for i, w in enumerate(freq.tolist()):
        c, s = math.cos(w), math.sin(w)
        back[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]])
    return back


def _lead(scores: torch.Tensor, right: torch.Tensor, target: torch.Tensor) -> float:
    """Median lead of `target` `[n, q]` over the best key not in `right` (`scores`, `right`: `[n, q, k]`)."""
    wrong = scores.masked_fill(right, float("-inf")).max(dim=-1).values
    return float((target - wrong).median())


def plant_previous_token_head(model: HookedTransformer, margin: float = PLANT_MARGIN) -> None:
    """Make layer 0's head 0 attend from each position to the one before (module docstring; in place)."""
    cfg = model.cfg
    width = cfg.d_head  # d_head / 2 sin/cos pairs
    freq = torch.linspace(0.3, 2.8, width // 2)
    pos = torch.arange(cfg.n_ctx, dtype=torch.float32)[:, None]
    table = torch.zeros(cfg.n_ctx, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    back = _rotation_back(freq)
    unit = table / table.std()  # roughly what LayerNorm leaves of them
    scores = (unit @ back) @ unit.T  # [q, k]
    q = torch.arange(2, cfg.n_ctx)
    k = torch.arange(cfg.n_ctx)
    right = (k[None, :] >= q[:, None]) | (k[None, :] == q[:, None] - 1)  # the target, itself, the future
    lead = _lead(scores[q][None], right[None], scores[q, q - 1][None])
    scale = math.sqrt(margin * math.sqrt(cfg.d_head) / max(lead, 1e-3))
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
        model.pos_embed.W_pos[:, :width] = table * (cfg.initializer_range / table.std())
        attn = model.blocks[0].attn
        attn.W_Q[0].zero_()
        attn.W_K[0].zero_()
        attn.W_Q[0][:width, :width] = scale * back
        attn.W_K[0][:width, :width] = scale * torch.eye(width)


def plant_induction_circuit(model: HookedTransformer, bos: int, seed: int = 0, margin: float = PLANT_MARGIN) -> None:
    """Plant the module docstring's circuit in layers 0 and 1 of `model` (in place; needs 2 layers and
    `d_model >= 3 d_head`). The induction QK is scaled on random rows of the model's vocabulary."""
    cfg = model.cfg
    d_head = cfg.d_head
    if cfg.n_layers < 2 or cfg.d_model < 3 * d_head:
        raise ValueError(
            f"a planted induction circuit needs 2 layers and d_model >= 3 d_head, not {cfg.n_layers} / {cfg.d_model}"
        )
    plant_previous_token_head(model, margin)
    written = slice(d_head, 2 * d_head)
    gen = torch.Generator().manual_seed(seed)
    read = torch.zeros(cfg.d_model, d_head)  # a random projection of the free columns
    read[2 * d_head :] = torch.linalg.qr(torch.randn(cfg.d_model - 2 * d_head, d_head, generator=gen))[0]
    copy = torch.linalg.qr(torch.randn(cfg.d_model, d_head, generator=gen))[0]  # [d_model, d_head]
    with torch.no_grad():
        for block in model.blocks[:2]:
            block.attn.W_O[1:].zero_()
            block.mlp.W_out.zero_()
        prev, ind = model.blocks[0].attn, model.blocks[1].attn
        prev.W_V[0].copy_(read)
        prev.W_O[0].zero_()
        prev.W_O[0][:, written] = 0.3 * torch.eye(d_head)
        ind.W_Q[0].copy_(read)
        ind.W_K[0].zero_()
        ind.W_K[0][written, :] = torch.eye(d_head)
        ind.W_V[0].copy_(copy)
        ind.W_O[0].copy_(copy.T * (cfg.d_model / (4 * d_head)))  # a stronger copy in a wider stream
        period = CALIBRATION_PERIOD
        rows = repeated_rows(np.random.default_rng(seed), 8, cfg.n_ctx, cfg.d_vocab, period, bos)
        _, cache = model.run_with_cache(rows, names_filter="blocks.1.attn.hook_attn_scores")
        scores = cache["blocks.1.attn.hook_attn_scores"][:, 0]  # [n, q, k]
        q = torch.arange(period + 1, cfg.n_ctx)
        k = torch.arange(cfg.n_ctx)
        # every key right after an earlier occurrence of the query's token is right, as are future keys
        right = torch.zeros(len(rows), len(q), cfg.n_ctx, dtype=torch.bool)
        right[:, :, 1:] = rows[:, None, :-1] == rows[:, q, None]
        right |= (k[None, :] > q[:, None])[None]
        lead = _lead(scores[:, q], right, scores[:, q, q - period + 1])
        scale = math.sqrt(margin / max(lead, 1e-3))
        ind.W_Q[0].mul_(scale)
        ind.W_K[0].mul_(scale)
