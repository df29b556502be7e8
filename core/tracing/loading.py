"""What a tracing run loads, shared by the `trace`/`circuits` commands and the pruning comparison:
the default model with its transcoders and attention SAEs, the latents' ablation means, the trace settings."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def trace_params(args):
    """The `TraceParams` of the `--node-threshold ... --batch-size` flags (one per field)."""
    from core.settings import from_arguments
    from core.tracing.hierarchical import TraceParams

    return from_arguments(TraceParams, args)


def load_subject(args):
    """The default model and its attention SAEs and transcoders, and the build folder `--root`
    (None: data/default); sets torch's CPU threads. ValueError for another model or a build without them."""
    import torch

    from core.subjects.dictionaries import load_default_dictionaries
    from core.subjects.models import load_model

    torch.set_num_threads(args.threads)
    if args.model != "default":
        raise ValueError(
            f"tracing needs transcoders for the model; only the embedded default has them (got --model {args.model})"
        )
    root = Path(args.root) if args.root else None
    model = load_model("default", root=root)
    dicts = tracing_dictionaries(load_default_dictionaries(root).values())
    if not dicts:
        raise ValueError("the default build has no attention SAEs or transcoders to trace with")
    return model, dicts, root


def tracing_dictionaries(dictionaries: Iterable) -> list:
    """The dictionaries a trace uses: the attention SAEs and transcoders (not MLP neurons or residual SAEs)."""
    return [d for d in dictionaries if d.kind in ("attn", "transcoder")]


def means_location(root: Path | None = None) -> tuple[Path, Path]:
    """(corpus text, cache folder) of the latents' ablation means: the build's corpus (`root`, None:
    data/default) and data/_build/tracing. `trace_prompt(corpus_path=..., cache_dir=...)` takes them."""
    from core.paths import BUILD_CACHE_DIR, default_paths

    return default_paths(root)["corpus"], BUILD_CACHE_DIR / "tracing"


def latent_means(model, dicts, root: Path | None = None, n_windows: int = 64) -> dict:
    """Each latent's mean activation over `n_windows` corpus windows, for mean ablation (computed
    once, then read from the cache folder of `means_location`): {dictionary id: [d_sae]}.
    FileNotFoundError if the build has no corpus."""
    from core.tracing.ablation import load_or_compute_means

    corpus, cache_dir = means_location(root)
    if not corpus.exists():
        raise FileNotFoundError(f"{corpus} is missing: mean ablation needs corpus text (or pass --ablation zero)")
    return load_or_compute_means(model, dicts, corpus, cache_dir, n_windows=n_windows)


def ablation_means(args, model, dicts, root):
    """`latent_means` over `--means-windows` windows, or None with `--ablation zero`."""
    if args.ablation != "mean":
        return None
    return latent_means(model, dicts, root, n_windows=args.means_windows)
