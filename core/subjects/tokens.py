"""Token helpers for any subject model's tokenizer."""

from __future__ import annotations


class TokenizationError(ValueError):
    """A target or contrast string is not exactly one token."""


def single_token_id(tokenizer, text: str) -> int:
    """The id of `text` if it encodes as exactly one token, else a TokenizationError naming the pieces."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise TokenizationError(f"{text!r} is {len(ids)} tokens {pieces}, not one")
    return ids[0]
