"""The explainer prompt (shape of the seed paper's, Appendix A): marked windows, optional activations, optional chain of thought."""

from __future__ import annotations

import re

VERSION = "explainer-v1"

SYSTEM = """You are a meticulous AI researcher investigating patterns in language. You will be shown text \
examples on which one latent feature of a language model is active. In each example the tokens where \
the feature is active are marked between delimiters <<like this>>; consecutive active tokens share one \
pair of delimiters <<like this one>>.{activations}

Write a short explanation of what the feature responds to.
- Describe the common pattern: the kind of token, the meaning, or the context in which it fires.
- If some examples are uninformative, ignore them. Summarise, do not list examples.
- Do not mention the << >> delimiters. Give one explanation, not a list of alternatives.
- {cot}The last line of your reply must be the explanation, written as
[EXPLANATION]: <your explanation>"""

ACTIVATIONS_NOTE = """ After each example the active tokens are listed with their activation strength \
on a scale from 0 to 9 (9 = the feature's strongest activation)."""

COT_NOTE = """First think step by step: (1) list the marked tokens, (2) what the text before them has in \
common, (3) what the marked tokens have in common; then write the explanation. """

USER = """Examples of text where the feature is active:

{examples}"""


def build_messages(example_texts: list[str], activation_texts: list[str] | None, chain_of_thought: bool) -> list[dict]:
    """Chat messages asking for an explanation of the marked examples (`activation_texts[i]` follows example i)."""
    blocks = []
    for i, text in enumerate(example_texts):
        block = f"Example {i + 1}: {text}"
        if activation_texts is not None:
            block += f"\nActivations: {activation_texts[i]}"
        blocks.append(block)
    system = SYSTEM.format(
        activations=ACTIVATIONS_NOTE if activation_texts is not None else "", cot=COT_NOTE if chain_of_thought else ""
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": USER.format(examples="\n\n".join(blocks))},
    ]


_EXPLANATION = re.compile(r"\[EXPLANATION\]\s*:\s*(.+)", re.IGNORECASE)


def parse_reply(text: str | None) -> str | None:
    """The explanation in a reply: the text after the last `[EXPLANATION]:`, stripped; None if absent or empty."""
    if not text:
        return None
    found = _EXPLANATION.findall(text)
    if not found:
        return None
    explanation = found[-1].strip().strip('"').strip()
    return explanation or None
