"""The detection prompt: given an explanation, say which (unmarked) examples the feature fires on."""

from __future__ import annotations

VERSION = "detection-v1"

SYSTEM = """You are an intelligent and meticulous linguistics researcher. You will be given an explanation \
of a feature of a language model, such as "male pronouns" or "text with negative sentiment", and then \
several numbered text examples. Decide for each example whether the feature, as explained, is present \
in it (1) or not (0).

Reply with a Python list of {n} integers, 1 or 0, one per example in order, e.g. [1, 0, 0, 1, 0]. \
Reply with the list only."""

USER = """Feature explanation: {explanation}

{examples}"""


def build_messages(explanation: str, example_texts: list[str]) -> list[dict]:
    """Chat messages asking which of `example_texts` show the explained feature."""
    examples = "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(example_texts))
    return [
        {"role": "system", "content": SYSTEM.format(n=len(example_texts))},
        {"role": "user", "content": USER.format(explanation=explanation, examples=examples)},
    ]
