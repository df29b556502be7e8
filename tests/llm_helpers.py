"""A scripted in-process litellm provider for tests: `scripted/<name>` models answer with a Python function.

    with scripted_llm(lambda messages, params: "reply text") as calls:
        ... code that calls core.llm.client with model "scripted/test" ...
    calls  # every request the provider received: (model, messages, params)

The function may return a string, a `Scripted(text, finish_reason, logprobs)` for truncation or
log-probabilities, or raise an exception (e.g. `litellm.RateLimitError(...)`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Scripted:
    """A reply with control over finish_reason and logprobs `[(token, logprob, [(alt, logprob), ...])]`."""

    text: str | None
    finish_reason: str = "stop"
    logprobs: list | None = None
    usage: tuple[int, int] = (10, 5)


@dataclass
class Calls:
    """Requests the scripted provider received."""

    requests: list[tuple[str, list, dict]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requests)


def _response(model: str, reply):
    import litellm
    from litellm.types.utils import ChoiceLogprobs, Choices, Message, ModelResponse, Usage

    if not isinstance(reply, Scripted):
        reply = Scripted(reply)
    logprobs = None
    if reply.logprobs is not None:
        logprobs = ChoiceLogprobs(
            content=[
                {
                    "token": t,
                    "logprob": lp,
                    "bytes": None,
                    "top_logprobs": [{"token": a, "logprob": alp, "bytes": None} for a, alp in alts],
                }
                for t, lp, alts in reply.logprobs
            ]
        )
    choice = Choices(
        index=0,
        finish_reason=reply.finish_reason,
        message=Message(content=reply.text, role="assistant"),
        logprobs=logprobs,
    )
    del litellm
    return ModelResponse(
        model=model,
        choices=[choice],
        usage=Usage(prompt_tokens=reply.usage[0], completion_tokens=reply.usage[1], total_tokens=sum(reply.usage)),
    )


_state: dict = {"fn": None, "calls": None, "latency": 0.0}
_registered = False


def _register() -> None:
    """Register provider `scripted` once per process (litellm keeps the first handler of a name)."""
    global _registered
    if _registered:
        return
    import asyncio

    import litellm
    from litellm import CustomLLM
    from litellm.utils import custom_llm_setup

    def answer(model, messages, kwargs):
        fn, calls = _state["fn"], _state["calls"]
        if fn is None:
            raise RuntimeError("scripted provider called outside scripted_llm()")
        params = dict(kwargs.get("optional_params") or {})
        calls.requests.append((model, messages, params))
        return _response(model, fn(messages, params))

    class _Provider(CustomLLM):
        def completion(self, model, messages, *args, **kwargs):
            if _state["latency"]:
                time.sleep(_state["latency"])
            return answer(model, messages, kwargs)

        async def acompletion(self, model, messages, *args, **kwargs):
            if _state["latency"]:
                await asyncio.sleep(_state["latency"])
            return answer(model, messages, kwargs)

    litellm.custom_provider_map = list(litellm.custom_provider_map) + [
        {"provider": "scripted", "custom_handler": _Provider()}
    ]
    custom_llm_setup()
    _registered = True


@contextmanager
def scripted_llm(fn: Callable[[list, dict], object], latency_s: float = 0.0):
    """Make model `scripted/<anything>` answer with `fn(messages, optional_params)` for the duration of the block."""
    _register()
    calls = Calls()
    old = dict(_state)
    _state.update(fn=fn, calls=calls, latency=latency_s)
    try:
        yield calls
    finally:
        _state.update(old)
