"""The fuzzing prompt: given an explanation, say which examples have the right tokens marked."""

from __future__ import annotations

VERSION = "fuzzing-v1"

SYSTEM = """You are an intelligent and meticulous linguistics researcher. You will be given an explanation \
of a feature of a language model, such as "male pronouns" or "text with negative sentiment", and then \
several numbered text examples. In each example some tokens are marked between << and >>. In some \
examples the marked tokens are the ones the feature fires on; in others the marks were put on the \
wrong tokens. Decide for each example whether every marked token is one the feature, as explained, \
fires on (1) or not (0).

Reply with a Python list of {n} integers, 1 or 0, one per example in order, e.g. [1, 0, 0, 1, 0]. \
Reply with the list only."""

USER = """Feature explanation: {explanation}

{examples}"""


def build_messages(explanation: str, example_texts: list[str]) -> list[dict]:
    """Chat messages asking which of the marked `example_texts` are correctly marked."""
    examples = "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(example_texts))
    return [
        {"role": "system", "content": SYSTEM.format(n=len(example_texts))},
        {"role": "user", "content": USER.format(explanation=explanation, examples=examples)},
    ]
