"""CLI: `python -m core cache ...` and `python -m core workspace-info ...`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core import store
from core.cache.plan import DEFAULT_NEURON_TOPK, CacheParams, plan_corpus_contexts, resolve_dictionaries
from core.cache.run import cache_summary, run_cache
from core.paths import default_paths
from core.progress import TqdmBars
from core.settings import add_arguments, from_arguments
from core.subjects.models import add_device_arguments

CACHE_DTYPES = ("float32", "float64", "bfloat16")

# ---------------------------------------------------------------------------------------------
# CLI


def _run_cache_command(args) -> int:
    import torch

    from core.subjects.dictionaries import check_dictionary_sources, check_widths
    from core.subjects.models import device_and_dtype, hub_model_width, load_model

    device, dtype = device_and_dtype(args)  # a bad --device/--dtype is one line before anything loads
    if args.transcoder_dir and not Path(args.transcoder_dir).is_dir():
        raise ValueError(f"--transcoder-dir {args.transcoder_dir} is not a folder; pass a folder of SAE-Lens folders")
    root = Path(args.root) if args.root else None
    sae_ids = [i for i in args.dictionaries or [] if not i.startswith("neurons")]
    if args.model != "default" and (args.releases or args.transcoder_dir):
        # release names, hooks, ids and the local cache's files are checked before the model loads
        specs, wanted, _ = check_dictionary_sources(
            args.model,
            list(args.releases or []),
            Path(args.transcoder_dir) if args.transcoder_dir else None,
            sae_ids or None,
            root,
        )
        d_model = hub_model_width(args.model)
        if d_model is not None:
            check_widths([specs[i] for i in wanted], d_model)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=device, root=root, dtype=dtype)
    dicts = resolve_dictionaries(
        model,
        args.model,
        args.dictionaries,
        neurons=not args.no_neurons,
        neuron_topk=args.neuron_topk,
        neuron_layers=args.neuron_layers,
        root=root,
        device=device,
        releases=args.releases,
        transcoder_dir=Path(args.transcoder_dir) if args.transcoder_dir else None,
    )
    for d in dicts:
        if not d.is_baseline:
            d.module.to(dtype)
    params = from_arguments(CacheParams, args, ctx_len=args.ctx_len or min(128, model.cfg.n_ctx))
    corpus = Path(args.corpus) if args.corpus else default_paths(root)["corpus"]
    plan = plan_corpus_contexts(model.tokenizer, params.n_tokens, params.ctx_len, corpus, args.split)
    with TqdmBars(unit="dict", units={"caching": "tok"}, scaled={"caching"}) as bars:
        result = run_cache(
            model, dicts, Path(args.workspace), plan, params, model_name=args.model, progress=bars, restart=args.restart
        )
    if result.nothing_to_do:
        print(f"nothing to do: {len(result.skipped)} dictionaries already cached in {args.workspace}")
        return 0
    print(json.dumps(cache_summary(result, Path(args.workspace))))
    return 0


def _run_info_command(args) -> int:
    if args.migrate:
        print(f"schema version {store.migrate(Path(args.workspace))}")
    print(json.dumps(store.workspace_summary(Path(args.workspace)), indent=2, default=str))
    return 0


def register(sub) -> None:
    """Add the `cache` and `workspace-info` commands."""
    p = sub.add_parser("cache", help="cache sparse latent activations of a model's dictionaries in a DuckDB workspace")
    p.add_argument(
        "--model", default="default", help="default (embedded) or gpt2 (from the Hugging Face cache, HF_HOME)"
    )
    p.add_argument("--releases", nargs="+", help="gpt2: SAE-Lens releases, e.g. gpt2-small-res-jb")
    p.add_argument("--transcoder-dir", help="gpt2: a folder of SAE-Lens folders (e.g. transcoders)")
    p.add_argument("--workspace", required=True, help="the workspace file, e.g. runs/ws.duckdb")
    p.add_argument("--dictionaries", nargs="+", help="dictionary ids (default: every dictionary of the model)")
    p.add_argument("--no-neurons", action="store_true", help="do not add MLP-neuron baselines")
    p.add_argument("--neuron-topk", type=int, default=DEFAULT_NEURON_TOPK, help="k of the top-k neuron baseline")
    p.add_argument(
        "--neuron-layers",
        type=int,
        nargs="+",
        help="layers of the neuron baselines (default: those of the dictionaries)",
    )
    add_arguments(p, CacheParams)  # --tokens, --ctx-len, --batch-size, --chunk-contexts
    p.add_argument("--corpus", help="corpus file (default: the embedded Brown corpus)")
    p.add_argument("--split", default="train", choices=["train", "validation"])
    p.add_argument("--restart", action="store_true", help="discard an unfinished run with other parameters")
    add_device_arguments(p, CACHE_DTYPES)
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for the forward passes (default: one per core, the fastest whole job on 2 cores)",
    )
    p.add_argument("--root", help="folder of the embedded default's artifacts (default data/default)")
    p.set_defaults(run=_run_cache_command)

    q = sub.add_parser("workspace-info", help="print what a workspace holds")
    q.add_argument("--workspace", required=True)
    q.add_argument("--migrate", action="store_true", help="apply missing schema migrations first")
    q.set_defaults(run=_run_info_command)
