"""Explanations and scores of the default workspace: every live latent, the offline explainer, every offline scorer.

`ensure_default_explanations(workspace, progress)` runs the engine on every dictionary of the
workspace with the `baseline:token-stats` explainer (strategy `top`), the random-explanation and
random-latent baselines, and all six scorers with their offline models, in two stages:

    fast   detection, fuzzing, simulation (judge:minilm-similarity) and embedding (all-MiniLM-L6-v2):
           vectorised judges over window/token embeddings computed once per workspace
    slow   surprisal (lm:<the workspace's model>) and intervention (steering the subject model):
           forward passes of the subject model for every latent

Each stage is resumable and a no-op once done (a marker in workspace_info records the spec it
completed), so the app can run `fast` on first start and `slow` afterwards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from core import store
from core.autointerp.engine import RunReport, RunSpec, run
from core.progress import Progress

STAGES = {
    "fast": ("detection", "fuzzing", "simulation", "embedding"),
    "slow": ("surprisal", "intervention"),
}
DEFAULT_SPEC = RunSpec(random_explanations=True, random_latents=32, chunk=512)


def _marker(stage: str) -> str:
    return f"default_explanations:{stage}"


_LATER_FIELDS = {"negatives": RunSpec.negatives, "n_neighbours": RunSpec.n_neighbours}  # RunSpec fields added later


def _spec_key(spec: RunSpec, dictionaries: list[str]) -> str:
    # fields added after workspaces were marked done are left out at their defaults, so those stay done
    d = {k: v for k, v in asdict(spec).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
    d["explainer_params"] = spec.explainer_params.to_dict()  # drops `contrastive` (added later) when unset
    return json.dumps({"spec": d, "dictionaries": dictionaries}, sort_keys=True, default=str)


def stage_spec(stage: str, base: RunSpec = DEFAULT_SPEC) -> RunSpec:
    """The run spec of one stage ('fast' | 'slow')."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    return replace(base, scorers=STAGES[stage])


def default_explanations_ready(
    workspace: Path, stages: tuple[str, ...] = tuple(STAGES), base: RunSpec = DEFAULT_SPEC
) -> bool:
    """True if every stage in `stages` already completed on this workspace with this spec."""
    if not Path(workspace).exists():
        return False
    try:
        with store.session(workspace) as con:
            dicts = [d.id for d in store.dictionaries(con) if d.status == "ready"]
            done = {s: store.get_info(con, _marker(s)) for s in stages}
    except store.WorkspaceError:
        return False
    return all(d and d.get("key") == _spec_key(stage_spec(s, base), dicts) for s, d in done.items())


def ensure_default_explanations(
    workspace: Path | None = None,
    progress: Progress | None = None,
    stages: tuple[str, ...] = tuple(STAGES),
    base: RunSpec = DEFAULT_SPEC,
) -> dict[str, RunReport]:
    """Explain (baseline) and score (offline scorers) every live latent of the workspace's dictionaries, stage by stage.

    `workspace` defaults to the default workspace. Returns the report of each stage that ran (empty if all were done).
    """
    from core.cache.workspace import DEFAULT_WORKSPACE

    workspace = Path(workspace) if workspace is not None else DEFAULT_WORKSPACE
    dicts = [d.id for d in store.list_dictionaries(workspace, ready_only=True)]
    reports: dict[str, RunReport] = {}
    for stage in stages:
        spec = stage_spec(stage, base)
        if default_explanations_ready(workspace, (stage,), base):
            continue
        report = run(workspace, dicts, spec, progress=progress)
        with store.session(workspace, write=True) as con:
            store.set_info(
                con,
                _marker(stage),
                {
                    "key": _spec_key(spec, dicts),
                    "seconds": round(report.seconds, 1),
                    "timings": {k: round(v, 1) for k, v in report.timings.items()},
                },
            )
        reports[stage] = report
    return reports
