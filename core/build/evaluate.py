"""Held-out evaluation of a subject model: language-model loss and the three task accuracies."""

from __future__ import annotations

import math

import torch

from core.build.tasks import TaskItem
from core.subjects.tokens import single_token_id


def encode_prompts(tokenizer, prompts: list[str], bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids `[batch, max_len]` with BOS first, and each prompt's last index `[batch]`."""
    encoded = [[bos_id] + tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    max_len = max(len(e) for e in encoded)
    tokens = torch.full((len(encoded), max_len), bos_id, dtype=torch.long)
    for i, e in enumerate(encoded):
        tokens[i, : len(e)] = torch.tensor(e)
    last = torch.tensor([len(e) - 1 for e in encoded])
    return tokens, last


@torch.no_grad()
def logit_differences(model, items: list[TaskItem], batch_size: int = 64) -> torch.Tensor:
    """logit(correct) - logit(incorrect) at each item's last prompt position: `[n_items]`."""
    tok = model.tokenizer
    bos = tok.bos_token_id
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        tokens, last = encode_prompts(tok, [it.prompt for it in batch], bos)
        correct = torch.tensor([single_token_id(tok, it.correct) for it in batch])
        incorrect = torch.tensor([single_token_id(tok, it.incorrect) for it in batch])
        logits = model(tokens.to(device))  # [batch, pos, vocab]
        final = logits[torch.arange(len(batch)), last.to(device)]  # [batch, vocab]
        rows = torch.arange(len(batch))
        out.append((final[rows, correct.to(device)] - final[rows, incorrect.to(device)]).float().cpu())
    return torch.cat(out)


def task_accuracy(model, items: list[TaskItem]) -> float:
    """Share of items whose correct token has the higher logit of the pair."""
    return float((logit_differences(model, items) > 0).float().mean())


@torch.no_grad()
def language_model_loss(model, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token loss in nats over token windows `[n, ctx]` (each starting with BOS)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        loss = model(batch, return_type="loss", loss_per_token=True)  # [batch, ctx-1]
        total += float(loss.sum())
        count += loss.numel()
    return total / count


def bits_per_character(loss_nats_per_token: float, n_tokens: int, n_characters: int) -> float:
    """Convert nats/token over a text of `n_tokens` tokens and `n_characters` characters to bits/char."""
    return loss_nats_per_token * n_tokens / n_characters / math.log(2)


@torch.no_grad()
def repeated_tokens_accuracy(model, n: int = 100, length: int = 10, seed: int = 0) -> float:
    """Top-1 accuracy on the second copy of `n` random `length`-token sequences said twice, after BOS.

    The copy's first token is left out (nothing announces the repeat); every later one is predictable
    only by copying from context (an induction head), whatever the tokens. Tokens are uniform over the
    vocabulary less BOS.
    """
    device = next(model.parameters()).device
    bos = model.tokenizer.bos_token_id
    gen = torch.Generator().manual_seed(seed)
    seq = torch.randint(0, model.cfg.d_vocab - 1, (n, length), generator=gen)
    seq += (seq >= bos).long()  # skip BOS's id
    tokens = torch.cat([torch.full((n, 1), bos), seq, seq], dim=1)  # [n, 1 + 2 * length]
    predicted = model(tokens.to(device)).argmax(-1).cpu()  # [n, 1 + 2 * length]
    # position p predicts token p + 1; the copy's tokens after its first are 2 + length .. 2 * length
    target = tokens[:, 2 + length :]
    return float((predicted[:, 1 + length : -1] == target).float().mean())
