"""Where the embedded default's artifacts live. The build writes them; everything else only reads.

data/default/
  manifest.json            what was built, from what, with which parameters and seeds
  model/config.json        HookedTransformerConfig fields
  model/model.safetensors  weights (float16 on disk, float32 in memory)
  model/tokenizer/         transformers fast-tokenizer folder
  dictionaries/<name>/     one SAE-Lens folder each (cfg.json + sae_weights.safetensors)
  corpus/brown.jsonl.gz    the Brown Corpus as plain text, with its train/validation split
  evaluation.json          the figures printed by `python -m core evaluate-default`
  learning_curves.json     task accuracies and validation loss during model training
  learning_curves.png      the same, drawn (the home page shows it)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("SAE_EXPLORER_DATA", PROJECT_ROOT / "data"))
DEFAULT_DIR = DATA_DIR / "default"
BUILD_CACHE_DIR = DATA_DIR / "_build"  # scratch space of the build (git-ignored)

REBUILD_COMMAND = "python -m core build-default"


# set by `default_root_at` for the whole process (threads included: the autointerp engine loads models in workers)
_default_root_override: list[Path] = []


def default_root() -> Path:
    """Where the model and dictionaries named "default" are read from: `data/default`, or the root that
    `default_root_at` set around the caller."""
    return _default_root_override[-1] if _default_root_override else DEFAULT_DIR


def is_shipped_default(root: Path) -> bool:
    """Whether `root` is `data/default` itself."""
    return Path(root).resolve() == DEFAULT_DIR.resolve()


@contextmanager
def default_root_at(root: Path | None) -> Iterator[None]:
    """Within the block, resolve "default" (model, dictionaries, corpus, manifest) under `root` (None:
    `data/default`): a build written elsewhere (`build-default --out DIR`) is explained with its own model."""
    _default_root_override.append(Path(root) if root is not None else DEFAULT_DIR)
    try:
        yield
    finally:
        _default_root_override.pop()


def default_paths(root: Path | None = None) -> dict[str, Path]:
    """Paths of the default's artifacts under `root` (default: `default_root()`, i.e. `data/default`)."""
    root = root or default_root()
    return {
        "root": root,
        "manifest": root / "manifest.json",
        "model_dir": root / "model",
        "model_config": root / "model" / "config.json",
        "model_weights": root / "model" / "model.safetensors",
        "tokenizer_dir": root / "model" / "tokenizer",
        "dictionaries_dir": root / "dictionaries",
        "corpus": root / "corpus" / "brown.jsonl.gz",
        "evaluation": root / "evaluation.json",
        "learning_curves": root / "learning_curves.json",
        "learning_curves_png": root / "learning_curves.png",
    }
