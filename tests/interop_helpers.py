"""A graph traced on the embedded default model, ready to export (tests of core/circuits/interop.py)."""

from __future__ import annotations

from functools import lru_cache

PROMPT = "When Mary and John went to the store, John gave a drink to"


@lru_cache(maxsize=1)
def traced_default_graph():
    """(graph, target probability) of PROMPT traced on the default model from ' Mary' against ' John',
    with its target recorded (`with_target`). Callers copy before changing it."""
    from core.circuits import interop
    from core.circuits import saved as C
    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_default_model
    from core.tracing.api import trace_prompt

    model = load_default_model(device="cpu")
    dicts = [d for d in load_default_dictionaries().values() if d.kind in ("attn", "transcoder")]
    result = trace_prompt(model, dicts, PROMPT, " Mary", " John", faithfulness=False)
    G = C.with_target(result.graph.copy(), result.target)
    return G, interop.target_probability(model, G)
