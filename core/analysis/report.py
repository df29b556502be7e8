"""`python -m core report`: every analysis and overlap of a workspace as one Markdown file with plots.

Steps: (1) compute and store every analysis (`core.analysis.analyses.analyze_workspace`) and, unless told not
to, every layer overlap (`core.analysis.overlap.overlap_workspace`; pairs stored with the same inputs are not
recomputed); (2) read back what is stored; (3) write `report.md`, one figure per plot (PNG through
plotly + kaleido, which needs a Chrome/Chromium; otherwise self-contained HTML next to the report),
and the table of the seed paper's claims next to ours (`core.analysis.claims`). Bootstrap seeds are fixed, so rerunning the
command on the same workspace reproduces every number.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core import store
from core.analysis import analyses as an
from core.analysis.claims import Claim, agreement_verdict, claims, fmt, fmt_ci
from core.progress import Progress

__all__ = ["Claim", "agreement_verdict", "claims", "write_report"]  # claims live in core.analysis.claims

log = logging.getLogger(__name__)


def _table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in esc]
    )


def _write_figures(figs: list[tuple[str, object]], out: Path, images: str) -> tuple[dict[str, str], str]:
    """Write figures as PNG (kaleido) or self-contained-folder HTML; returns (name -> relative path, mode used)."""
    paths: dict[str, str] = {}
    if images in ("auto", "png") and figs:
        try:
            import plotly.io as pio

            files = [out / f"{name}.png" for name, _ in figs]
            pio.write_images([f for _, f in figs], files, width=900, height=520)
            return {name: f"{name}.png" for name, _ in figs}, "png"
        except Exception as exc:  # kaleido missing or no Chrome/Chromium: fall back to HTML
            if images == "png":
                raise RuntimeError(
                    f"PNG export failed ({exc}); kaleido needs a Chrome/Chromium (`apt-get install chromium`), or use --images html"
                ) from exc
            log.warning("PNG export failed (%s); writing HTML figures", exc)
    for name, fig in figs:
        fig.write_html(
            out / f"{name}.html", include_plotlyjs="directory", full_html=True
        )  # plotly.min.js once, offline
        paths[name] = f"{name}.html"
    return paths, "html"


def _link(paths: dict[str, str], name: str, alt: str) -> str:
    p = paths.get(name)
    if p is None:
        return ""
    return f"![{alt}]({p})" if p.endswith(".png") else f"[{alt} (interactive HTML)]({p})"


def write_report(
    workspace: Path,
    out: Path,
    model_name: str = "default",
    progress: Progress | None = None,
    images: str = "auto",
    root: Path | None = None,
    overlap: bool = True,
) -> Path:
    """Compute and store every analysis (and overlap unless `overlap` is False), then write `out/report.md` with figures; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = 5
    say = progress or (lambda *_: None)
    say("analyses", 0, steps)
    computed = an.analyze_workspace(workspace)
    notes = [f"{name}: {r}" for name, r in computed.items() if isinstance(r, an.NotEnoughScores)]
    say("overlap", 1, steps)
    if overlap:
        notes += _compute_overlaps(workspace, model_name, root)
    say("reading results", 2, steps)
    results = {k: v.result for k, v in an.load_results(workspace).items()}
    overlaps = store.read_overlaps(workspace)
    prov = an.provenance(workspace)
    say("figures", 3, steps)
    paths, mode = _write_figures(_figures(results, overlaps), out, images)
    say("markdown", 4, steps)
    md = _header_md(workspace, out, prov, notes) + _claims_md(results, overlaps, prov)
    if "distributions" in results:
        md += _distributions_md(results["distributions"], paths)
    md += _conventions_md(workspace)
    if "deciles" in results:
        md += _deciles_md(results["deciles"], paths)
    if "spearman" in results:
        md += _spearman_md(results["spearman"], paths)
    if "units" in results:
        md += _units_md(results["units"], paths)
    if overlaps:
        md += _overlap_md(overlaps, paths)
    md.append(f"Figures: {mode.upper()}.")
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    say("done", 5, steps)
    return path


def _compute_overlaps(workspace: Path, model_name: str, root: Path | None) -> list[str]:
    """Compute and store the layer overlaps not stored yet; returns notes on what could not be computed."""
    from core.analysis import overlap as ov

    notes = []
    try:
        dicts = ov.workspace_dictionaries(workspace, model_name, ("resid", "attn", "transcoder"), root)
    except Exception as exc:  # report what is stored even when the weights cannot be loaded here
        dicts = None
        notes.append(f"decoder overlap not recomputed: {exc}")
    run = ov.overlap_workspace(workspace, dicts, kinds=("resid", "attn", "transcoder"))
    return notes + [f"overlap: {n}" for n in run.notes]


def _figures(results: dict, overlaps: list[store.OverlapRecord]) -> list[tuple[str, object]]:
    """(name, plotly figure) for every stored analysis and every overlap matrix of more than one layer."""
    from core.analysis import figures
    from core.analysis import overlap as ov

    figs: list[tuple[str, object]] = []
    if "distributions" in results:
        figs.append(("distributions", figures.distributions_figure(results["distributions"])))
    if "deciles" in results:
        for scorer in dict.fromkeys(c.scorer for c in results["deciles"].curves):
            figs.append((f"deciles_{scorer.split(' ')[0]}", figures.decile_figure(results["deciles"], scorer)))
    if "spearman" in results:
        figs.append(("spearman", figures.spearman_figure(results["spearman"])))
    if "units" in results:
        figs.append(("units", figures.units_figure(results["units"])))
    for similarity in ("decoder", "explanation"):
        for kind in ("resid", "attn", "transcoder", "mlp"):
            layers, mat = ov.layer_matrix(overlaps, kind, similarity)
            if len(layers) > 1:
                title = f"{kind}: {similarity} overlap (mean matched cosine)"
                chance = ov.chance_level(overlaps, kind, similarity)
                figure = figures.overlap_heatmap(layers, mat, title, chance=chance)
                figs.append((f"overlap_{similarity}_{kind}", figure))
    return figs


def _header_md(workspace: Path, out: Path, prov: an.Provenance, notes: list[str]) -> list[str]:
    """Title, provenance (explainers, scorers, the offline-baselines warning), how to reproduce, what was not computed."""
    explainers = ", ".join(f"`{e}`" + (" (baseline)" if b else "") for e, b in prov.explainers.items())
    scorers = ", ".join(f"{s} by " + "/".join(f"`{m}`" for m in ms) for s, ms in prov.scorer_models.items())
    md = [
        f"# Analysis report: `{workspace}`",
        "",
        f"Model **{prov.model}**; {prov.n_scores} ok scores of real explanations over {prov.n_latents} latents.",
        "",
        "Explainers: " + (explainers or "none") + ".  ",
        "Scorers: " + (scorers or "none") + ".",
    ]
    if prov.offline_baselines:
        md += [
            "",
            "> No LLM took part: explanations come from a token-statistics baseline explainer and every scorer is an "
            "embedding-similarity judge. The numbers test the pipeline and its statistics; they are not the seed paper's LLM measurements.",
        ]
    md += [
        "",
        f"Reproduce: `python -m core report --workspace {workspace} --out {out}` (fixed bootstrap seed {an.SEED}, "
        f"{an.BOOTSTRAP} resamples; 95% intervals).",
        "",
    ]
    if notes:
        md += ["## Not computed", ""] + [f"- {n}" for n in notes] + [""]
    return md


def _claims_md(results: dict, overlaps: list[store.OverlapRecord], prov: an.Provenance) -> list[str]:
    """The claims section: how verdicts are decided, then the table of `claims`."""
    rule = (
        "Verdicts follow fixed rules: a difference is confirmed when its 95% CI excludes 0 in the paper's direction, "
        "not confirmed when it excludes 0 the other way, inconclusive otherwise."
    )
    if prov.offline_baselines:
        rule += (
            " Every row here is measured with offline baselines (a token-statistics explainer, MiniLM-similarity judges), "
            "so a verdict says whether the pipeline reproduces the pattern with those, not whether the paper's LLM result holds."
        )
    rows = [[c.claim, c.paper, c.ours, f"**{c.verdict}**", c.note] for c in claims(results, overlaps, prov)]
    return [
        "## The seed paper's claims on this workspace",
        "",
        rule,
        "",
        _table(["claim", "paper", "ours", "verdict", "note"], rows),
        "",
    ]


def _distributions_md(d: an.Distributions, paths: dict[str, str]) -> list[str]:
    """Score distributions per scorer and strategy, then the paired contrasts between strategies."""
    from core.analysis import figures

    md = [
        f"## Score distributions by sampling strategy ({d.units}, {d.n_latents} latents)",
        "",
        _link(paths, "distributions", "distributions"),
        "",
    ]
    groups = [
        [
            g.scorer,
            figures.group_label(g.group),
            str(g.n),
            f"{fmt(g.mean)} {fmt_ci(g.ci_low, g.ci_high)}",
            fmt(g.median),
            f"{fmt(g.q25)}–{fmt(g.q75)}",
        ]
        for g in d.groups
    ]
    md.append(_table(["scorer", "group", "n", "mean [95% CI]", "median", "q25–q75"], groups))
    if d.contrasts:
        contrasts = [
            [
                c.scorer,
                f"{c.group} − {c.reference}",
                str(c.n),
                f"{fmt(c.mean_difference)} {fmt_ci(c.ci_low, c.ci_high)}",
                fmt(c.p_value, 4),
            ]
            for c in d.contrasts
        ]
        md += ["", "Paired over latents explained with both strategies (same explainer):", ""]
        md.append(_table(["scorer", "contrast", "n", "mean difference [95% CI]", "Wilcoxon p"], contrasts))
    return md + [""]


def _conventions_md(workspace: Path) -> list[str]:
    """Each yes/no scorer's accuracy under our convention and delphi's pooled one (`core.autointerp.delphi_metrics`)."""
    from core.autointerp import delphi_metrics as dm

    table = dm.conventions_table(workspace)
    if table.empty:
        return []
    cols = ["units", "group", "scorer", "negatives", "latents (ours)", "failed (ours)", dm.OURS, "latents (delphi)"]
    cols += [dm.POOLED, "precision (delphi)", "recall (delphi)", "F1 (delphi)", "AUC (delphi)"]
    rows = [
        [r[c] if isinstance(r[c], str) or c.startswith(("latents", "failed")) else fmt(r[c]) for c in cols]
        for _, r in table.iterrows()
    ]
    return [
        "## Accuracy conventions: ours vs delphi",
        "",
        f"{dm.OURS}: each latent's balanced accuracy averaged; a latent missing a class is a failed score, left out. "
        f"{dm.POOLED}: every latent's confusion matrix summed first (delphi's `result_analysis`), a missing class "
        "counting as a rate of 0; precision, recall, F1 and AUC of that pooled matrix.",
        "",
        _table(cols, [[str(c) for c in r] for r in rows]),
        "",
    ]


def _deciles_md(d: an.Deciles, paths: dict[str, str]) -> list[str]:
    """Accuracy per activation decile: one figure and table per scorer."""
    from core.analysis import figures

    md = [
        f"## Accuracy per activation decile ({d.units}, {d.n_latents} latents)",
        "",
        "Decile 0 = non-activating examples (specificity); 1..10 = activation deciles (recall), 10 the highest.",
        "",
    ]
    for scorer in dict.fromkeys(c.scorer for c in d.curves):
        rows = [
            [figures.group_label(c.group)] + [fmt(a, 2) for a in c.accuracy] for c in d.curves if c.scorer == scorer
        ]
        md += [f"### {scorer}", "", _link(paths, f"deciles_{scorer.split(' ')[0]}", f"{scorer} deciles"), ""]
        md += [_table(["group"] + figures.DECILE_LABELS, rows), ""]
    if d.skipped_scorers:
        md += [f"Not shown (continuous predictions, no yes/no accuracy): {', '.join(d.skipped_scorers)}.", ""]
    return md


def _spearman_md(m: an.SpearmanMatrix, paths: dict[str, str]) -> list[str]:
    """Scorer agreement: one row per scorer pair (upper triangle of the matrix)."""
    rows = []
    for i, a in enumerate(m.scorers):
        for j in range(i + 1, len(m.scorers)):
            rows.append([a, m.scorers[j], fmt(m.rho[i][j], 3), fmt_ci(m.ci_low[i][j], m.ci_high[i][j]), str(m.n[i][j])])
    return [
        f"## Scorer agreement (Spearman, {m.ci_method} 95% CI, {m.n_latents} latents)",
        "",
        _link(paths, "spearman", "Spearman matrix"),
        "",
        _table(["scorer", "scorer", "rho", "95% CI", "n"], rows),
        "",
    ]


def _units_md(u: an.UnitComparison, paths: dict[str, str]) -> list[str]:
    """Latents vs neurons, top-k neurons and random latents: each group's scores, then the differences."""
    groups = [
        [g.scorer, g.group, str(g.n), f"{fmt(g.mean)} {fmt_ci(g.ci_low, g.ci_high)}", fmt(g.median)] for g in u.groups
    ]
    contrasts = [
        [
            c.scorer,
            f"latents − {c.reference}",
            f"{fmt(c.mean_difference)} {fmt_ci(c.ci_low, c.ci_high)}",
            fmt(c.p_value, 4),
        ]
        for c in u.contrasts
    ]
    return [
        "## Latents vs neurons vs top-k neurons vs random latents",
        "",
        _link(paths, "units", "units"),
        "",
        _table(["scorer", "units", "n", "mean [95% CI]", "median"], groups),
        "",
        _table(["scorer", "difference", "mean [95% CI]", "Mann-Whitney p"], contrasts),
        "",
    ]


def _overlap_md(overlaps: list[store.OverlapRecord], paths: dict[str, str]) -> list[str]:
    """Layer overlap: how it is measured, a figure per (similarity, kind) drawn, and every stored pair."""
    md = [
        "## Layer overlap (Hungarian matching)",
        "",
        "Mean matched cosine; the Frobenius form ⟨A, PB⟩_F / (‖A‖_F‖B‖_F) is in the table (equal to it for unit rows and equal widths). "
        "Chance is the same matching between two dictionaries of random Gaussian directions of the same shape: "
        "many latents in few dimensions find well-aligned partners even when unrelated.",
        "",
    ]
    for similarity in ("decoder", "explanation"):
        for kind in ("resid", "attn", "transcoder", "mlp"):
            name = f"overlap_{similarity}_{kind}"
            if name in paths:
                md += [f"### {kind}, {similarity} similarity", "", _link(paths, name, name), ""]
    rows = [
        [
            r.similarity,
            r.dict_a,
            r.dict_b,
            str(r.n_matched),
            fmt(r.mean_similarity),
            fmt(r.frobenius),
            fmt(r.params.get("chance")),
            r.method,
        ]
        for r in overlaps
    ]
    header = ["similarity", "dictionary A", "dictionary B", "pairs", "mean", "frobenius", "chance", "method"]
    return md + [_table(header, rows), ""]
