"""Reading the prompts of core.circuits.llm_pruning in scripted LLM replies."""

from __future__ import annotations


def listed_ids(user: str, header: str | None = None) -> list[str]:
    """Node ids listed in a pruning prompt's NODES section (each line starts 'id | kind | ...').

    `header` defaults to the part section of a hierarchical prompt when there is one, else the
    whole graph's NODES section.
    """
    if header is None:
        header = "NODES OF THIS PART" if "NODES OF THIS PART" in user else "NODES ("
    lines = user.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        out.append(line.split(" | ")[0])
    return out
