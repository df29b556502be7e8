"""Generalisation sets: the three behaviours on names, nouns, frames and bracket shapes that no task text has.

`evaluation_items` (core.build.tasks) holds out names, nouns and templates, but its items keep the
training templates' shape. These sets go further; every name, noun and frame below is kept out of
the task text of every version (`v1`, and `v2` in core.build.tasks_v2, which also drops Brown
sentences that contain any of them), so they measure a mechanism, not a template:

- `ioi_new_names`: names no task text uses, in v1's training templates.
- `ioi_new_frames`: those names in hand-written frames (introductions, connectors, actions) that
  no task text contains.
- `ioi_to_actions`, `ioi_at_actions`, `ioi_other_prep_actions`: new names in training
  introductions, with actions no task text has, ending in "to", in "at", or in another
  preposition ("with", "for", "from", ...).
- `sva_new_nouns`: subject nouns no task text uses (both forms single tokens), v1's training frames.
- `sva_new_frames`: those nouns in noun phrases no task text has ("in front of the", ...).
- `brackets_nested_inner_closed`: `A (B (C) D` -> `)` over `.`, alternating with the closed
  control `A (B (C) D) E` -> `.` over `)`.
- `brackets_long_span`: one bracket open with 36-60 words inside -> `)`, alternating with a
  control whose bracket closed early and 36-60 words follow -> `.`.
- `brackets_depth4_inner_closed` and `brackets_span_over_60` (`SHAPE_HELDOUT_SETS`): shapes no task
  text has (v2 trains depth 1-3 and spans of 1-60 words): `A (B (C (D (E) F` -> `)` against all four
  closed then words -> `.`; one bracket open over 61-72 words against the closed control.
Bracket text comes from the validation files, as in `evaluation_items`. For bracket sets the
even-numbered items are the open-bracket ones (`inside_mask`).

Names and nouns were chosen as single tokens of build 5's tokenizer that come from the Brown
Corpus alone; `generalisation_items(..., tokenizer=...)` keeps only those that are single tokens
of the model being evaluated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from core.build.tasks import (
    ADJECTIVES,
    IOI_ACTIONS_TRAIN,
    IOI_INTROS_TRAIN,
    OBJECTS,
    PLACES,
    SVA_PREPS_TRAIN,
    SVA_VERBS,
    TaskItem,
    TaskSplit,
)

# First names that Brown makes single tokens and that no task text uses.
GEN_NAMES = (
    "Anne Alexander Charles Charlie Curt Dick Don Edward Eileen Harold Henrietta Howard Jeff Jess Jose "
    "Joseph Kay Lawrence Martin Myra Rachel Richard Robert Scotty Thomas Wally Warren William Phil Hans"
).split()

# (singular, plural) subject nouns no task text uses; both forms are single tokens from Brown alone.
GEN_NOUNS = tuple(
    tuple(p.split("/"))  # type: ignore[misc]
    for p in (
        "boat/boats cloud/clouds guest/guests poet/poets artist/artists dancer/dancers candidate/candidates "
        "tool/tools mountain/mountains egg/eggs animal/animals patient/patients owner/owners reader/readers "
        "partner/partners newspaper/newspapers weapon/weapons vehicle/vehicles column/columns circle/circles "
        "finger/fingers agent/agents kid/kids lady/ladies family/families country/countries company/companies "
        "body/bodies"
    ).split()
)

# IOI frames no task text contains: an introduction of A and B ending where the subject comes next.
GEN_IOI_INTROS = (
    "{A} and {B} were sitting on the porch of the {place}. After a while,",
    "It was raining when {A} and {B} finally got to the {place}, so",
    "The teacher asked {A} and {B} to wait outside the {place}. At last",
    "Neither {A} nor {B} had ever been inside the {place}. Once inside,",
    "{A}, who had known {B} for years, stopped by the {place}, which is why",
    "During the summer {A} and {B} worked together at the {place}. One morning",
)
GEN_ACTIONS_TO = (
    " {S} whispered the answer to",
    " {S} carried the {obj} over to",
    " {S} described the {place} to",
    " {S} promised the {obj} to",
)
GEN_ACTIONS_AT = (
    " {S} shouted at",
    " {S} smiled at",
    " {S} pointed at",
    " {S} nodded at",
    " {S} grinned at",
    " {S} hollered at",
)
GEN_ACTIONS_OTHER = (
    " {S} chatted with",
    " {S} fetched a {obj} for",
    " {S} purchased the {obj} from",
    " {S} complained about",
    " {S} sat down beside",
    " {S} raced after",
    " {S} competed against",
)
# Agreement frames (a noun phrase with a distractor) no task text contains.
GEN_SVA_FRAMES = (
    "The {s} in front of the {adj}{d}",
    "The {s} on top of the {adj}{d}",
    "The {s} at the back of the {adj}{d}",
    "The {s} on the far side of the {adj}{d}",
    "The {s} that belonged to the {adj}{d}",
    "The {s} which the {adj}{d} never mentioned",
)

# The literal phrases that identify each held-out frame: no task text may contain one (v2 drops
# Brown sentences that do).
GEN_FRAME_PHRASES = (
    "sitting on the porch of",
    "It was raining when",
    "asked {A} and {B} to wait",
    "After a while,",
    "At last",
    "Neither {A} nor {B}",
    "Once inside,",
    "who had known",
    "which is why",
    "worked together at",
    "One morning",
    "whispered the answer to",
    "carried the {obj} over to",
    "described the {place} to",
    "promised the {obj} to",
    "shouted at",
    "smiled at",
    "pointed at",
    "nodded at",
    "grinned at",
    "hollered at",
    "chatted with",
    "fetched a {obj} for",
    "purchased the {obj} from",
    "complained about",
    "sat down beside",
    "raced after",
    "competed against",
    "in front of the",
    "on top of the",
    "at the back of the",
    "on the far side of the",
    "belonged to the",
    "never mentioned",
)

GENERALISATION_SETS = (
    "ioi_new_names",
    "ioi_new_frames",
    "ioi_to_actions",
    "ioi_at_actions",
    "ioi_other_prep_actions",
    "sva_new_nouns",
    "sva_new_frames",
    "brackets_nested_inner_closed",
    "brackets_long_span",
    "brackets_depth4_inner_closed",
    "brackets_span_over_60",
)
BRACKET_SETS = (
    "brackets_nested_inner_closed",
    "brackets_long_span",
    "brackets_depth4_inner_closed",
    "brackets_span_over_60",
)
# Bracket shapes outside every task text's range (v2 trains depth 1-3 and spans of 1-60 words).
SHAPE_HELDOUT_SETS = ("brackets_depth4_inner_closed", "brackets_span_over_60")


def frame_patterns() -> list[re.Pattern[str]]:
    """One regex per held-out frame phrase, slots ({A}, {obj}, ...) matching any single word."""
    out = []
    for phrase in GEN_FRAME_PHRASES:
        parts = re.split(r"\{\w+\}", phrase)
        body = r"\w+".join(re.escape(p) for p in parts).replace(r"\ ", r"\s+")  # any whitespace between words
        out.append(re.compile(r"(?<!\w)" + body, re.IGNORECASE))
    return out


def heldout_words() -> frozenset[str]:
    """Every held-out name and noun form (the words no task text may contain)."""
    return frozenset(GEN_NAMES) | frozenset(w for pair in GEN_NOUNS for w in pair)


_WORD = re.compile(r"[A-Za-z]+")


def leaks(text: str, words: Iterable[str] | None = None, patterns: list[re.Pattern[str]] | None = None) -> list[str]:
    """The held-out names, nouns and frame phrases that occur in `text` (empty if none)."""
    words = heldout_words() if words is None else frozenset(words)
    found = sorted(set(_WORD.findall(text)) & words)
    for pattern in patterns if patterns is not None else frame_patterns():
        m = pattern.search(text)
        if m:
            found.append(m.group(0))
    return found


def _single_tokens(tokenizer, words: Iterable[str]) -> set[str]:
    if tokenizer is None:
        return set(words)
    return {w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1}


def single_token_names(tokenizer) -> list[str]:
    """The generalisation names that `tokenizer` encodes as one token after a space, in `GEN_NAMES` order."""
    return sorted(_single_tokens(tokenizer, GEN_NAMES), key=GEN_NAMES.index)


def _ioi(rng: random.Random, names: list[str], intros: tuple[str, ...], actions: tuple[str, ...]) -> TaskItem:
    a, b = rng.sample(names, 2)
    subject, indirect = (b, a) if rng.random() < 0.5 else (a, b)
    place = rng.choice(PLACES)
    intro = rng.choice(intros).format(A=a, B=b, place=place, obj=rng.choice(OBJECTS))
    action = rng.choice(actions).format(S=subject, obj=rng.choice(OBJECTS), place=rng.choice(PLACES))
    return TaskItem("ioi", intro + action, " " + indirect, " " + subject)


def _sva(rng: random.Random, nouns: list[tuple[str, str]], distractors: list[tuple[str, str]], frames) -> TaskItem:
    n1 = rng.choice(nouns)
    n2 = rng.choice([d for d in distractors if d != n1])
    plural1 = rng.random() < 0.5
    plural2 = (not plural1) if rng.random() < 0.7 else plural1
    adj = rng.choice(ADJECTIVES) + " " if rng.random() < 0.5 else ""
    prompt = rng.choice(frames).format(s=n1[plural1], d=n2[plural2], adj=adj)
    singular_verb, plural_verb = rng.choice(SVA_VERBS)
    correct, incorrect = (plural_verb, singular_verb) if plural1 else (singular_verb, plural_verb)
    return TaskItem("sva", prompt, " " + correct, " " + incorrect)


def words_from(rng: random.Random, sentences: list[str], n: int) -> str:
    """`n` words of consecutive sentences from a random start, brackets removed and sentence ends turned to ';'."""
    start = rng.randrange(len(sentences))
    words: list[str] = []
    i = start
    while len(words) < n + 1:
        sentence = re.sub(r"[()\[\]\"]", "", sentences[i % len(sentences)]).strip()
        sentence = re.sub(r"[.!?]+$", ";", sentence)
        words.extend(sentence.split())
        i += 1
    offset = rng.randint(0, min(len(words) - n, 10))
    return " ".join(words[offset : offset + n]).strip(" ,;:.!?\"'")


def _nested(rng: random.Random, sentences: list[str], inside: bool) -> TaskItem:
    prefix, c1, c2, c3 = (
        words_from(rng, sentences, rng.randint(lo, hi)) for lo, hi in ((3, 8), (1, 6), (1, 6), (1, 6))
    )
    prompt = f"{prefix} ({c1} ({c2}) {c3}"
    if inside:
        return TaskItem("brackets", prompt, ")", ".")
    return TaskItem("brackets", f"{prompt}) {words_from(rng, sentences, rng.randint(1, 6))}", ".", ")")


def _depth4(rng: random.Random, sentences: list[str], inside: bool) -> TaskItem:
    prefix = words_from(rng, sentences, rng.randint(2, 6))
    c1, c2, c3, c4, c5 = (words_from(rng, sentences, rng.randint(1, 4)) for _ in range(5))
    prompt = f"{prefix} ({c1} ({c2} ({c3} ({c4}) {c5}"
    if inside:  # three brackets still open
        return TaskItem("brackets", prompt, ")", ".")
    tails = (words_from(rng, sentences, rng.randint(1, 3)) for _ in range(3))
    return TaskItem("brackets", prompt + "".join(f") {t}" for t in tails), ".", ")")


def _long_span(rng: random.Random, sentences: list[str], inside: bool, span: tuple[int, int] = (36, 60)) -> TaskItem:
    prefix = words_from(rng, sentences, rng.randint(2, 4))
    content = words_from(rng, sentences, rng.randint(*span))
    if inside:
        return TaskItem("brackets", f"{prefix} ({content}", ")", ".")
    short = words_from(rng, sentences, rng.randint(1, 4))
    return TaskItem("brackets", f"{prefix} ({short}) {content}", ".", ")")


def generalisation_items(
    set_name: str, split: TaskSplit, sentences: list[str], n: int, tokenizer=None, seed: int = 2468
) -> list[TaskItem]:
    """`n` items of one of `GENERALISATION_SETS` (see the module docstring).

    `split` gives the training relative-clause verbs and distractor nouns; `sentences` are the
    validation sentences (bracket text); `tokenizer` (a transformers tokenizer), when given, keeps
    only the held-out names and nouns that are one token with a leading space.
    """
    if set_name not in GENERALISATION_SETS:
        raise ValueError(f"unknown generalisation set {set_name!r}; choose one of {', '.join(GENERALISATION_SETS)}")
    rng = random.Random(f"{seed}:{set_name}")
    if set_name.startswith("ioi"):
        names = single_token_names(tokenizer)
        if len(names) < 2:
            raise ValueError("fewer than two held-out names are single tokens of this tokenizer")
        intros, actions = {
            "ioi_new_names": (IOI_INTROS_TRAIN, IOI_ACTIONS_TRAIN),
            "ioi_new_frames": (GEN_IOI_INTROS, GEN_ACTIONS_TO + GEN_ACTIONS_AT + GEN_ACTIONS_OTHER),
            "ioi_to_actions": (IOI_INTROS_TRAIN, GEN_ACTIONS_TO),
            "ioi_at_actions": (IOI_INTROS_TRAIN, GEN_ACTIONS_AT),
            "ioi_other_prep_actions": (IOI_INTROS_TRAIN, GEN_ACTIONS_OTHER),
        }[set_name]
        return [_ioi(rng, names, intros, actions) for _ in range(n)]
    if set_name.startswith("sva"):
        nouns = [p for p in GEN_NOUNS if len(_single_tokens(tokenizer, p)) == 2]
        if not nouns:
            raise ValueError("no held-out noun pair is two single tokens of this tokenizer")
        distractors = list(split.train_nouns + split.heldout_nouns)
        if set_name == "sva_new_frames":
            return [_sva(rng, nouns, distractors, GEN_SVA_FRAMES) for _ in range(n)]
        # v1's training frames, with its share of relative clauses (0.3)
        preps = [f"The {{s}} {p} the {{adj}}{{d}}" for p in SVA_PREPS_TRAIN]
        rels = [f"The {{s}} that the {{adj}}{{d}} {v}" for v in split.train_rel_verbs]
        return [_sva(rng, nouns, distractors, rels if rng.random() < 0.3 else preps) for _ in range(n)]
    make = {
        "brackets_nested_inner_closed": _nested,
        "brackets_long_span": _long_span,
        "brackets_depth4_inner_closed": _depth4,
        "brackets_span_over_60": lambda r, s, inside: _long_span(r, s, inside, span=(61, 72)),
    }[set_name]
    # BOS + prompt must fit the model's context: redraw the (rare) items that would not
    limit = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    items = []
    for i in range(n):
        for _ in range(50):
            item = make(rng, sentences, inside=i % 2 == 0)
            if limit is None or len(tokenizer.encode(item.prompt, add_special_tokens=False)) < limit:
                break
        else:
            raise ValueError(f"{set_name}: 50 draws in a row did not fit the model's context of {limit} tokens")
        items.append(item)
    return items
