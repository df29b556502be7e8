"""A planted bracket head: one attention head that finds an open bracket however far back it is.

The default's models lose an open bracket after about 30 words (`brackets_long_span` 0.50-0.60 in every
build). No head attends to "(" sharply: on v9's model the best head's attention from the last token to the
"(" falls as the span grows (0.16 at 16 tokens, 0.05 at 50, 0.02 at 82), about twice uniform at every
length, so what the model reads is an average over the context that long spans dilute.

The planted head (in a trained model, in place of one head):
- QK: the query is a constant (`b_Q`), keys read the direction that separates bracket tokens from other
  tokens after LayerNorm, scaled so a bracket key leads a mean other key by `lead` (softmax weight ~e^lead):
  the head attends to the brackets in its context, wherever they are, and to everything when there are none;
- OV: values read the direction that separates "(" from ")", centred between them, so the head's output is
  (opens - closes) / (opens + closes), from +1 inside a bracket to 0 or less after it closes, at any distance;
- W_O writes that into the residual direction the model already reads as "inside a bracket" (the mean
  difference of the next layer's input inside and after a closed bracket on `rows`), `gain` times the size
  of that difference, so the layers after it use the head before any training.

Planted in a trained model, training wears the head's gain away within a few hundred steps
(docs/default-model.md). `plant_bracket_columns` instead builds one into a fresh model and keeps it fixed:
- three residual columns at the end of the stream are reserved: the embedding writes A into column
  "bracket" for every bracket token and +-A into column "sign" for "(" / ")" (0 for every other token);
  the third, "depth", is written by the head alone. The bracket tokens' whole embedding rows, the three
  columns of every other row and of the positional embedding, and layer 0's LayerNorm there are fixed;
- the head (layer 0, `head`) has a constant query and keys that read column "bracket", scaled so a bracket
  key leads a mean other key by `lead` at init; its value reads column "sign" and it writes into "depth":
  (opens - closes) / (opens + closes) of the context, times a gain that makes an open bracket write `gain`
  (1 in v12; 16 in v13: v12's head, written 16 times larger after training, was read far more);
- `FrozenWeights.restore`, called after every optimiser step, puts all of that back, so the rest of the
  model learns to read a head that stays what it was built to be.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

BRACKET_LEAD = 10.0  # attention-score lead of a bracket key over the mean other key
BRACKET_GAIN = 2.0  # planted output / the model's own inside-minus-after difference (measured best of 1, 2, 4)


def _head_weights(attn) -> tuple[torch.nn.Parameter, ...]:
    """An attention block's seven per-head parameters (`[n_heads, ...]` each): indexing one by a head gives that
    head's share."""
    return (attn.W_Q, attn.b_Q, attn.W_K, attn.b_K, attn.W_V, attn.b_V, attn.W_O)


def bracket_positions(rows: torch.Tensor, open_ids: list[int], close_ids: list[int]) -> dict[str, torch.Tensor]:
    """Boolean masks `[n, ctx]` over `rows` `[n, ctx]`: "open" and "close" tokens, "other" tokens (not the
    first), "inside" (after an open bracket that is not closed yet) and "after" (depth 0 after a close)."""
    is_open = torch.isin(rows, torch.tensor(open_ids))
    is_close = torch.isin(rows, torch.tensor(close_ids))
    depth = torch.cumsum(is_open.int() - is_close.int(), dim=1)
    rest = torch.ones_like(is_open)
    rest[:, 0] = False
    closed_before = torch.cumsum(is_close.int(), dim=1) > 0
    return {
        "open": is_open,
        "close": is_close,
        "other": rest & ~is_open & ~is_close,
        "inside": rest & (depth > 0) & ~is_open,
        "after": rest & (depth == 0) & closed_before & ~is_close,
    }


def plant_bracket_head(
    model: HookedTransformer,
    rows: torch.Tensor,
    open_ids: list[int],
    close_ids: list[int],
    layer: int = 0,
    head: int = -1,
    lead: float = BRACKET_LEAD,
    gain: float = BRACKET_GAIN,
) -> None:
    """Replace `head` of `layer` with the module docstring's bracket head (in place).

    `rows` `[n, ctx]`: token rows with closed brackets and text before, inside and after them (equal
    lengths; at least one "(" and one ")"), on which the directions are measured.
    """
    cfg = model.cfg
    head = head % cfg.n_heads
    where = bracket_positions(rows, open_ids, close_ids)
    if not (where["open"].any() and where["close"].any() and where["inside"].any() and where["after"].any()):
        raise ValueError("the calibration rows need an open bracket, text inside it, its close and text after it")
    normalized, read = f"blocks.{layer}.ln1.hook_normalized", f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=lambda n: n in (normalized, read))
    x, resid = cache[normalized], cache[read]  # [n, ctx, d_model]
    mean_open, mean_close = x[where["open"]].mean(0), x[where["close"]].mean(0)
    middle = (mean_open + mean_close) / 2
    key = middle - x[where["other"]].mean(0)
    key = key / key.norm()
    other_key = float((x[where["other"]] @ key).mean())
    key_gap = float((x[where["open"] | where["close"]] @ key).mean()) - other_key
    value = mean_open - mean_close
    half_gap = float(value.norm()) / 2
    value = value / value.norm()
    inside = resid[where["inside"]].mean(0) - resid[where["after"]].mean(0)
    scale = lead * math.sqrt(cfg.d_head) / key_gap
    attn = model.blocks[layer].attn
    with torch.no_grad():
        for weight in _head_weights(attn):
            weight[head].zero_()
        attn.b_Q[head][0] = 1.0
        attn.W_K[head][:, 0] = key * scale
        attn.b_K[head][0] = -other_key * scale
        attn.W_V[head][:, 0] = value
        attn.b_V[head][0] = -float(middle @ value)
        attn.W_O[head][0] = inside * (gain / half_gap)


RESERVED_COLUMNS = 3  # "bracket", "sign" and "depth", the last three residual columns
BUILT_IN_HEAD = 1  # layer 0's head `plant_bracket_columns` builds in (head 0: the planted previous-token head)
BUILD_LEAD = 12.0  # a bracket key's lead at init: the rest of the embedding grows in training, lowering it
EMBED_SHARE = 1.0  # A / the mean norm of an embedding row at init


@dataclass
class FrozenWeights:
    """Slices of a model's parameters kept at the values they had when planted (`restore` after each step)."""

    slices: list[tuple[torch.nn.Parameter, tuple, torch.Tensor]] = field(default_factory=list)

    def keep(self, param: torch.nn.Parameter, index: tuple) -> None:
        """Keep `param[index]` at its current value."""
        self.slices.append((param, index, param.detach()[index].clone()))

    def restore(self) -> None:
        """Write every kept slice back (in place, without autograd)."""
        with torch.no_grad():
            for param, index, value in self.slices:
                param[index] = value


def plant_bracket_columns(
    model: HookedTransformer,
    open_ids: list[int],
    close_ids: list[int],
    head: int = BUILT_IN_HEAD,
    lead: float = BUILD_LEAD,
    gain: float = 1.0,
) -> FrozenWeights:
    """Build the module docstring's fixed bracket head into a fresh `model` (in place): layer 0's `head`
    and the last `RESERVED_COLUMNS` residual columns; an open bracket writes `gain` into "depth". Returns
    what must be restored after each step."""
    cfg = model.cfg
    if not open_ids or not close_ids:
        raise ValueError("a bracket head needs single-token open and close brackets")
    bracket_col, sign_col, depth_col = range(cfg.d_model - RESERVED_COLUMNS, cfg.d_model)
    reserved = slice(cfg.d_model - RESERVED_COLUMNS, cfg.d_model)
    brackets = open_ids + close_ids
    embed, attn, ln = model.embed.W_E, model.blocks[0].attn, model.blocks[0].ln1
    with torch.no_grad():
        size = EMBED_SHARE * float(embed.norm(dim=1).mean())
        # bracket rows of one mean and norm, so "(" and ")" weigh alike after LayerNorm
        rows = embed[brackets] - embed[brackets].mean(dim=1, keepdim=True)
        embed[brackets] = rows * (size / rows.norm(dim=1, keepdim=True))
        embed[:, reserved] = 0.0
        embed[brackets, bracket_col] = size
        embed[open_ids, sign_col] = size
        embed[close_ids, sign_col] = -size
        model.pos_embed.W_pos[:, reserved] = 0.0
        ln.w[reserved] = 1.0
        ln.b[reserved] = 0.0
        # what layer 0's head reads of every token (at the mean position), after LayerNorm
        normalized = ln(embed[:, None, :] + model.pos_embed.W_pos.mean(0))[:, 0]  # [d_vocab, d_model]
        is_bracket = torch.zeros(cfg.d_vocab, dtype=torch.bool)
        is_bracket[brackets] = True
        other_key = float(normalized[~is_bracket, bracket_col].mean())
        key_gap = float(normalized[is_bracket, bracket_col].mean()) - other_key
        open_value = float(normalized[open_ids, sign_col].mean())
        scale = lead * math.sqrt(cfg.d_head) / key_gap
        for weight in _head_weights(attn):
            weight[head].zero_()
        attn.b_Q[head][0] = 1.0
        attn.W_K[head][bracket_col, 0] = scale
        attn.b_K[head][0] = -other_key * scale
        attn.W_V[head][sign_col, 0] = 1.0
        attn.W_O[head][0, depth_col] = gain / open_value
    frozen = FrozenWeights()
    frozen.keep(embed, (brackets,))
    frozen.keep(embed, (slice(None), reserved))
    frozen.keep(model.pos_embed.W_pos, (slice(None), reserved))
    frozen.keep(ln.w, (reserved,))
    frozen.keep(ln.b, (reserved,))
    for weight in _head_weights(attn):
        frozen.keep(weight, (head,))
    return frozen


def calibration_rows(tokenizer, sentences: list[str], n: int = 64, length: int = 64, seed: int = 0) -> torch.Tensor:
    """`[n, length]` int64 rows: BOS, then "<2-6 words> (<2-10 words>) <2-10 words>." again and again from
    `sentences`' words, cut at `length` tokens (a row may end inside a bracket)."""
    rng = random.Random(seed)
    words = [w for s in sentences for w in s.split() if "(" not in w and ")" not in w] or ["word"]

    def some(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(lo, hi)))

    rows = []
    for _ in range(n):
        row = [tokenizer.bos_token_id]
        while len(row) < length:
            row += tokenizer.encode(f" {some(2, 6)} ({some(2, 10)}) {some(2, 10)}.", add_special_tokens=False)
        rows.append(row[:length])
    return torch.tensor(rows)


def bracket_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Single-token ids of "(" and " (" and of ")" and " )" in `tokenizer` (those that are one token)."""

    from core.subjects.tokens import continuation_ids

    def single(texts: tuple[str, ...]) -> list[int]:
        ids = [continuation_ids(tokenizer, t) for t in texts]
        return sorted({i[0] for i in ids if len(i) == 1})

    return single(("(", " (")), single((")", " )"))
