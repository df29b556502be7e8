"""The intruder prompt: given an explanation and numbered examples with marked tokens, name the one that does not belong."""

from __future__ import annotations

import re

VERSION = "intruder-v1"

SYSTEM = """You are an intelligent and meticulous linguistics researcher. You will be given an explanation \
of a feature of a language model and {n} numbered text examples, each with some tokens marked between << and >>. \
In all but one example the marked tokens are where the feature, as explained, is active; one example is an intruder \
whose marks have nothing to do with the feature. Find the intruder.

End your reply with one line: [RESPONSE]: <the intruder's example number, 1 to {n}>"""

USER = """Feature explanation: {explanation}

{examples}"""

_RESPONSE = re.compile(r"\[RESPONSE\]:\s*(\d+)")


def build_messages(explanation: str, example_texts: list[str]) -> list[dict]:
    """Chat messages asking which of `example_texts` (marked) is the intruder."""
    examples = "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(example_texts))
    return [
        {"role": "system", "content": SYSTEM.format(n=len(example_texts))},
        {"role": "user", "content": USER.format(explanation=explanation, examples=examples)},
    ]


def parse_reply(text: str | None, n: int) -> int | None:
    """The 0-based index of the example the reply names as the intruder (its last `[RESPONSE]: k`, 1 <= k <= n), else None."""
    if not text:
        return None
    found = _RESPONSE.findall(text)
    if not found:
        return None
    k = int(found[-1])
    return k - 1 if 1 <= k <= n else None
