"""The simulation prompt (Bills et al. 2023): predict the feature's activation, 0 to 10, on every token."""

from __future__ import annotations

VERSION = "simulation-v1"

SYSTEM = """We are studying features of a language model. Each feature looks for some particular thing in \
a short text. Given an explanation of what a feature does, predict how strongly it activates on each \
token of a text, on a scale from 0 (not at all) to 10 (as strongly as it ever does). Most tokens are 0.

The text is given as numbered tokens, one per line: `index<TAB>token`. Reply with exactly one line per \
token, in order, as `index<TAB>activation` where activation is an integer from 0 to 10. Reply with those \
lines only."""

USER = """Feature explanation: {explanation}

Text:
{tokens}"""


def build_messages(explanation: str, token_texts: list[str]) -> list[dict]:
    """Chat messages asking for a 0-10 activation per token of one window (`token_texts: [length]`)."""
    lines = "\n".join(f"{i + 1}\t{_show(t)}" for i, t in enumerate(token_texts))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER.format(explanation=explanation, tokens=lines)},
    ]


def _show(token: str) -> str:
    """A token made visible on one line: newlines and tabs escaped, a leading space shown as is."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
