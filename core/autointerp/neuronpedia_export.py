"""`python -m core export-neuronpedia`: a workspace's latents, activations, explanations and scores in Neuronpedia's
bulk-import layout (the one SAEDashboard's `neuronpedia_export.py` writes), read back and checked before it returns.

Layout, one source per dictionary (`{layer}-{set name}`, e.g. `1-sce-resid-pre`):

    OUT/{model id}/{source id}/
        release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl     one row each
        features/batch-{i}.jsonl.gz       one Neuron row per latent (maxActApprox, frac_nonzero, hookName, ...)
        activations/batch-{i}.jsonl.gz    one Activation row per top context: every token's text and the latent's value
        explanations/batch-{i}.jsonl.gz   one Explanation row per ok explanation (baselines too, named in typeName/notes)
        explanation_scores/batch-{i}.jsonl.gz  one ExplanationScore row per ok score (scorer, scorer model, params)

Field names follow Neuronpedia's Prisma schema (Neuron, Activation, Explanation, ExplanationScore). Steps:
1. check OUT does not exist and its parent is writable (else a UserError; nothing is written);
2. per dictionary: pick latents (all live, or a seeded sample of n), the `n_examples` contexts where each fires
   most, and the stored explanations and scores; write the batches;
3. `read_export(OUT)` reads every file back and checks fields, types and cross references.
The workspace is only read. On any failure the half-written OUT is removed.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core import store
from core.errors import UserError

log = logging.getLogger(__name__)

SET_PREFIX = "sce"  # SAE Circuit Explorer
BATCH = 1024  # features per batch file
DEFAULT_CREATOR = "sae-circuit-explorer"

FEATURE_FIELDS = (
    "modelId",
    "layer",
    "index",
    "creatorId",
    "createdAt",
    "maxActApprox",
    "hasVector",
    "hookName",
    "frac_nonzero",
)
ACTIVATION_FIELDS = (
    "id",
    "tokens",
    "index",
    "layer",
    "modelId",
    "maxValue",
    "maxValueTokenIndex",
    "minValue",
    "values",
    "creatorId",
)
EXPLANATION_FIELDS = ("id", "modelId", "layer", "index", "description", "authorId", "typeName", "explanationModelName")
SCORE_FIELDS = (
    "id",
    "initiatedByUserId",
    "value",
    "explanationId",
    "explanationScoreTypeName",
    "explanationScoreModelName",
)


class ExportError(UserError):
    """The export folder could not be written, or what was written does not read back as Neuronpedia rows."""


@dataclass
class ExportSummary:
    """What an export holds (counted when read back) and how long it took."""

    out: str
    sources: list[str] = field(default_factory=list)
    features: int = 0
    activations: int = 0
    explanations: int = 0
    scores: int = 0
    seconds: float = 0.0


def source_id(layer: int, dictionary: str) -> tuple[str, str]:
    """(Neuronpedia source id, source-set name) of a dictionary id: `resid:blocks.1.hook_resid_pre` -> `1-sce-resid-resid-pre`."""
    kind, _, hook = dictionary.partition(":")
    point = re.sub(r"^blocks\.\d+\.", "", hook).replace("hook_", "")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{kind}-{point}".lower()).strip("-")
    name = f"{SET_PREFIX}-{slug}"
    return f"{layer}-{name}", name


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _write_jsonl(path: Path, rows: list[dict], compress: bool) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(data, compresslevel=5))
    else:
        path.write_bytes(data)


def _read_jsonl(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def _check_out(out: Path) -> None:
    if out.exists():
        raise ExportError(f"export folder {out} already exists; choose a new one (nothing was written)")
    try:
        out.mkdir(parents=True)
    except OSError as exc:
        raise ExportError(f"cannot create export folder {out}: {exc.strerror or exc} (nothing was written)") from None


def _top_contexts(acts, n: int) -> np.ndarray:
    """The `n` contexts where the latent's largest activation is largest, strongest first."""
    if acts.n == 0:
        return np.zeros(0, np.int64)
    ctx = acts.context
    starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])  # rows are sorted by context
    best = np.maximum.reduceat(acts.value, starts)
    order = np.lexsort((ctx[starts], -best))[:n]
    return ctx[starts][order]


def export_neuronpedia(
    workspace: Path,
    out: Path,
    dictionaries: list[str] | None = None,
    sample: int | None = None,
    n_examples: int = 20,
    seed: int = 0,
    creator_id: str = DEFAULT_CREATOR,
) -> ExportSummary:
    """Write the workspace's latents (all live ones, or a seeded `sample` per dictionary) to `out` in Neuronpedia's
    bulk format and read it back (`read_export`); returns the counts read back. See the module docstring."""
    from core.autointerp.engine import select_latents
    from core.autointerp.examples import DictionaryLatents
    from core.latents.cards import load_context_tokens

    t0 = time.perf_counter()
    workspace, out = Path(workspace), Path(out)
    if not workspace.exists():
        raise UserError(f"workspace {workspace} does not exist")
    if sample is not None and sample < 1:
        raise UserError(f"--sample must be at least 1 (got {sample})")
    with store.session(workspace) as con:
        model_name = (store.get_info(con, "model") or {"name": "default"})["name"]
        corpus = store.get_info(con, "corpus") or {}
        ready = [d for d in store.dictionaries(con) if d.status == "ready"]
        texts = store.all_token_texts(con)
    known = {d.id: d for d in ready}
    wanted = dictionaries or list(known)
    missing = [d for d in wanted if d not in known]
    if missing:
        raise UserError(f"dictionary {missing[0]!r} is not cached in {workspace}; it has: {', '.join(known) or 'none'}")
    if not wanted:
        raise UserError(f"{workspace} has no cached dictionaries to export")
    _check_out(out)
    try:
        tokens = load_context_tokens(workspace)
        model_id = f"{SET_PREFIX}-{model_name}"
        created = _now()
        for did in wanted:
            rec = known[did]
            dl = DictionaryLatents(workspace, did)
            chosen = select_latents(dl.n_fires, None, sample, seed)
            _export_dictionary(
                workspace, out, rec, dl, chosen, tokens, texts, model_id, corpus, n_examples, creator_id, created
            )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    summary = read_export(out)
    summary.seconds = time.perf_counter() - t0
    return summary


def _export_dictionary(workspace, out, rec, dl, chosen, tokens, texts, model_id, corpus, n_examples, creator, created):
    """Write one dictionary's source folder (see the module docstring)."""
    src, set_name = source_id(rec.layer, rec.id)
    folder = out / model_id / src
    meta = {
        "release.jsonl": {
            "name": f"{SET_PREFIX}-{model_id}",
            "description": f"SAE Circuit Explorer export of {workspace.name}",
            "descriptionShort": "SAE Circuit Explorer export",
            "creatorName": "SAE Circuit Explorer",
            "creatorId": creator,
            "visibility": "PRIVATE",
            "urls": [],
            "createdAt": created,
        },
        "model.jsonl": {
            "id": model_id,
            "instruct": False,
            "creatorId": creator,
            "displayName": model_id,
            "displayNameShort": model_id,
            "visibility": "PRIVATE",
            "createdAt": created,
            "updatedAt": created,
        },
        "sourceset.jsonl": {
            "modelId": model_id,
            "name": set_name,
            "creatorId": creator,
            "creatorName": "SAE Circuit Explorer",
            "description": f"{rec.kind} dictionaries ({rec.source})",
            "visibility": "PRIVATE",
            "releaseName": f"{SET_PREFIX}-{model_id}",
            "createdAt": created,
        },
        "source.jsonl": {
            "id": src,
            "modelId": model_id,
            "setName": set_name,
            "creatorId": creator,
            "hasDashboards": True,
            "visibility": "PRIVATE",
            "num_prompts": corpus.get("n_contexts"),
            "num_tokens_in_prompt": corpus.get("ctx_len"),
            "dataset": corpus.get("name"),
            "notes": json.dumps({"dictionary": rec.id, "hook_in": rec.hook_in, "hook_out": rec.hook_out}),
            "createdAt": created,
        },
    }
    for name, row in meta.items():
        _write_jsonl(folder / name, [row], compress=False)
    latents = [int(x) for x in chosen]
    # real explanations only (offline baselines included, named); random-explanation rows carry another latent's text
    explanations = store.list_explanations(workspace, dictionary=rec.id, latents=latents)
    scores = [
        s
        for s in store.scores_for_explanations(workspace, [e.explanation_id for e in explanations])
        if s.status == "ok"
    ]
    by_latent: dict[int, list] = {}
    for e in explanations:
        by_latent.setdefault(e.latent, []).append(e)
    for b, a in enumerate(range(0, len(latents), BATCH)):
        feats, acts_rows, expl_rows = [], [], []
        for lat in latents[a : a + BATCH]:
            la = dl.activations(lat)
            ctxs = _top_contexts(la, n_examples)
            rows = tokens.get(ctxs) if len(ctxs) else np.zeros((0, dl.ctx_len), np.int64)
            for k, (c, toks) in enumerate(zip(ctxs, rows, strict=True)):
                vals = np.round(la.window_values(int(c), 0, dl.ctx_len).astype(float), 5)
                top = int(np.argmax(vals))
                acts_rows.append(
                    {
                        "id": f"{src}-{lat}-{k}",
                        "tokens": [texts[int(t)] if 0 <= int(t) < len(texts) else f"<{int(t)}>" for t in toks],
                        "index": str(lat),
                        "layer": src,
                        "modelId": model_id,
                        "maxValue": float(vals[top]),
                        "maxValueTokenIndex": top,
                        "minValue": float(vals.min()),
                        "values": vals.tolist(),
                        "creatorId": creator,
                        "dataIndex": str(int(c)),
                        "dataSource": "workspace context",
                        "createdAt": created,
                    }
                )
            feats.append(
                {
                    "modelId": model_id,
                    "layer": src,
                    "index": str(lat),
                    "creatorId": creator,
                    "createdAt": created,
                    "maxActApprox": float(la.value.max()) if la.n else 0.0,
                    "hasVector": False,
                    "vector": [],
                    "hookName": rec.hook_out,
                    "frac_nonzero": float(dl.frequency[lat]),
                    "topkCosSimIndices": [],
                    "topkCosSimValues": [],
                    "neg_str": [],
                    "neg_values": [],
                    "pos_str": [],
                    "pos_values": [],
                }
            )
            for e in by_latent.get(lat, []):
                expl_rows.append(
                    {
                        "id": e.explanation_id,
                        "modelId": model_id,
                        "layer": src,
                        "index": str(lat),
                        "description": e.text,
                        "authorId": creator,
                        "typeName": e.explainer,
                        "explanationModelName": e.explainer,
                        "scoreV1": 0,
                        "createdAt": created,
                        "updatedAt": created,
                        "notes": json.dumps(
                            {
                                "made_by": e.explainer,
                                "is_baseline": bool(e.is_baseline),
                                "baseline": e.baseline,
                                "strategy": e.strategy,
                                "prompt_version": e.prompt_version,
                            }
                        ),
                    }
                )
        _write_jsonl(folder / "features" / f"batch-{b}.jsonl.gz", feats, compress=True)
        _write_jsonl(folder / "activations" / f"batch-{b}.jsonl.gz", acts_rows, compress=True)
        ids = {r["id"] for r in expl_rows}
        _write_jsonl(folder / "explanations" / f"batch-{b}.jsonl.gz", expl_rows, compress=True)
        score_rows = [
            {
                "id": s.score_id,
                "initiatedByUserId": creator,
                "value": float(s.value),
                "explanationId": s.explanation_id,
                "explanationScoreTypeName": s.scorer,
                "explanationScoreModelName": s.scorer_model,
                "jsonDetails": json.dumps(
                    {"prompt_version": s.prompt_version, "params": s.params, "n_examples": s.n_examples}
                ),
                "createdAt": created,
            }
            for s in scores
            if s.explanation_id in ids and s.value is not None and np.isfinite(s.value)
        ]
        _write_jsonl(folder / "explanation_scores" / f"batch-{b}.jsonl.gz", score_rows, compress=True)


def _require(rows: list[dict], fields: tuple[str, ...], what: str, path: Path) -> None:
    for i, r in enumerate(rows):
        absent = [f for f in fields if f not in r]
        if absent:
            raise ExportError(f"{path}: {what} row {i} lacks {', '.join(absent)}")


def read_export(out: Path) -> ExportSummary:
    """Read an export back and check it: every row has its Neuronpedia fields, values match tokens, and every
    activation, explanation and score refers to a feature (score: an explanation) of the export. Returns the counts."""
    out = Path(out)
    summary = ExportSummary(str(out))
    sources = sorted(p.parent for p in out.glob("*/*/source.jsonl"))
    if not sources:
        raise ExportError(f"{out} holds no Neuronpedia source folders (OUT/model/source/source.jsonl)")
    for folder in sources:
        for name in ("release.jsonl", "model.jsonl", "sourceset.jsonl"):
            if len(_read_jsonl(folder / name)) != 1:
                raise ExportError(f"{folder / name} should hold one row")
        src = _read_jsonl(folder / "source.jsonl")[0]
        summary.sources.append(src["id"])
        features: set[tuple[str, str]] = set()
        for path in sorted((folder / "features").glob("*.jsonl.gz")):
            rows = _read_jsonl(path)
            _require(rows, FEATURE_FIELDS, "feature", path)
            features |= {(r["layer"], r["index"]) for r in rows}
            summary.features += len(rows)
        for path in sorted((folder / "activations").glob("*.jsonl.gz")):
            rows = _read_jsonl(path)
            _require(rows, ACTIVATION_FIELDS, "activation", path)
            for r in rows:
                if len(r["values"]) != len(r["tokens"]) or (r["layer"], r["index"]) not in features:
                    raise ExportError(f"{path}: activation {r['id']} has mismatched values/tokens or no feature")
                if r["values"] and abs(max(r["values"]) - r["maxValue"]) > 1e-4:
                    raise ExportError(f"{path}: activation {r['id']} maxValue is not the largest value")
            summary.activations += len(rows)
        explanation_ids: set[str] = set()
        for path in sorted((folder / "explanations").glob("*.jsonl.gz")):
            rows = _read_jsonl(path)
            _require(rows, EXPLANATION_FIELDS, "explanation", path)
            if any((r["layer"], r["index"]) not in features or not isinstance(r["description"], str) for r in rows):
                raise ExportError(f"{path}: an explanation has no feature or no text")
            explanation_ids |= {r["id"] for r in rows}
            summary.explanations += len(rows)
        for path in sorted((folder / "explanation_scores").glob("*.jsonl.gz")):
            rows = _read_jsonl(path)
            _require(rows, SCORE_FIELDS, "explanation score", path)
            if any(r["explanationId"] not in explanation_ids for r in rows):
                raise ExportError(f"{path}: a score refers to an explanation not in the export")
            summary.scores += len(rows)
    return summary
