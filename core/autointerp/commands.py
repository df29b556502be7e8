"""CLI: `python -m core explain ...` and `python -m core score ...` (registered in core/cli.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.errors import UserError
from core.progress import TqdmBars
from core.subjects.models import add_device_arguments

MODEL_DTYPES = ("float32", "float64", "bfloat16")  # the LM scorers read logits in float32 whatever the weights


def _latent_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"--latents takes comma-separated integers, e.g. 1,2,3 (got {text!r})") from None


def _dictionaries(workspace: Path, given: list[str] | None) -> list[str]:
    from core import store

    if not workspace.exists():
        raise UserError(
            f"workspace {workspace} does not exist; build it with `python -m core cache --workspace {workspace} ...`"
        )
    ready = [d.id for d in store.list_dictionaries(workspace, ready_only=True)]
    if given:
        return given
    if not ready:
        raise UserError(f"{workspace} has no cached dictionaries")
    return ready


def _spec(args, scorers: tuple[str, ...], explain_missing: bool):
    from core.autointerp.engine import RunSpec
    from core.autointerp.examples import DEFAULT_NEGATIVES, SamplingParams
    from core.autointerp.explainers import BASELINE_EXPLAINER, CONTRASTIVE_BASELINE, ExplainerParams

    explainer = BASELINE_EXPLAINER if args.explainer in (None, "baseline", BASELINE_EXPLAINER) else args.explainer
    contrastive = bool(getattr(args, "contrastive", False)) or explainer == CONTRASTIVE_BASELINE
    if contrastive and explainer == BASELINE_EXPLAINER:
        explainer = CONTRASTIVE_BASELINE
    try:
        sampling = SamplingParams(strategy=args.strategy, n_train=args.n_train, window=args.window, seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    options = {}
    if getattr(args, "n_per_prompt", None):
        options = {"detection": {"n_per_prompt": args.n_per_prompt}, "fuzzing": {"n_per_prompt": args.n_per_prompt}}
    if getattr(args, "fuzzing_variant", "alternate") != "alternate":
        options.setdefault("fuzzing", {})["variant"] = args.fuzzing_variant
    return RunSpec(
        explainer=explainer,
        sampling=sampling,
        explainer_params=ExplainerParams(
            activations=not args.no_activations,
            chain_of_thought=args.cot,
            contrastive=contrastive and explainer != CONTRASTIVE_BASELINE,
        ),
        scorers=scorers,
        scorer_model=None if getattr(args, "model", None) in (None, "judge") else args.model,
        scorer_options=options,
        random_explanations=not args.no_random_explanations,
        random_latents=args.random_latents,
        concurrency=args.concurrency,
        explain_missing=explain_missing,
        negatives=getattr(args, "negatives", None) or DEFAULT_NEGATIVES,
        n_neighbours=getattr(args, "neighbours", None) or 10,
    )


def _subject_on_device(args, workspace: Path) -> None:
    """Check `--device`/`--dtype` (before any work) and, unless they are the defaults' cpu/float32, load the
    workspace's subject model there once for the scorers that run it (surprisal, intervention, random latents)."""
    import torch

    from core.subjects.models import device_and_dtype

    device, dtype = device_and_dtype(args)
    if (device, dtype) == ("cpu", torch.float32) or not workspace.exists():
        return
    from core import store
    from core.autointerp.scorers.surprisal import register_lm
    from core.subjects.models import load_model

    name = store.workspace_summary(workspace)["model"]["name"]
    model = load_model(name, device=device, dtype=dtype)
    model.eval()
    register_lm(name, model)


def _run(args, scorers: tuple[str, ...], explain_missing: bool) -> int:
    from core.autointerp.engine import run

    workspace = Path(args.workspace)
    _subject_on_device(args, workspace)  # a bad --device/--dtype is one line before anything else
    dicts = _dictionaries(workspace, args.dictionary)
    spec = _spec(args, scorers, explain_missing)
    with TqdmBars(unit="latent") as bars:
        report = run(workspace, dicts, spec, latents=_latent_list(args.latents), sample=args.sample, progress=bars)
    out = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in report.__dict__.items() if k != "timings"}
    out["timings"] = {k: round(v, 1) for k, v in report.timings.items()}
    print(json.dumps(out, default=str))
    return 0


def _run_explain(args) -> int:
    args.explainer = args.model
    return _run(args, (), True)


def _run_score(args) -> int:
    scorers = tuple(s.strip() for s in args.scorers.split(",") if s.strip())
    if not scorers:
        raise UserError(
            "--scorers needs at least one of detection,fuzzing,simulation,surprisal,embedding,intervention,intruder"
        )
    return _run(args, scorers, explain_missing=False)


def _run_explain_default(args) -> int:
    from core.autointerp.default import STAGES
    from core.autointerp.default_job import job_files, run_default_job
    from core.cache.workspace import DEFAULT_WORKSPACE

    workspace = Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE
    _subject_on_device(args, workspace)  # a bad --device/--dtype is one line before anything else
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise UserError(f"--stages takes a comma-separated subset of {','.join(STAGES)} (got {args.stages!r})")
    if not workspace.exists():
        raise UserError(
            f"workspace {workspace} does not exist; the app builds the default one on its first start "
            f"(or `python -m core cache --workspace {workspace} ...`)"
        )
    if args.nice:
        os.nice(args.nice)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with TqdmBars(unit="latent") as bars:
        status = run_default_job(workspace, stages, progress=bars, wait_lock=args.wait_lock)
    print(f"done; status in {job_files(workspace)['status']}", file=sys.stderr)
    print(json.dumps({"state": status.state, "seconds": status.seconds, "stages": status.stages}))
    return 0


def _run_export_neuronpedia(args) -> int:
    from dataclasses import asdict

    from core.autointerp.neuronpedia_export import export_neuronpedia

    summary = export_neuronpedia(
        Path(args.workspace),
        Path(args.out),
        dictionaries=args.dictionary,
        sample=args.sample,
        n_examples=args.examples,
        seed=args.seed,
        creator_id=args.creator_id,
    )
    out = asdict(summary)
    out["seconds"] = round(out["seconds"], 2)
    print(json.dumps(out))
    return 0


def _common(p) -> None:
    p.add_argument("--workspace", required=True, help="the workspace file (built by `python -m core cache`)")
    p.add_argument("--dictionary", nargs="+", help="dictionary ids (default: every cached dictionary)")
    p.add_argument("--latents", help="comma-separated latent ids, e.g. 1,2,3 (default: every live latent)")
    p.add_argument("--sample", type=int, help="a seeded random sample of N live latents per dictionary")
    p.add_argument(
        "--strategy",
        default="top",
        choices=["top", "random", "quantile"],
        help="how the explainer's examples are sampled",
    )
    p.add_argument("--n-train", type=int, default=20, help="examples shown to the explainer")
    p.add_argument("--window", type=int, default=32, help="tokens per example window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-activations", action="store_true", help="LLM explainer: do not show activation values")
    p.add_argument("--cot", action="store_true", help="LLM explainer: ask for chain of thought")
    p.add_argument(
        "--contrastive",
        action="store_true",
        help="contrastive explainer: also show near misses (windows of the latent's typical tokens where it is silent); "
        "with the baseline, the offline baseline:contrastive-token-stats",
    )
    p.add_argument("--no-random-explanations", action="store_true", help="skip the random-explanation baseline rows")
    p.add_argument(
        "--random-latents",
        type=int,
        default=0,
        help="also explain/score N random-direction latents per dictionary (baseline)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="LLM calls in flight at once")
    add_device_arguments(p, MODEL_DTYPES)  # the subject model of surprisal, intervention and random latents


def register(sub) -> None:
    """Add the `explain` and `score` commands."""
    p = sub.add_parser(
        "explain", help="explain latents with an LLM (any litellm model id) or the offline token-statistics baseline"
    )
    _common(p)
    p.add_argument(
        "--model",
        default="baseline",
        help="litellm model id (e.g. openai/gpt-4o-mini; key from the environment) or 'baseline'",
    )
    p.set_defaults(run=_run_explain)

    q = sub.add_parser(
        "score",
        help="score stored explanations: detection, fuzzing, simulation, surprisal, embedding, intervention, intruder",
    )
    _common(q)
    q.add_argument(
        "--scorers",
        required=True,
        help="comma-separated: detection,fuzzing,simulation,surprisal,embedding,intervention,intruder",
    )
    q.add_argument(
        "--model",
        default="judge",
        help="LLM for detection/fuzzing/simulation/intruder (litellm id), or 'judge' for the offline judges",
    )
    q.add_argument(
        "--explainer", default="baseline", help="whose explanations to score: 'baseline' or the explainer's litellm id"
    )
    q.add_argument("--n-per-prompt", type=int, default=5, help="detection/fuzzing examples per prompt")
    q.add_argument(
        "--negatives",
        default="random+hard",
        choices=["random+hard", "neighbours:decoder", "neighbours:encoder", "neighbours:cooccurrence"],
        help="non-activating examples: random windows + the latent's typical tokens (default), or windows where its "
        "nearest latents (by decoder cosine, encoder cosine, or co-occurrence in the cache) fire and it does not",
    )
    q.add_argument(
        "--fuzzing-variant",
        default="alternate",
        choices=["alternate", "delphi"],
        help="fuzzing: alternate right/wrong marks on activating windows (default), or delphi's: every activating "
        "window marked right, random marks on non-activating ones",
    )
    q.add_argument("--neighbours", type=int, default=10, help="neighbours per latent for --negatives neighbours:*")
    q.set_defaults(run=_run_score)

    r = sub.add_parser(
        "explain-default",
        help="explain (baseline) and score (every offline scorer) every latent of a default workspace; resumable",
    )
    r.add_argument("--workspace", help="the workspace (default: the embedded default's, data/default/workspace.duckdb)")
    r.add_argument(
        "--stages",
        default="fast,slow",
        help="fast = detection, fuzzing, simulation, embedding; slow = surprisal, intervention (default: both)",
    )
    r.add_argument("--wait-lock", type=float, default=0.0, help="seconds to wait for another job's lock")
    r.add_argument("--nice", type=int, default=0, help="raise the process's niceness by N")
    r.add_argument("--threads", type=int, help="torch CPU threads")
    add_device_arguments(r, MODEL_DTYPES)
    r.set_defaults(run=_run_explain_default)

    e = sub.add_parser(
        "export-neuronpedia",
        help="write latents, their top activations, explanations and scores in Neuronpedia's bulk-import format",
    )
    e.add_argument("--workspace", required=True, help="the workspace to export (only read)")
    e.add_argument("--out", required=True, help="a new folder to write (must not exist)")
    e.add_argument("--dictionary", nargs="+", help="dictionary ids (default: every cached dictionary)")
    e.add_argument("--sample", type=int, help="a seeded random sample of N live latents per dictionary (default: all)")
    e.add_argument("--examples", type=int, default=20, help="top-activating contexts exported per latent")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--creator-id", default="sae-circuit-explorer", help="Neuronpedia creator/author id on every row")
    e.set_defaults(run=_run_export_neuronpedia)
