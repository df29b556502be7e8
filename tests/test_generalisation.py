"""Generalisation sets (core.build.generalisation) and task text v2 (core.build.tasks_v2).

The held-out sets never meet the training text of either version; v1's text is exactly what built
the shipped default; a tiny model trained on v2 text learns a planted copying behaviour.
"""

from __future__ import annotations

import copy
import hashlib
import random
import re
from collections import Counter
from dataclasses import asdict

import numpy as np
import pytest
import torch

from core.build.generalisation import (
    BRACKET_SETS,
    GEN_NAMES,
    GEN_NOUNS,
    GENERALISATION_SETS,
    SHAPE_HELDOUT_SETS,
    generalisation_items,
    heldout_words,
    leaks,
)
from core.build.tasks import NAMES, NOUNS, TaskSplit, make_split, task_pools, training_text_generators
from core.build.tasks_v2 import V2_EXTRA_NAMES, brown_noun_pairs, brown_proper_nouns, clean_sentences, v2_pools
from core.build.train_model import ModelTrainingConfig, training_config

NEUTRAL = [
    "The jury said that the election was conducted well and fairly in every district of the city.",
    "He walked slowly down the long road toward the river, where the ships were waiting for the morning tide.",
    "It is not clear whether the new plan will help the farmers or the workers in the spring.",
    "They spent the whole afternoon talking about the old days on the farm.",
    "They found the door locked and went back to the car.",
]
# Brown-like sentences that contain held-out names, nouns and frame phrases: v2 must drop them.
CONTAMINATED = [
    "They smiled at Robert and the boats in front of the house.",
    "William pointed at the mountains, and neither  spirit\nnor matter moved.",
    "They were sitting on the porch of the hotel when the guests arrived.",
    "The ladies complained about the company, which is why they left.",
]


def _v2_split(nouns=None) -> TaskSplit:
    names, pool = v2_pools(None)
    return make_split(names, nouns or pool, seed=0, task_text="v2")


def test_every_set_is_made_and_answers_are_right_by_construction():
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    for name in GENERALISATION_SETS:
        items = generalisation_items(name, split, NEUTRAL, 60)
        assert len(items) == 60
        for i, item in enumerate(items):
            if name.startswith("ioi"):
                io, s = item.correct.strip(), item.incorrect.strip()
                assert {io, s} <= set(GEN_NAMES)
                assert (
                    len(re.findall(rf"\b{s}\b", item.prompt)) == 2 and len(re.findall(rf"\b{io}\b", item.prompt)) == 1
                )
            elif name.startswith("sva"):
                subject = item.prompt.split()[1]
                forms = {w: plural for pair in GEN_NOUNS for plural, w in enumerate(pair)}
                assert subject in forms
                assert item.correct.strip() in (("are", "were") if forms[subject] else ("is", "was"))
            else:
                depth = item.prompt.count("(") - item.prompt.count(")")
                inside = i % 2 == 0
                open_when_inside = 3 if name == "brackets_depth4_inner_closed" else 1
                assert depth == (open_when_inside if inside else 0)
                assert (item.correct, item.incorrect) == ((")", ".") if inside else (".", ")"))
                if name == "brackets_nested_inner_closed":
                    assert item.prompt.count("(") == 2
                elif name == "brackets_depth4_inner_closed":
                    assert item.prompt.count("(") == 4
                elif inside:
                    lo, hi = (61, 72) if name == "brackets_span_over_60" else (36, 60)
                    assert lo <= len(item.prompt.rsplit("(", 1)[1].split()) <= hi
    assert set(BRACKET_SETS) <= set(GENERALISATION_SETS)
    with pytest.raises(ValueError, match="unknown generalisation set"):
        generalisation_items("nope", split, NEUTRAL, 1)


def test_tokenizer_filter_keeps_single_token_names_and_fits_the_context(tiny_tokenizer):
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    with pytest.raises(ValueError, match="single tokens"):  # the tiny tokenizer has none of these names
        generalisation_items("ioi_new_names", split, NEUTRAL, 5, tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="did not fit the model's context of 32 tokens"):
        generalisation_items("brackets_long_span", split, NEUTRAL, 2, tokenizer=tiny_tokenizer)
    wider = copy.deepcopy(tiny_tokenizer)
    wider.model_max_length = 60
    nested = generalisation_items("brackets_nested_inner_closed", split, NEUTRAL, 40, tokenizer=wider)
    assert all(len(wider.encode(it.prompt, add_special_tokens=False)) < 60 for it in nested)


def test_heldout_names_nouns_and_frames_are_in_no_pool_and_no_template():
    assert not set(GEN_NAMES) & (set(NAMES) | set(V2_EXTRA_NAMES))
    gen_words = {w for p in GEN_NOUNS for w in p}
    assert not gen_words & {w for p in NOUNS for w in p}
    names, nouns = v2_pools(None)
    assert not set(names) & set(GEN_NAMES) and not {w for p in nouns for w in p} & gen_words


def test_brown_noun_pairs_leave_out_heldout_nouns(tmp_path):
    singular = " ".join(f"a/at {w}/nn ./." for w in ["boat", "lamp", "city"] * 10 + ["cup"] * 9)
    plural = " ".join(f"two/cd {w}/nns ./." for w in ["boats", "lamps", "cities", "cups"] * 3)
    (tmp_path / "ca01").write_text(f"\t{singular}\n\t{plural}\n")
    (tmp_path / "ca10").write_text("\ta/at cup/nn ./.\n")  # a validation file: not counted
    assert brown_noun_pairs(tmp_path) == [("boat", "boats"), ("lamp", "lamps"), ("city", "cities")]
    _, nouns = v2_pools(tmp_path)
    assert ("lamp", "lamps") in nouns and ("city", "cities") in nouns and ("boat", "boats") not in nouns


def test_v3_proper_nouns_leave_out_generalisation_names_and_join_training_names_only(tmp_path):
    words = ["Chicago"] * 5 + ["Palmer"] * 3 + ["Laos"] * 2 + ["Robert"] * 9 + ["USA"] * 4  # Robert: a GEN name
    (tmp_path / "ca01").write_text("\t" + " ".join(f"{w}/np ./." for w in words) + " Fulton/np-tl ./.\n")
    (tmp_path / "ca10").write_text("\tLaos/np ./.\n")  # a validation file: not counted
    assert "Robert" in GEN_NAMES
    assert brown_proper_nouns(tmp_path) == ["Chicago", "Palmer"]
    split = make_split(list(NAMES), list(NOUNS), seed=0, task_text="v3", extra_train_names=["Chicago", "Mary"])
    plain = make_split(list(NAMES), list(NOUNS), seed=0)
    assert split.heldout_names == plain.heldout_names  # held-out figures keep measuring the same names
    assert split.train_names == plain.train_names + ("Chicago",)  # Mary is one of the names already


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v4", "v8", "v9", "v10", "v14"])
def test_no_heldout_name_noun_or_frame_occurs_in_training_text(version):
    """5,000 sentences of every generator of each version, and every curriculum stage's IOI."""
    if version == "v1":
        # v1 copies Brown spans verbatim into bracket and copy text, as its Brown rows do: checked
        # on neutral sentences, the task frames themselves
        split, sentences = make_split(*task_pools("v1"), seed=0), NEUTRAL
    elif version == "v2":
        split, sentences = _v2_split(), NEUTRAL + CONTAMINATED
    elif version == "v3":  # v2's text over v2's names and a few proper nouns
        names, pool = v2_pools(None)
        split = make_split(names, pool, seed=0, task_text="v3", extra_train_names=["Chicago", "Palmer", "June"])
        sentences = NEUTRAL + CONTAMINATED
    else:  # v4, v8-v10 and v14: random vocabulary words as names and sequences, generalisation words among them
        split = _v4_split(version)
        sentences = NEUTRAL + CONTAMINATED
    rng = random.Random(11)
    for stage in ((0, 0, 0), (4, 1, 1), (40, 10, 8)):
        gens = training_text_generators(split, sentences, stage)
        kinds = list(gens) if stage == (0, 0, 0) else ["ioi"]
        for kind in kinds:
            for _ in range(5000 // len(kinds)):
                text = gens[kind](rng)
                assert not leaks(text), (kind, text, leaks(text))


_V4_WORDS = ["he"] + ["q" + a + b for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]


def _v4_split(version: str = "v4") -> TaskSplit:
    """A v4 (v8-v10) split over v2's names and a made-up vocabulary: 677 common words, then four names and a pronoun."""
    names, pool = v2_pools(None)
    words = _V4_WORDS + sorted(heldout_words()) + ["Chicago", "Palmer", "Tex", "He", "Mah", "Zed"] + names
    return make_split(names, pool, seed=0, task_text=version, vocabulary_words=words)


def test_v4_names_some_sentences_with_random_vocabulary_words_and_repeats_random_sequences():
    split = _v4_split()
    assert split.vocabulary_words == (*_V4_WORDS, "Chicago", "Palmer", "Tex", "He", "Mah", "Zed")
    assert TaskSplit.from_json(split.to_json()) == split
    gens, rng = training_text_generators(split, NEUTRAL), random.Random(3)
    random_names = {"Chicago", "Palmer", "Tex", "Mah", "Zed"}
    ioi = [gens["ioi"](rng) for _ in range(400)]
    named = [t for t in ioi if set(re.findall(r"[A-Z][a-z]+", t)) & random_names]
    assert 0.35 < len(named) / len(ioi) < 0.65  # V4_RANDOM_NAME_SHARE of them
    assert not any(re.search(r"\bHe and\b|\band He\b", t) for t in ioi)  # a common word is no name
    copies = [gens["copy"](rng) for _ in range(400)]
    repeats = [t for t in copies if re.fullmatch(r"(q[a-z]{2}|he)( \w+)*\. (.+)\.", t)]
    assert 0.15 < len(repeats) / len(copies) < 0.35
    assert all(t.split(". ")[0] + "." == t.split(". ")[1] for t in repeats)
    # v2 text is unchanged by the new field's default: no random names, no sequences
    v2 = training_text_generators(_v2_split(), NEUTRAL)
    assert not any(set(re.findall(r"[A-Z][a-z]+", v2["ioi"](rng))) & random_names for _ in range(200))


def test_brown_actions_keep_verb_phrases_that_take_a_person_and_v9_uses_them():
    from core.build.tasks_v2 import brown_actions

    sentences = [
        "She glanced at him, and then she caught up with them near the gate.",
        "He looked at her.",
        "They had lost touch with us.",
        "He gave it to her.",  # a pronoun inside the phrase: left out
        "The dog ran to him.",  # no pronoun subject: left out
        "She glanced at him again.",
    ]
    assert brown_actions(sentences) == ["glanced at", "caught up with", "looked at", "had lost touch with"]
    split = _v4_split("v9")
    gens, rng = training_text_generators(split, sentences + NEUTRAL), random.Random(2)
    ioi = [gens["ioi"](rng) for _ in range(400)]
    action = re.compile(r" (glanced at|caught up with|had lost touch with) [A-Z]\w*\.$")
    found = [t for t in ioi if action.search(t)]
    assert 0.2 < len(found) / len(ioi) < 0.6, len(found)
    v8 = training_text_generators(_v4_split("v8"), sentences + NEUTRAL)
    assert not any(action.search(v8["ioi"](rng)) for _ in range(400))
    # v11 trains v9's text (in a larger model): the same sentences from the same seed
    v9, v11 = (training_text_generators(_v4_split(v), sentences + NEUTRAL) for v in ("v9", "v11"))
    rng9, rng11 = random.Random(4), random.Random(4)
    assert [v9["ioi"](rng9) for _ in range(200)] == [v11["ioi"](rng11) for _ in range(200)]


def test_random_connectors_are_words_of_the_sentences_in_two_shapes():
    from core.build.tasks_v2 import connector_words, random_connector

    words = connector_words(["He saw her by the quiet river.", "They ran, rather fast, to the old mill's door."])
    assert words == ["saw", "by", "the", "quiet", "river", "ran", "rather", "fast", "to", "old", "door"]
    rng = random.Random(0)
    shapes = Counter()
    for _ in range(400):
        text = random_connector(rng, words)
        full_stop = re.fullmatch(r"\. ([A-Z][a-z]+)((?: [a-z]+){0,2}),?", text)
        comma = re.fullmatch(r", ([a-z]+(?: [a-z]+)?),?", text)
        assert full_stop or comma, text
        picked = (full_stop.group(1).lower() + full_stop.group(2)) if full_stop else comma.group(1)
        assert set(picked.split()) <= set(words), text
        shapes[(bool(full_stop), text.endswith(","))] += 1
    assert len(shapes) == 4 and min(shapes.values()) > 60, shapes


def test_v14_joins_half_the_composed_introductions_to_the_subject_by_random_words(monkeypatch):
    from core.build import tasks_v2

    monkeypatch.setattr(tasks_v2, "random_connector", lambda rng, words: " ~joined~")
    v14 = training_text_generators(_v4_split("v14"), NEUTRAL)
    rng = random.Random(6)
    ioi = [v14["ioi"](rng) for _ in range(600)]
    joined = [t for t in ioi if "~joined~" in t]
    assert 0.2 < len(joined) / len(ioi) < 0.5, len(joined)  # V14_RANDOM_CONNECTOR_SHARE of the composed 3/4
    for t in joined:  # the action's subject follows the connector; the answer is the pair's other name
        intro, action = t.split(" ~joined~ ")
        subject, answer = action.split()[0], action.split()[-1].rstrip(".")
        assert subject != answer and {subject, answer} <= set(re.findall(r"\w+", intro)), t
    v9 = training_text_generators(_v4_split("v9"), NEUTRAL)
    assert not any("~joined~" in v9["ioi"](rng) for _ in range(600))
    assert training_config("v14") == ModelTrainingConfig(**{**asdict(training_config("v13")), "task_text": "v14"})


def test_brown_pair_intros_and_connectors_frame_ioi_in_v10_only():
    from core.build.tasks_v2 import brown_connectors, brown_pair_intros

    intros = [
        "He turned to her again before the rain.",
        "We were sitting together, talking.",
        "In the dark she saw him stirring.",
        "She took her hat off the rack.",  # a possessive "her": left out
        "He told her that she was late.",  # a third pronoun: left out
        "He met Jones at the door of the hall.",  # another person named: left out
        "When he arrived at last, everyone was gone.",  # no object pronoun: left out
    ]
    assert brown_pair_intros(intros) == [
        "{A} turned to {B} again before the rain",
        "{A} and {B} were sitting together, talking",
        "In the dark {A} saw {B} stirring",
    ]
    twice = [
        "But he did not stop.",
        "For a moment she stared at the wall.",
        "In fact, they were late.",
        "It rained all day, but he went out.",
        "What he wanted was rest.",  # a question's opening: left out
        "Then she said he was right.",  # a pronoun inside: left out
    ]
    once = ["Having no choice, he went home."]  # seen once: left out
    assert sorted(brown_connectors(twice + twice + once)) == [", but", ". But", ". For a moment", ". In fact,"]
    sentences = intros + twice + twice + NEUTRAL
    rng = random.Random(5)
    v10 = training_text_generators(_v4_split("v10"), sentences)
    ioi = [v10["ioi"](rng) for _ in range(600)]
    framed = [
        t for t in ioi if re.match(r"[A-Z]\w* turned to [A-Z]\w* again before the rain|In the dark [A-Z]\w* saw", t)
    ]
    assert 0.1 < len(framed) / len(ioi) < 0.4, len(framed)  # V10_BROWN_INTRO_SHARE of the composed three quarters
    joined = [t for t in ioi if re.search(r"(\. But|\. For a moment|\. In fact,|, but) [A-Z]\w* [a-z]", t)]
    assert 0.2 < len(joined) / len(ioi) < 0.6, len(joined)
    for t in framed:  # the answer is the name of the pair that is not the action's subject
        a, b = re.findall(r"\b(?!In\b|The\b)[A-Z][a-z]+", t)[:2]
        subject, answer = re.search(r" ([A-Z][a-z]+) [a-z ]+? ([A-Z][a-z]+)\.$", t).groups()
        assert {subject, answer} == {a, b}, t
    v9 = training_text_generators(_v4_split("v9"), sentences)
    v9_ioi = [v9["ioi"](rng) for _ in range(600)]
    brown_framed = re.compile(r"[A-Z]\w* turned to [A-Z]\w* again|In the dark [A-Z]|(For a moment|In fact,) [A-Z]")
    assert not any(brown_framed.search(t) for t in v9_ioi)  # (v9 has the sentences as fillers and Brown actions)


def test_v2_drops_brown_sentences_with_heldout_words_or_phrases():
    assert clean_sentences(NEUTRAL + CONTAMINATED) == NEUTRAL
    assert set(leaks("so neither  spirit\nnor matter, At last")) == {"neither  spirit\nnor matter", "At last"}


def test_v1_text_is_what_built_the_shipped_default():
    """A sample of v1 text hashed with the code of build 5 (commit d0eb2b8) and after v2 was added."""
    sentences = [
        "The jury said that the election was conducted well and fairly in every district of the city.",
        "He walked slowly down the long road toward the river, where the boats were waiting for the morning tide.",
        "It is not clear whether the new plan will help the farmers or the workers in the spring.",
    ]
    split = make_split(
        list(NAMES),
        list(NOUNS),
        seed=0,
        extra_rel_verbs=["discovered", "replied", "welcomed", "assured"],
        n_validation_verbs=1,
    )
    h = hashlib.sha256()
    for stage in ((0, 0, 0), (4, 1, 1), (40, 10, 8)):
        gens = training_text_generators(split, sentences, stage)
        rng = random.Random(5)
        for name in sorted(gens):
            for _ in range(300):
                h.update(gens[name](rng).encode())
    assert h.hexdigest() == "fbfd48e6f7d004e9a4cc519cbf97a0bc3b1cbcb8ac2a1d1565c5182672e77aaf"


def test_task_text_version_in_split_config_and_cli():
    from core.build.pipeline import model_config_hash, task_text_to_build
    from core.build.train_model import ModelTrainingConfig

    v1 = make_split(list(NAMES), list(NOUNS), seed=0)
    assert "task_text" not in v1.to_json() and TaskSplit.from_json(v1.to_json()).task_text == "v1"
    v2 = _v2_split()
    assert TaskSplit.from_json(v2.to_json()) == v2 and v2.to_json()["task_text"] == "v2"
    with pytest.raises(
        ValueError,
        match="unknown task text 'v0'; choose one of v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15$",
    ):
        make_split(list(NAMES), list(NOUNS), task_text="v0")
    # build 5's manifest key: a v1 build stays up to date, a v2 build retrains the model
    assert model_config_hash(ModelTrainingConfig()) == "454cf3bd8d2c8a47"
    assert model_config_hash(ModelTrainingConfig(task_text="v2")) != "454cf3bd8d2c8a47"
    # without --task-text a build keeps its model's version: build 5's manifest has none (v1)
    assert task_text_to_build({"model_training": {"seed": 0}}, None) == "v1"
    assert task_text_to_build({"model_training": {"task_text": "v2"}}, None) == "v2"
    assert task_text_to_build({}, None) == "v1" and task_text_to_build({"model_training": {}}, "v2") == "v2"
    with pytest.raises(ValueError, match="unknown task text"):
        task_text_to_build({}, "v0")


def test_v2_text_covers_depths_spans_prepositions_and_frames():
    split = _v2_split()
    gens = training_text_generators(split, NEUTRAL * 20)
    rng = random.Random(3)
    depths, spans = set(), []
    for _ in range(600):
        text = gens["brackets"](rng)
        depth = max(np.cumsum([{"(": 1, ")": -1, "[": 1, "]": -1}.get(c, 0) for c in text]))
        depths.add(int(depth))
        spans.append(len(re.split(r"[(\[]", text, maxsplit=1)[1].split()))
    assert depths == {1, 2, 3} and max(spans) > 40 and min(spans) <= 3
    endings = {gens["ioi"](rng).rsplit(" ", 2)[1] for _ in range(3000)}
    assert {"to", "at", "with", "for", "from", "about", "on", "into", "of"} <= endings


def _outer_bracket_words(text: str) -> int:
    """Words between the first opening bracket and the bracket that closes it."""
    start = re.search(r"[(\[]", text).start()
    depth = 0
    for i, c in enumerate(text[start:], start):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(c, 0)
        if depth == 0:
            return len(re.sub(r"[()\[\]]", " ", text[start:i]).split())
    raise AssertionError(f"unclosed bracket in training text: {text!r}")


def test_shape_heldout_bracket_sets_lie_outside_every_training_shape():
    """No v2 bracket text reaches depth 4 or holds more than 60 words in a bracket; the held-out sets do."""
    gens = training_text_generators(_v2_split(), NEUTRAL * 20)
    rng = random.Random(5)
    texts = [gens["brackets"](rng) for _ in range(3000)]
    depths = [max(np.cumsum([{"(": 1, ")": -1, "[": 1, "]": -1}.get(c, 0) for c in t])) for t in texts]
    assert max(depths) == 3 and max(_outer_bracket_words(t) for t in texts) <= 60
    split = make_split(list(NAMES), list(NOUNS), seed=0)
    deep = generalisation_items("brackets_depth4_inner_closed", split, NEUTRAL, 20)
    assert all(it.prompt.count("(") == 4 for it in deep)
    long = generalisation_items("brackets_span_over_60", split, NEUTRAL, 20)
    assert all(len(it.prompt.rsplit("(", 1)[1].split()) > 60 for it in long[0::2])
    assert set(SHAPE_HELDOUT_SETS) <= set(BRACKET_SETS)


def test_tiny_model_learns_planted_copying_from_v2_text(tmp_path):
    """A 2-layer model trained for 500 steps on v2 copy text (all of it; 1 in 7 sentences is the planted frame
    "A smiled. Everyone looked at A.") names the person the sentence mentioned, not another one."""
    from core.build.evaluate import task_accuracy
    from core.build.tasks import TaskItem
    from core.build.tokenizer import load_bpe, save_tokenizer, single_token_words, train_bpe
    from core.build.train_model import ModelTrainingConfig, _build_rows, _new_model, _optimizer, _train_loop

    names = ["Mary", "John", "Tom", "Anna", "Paul", "Sarah", "David", "Lisa"]
    split = make_split(names, list(NOUNS)[:6], seed=0, heldout_frac=0.0, task_text="v2")
    gens = training_text_generators(split, NEUTRAL)
    rng = random.Random(0)
    text = [gens[k](rng) for k in ("copy", "ioi", "number") for _ in range(800)]
    save_tokenizer(train_bpe(text, 600), tmp_path, model_max_length=32)
    bpe = load_bpe(tmp_path)
    assert single_token_words(bpe, names) == names
    from core.build.tokenizer import load_tokenizer

    cfg = ModelTrainingConfig(
        vocab_size=bpe.get_vocab_size(),
        n_layers=2,
        d_model=64,
        n_heads=4,
        d_mlp=128,
        n_ctx=32,
        batch_size=16,
        steps=500,
        lr=1e-2,
        warmup_steps=20,
        task_share_start=1.0,
        task_share_end=1.0,
        task_weights={"copy": 1.0},
        ioi_curriculum=(),
        eval_every=10_000,
        task_text="v2",
    )
    brown = np.zeros(200, dtype=np.int32)
    rows = _build_rows(cfg, bpe, brown, split, NEUTRAL)
    torch.set_num_threads(1)
    model = _new_model(cfg, load_tokenizer(tmp_path))
    # planted: the one name a sentence mentioned is the next word after "Everyone looked at"
    probe = random.Random(1)
    items = []
    for _ in range(64):
        a, b = probe.sample(names, 2)
        items.append(TaskItem("copy", f"{a} smiled. Everyone looked at", " " + a, " " + b))
    before = task_accuracy(model, items)
    val = torch.from_numpy(rows[:4].astype(np.int64))
    _train_loop(model, _optimizer(model, cfg), rows, cfg, val, {}, False, 0.0)
    model.eval()
    after = task_accuracy(model, items)
    # seeded: 0.44 -> 1.00 (after 300 steps still 0.53: the behaviour appears between 300 and 500)
    assert before < 0.6 and after >= 0.9, (before, after)


def test_induction_rows_repeat_a_random_segment_and_follow_their_schedule():
    from core.build.pipeline import model_config_hash
    from core.build.train_model import ModelTrainingConfig, induction_row, induction_share, training_config

    rng = np.random.default_rng(0)
    rows = [induction_row(rng, 128, 50, bos=0) for _ in range(200)]
    for row in rows:
        assert row.dtype == np.int32 and row.shape == (128,) and row[0] == 0
        assert (row[1:] >= 1).all() and (row[1:] <= 49).all()  # every id but BOS's
        period = next(p for p in range(8, 41) if np.array_equal(row[1 + p :], row[1 : 128 - p]))
        assert 8 <= period <= 40
    assert len({len(np.unique(r[1:])) for r in rows}) > 10  # segments differ in length and content
    cfg = training_config("v5")
    assert cfg.task_text == "v5" and cfg.tie_embeddings
    assert [induction_share(cfg, s) for s in (0, 999, 1000, 3999, 4000)] == [0.25, 0.25, 0.08, 0.08, 0.0]
    assert induction_share(ModelTrainingConfig(), 0) == 0.0
    assert model_config_hash(ModelTrainingConfig()) == "454cf3bd8d2c8a47"  # build 5 stays up to date


def test_repeated_tokens_accuracy_scores_a_perfect_copier_one_and_a_repeater_zero():
    from types import SimpleNamespace

    from core.build.evaluate import repeated_tokens_accuracy

    class Copier(torch.nn.Module):
        """Predicts at each position the token that followed its previous occurrence (`shift` back), else itself."""

        def __init__(self, shift: int | None):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.cfg = SimpleNamespace(d_vocab=50)
            self.tokenizer = SimpleNamespace(bos_token_id=0)
            self.shift = shift

        def forward(self, tokens):
            nxt = tokens.clone()
            if self.shift:
                nxt[:, self.shift :] = tokens[:, 1 : tokens.shape[1] - self.shift + 1]
            return torch.nn.functional.one_hot(nxt, 50).float()

    assert repeated_tokens_accuracy(Copier(shift=10), n=20, length=10) == 1.0
    assert repeated_tokens_accuracy(Copier(shift=None), n=20, length=10) < 0.1  # (a token may repeat by chance)
