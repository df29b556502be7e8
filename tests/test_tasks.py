"""Task generators and evaluators: answers are right by construction, held-out parts stay held out."""

from __future__ import annotations

import random

import pytest
import torch

from core.evaluate import TokenizationError, encode_prompts, logit_differences, single_token_id, task_accuracy
from core.tasks import (
    NAMES,
    NOUNS,
    TaskItem,
    bracket_item,
    evaluation_items,
    ioi_item,
    make_split,
    sva_item,
    training_items,
    training_text_generators,
)

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
