"""The contrastive explainer prompt (after delphi's `ContrastiveExplainer`): marked activating windows, then
near-miss windows (similar text where the feature stays silent), asking what separates the two."""

from __future__ import annotations

from core.autointerp.prompts import explainer as base

VERSION = "contrastive-v1"

SYSTEM = """You are a meticulous AI researcher investigating patterns in language. You will be shown text \
examples on which one latent feature of a language model is active, with the tokens where it is active \
marked between delimiters <<like this>>.{activations} You will then be shown counter-examples: similar \
text on which the feature is NOT active anywhere.

Write a short explanation of what the feature responds to, precise enough to tell the examples from the \
counter-examples.
- Describe the common pattern: the kind of token, the meaning, or the context in which it fires.
- Say what the counter-examples lack only if it sharpens the explanation. Summarise, do not list examples.
- Do not mention the << >> delimiters. Give one explanation, not a list of alternatives.
- {cot}The last line of your reply must be the explanation, written as
[EXPLANATION]: <your explanation>"""

USER = """Examples of text where the feature is active:

{examples}

Counter-examples, where the feature is not active:

{counter}"""

parse_reply = base.parse_reply


def build_messages(
    example_texts: list[str], activation_texts: list[str] | None, counter_texts: list[str], chain_of_thought: bool
) -> list[dict]:
    """Chat messages asking for an explanation that separates the marked examples from `counter_texts`."""
    blocks = []
    for i, text in enumerate(example_texts):
        block = f"Example {i + 1}: {text}"
        if activation_texts is not None:
            block += f"\nActivations: {activation_texts[i]}"
        blocks.append(block)
    counter = "\n".join(f"Counter-example {i + 1}: {t}" for i, t in enumerate(counter_texts)) or "(none found)"
    system = SYSTEM.format(
        activations=base.ACTIVATIONS_NOTE if activation_texts is not None else "",
        cot=base.COT_NOTE if chain_of_thought else "",
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": USER.format(examples="\n\n".join(blocks), counter=counter)},
    ]
