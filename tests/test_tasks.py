"""Task generators and evaluators: answers are right by construction, held-out parts stay held out."""

from __future__ import annotations

import random

import pytest
import torch

from core.build.corpus import past_tense_verbs
from core.build.evaluate import encode_prompts, logit_differences, task_accuracy
from core.build.tasks import (
    NAMES,
    NOUNS,
    SVA_REL_VERBS_HELDOUT,
    TaskItem,
    TaskSplit,
    bracket_item,
    evaluation_items,
    ioi_item,
    make_split,
    sva_item,
    training_items,
    training_text_generators,
    validation_verb_items,
)
from core.subjects.tokens import TokenizationError, single_token_id

SENTENCES = ["The jury said that the election was conducted well and fairly in every district of the city."] * 5


def test_ioi_answer_is_the_name_said_once():
    rng = random.Random(0)
    for _ in range(200):
        item = ioi_item(rng, ("Mary", "John", "Tom", "Anna"), heldout_templates=False)
        io, s = item.correct.strip(), item.incorrect.strip()
        assert io != s
        assert item.prompt.count(s) == 2 and item.prompt.count(io) == 1


def test_sva_answer_agrees_with_the_subject():
    rng = random.Random(0)
    nouns = (("key", "keys"), ("cabinet", "cabinets"), ("dog", "dogs"))
    for _ in range(200):
        item = sva_item(rng, nouns, nouns, heldout_templates=False)
        subject = item.prompt.split()[1]
        plural = subject in {pl for _, pl in nouns}
        assert item.correct.strip() in ({"are", "were"} if plural else {"is", "was"})
        assert {item.correct.strip(), item.incorrect.strip()} in ({"is", "are"}, {"was", "were"})


def test_bracket_items_balance_inside_and_outside():
    rng = random.Random(0)
    inside = bracket_item(rng, SENTENCES, inside=True)
    outside = bracket_item(rng, SENTENCES, inside=False)
    assert "(" in inside.prompt and inside.correct == ")" and inside.incorrect == "."
    assert "(" not in outside.prompt and outside.correct == "." and outside.incorrect == ")"


def test_evaluation_items_use_only_heldout_names_and_nouns():
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    train_names = set(split.train_names)
    for item in evaluation_items("ioi", split, SENTENCES, 100):
        names = {item.correct.strip(), item.incorrect.strip()}
        assert names <= set(split.heldout_names) and not names & train_names
    heldout_words = {w for pair in split.heldout_nouns for w in pair}
    for item in evaluation_items("sva", split, SENTENCES, 100):
        assert item.prompt.split()[1] in heldout_words
    with pytest.raises(ValueError, match="unknown task"):
        evaluation_items("nope", split, SENTENCES, 1)


def test_training_text_never_puts_heldout_names_in_ioi_or_heldout_nouns_in_sva():
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    gens = training_text_generators(split, SENTENCES)
    rng = random.Random(1)
    heldout_names = set(split.heldout_names)
    heldout_nouns = {w for pair in split.heldout_nouns for w in pair}
    for _ in range(300):
        words = set(gens["ioi"](rng).replace(",", " ").replace(".", " ").split())
        assert not words & heldout_names
        words = set(gens["sva"](rng).replace(".", " ").split())
        assert not words & heldout_nouns


class _FixedLogitModel(torch.nn.Module):
    """A stand-in model whose next-token logits always favour one token id."""

    def __init__(self, tokenizer, favoured: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.favoured = favoured
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, len(self.tokenizer))
        logits[..., self.favoured] = 5.0
        return logits


def test_task_accuracy_known_answers(tiny_tokenizer):
    mary = single_token_id(tiny_tokenizer, " Mary")
    model = _FixedLogitModel(tiny_tokenizer, mary)
    right = TaskItem("ioi", "When Mary and John went, John gave a drink to", " Mary", " John")
    wrong = TaskItem("ioi", "When Mary and John went, Mary gave a drink to", " John", " Mary")
    assert task_accuracy(model, [right] * 3) == 1.0
    assert task_accuracy(model, [wrong] * 3) == 0.0
    assert task_accuracy(model, [right, wrong]) == 0.5
    diffs = logit_differences(model, [right, wrong])
    assert torch.allclose(diffs, torch.tensor([5.0, -5.0]))


def test_encode_prompts_pads_right_and_marks_last(tiny_tokenizer):
    tokens, last = encode_prompts(tiny_tokenizer, ["Mary", "When Mary and John went"], tiny_tokenizer.bos_token_id)
    assert tokens[:, 0].eq(tiny_tokenizer.bos_token_id).all()
    assert last[0] < last[1] and last[1] == tokens.shape[1] - 1


def test_multi_token_target_is_refused_with_its_pieces(tiny_tokenizer):
    with pytest.raises(TokenizationError, match="tokens"):
        single_token_id(tiny_tokenizer, " Bartholomew-Smythe")


def test_training_items_use_training_names_and_number_frames_show_heldout_nouns():
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    for item in training_items("ioi", split, 100):
        assert {item.correct.strip(), item.incorrect.strip()} <= set(split.train_names)
    train_words = {w for pair in split.train_nouns for w in pair}
    assert all(item.prompt.split()[1] in train_words for item in training_items("sva", split, 100))
    with pytest.raises(ValueError, match="ioi and sva"):
        training_items("brackets", split, 1)
    # held-out nouns get their number shown (determiners, pronouns) in about half the number frames
    gens = training_text_generators(split, SENTENCES)
    rng = random.Random(2)
    heldout_words = {w for pair in split.heldout_nouns for w in pair}
    texts = [gens["number"](rng) for _ in range(400)]
    share = sum(bool(set(t.replace(".", " ").replace(",", " ").split()) & heldout_words) for t in texts) / len(texts)
    assert 0.45 < share < 0.75


def test_past_tense_verbs_counts_vbd_tags_in_training_files_only(tmp_path):
    (tmp_path / "ca01").write_text(
        "\tThe/at man/nn knew/vbd it/ppo ./.\n The/at dogs/nns knew/vbd ./. He/pps ran/vbd ./.\n"
    )
    (tmp_path / "ca02").write_text("\tShe/pps ran/vbd home/nr ./. It/pps was/bedz Ran/vbd-tl ./.\n")
    (tmp_path / "ca10").write_text("\tThey/ppss slept/vbd ./. They/ppss slept/vbd ./. They/ppss slept/vbd ./.\n")
    assert past_tense_verbs(tmp_path, min_count=1) == ["knew", "ran"]
    assert past_tense_verbs(tmp_path, min_count=3) == []


def test_split_with_extra_verbs_keeps_evaluation_and_validation_verbs_out_of_training():
    extra = ["knew", "discovered", "smelled", "replied", "saw", "welcomed", "assured", "withdrew"]
    split = make_split(list(NAMES), list(NOUNS), seed=0, extra_rel_verbs=extra, n_validation_verbs=3)
    plain = make_split(list(NAMES), list(NOUNS), seed=0)
    assert (split.train_names, split.heldout_nouns) == (plain.train_names, plain.heldout_nouns)
    assert len(split.validation_rel_verbs) == 3 and set(split.validation_rel_verbs) <= set(extra) - {"saw"}
    assert not set(split.validation_rel_verbs) & set(split.train_rel_verbs)
    assert not set(SVA_REL_VERBS_HELDOUT) & set(split.train_rel_verbs + split.validation_rel_verbs)
    assert (
        set(split.train_rel_verbs) >= set(plain.train_rel_verbs)
        and "welcomed" in split.train_rel_verbs + split.validation_rel_verbs
    )
    assert TaskSplit.from_json(split.to_json()) == split
    for item in validation_verb_items(split, 50):
        assert item.prompt.split()[-1] in split.validation_rel_verbs
    # training agreement sentences use the split's verbs, never the validation or evaluation ones
    gens = training_text_generators(split, SENTENCES)
    rng = random.Random(3)
    held = set(split.validation_rel_verbs) | set(SVA_REL_VERBS_HELDOUT)
    for _ in range(300):
        assert not set(gens["sva"](rng).replace(".", " ").split()) & held
    with pytest.raises(ValueError, match="no validation verbs"):
        validation_verb_items(plain, 1)
