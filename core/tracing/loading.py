"""What a tracing run loads, shared by the `trace`/`circuits`/`steer` commands and the pruning comparison:
the default model (or GPT-2 small through the hub path) with its transcoders and attention SAEs, the latents' ablation means, the trace settings."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def trace_params(args):
    """The `TraceParams` of the `--node-threshold ... --batch-size` flags (one per field)."""
    from core.settings import from_arguments
    from core.tracing.hierarchical import TraceParams

    return from_arguments(TraceParams, args)


RELEASES_ENV = "SAE_EXPLORER_RELEASES"  # gpt2 on the Circuits page: SAE-Lens releases, separated by spaces or commas
TRANSCODER_DIR_ENV = "SAE_EXPLORER_TRANSCODER_DIR"  # gpt2 on the Circuits page: a folder of SAE-Lens transcoder folders


def hub_sources_from_env() -> tuple[list[str] | None, Path | None]:
    """(releases, transcoder folder) for tracing a hub model where no flags are given (the app), from
    $SAE_EXPLORER_RELEASES and $SAE_EXPLORER_TRANSCODER_DIR; (None, None) when unset."""
    import os

    text = os.environ.get(RELEASES_ENV, "").replace(",", " ").split()
    folder = os.environ.get(TRANSCODER_DIR_ENV, "").strip()
    return (text or None), (Path(folder) if folder else None)


def load_subject(args):
    """The model `--model` with its attention SAEs and transcoders, and the build folder `--root`
    (None: data/default); sets torch's CPU threads (`load_tracing_subject` with the flags)."""
    import torch

    from core.subjects.models import device_and_dtype

    device, dtype = device_and_dtype(args)  # --device/--dtype (`add_device_arguments`): checked before loading
    torch.set_num_threads(args.threads)
    root = Path(args.root) if args.root else None
    model, dicts = load_tracing_subject(
        args.model,
        getattr(args, "releases", None),
        Path(args.transcoder_dir) if getattr(args, "transcoder_dir", None) else None,
        root,
        device,
        dtype,
    )
    return model, dicts, root


def load_tracing_subject(
    model_name: str = "default",
    releases: list[str] | None = None,
    transcoder_dir: Path | None = None,
    root: Path | None = None,
    device: str | None = None,
    dtype=None,
) -> tuple:
    """(model, attention SAEs and transcoders) a trace runs on.

    'default': the embedded default's folders under `root`. 'gpt2': GPT-2 small and the attention SAEs of
    the SAE-Lens `releases` (default `GPT2_DEFAULT_RELEASES`) plus the transcoders of `transcoder_dir`,
    through the hub path (`load_dictionaries`). Release names, hooks, local files and widths are checked
    before any weights load: ValueError (or ArtifactError/HubUnreachableError) with one clear line.
    """
    import torch

    from core.subjects.dictionaries import load_default_dictionaries, load_dictionaries
    from core.subjects.models import load_model

    dtype = dtype or torch.float32
    if model_name == "default" and (releases or transcoder_dir):
        raise ValueError("--releases and --transcoder-dir are for --model gpt2; the default's come from its build")
    if model_name not in ("default", "gpt2"):
        raise ValueError(f"unknown model {model_name!r}; tracing runs on default or gpt2")
    wanted = hub_tracing_ids(model_name, releases, transcoder_dir, root) if model_name == "gpt2" else None
    model = load_model(model_name, root=root, device=device, dtype=dtype)
    if wanted is None:
        dicts = tracing_dictionaries(load_default_dictionaries(root, device=device).values())
    else:
        loaded = load_dictionaries(model_name, releases, transcoder_dir, ids=wanted, device=device, root=root)
        dicts = tracing_dictionaries(loaded.values())
    for d in dicts:
        d.module.to(dtype)
    if not dicts:
        raise ValueError("the default build has no attention SAEs or transcoders to trace with")
    return model, dicts


def hub_tracing_ids(
    model_name: str, releases: list[str] | None, transcoder_dir: Path | None, root: Path | None = None
) -> list[str]:
    """The ids of the attention SAEs and transcoders a hub model's trace loads (not its residual SAEs),
    after every check `load_dictionaries` makes and the widths against the model's config, before any
    weights load. ValueError when there are no transcoders to trace with."""
    from core.subjects.dictionaries import check_dictionary_sources, check_widths
    from core.subjects.models import hub_model_width

    if transcoder_dir is not None and not transcoder_dir.is_dir():
        raise ValueError(f"--transcoder-dir {transcoder_dir} is not a folder; pass a folder of SAE-Lens folders")
    releases = list(releases) if releases is not None else None
    specs, _, _ = check_dictionary_sources(model_name, releases, transcoder_dir, [], root)  # names and hooks
    wanted = [i for i, spec in specs.items() if spec.kind in ("attn", "transcoder")]
    if not any(specs[i].kind == "transcoder" for i in wanted):
        raise ValueError(
            f"tracing {model_name} needs transcoders: pass --transcoder-dir, a folder of SAE-Lens transcoder folders"
        )
    check_dictionary_sources(model_name, releases, transcoder_dir, wanted, root)  # their files, not the others'
    d_model = hub_model_width(model_name)
    if d_model is not None:
        check_widths([specs[i] for i in wanted], d_model)
    return wanted


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
