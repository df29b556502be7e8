"""Build and evaluate the embedded default: `python -m core build-default`, `python -m core evaluate-default`.

The build has two stages, each skipped when its artifacts exist and were made with the same
parameters (so rerunning is idempotent and an interrupted build resumes at the stage it was in):
1. model: corpus, tokenizer and the GPT-2-architecture model (`core.build.train_model`);
2. dictionaries: residual and attention SAEs (SAE-Lens runner) and MLP transcoders
   (`core.build.train_dictionaries`), trained on activations of the same data mix.
Then it evaluates the result and writes `evaluation.json` and `manifest.json`, and finally
3. seed: the shipped default workspace in `seed/` (`core.build.seed`: cache, fast-stage explanations,
   example circuits, analyses, written compact with a manifest); resumable step by step, and a no-op
   where done. `--stage seed` runs only this stage (e.g. after the example circuits changed:
   `--stage seed --seed-steps circuits,analyze,write`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from core.build.tasks import TASK_TEXT_VERSIONS, TASKS, TaskSplit, check_task_text, evaluation_items
from core.paths import DEFAULT_DIR, REBUILD_COMMAND, default_paths, is_shipped_default

log = logging.getLogger(__name__)

EVAL_ITEMS_PER_TASK = 1000
EVAL_GENERALISATION_ITEMS = 500  # per generalisation set (core.build.generalisation)
EVAL_LM_WINDOWS = 512
EVAL_DICTIONARY_WINDOWS = 128
ACCURACY_KEYS = {"ioi": "ioi_accuracy", "sva": "sva_accuracy", "brackets": "bracket_accuracy"}


def _config_hash(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# ModelTrainingConfig fields build 5 did not have, with the value that reproduces it.
FIELDS_AFTER_BUILD_5 = {
    "task_text": "v1",
    "tie_embeddings": False,
    "induction_rows": (),
    "plant_induction": False,
    "induction_warmup_steps": 0,
    "plant_bracket_head": False,
    "bracket_head_gain": 1.0,
    "prefix_space": False,
}


def model_config_hash(cfg) -> str:
    """Hash of a `ModelTrainingConfig`, the model stage's up-to-date key.

    Fields added after build 5 enter only away from their defaults (`FIELDS_AFTER_BUILD_5`), so build 5
    stays up to date.
    """
    obj = asdict(cfg)
    for name, default in FIELDS_AFTER_BUILD_5.items():
        if obj.get(name) == default:
            del obj[name]
    return _config_hash(obj)


def task_text_to_build(manifest: dict, requested: str | None) -> str:
    """The task-text version a build trains with: `requested`, else the built model's (from `manifest`), else v1."""
    if requested is not None:
        return check_task_text(requested)
    return manifest.get("model_training", {}).get("task_text", "v1")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def validation_data(root: Path | None = None) -> tuple[torch.Tensor, list[str], dict]:
    """Held-out Brown windows `[n, n_ctx]`, validation sentences, and the text statistics of that split."""
    from core.build.corpus import read_corpus
    from core.build.tokenizer import END_OF_TEXT, load_bpe
    from core.build.train_model import encode_stream, sentences_of, validation_windows

    paths = default_paths(root)
    bpe = load_bpe(paths["tokenizer_dir"])
    n_ctx = json.loads(paths["model_config"].read_text())["n_ctx"]
    docs = read_corpus(paths["corpus"], split="validation")
    ids = encode_stream(bpe, [d.text for d in docs])
    windows = validation_windows(ids, n_ctx, bpe.token_to_id(END_OF_TEXT))
    return windows, sentences_of(docs), {"tokens": len(ids), "characters": sum(len(d.text) + 1 for d in docs)}


def generalisation_figures(model, split: TaskSplit, sentences: list[str], n: int) -> dict[str, float]:
    """Accuracy on each of `core.build.generalisation.GENERALISATION_SETS` (`n` items each).

    Bracket sets alternate open-bracket items and closed controls; `<set>_inside` is the accuracy on
    the open-bracket half alone (an always-`)` model scores 1.0 there and 0.5 on the set).
    `copy_repeated_tokens`: top-1 accuracy on the repeat of random token sequences (in-context copying,
    `core.build.evaluate.repeated_tokens_accuracy`).
    """
    from core.build.evaluate import logit_differences, repeated_tokens_accuracy
    from core.build.generalisation import BRACKET_SETS, GENERALISATION_SETS, generalisation_items

    out: dict[str, float] = {}
    for name in GENERALISATION_SETS:
        items = generalisation_items(name, split, sentences, n, tokenizer=model.tokenizer)
        right = logit_differences(model, items) > 0  # [n]
        out[name] = round(float(right.float().mean()), 4)
        if name in BRACKET_SETS:
            out[f"{name}_inside"] = round(float(right[0::2].float().mean()), 4)
    out["copy_repeated_tokens"] = round(repeated_tokens_accuracy(model, n=n), 4)
    return out


def evaluate_default(
    root: Path | None = None, device: str | None = None, progress: bool = True, dictionaries: bool = True
) -> dict:
    """The default's figures: val_loss, bits/char, task accuracies on held-out items, generalisation sets,
    the best previous-token and induction heads, and per-dictionary metrics (unless `dictionaries` is False:
    a build stopped after its model)."""
    from core.build.dictionary_metrics import dictionary_metrics
    from core.build.evaluate import bits_per_character, language_model_loss, task_accuracy
    from core.build.induction_init import model_induction_heads
    from core.subjects.dictionaries import load_default_dictionaries, read_manifest
    from core.subjects.models import load_default_model

    manifest = read_manifest(root)
    split = TaskSplit.from_json(manifest["task_split"])
    model = load_default_model(root, device=device)
    windows, sentences, text_stats = validation_data(root)
    lm_windows = windows[:EVAL_LM_WINDOWS]
    val_loss = language_model_loss(model, lm_windows)
    n_tokens = int(lm_windows[:, 1:].numel())
    # characters covered by the evaluated windows, pro rata of the whole validation split
    chars = text_stats["characters"] * n_tokens / text_stats["tokens"]
    result: dict = {
        "val_loss": round(val_loss, 4),
        "val_bits_per_char": round(bits_per_character(val_loss, n_tokens, int(chars)), 4),
    }
    for task in TASKS:
        items = evaluation_items(task, split, sentences, EVAL_ITEMS_PER_TASK)
        result[ACCURACY_KEYS[task]] = round(task_accuracy(model, items), 4)
    result["generalisation"] = generalisation_figures(model, split, sentences, EVAL_GENERALISATION_ITEMS)
    result["induction_heads"] = model_induction_heads(model)
    if dictionaries:
        dict_windows = windows[:EVAL_DICTIONARY_WINDOWS]
        rows = []
        for d in load_default_dictionaries(root, device=device).values():
            m = dictionary_metrics(model, d, dict_windows)
            rows.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()})
        result["dictionaries"] = rows
    result["eval_items_per_task"] = EVAL_ITEMS_PER_TASK
    result["generalisation_items_per_set"] = EVAL_GENERALISATION_ITEMS
    result["eval_tokens"] = n_tokens
    return result


def build_default(
    out_root: Path = DEFAULT_DIR,
    force: bool = False,
    progress: bool = True,
    stage: str = "all",
    seed_steps: tuple[str, ...] | None = None,
    task_text: str | None = None,
) -> dict:
    """Run the build's stages into `out_root`, skipping stages already built with the same parameters.

    `stage` 'all' (model, dictionaries, evaluation, then the seed) or 'seed' (only the seed's `seed_steps`,
    default all of `core.build.seed.SEED_STEPS`). `task_text` is the training text's version
    (`core.build.tasks.TASK_TEXT_VERSIONS`; v1 made build 5); None keeps the built model's (v1 when none is
    built), and another one than the built model's retrains it."""
    if stage not in ("all", "seed"):
        raise ValueError(f"unknown stage {stage!r}; valid: all, seed")
    if task_text is not None:
        check_task_text(task_text)
    if stage == "seed":
        return {"seed": _build_seed(out_root, seed_steps)}
    evaluation = _build_model_and_dictionaries(out_root, force, progress, task_text)
    return {**evaluation, "seed": _build_seed(out_root, seed_steps)}


def _build_seed(out_root: Path, steps: tuple[str, ...] | None) -> dict:
    from core.build.seed import SEED_STEPS, build_seed

    log.info("stage 3: the seed workspace")
    root = None if is_shipped_default(out_root) else Path(out_root)
    return build_seed(root=root, seed_dir=Path(out_root) / "seed", steps=steps or SEED_STEPS)


def _build_model_and_dictionaries(out_root: Path, force: bool, progress: bool, task_text: str | None = None) -> dict:
    """Stages 1 and 2 and the evaluation (unchanged by the seed stage)."""
    from core.build.overview import plot_learning_curves
    from core.build.train_dictionaries import DictionaryTrainingConfig, rows_needed, train_all_dictionaries
    from core.build.train_model import load_default_data, mixed_rows, train_default_model, training_config
    from core.subjects.models import load_default_model

    paths = default_paths(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = _read_json(paths["manifest"])
    model_cfg = training_config(task_text_to_build(manifest, task_text))
    dict_cfg = DictionaryTrainingConfig()
    model_hash = model_config_hash(model_cfg)
    dict_hash = _config_hash({"model": model_hash, **asdict(dict_cfg)})
    t0 = time.time()

    model_done = (
        manifest.get("model_hash") == model_hash and paths["model_weights"].exists() and paths["tokenizer_dir"].exists()
    )
    if force or not model_done:
        log.info("stage 1: training the model")
        info = train_default_model(out_root, model_cfg, progress=progress)
        manifest = {"model_hash": model_hash, **info, "built_with": REBUILD_COMMAND}
        paths["manifest"].write_text(json.dumps(manifest, indent=1))
    else:
        log.info("stage 1: model up to date (%s)", model_hash)
    plot_learning_curves(json.loads(paths["learning_curves"].read_text()), paths["learning_curves_png"])
    t1 = time.time()

    dict_done = manifest.get("dictionaries_hash") == dict_hash and paths["dictionaries_dir"].exists()
    if force or not dict_done:
        log.info("stage 2: training the dictionaries")
        torch.set_num_threads(model_cfg.threads)
        model = load_default_model(out_root, device="cpu")
        split = TaskSplit.from_json(manifest["task_split"])
        data = load_default_data(out_root, split)
        # Dictionaries see the model's own training mix, from a different seed than its training rows.
        n_rows = rows_needed(dict_cfg, model_cfg.n_ctx)
        tokens = mixed_rows(data, n_rows, model_cfg.n_ctx, task_share=0.5, seed=model_cfg.seed + 100)
        dict_info = train_all_dictionaries(model, tokens, paths["dictionaries_dir"], dict_cfg, progress=progress)
        manifest.update(
            {"dictionaries_hash": dict_hash, "dictionary_training": asdict(dict_cfg), "dictionaries": dict_info}
        )
        manifest.setdefault("timings", {})["dictionaries_s"] = time.time() - t1
        paths["manifest"].write_text(json.dumps(manifest, indent=1))
    else:
        log.info("stage 2: dictionaries up to date (%s)", dict_hash)

    evaluation = evaluate_default(out_root, progress=progress)
    paths["evaluation"].write_text(json.dumps(evaluation, indent=1))
    manifest.setdefault("timings", {})["this_run_s"] = time.time() - t0
    paths["manifest"].write_text(json.dumps(manifest, indent=1))
    return evaluation


def _run_build(args) -> int:
    steps = tuple(s.strip() for s in args.seed_steps.split(",") if s.strip()) if args.seed_steps else None
    result = build_default(
        Path(args.out), force=args.force, stage=args.stage, seed_steps=steps, task_text=args.task_text
    )
    print(json.dumps(result))
    return 0


def _run_evaluate(args) -> int:
    result = evaluate_default(Path(args.root) if args.root else None, dictionaries=not args.model_only)
    print(json.dumps(result))
    return 0


def register(sub) -> None:
    """Add `build-default` and `evaluate-default` to the CLI."""
    p = sub.add_parser(
        "build-default", help="train the embedded default (model, tokenizer, dictionaries) into data/default"
    )
    p.add_argument("--out", default=str(DEFAULT_DIR), help="output folder (default: data/default)")
    p.add_argument("--force", action="store_true", help="retrain every stage even if up to date")
    p.add_argument(
        "--stage",
        choices=["all", "seed"],
        default="all",
        help="all: model, dictionaries, evaluation, then the seed workspace; seed: only the seed (data/default/seed)",
    )
    p.add_argument(
        "--seed-steps",
        help="comma-separated seed steps to run (default all: cache,explain,circuits,analyze,write); each is "
        "resumable and skips what is done",
    )
    p.add_argument(
        "--task-text",
        choices=list(TASK_TEXT_VERSIONS),
        default=None,
        help="training text version: v1 (build 5's); v2 teaches the behaviours in general form (many frames, every "
        "IOI preposition, hundreds of names, Brown's noun pairs, brackets of depth 1-3 and 1-60 words); v3-v15 are "
        "measured variants of v2 (docs/default-model.md; v6-v15 start from a planted induction circuit, v12-v15 "
        "with a fixed bracket head, v15 with a tokenizer that spaces a text's first word); default: the "
        "version the built model in --out was trained on, v1 if none",
    )
    p.set_defaults(run=_run_build)
    p = sub.add_parser("evaluate-default", help="print the default's figures as one JSON line")
    p.add_argument("--root", default=None, help="folder of a default build (default: data/default)")
    p.add_argument(
        "--model-only",
        action="store_true",
        help="leave out the dictionaries' metrics (a build stopped after its model)",
    )
    p.set_defaults(run=_run_evaluate)
