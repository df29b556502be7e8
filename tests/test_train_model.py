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


def test_tied_unembedding_reads_the_embedding_trains_it_and_saves_untied(tmp_path, tiny_tokenizer_dir):
    import torch

    from core.build.pipeline import model_config_hash
    from core.build.tokenizer import load_tokenizer
    from core.build.train_model import TiedUnembed, _new_model, untie_unembedding
    from core.subjects.models import save_model

    cfg = _cfg(n_layers=1, d_model=32, n_heads=2, d_mlp=64, n_ctx=16, vocab_size=512, tie_embeddings=True)
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    model = _new_model(cfg, tokenizer)
    assert isinstance(model.unembed, TiedUnembed)
    names = [n for n, _ in model.named_parameters()]
    assert "embed.W_E" in names and not any(n.startswith("unembed.W_U") for n in names)  # one matrix, not two
    tokens = torch.randint(0, 512, (2, 8))
    _, cache = model.run_with_cache(tokens)
    final = cache["ln_final.hook_normalized"]
    logits = model(tokens)
    torch.testing.assert_close(logits, final @ model.embed.W_E.T + model.unembed.b_U)
    # the loss reaches W_E through the unembedding too: a token only ever predicted (never an input) moves
    target = 7
    model.zero_grad()
    inputs = torch.full((1, 8), 3)
    torch.nn.functional.cross_entropy(model(inputs)[0], torch.full((8,), target)).backward()
    assert model.embed.W_E.grad[target].abs().sum() > 0
    # saved untied: an ordinary Unembed holding W_E^T, the same logits
    untie_unembedding(model)
    assert not isinstance(model.unembed, TiedUnembed)
    torch.testing.assert_close(model(tokens), logits)
    save_model(model, tmp_path / "m")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    torch.testing.assert_close(state["unembed.W_U"], state["embed.W_E"].T)
    # an untied config keeps build 5's manifest key; a tied one is another model
    assert model_config_hash(ModelTrainingConfig(tie_embeddings=False)) == "454cf3bd8d2c8a47"
    assert model_config_hash(ModelTrainingConfig(tie_embeddings=True)) != "454cf3bd8d2c8a47"
    # what each task text trains: v1 is build 5's run, v2 a tied model
    from core.build.train_model import training_config

    assert model_config_hash(training_config("v1")) == "454cf3bd8d2c8a47"
    assert training_config("v2").tie_embeddings and training_config("v2").task_text == "v2"
