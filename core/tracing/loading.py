"""What a tracing run loads, shared by the `trace`/`circuits` commands and the pruning comparison:
the default model with its transcoders and attention SAEs, the latents' ablation means, the trace settings."""

from __future__ import annotations

from pathlib import Path


def trace_params(args):
    """The `TraceParams` of the `--node-threshold ... --batch-size` flags."""
    from core.tracing.hierarchical import TraceParams

    return TraceParams(
        node_threshold=args.node_threshold,
        max_parents=args.max_parents,
        edge_threshold=args.edge_threshold,
        max_depth=args.max_depth,
        max_latents=args.max_latents,
        batch_size=args.batch_size,
    )


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
    dicts = [d for d in load_default_dictionaries(root).values() if d.kind in ("attn", "transcoder")]
    if not dicts:
        raise ValueError("the default build has no attention SAEs or transcoders to trace with")
    return model, dicts, root


def ablation_means(args, model, dicts, root):
    """Each latent's mean activation over corpus windows for mean ablation (cached under
    data/_build/tracing), or None with `--ablation zero`."""
    from core.paths import BUILD_CACHE_DIR, default_paths
    from core.tracing.ablation import load_or_compute_means

    if args.ablation != "mean":
        return None
    corpus = default_paths(root)["corpus"]
    if not corpus.exists():
        raise FileNotFoundError(f"{corpus} is missing: mean ablation needs corpus text (or pass --ablation zero)")
    return load_or_compute_means(model, dicts, corpus, BUILD_CACHE_DIR / "tracing", n_windows=args.means_windows)
