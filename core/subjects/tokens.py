"""Token helpers for any subject model's tokenizer."""

from __future__ import annotations


class TokenizationError(ValueError):
    """A target or contrast string is not exactly one token."""


def continuation_ids(tokenizer, text: str) -> list[int]:
    """The ids of `text` where it continues a text (what a model predicts next): `encode(text)`, except with
    a tokenizer that puts a space before a text's first word (the default's from v15), which would encode
    ")" as " )". Encoded after a newline, whose own ids are then dropped."""
    lead = tokenizer.encode("\n", add_special_tokens=False)
    ids = tokenizer.encode("\n" + text, add_special_tokens=False)
    if text and ids[: len(lead)] == lead and len(ids) > len(lead):
        return ids[len(lead) :]
    return tokenizer.encode(text, add_special_tokens=False)


def single_token_id(tokenizer, text: str) -> int:
    """The id of `text` (`continuation_ids`) if it is exactly one token, else a TokenizationError naming the pieces."""
    ids = continuation_ids(tokenizer, text)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise TokenizationError(f"{text!r} is {len(ids)} tokens {pieces}, not one")
    return ids[0]
