"""CLI: `python -m core analyze`, `python -m core overlap` and `python -m core report` (registered in core/cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import UserError
from core.progress import TqdmBars


def prepare_workspace(workspace: Path) -> None:
    """Refuse a missing workspace; bring an existing one to the current schema (the analysis tables are added by migration)."""
    from core import store

    if not Path(workspace).exists():
        raise store.WorkspaceError(
            f"workspace {workspace} does not exist; build it with `python -m core cache --workspace {workspace} ...`"
        )
    store.migrate(Path(workspace))


def _run_analyze(args) -> int:
    from core.analysis import analyses as analysis

    ws = Path(args.workspace)
    prepare_workspace(ws)
    names = tuple(analysis.ANALYSES if "all" in args.what else args.what)
    bar = TqdmBars(unit="analysis")
    try:
        results = analysis.analyze_workspace(ws, names, units=args.units, progress=bar)
    finally:
        bar.close()
    done, missing = {}, {}
    for name, r in results.items():
        if isinstance(r, analysis.NotEnoughScores):
            print(f"{name}: {r}")
            missing[name] = {"have": r.have, "need": r.need}
        else:
            done[name] = analysis._n_latents(r)
    print(json.dumps({"workspace": str(ws), "computed": done, "not_enough_scores": missing}))
    if not done:
        raise UserError(next(iter(str(r) for r in results.values())))
    return 0


def _run_overlap(args) -> int:
    import time

    from core.analysis import overlap

    ws = Path(args.workspace)
    prepare_workspace(ws)
    kinds = tuple(args.kinds)
    dicts = None
    if "decoder" in args.similarity:
        dicts = overlap.workspace_dictionaries(ws, args.model, kinds, Path(args.root) if args.root else None)
    bar = TqdmBars(unit="pair")
    t0 = time.perf_counter()
    try:
        run = overlap.overlap_workspace(
            ws,
            dicts,
            tuple(args.similarity),
            kinds,
            args.method,
            args.k,
            args.force,
            bar,
            explainer=args.explainer,
            strategy=args.strategy,
        )
    finally:
        bar.close()
    for note in run.notes:
        print(f"note: {note}")
    for r in run.computed:
        print(
            f"{r.similarity:11s} {r.dict_a} ~ {r.dict_b}: mean {r.mean_similarity:.3f}  frobenius {r.frobenius:.3f}  "
            f"({r.n_matched} pairs, {r.method}, {r.seconds:.2f} s)"
        )
    print(
        json.dumps(
            {
                "workspace": str(ws),
                "computed": len(run.computed),
                "skipped_already_stored": len(run.skipped),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    )
    if not run.computed and not run.skipped:
        raise UserError("nothing to compare: " + "; ".join(run.notes or ["no dictionary pairs of those kinds"]))
    return 0


def _run_report(args) -> int:
    from core.analysis import report

    ws = Path(args.workspace)
    prepare_workspace(ws)
    bar = TqdmBars(desc="report", unit="step")
    try:
        path = report.write_report(
            ws,
            Path(args.out),
            model_name=args.model,
            progress=bar,
            images=args.images,
            root=Path(args.root) if args.root else None,
            overlap=not args.no_overlap,
        )
    finally:
        bar.close()
    print(json.dumps({"report": str(path)}))
    return 0


def register(sub) -> None:
    """Add the `analyze`, `overlap` and `report` commands."""
    from core.analysis.analyses import ANALYSES
    from core.analysis.overlap import DEFAULT_K, OVERLAP_KINDS, SIMILARITIES

    p = sub.add_parser(
        "analyze",
        help="score distributions, decile curves, scorer Spearman matrix, latents vs neurons; stored in the workspace",
    )
    p.add_argument("--workspace", required=True)
    p.add_argument("--what", nargs="+", default=["all"], choices=["all", *ANALYSES])
    p.add_argument(
        "--units",
        default="latents",
        choices=["latents", "neurons", "top-k neurons"],
        help="whose scores the distributions, deciles and Spearman use (default: SAE latents)",
    )
    p.set_defaults(run=_run_analyze)

    q = sub.add_parser(
        "overlap", help="Hungarian overlap between the layers of each dictionary kind; stored in the workspace"
    )
    q.add_argument("--workspace", required=True)
    q.add_argument("--model", default="default", help="model whose dictionaries the workspace caches (default or gpt2)")
    q.add_argument("--similarity", nargs="+", default=list(SIMILARITIES), choices=list(SIMILARITIES))
    q.add_argument("--kinds", nargs="+", default=["resid", "attn", "transcoder"], choices=list(OVERLAP_KINDS))
    q.add_argument(
        "--method",
        default="auto",
        choices=["auto", "dense", "sparse"],
        help="dense Hungarian, or the certified sparse matching (both exact; auto: dense while its matrices fit in half the free memory)",
    )
    q.add_argument("--k", type=int, default=DEFAULT_K, help="candidates per latent in the sparse method")
    q.add_argument("--explainer", help="explainer whose explanations to compare (default: the most common)")
    q.add_argument("--strategy", help="sampling strategy of those explanations (default: top)")
    q.add_argument("--force", action="store_true", help="recompute pairs already stored with the same inputs")
    q.add_argument("--root", help="folder of the embedded default's artifacts (default data/default)")
    q.set_defaults(run=_run_overlap)

    r = sub.add_parser(
        "report", help="compute every analysis and overlap, then write a Markdown summary with PNG plots"
    )
    r.add_argument("--workspace", required=True)
    r.add_argument("--out", required=True, help="folder for report.md and its figures")
    r.add_argument("--model", default="default")
    r.add_argument(
        "--images",
        default="auto",
        choices=["auto", "png", "html"],
        help="png needs kaleido with a Chrome/Chromium; auto falls back to self-contained HTML figures",
    )
    r.add_argument("--no-overlap", action="store_true", help="skip the overlap computation (use what is stored)")
    r.add_argument("--root", help="folder of the embedded default's artifacts (default data/default)")
    r.set_defaults(run=_run_report)
