"""Seconds from asking for a hub model or SAE release to the clear offline error (goal < 5 s).

Imports are done first so only the failure itself is timed. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import time

os.environ.pop("HF_HUB_OFFLINE", None)  # the project's own probe must notice there is no hub

import transformer_lens  # noqa: E402,F401

from core.subjects.models import HubUnreachableError, load_model  # noqa: E402


def seconds_to_fail(fn) -> float:
    start = time.perf_counter()
    try:
        fn()
    except HubUnreachableError:
        return time.perf_counter() - start
    raise SystemExit("expected HubUnreachableError: is the hub reachable from here?")


if __name__ == "__main__":
    result = {"model_seconds": round(seconds_to_fail(lambda: load_model("gpt2")), 3)}
    try:
        from core.subjects.dictionaries import load_dictionaries

        result["release_seconds"] = round(
            seconds_to_fail(lambda: load_dictionaries("gpt2", releases=["gpt2-small-res-jb"])), 3
        )
    except ImportError:
        pass
    print(json.dumps(result))
