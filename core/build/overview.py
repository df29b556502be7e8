"""What the embedded default holds, for the landing page and the CLI: model, dictionaries, figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.paths import REBUILD_COMMAND, default_paths
from core.subjects.models import ArtifactError


@dataclass
class DefaultOverview:
    """The default build's model config, build manifest, evaluation figures and learning curves."""

    model_config: dict
    manifest: dict
    evaluation: dict | None
    learning_curves: list[dict]
    learning_curves_png: Path | None = None  # the build's drawing of them, when present


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
    png = paths["learning_curves_png"] if paths["learning_curves_png"].is_file() else None
    return DefaultOverview(_read(paths["model_config"]), _read(paths["manifest"]), evaluation, curves, png)


def plot_learning_curves(curves: list[dict], path: Path) -> None:
    """Save a PNG of task accuracies and held-out loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [c["tokens"] / 1e6 for c in curves]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in [k for k in curves[0] if k.endswith("_accuracy")]:
        task = key.removesuffix("_accuracy")
        (line,) = ax_acc.plot(tokens, [c[key] for c in curves], marker="o", label=task)
        # the same task on training names/nouns/templates, and agreement after verbs kept out of
        # training, where recorded
        for suffix, style, what in (
            ("training_items", "--", "training items"),
            ("validation_verbs", ":", "validation verbs"),
        ):
            if f"{task}_{suffix}" in curves[0]:
                values = [c[f"{task}_{suffix}"] for c in curves]
                ax_acc.plot(tokens, values, linestyle=style, color=line.get_color(), label=f"{task} ({what})")
    ax_acc.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax_acc.set(
        xlabel="training tokens (M)",
        ylabel="accuracy",
        ylim=(0, 1.02),
        title="tasks, held-out items (dashed: training; dotted: validation verbs)",
    )
    ax_acc.legend(fontsize="small")
    ax_loss.plot(tokens, [c["val_loss"] for c in curves], marker="o", color="black")
    ax_loss.set(xlabel="training tokens (M)", ylabel="nats/token", title="held-out Brown loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
