"""The default's training mix: the IOI curriculum restricts names and templates, then hands over to the full mix."""

from __future__ import annotations

import re

import numpy as np

from core.build.tasks import IOI_ACTIONS_TRAIN, IOI_INTROS_TRAIN, NAMES, NOUNS, make_split
from core.build.tokenizer import load_bpe
from core.build.train_model import ModelTrainingConfig, _build_rows, curriculum_stage

SENTENCES = ["The jury said that the election was conducted well and fairly in every district of the city."] * 5


def _cfg(**kw) -> ModelTrainingConfig:
    base = dict(
        steps=6,
        batch_size=4,
        n_ctx=192,  # the tiny test tokenizer splits unseen template words into many tokens
        ioi_curriculum=((2, 3, 1, 1), (4, 0, 0, 0)),
        curriculum_task_share=1.0,
        curriculum_task_weights={"ioi": 1.0},
        task_share_start=0.5,
        task_share_end=0.5,
    )
    return ModelTrainingConfig(**{**base, **kw})


def test_curriculum_stage_walks_the_stages_then_ends():
    cfg = _cfg()
    assert [curriculum_stage(cfg, s) for s in range(6)] == [(3, 1, 1), (3, 1, 1), (0, 0, 0), (0, 0, 0), None, None]
    assert curriculum_stage(_cfg(ioi_curriculum=()), 0) is None


def test_curriculum_rows_use_only_the_first_names_and_templates(tiny_tokenizer_dir):
    bpe = load_bpe(tiny_tokenizer_dir)
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    brown = np.arange(10_000, 11_000, dtype=np.int32)  # ids no task text can have
    cfg = _cfg()
    rows = _build_rows(cfg, bpe, brown, split, SENTENCES)
    assert rows.shape == (cfg.steps * cfg.batch_size, cfg.n_ctx)
    intro, action = IOI_INTROS_TRAIN[0].split(" {A}")[0], IOI_ACTIONS_TRAIN[0].split("{obj}")[0].replace(" {S}", "")
    names = set(NAMES)
    for step, allowed in ((0, split.train_names[:3]), (2, split.train_names)):
        for row in rows[step * cfg.batch_size : (step + 2) * cfg.batch_size]:
            sentences = bpe.decode(row.tolist()).split(". ")[:-1]  # the last one may be cut by n_ctx
            assert sentences and not np.isin(row, brown).any()  # curriculum rows are all IOI text
            used = {w for s in sentences for w in re.findall(r"[A-Z][a-z]+", s)} & names
            assert used <= set(allowed)
            if step == 0:
                assert all(s.startswith(intro) and action in s for s in sentences)
    # after the curriculum the task share is 0.5: half of each step's rows are Brown windows
    late = rows[4 * cfg.batch_size :]
    assert sum(bool(np.isin(r[1:], brown).all()) for r in late) == len(late) // 2
    assert np.array_equal(rows, _build_rows(cfg, bpe, brown, split, SENTENCES))  # seeded
