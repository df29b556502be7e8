"""What the embedded default holds, for the landing page and the CLI: model, dictionaries, figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.models import ArtifactError
from core.paths import REBUILD_COMMAND, default_paths


@dataclass
class DefaultOverview:
    """The default build's model config, build manifest, evaluation figures and learning curves."""

    model_config: dict
    manifest: dict
    evaluation: dict | None
    learning_curves: list[dict]


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); rebuild with `{REBUILD_COMMAND}`") from exc


def default_overview(root: Path | None = None) -> DefaultOverview:
    """Read the default's JSON artifacts (no model load); ArtifactError names a missing or corrupt file."""
    paths = default_paths(root)
    for key in ("model_config", "manifest"):
        if not paths[key].exists():
            raise ArtifactError(f"{paths[key]} is missing; build the default with `{REBUILD_COMMAND}`")
    evaluation = _read(paths["evaluation"]) if paths["evaluation"].exists() else None
    curves = _read(paths["learning_curves"]) if paths["learning_curves"].exists() else []
    return DefaultOverview(_read(paths["model_config"]), _read(paths["manifest"]), evaluation, curves)
