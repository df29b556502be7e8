"""Trace input checks (core.tracing.api): a contrast equal to the target is refused before any tracing;
a special token (`<|endoftext|>`) as target or contrast is traced with a warning."""

from __future__ import annotations

import re

import pytest
from tracing_helpers import exact_dictionaries, relu_model

from core.errors import UserError

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer):
    model = relu_model(tiny_tokenizer, n_ctx=96, seed=7)
    return model, exact_dictionaries(model, seed=7)


def test_contrast_equal_to_target_is_refused(tiny):
    from core.tracing.api import trace_prompt

    model, dicts = tiny
    with pytest.raises(UserError, match=r"target and the contrast are the same token \(' Mary'\)") as info:
        trace_prompt(model, dicts, PROMPT, target=" Mary", contrast=" Mary", faithfulness=False)
    assert isinstance(info.value, ValueError)  # callers catching ValueError (the CLI, the pages) still do


def test_contrast_equal_to_the_top_prediction_is_refused(tiny):
    """With no target, the target is the model's top token: that token as the contrast is the same mistake."""
    import torch

    from core.tracing.api import make_target
    from core.tracing.replacement import ReplacementModel

    model, dicts = tiny
    rm = ReplacementModel(model, dicts)
    tokens = rm.tokenize(PROMPT)
    with torch.no_grad():
        logits = model(tokens[None])[0, -1]
    # The top token of this random model may not be a whole character; take the best one that round-trips.
    for token in logits.argsort(descending=True).tolist():
        text = model.tokenizer.decode([token])
        if model.tokenizer.encode(text, add_special_tokens=False) == [token]:
            break
    with torch.no_grad():
        model.unembed.b_U[token] += 1000.0  # make it the top prediction
    try:
        with pytest.raises(UserError, match=re.escape(f"the contrast {text!r} is the model's top prediction here")):
            make_target(rm, tokens, contrast=text)
        assert make_target(rm, tokens).token == token
    finally:
        with torch.no_grad():
            model.unembed.b_U[token] -= 1000.0


def test_special_token_target_is_traced_with_a_warning(tiny):
    from core.tracing.api import trace_prompt

    model, dicts = tiny
    eot = "<|endoftext|>"
    assert model.tokenizer.encode(eot, add_special_tokens=False) == [model.tokenizer.eos_token_id]
    res = trace_prompt(model, dicts, PROMPT, target=eot, faithfulness=False)
    assert res.graph.number_of_nodes() > 1  # traced all the same
    assert len(res.warnings) == 1 and "the target '<|endoftext|>' is a special token" in res.warnings[0]
    assert res.summary()["warnings"] == res.warnings
    res = trace_prompt(model, dicts, PROMPT, target=" Mary", contrast=eot, faithfulness=False)
    assert len(res.warnings) == 1 and res.warnings[0].startswith("the contrast '<|endoftext|>' is a special token")
    # An ordinary target: no warning.
    assert trace_prompt(model, dicts, PROMPT, target=" Mary", contrast=" John", faithfulness=False).warnings == []
