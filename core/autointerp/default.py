"""Explanations and scores of the default workspace: every live latent, the offline explainer, every offline scorer.

`ensure_default_explanations(workspace, progress)` runs the engine with the `baseline:token-stats`
explainer (strategy `top`) and all six scorers with their offline models (judge:minilm-similarity,
lm:default, embedding:all-MiniLM-L6-v2), plus the random-explanation and random-latent baselines,
on every dictionary of the workspace. It is resumable and a no-op once done (a marker in
workspace_info records the spec it completed).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from core import store
from core.autointerp.engine import ProgressFn, RunReport, RunSpec, run
from core.autointerp.scorers import SCORERS

DEFAULT_SPEC = RunSpec(scorers=SCORERS, random_explanations=True, random_latents=32, chunk=512)
DONE_KEY = "default_explanations"


def _spec_key(spec: RunSpec, dictionaries: list[str]) -> str:
    return json.dumps({"spec": asdict(spec), "dictionaries": dictionaries}, sort_keys=True, default=str)


def default_explanations_ready(workspace: Path, spec: RunSpec = DEFAULT_SPEC) -> bool:
    """True if `ensure_default_explanations` already completed on this workspace with this spec."""
    if not Path(workspace).exists():
        return False
    try:
        with store.session(workspace) as con:
            done = store.get_info(con, DONE_KEY)
            dicts = [d.id for d in store.dictionaries(con) if d.status == "ready"]
    except store.WorkspaceError:
        return False
    return bool(done) and done.get("key") == _spec_key(spec, dicts)


def ensure_default_explanations(
    workspace: Path | None = None,
    progress: ProgressFn | None = None,
    spec: RunSpec = DEFAULT_SPEC,
    dictionaries: list[str] | None = None,
) -> RunReport | None:
    """Explain (baseline) and score (all offline scorers) every live latent of the workspace's dictionaries.

    `workspace` defaults to the default workspace. Returns the run's report, or None if it was already done.
    """
    from core.cache import DEFAULT_WORKSPACE

    workspace = Path(workspace) if workspace is not None else DEFAULT_WORKSPACE
    if dictionaries is None and default_explanations_ready(workspace, spec):
        return None
    dicts = dictionaries or [d.id for d in store.list_dictionaries(workspace, ready_only=True)]
    report = run(workspace, dicts, spec, progress=progress)
    if dictionaries is None:
        with store.session(workspace, write=True) as con:
            store.set_info(
                con,
                DONE_KEY,
                {"key": _spec_key(spec, dicts), "seconds": round(report.seconds, 1), "timings": report.timings},
            )
    return report
