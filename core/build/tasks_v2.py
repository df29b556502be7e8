"""Task text v2: the three behaviours in general form, so that they hold beyond their templates.

Selected by `python -m core build-default --task-text v2` (`ModelTrainingConfig.task_text`); v1
(core.build.tasks) stays what a plain build reproduces. Changes from v1:
- **IOI**: introductions from v1's templates, composed ones (opener x pair x verb phrase x place)
  and real Brown sentences that begin with "They", with the pronoun replaced by "A and B";
  optionally a Brown sentence between introduction and action; actions ending in every
  preposition an IOI action takes (to, at, with, for, from, about, on, toward, into, of, ...);
  names from a pool of hundreds (`V2_EXTRA_NAMES` besides v1's).
- **Agreement**: every singular/plural pair the Brown Corpus tags NN/NNS whose forms are single
  tokens (`brown_noun_pairs`), more prepositions, two stacked distractors, subject relative
  clauses, and a Brown sentence of context before.
- **Brackets**: depth 1-3, spans of 1-60 words.
- Copy and number frames as v1, over v2's names and nouns.
v8 is v4's text trained as v7 (from the planted induction circuit, after an induction warm-up). v9 is
v8 with half of the IOI actions after the curriculum taken from Brown (`brown_actions`: hundreds of verb
phrases that end in a preposition and take a person), so that IOI is not tied to a few dozen verbs. v10 is
v9 with IOI introductions (`brown_pair_intros`: Brown sentences about two people, "He turned to her again")
and connectors (`brown_connectors`: ". When", ". For a moment", ", but") taken from Brown as well; v11-v13
are v9's text (their builds train a 6-layer model, v12's and v13's with a fixed bracket head). v14 is v9's
text with half of the composed introductions joined to the action by random words (`random_connector`:
". Quiet river open," or ", rather fast") instead of v2's connectors: v12 found the action's subject by the
connector before it (IOI 0.85-0.91 after ", " or ". Then", 0.46-0.55 after ", so" or ". One morning"), so
v14's subject can be told only by being one of the pair again. v15 is v14's text (its tokenizer differs).
Nothing in the generalisation sets (core.build.generalisation) is produced: their names and nouns
are left out of the pools, and Brown sentences that contain one of them, or one of their frame
phrases, are dropped before any is used as a frame, filler or span.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from core.build.generalisation import (
    GEN_FRAME_PHRASES,
    GEN_NAMES,
    GEN_NOUNS,
    frame_patterns,
    heldout_words,
    words_from,
)
from core.build.tasks import (
    ADJECTIVES,
    IOI_ACTIONS_TRAIN,
    IOI_INTROS_TRAIN,
    NAMES,
    NOUNS,
    OBJECTS,
    PLACES,
    PREDICATES,
    SVA_PREPS_HELDOUT,
    SVA_PREPS_TRAIN,
    SVA_REL_VERBS_HELDOUT,
    TaskSplit,
    _copy_text,
    _number_text,
)

V2_EXTRA_NAMES = (
    "Abby Alan Albert Alfred Allen Andy Angela Annie Barbara Barry Bernard Bert Bessie Bonnie Brenda Carlos "
    "Cecil Celia Chester Claire Clyde Colin Connie Craig Daisy Dale Daniel Dean Debbie Derek Dora Doris "
    "Dorothy Doug Douglas Duncan Earl Edgar Edna Elaine Eli Eliza Elmer Elsie Emily Ernest Esther Ethel "
    "Eugene Evan Felix Flora Floyd Frances Gail Gene Gerald Gilbert Glen Gloria Gordon Hal Hannah Harvey "
    "Herman Holly Homer Iris Irma Isaac Ivan Jake Jay Jesse Jimmy Joel Jonah Josh Judith Kurt Kyle Lena "
    "Leon Leslie Lillian Lloyd Lois Lola Lynn Marcus Marge Marion Marvin Maud Mildred Milton Mona Monica "
    "Morris Nell Neil Noah Norma Norman Olive Otto Pam Patrick Peggy Percy Phyllis Rex Rhoda Rosa Ross "
    "Rufus Russell Ruby Rudy Sadie Seth Stan Stella Stuart Sylvia Thelma Toby Todd Troy Vince Viola Wade "
    "Wanda Wayne Wendy Willa Yvonne Zoe"
).split()

# Pairs the NN/NNS rule finds that are not a noun's two numbers (verbs, adjectives, idioms).
_NOT_NOUN_PAIRS = set(
    (
        "help mean leave cloth good say want make lie pro meet run hold look stand lead turn use return need "
        "present set call show mark move cover play offer being finding lot right wave share work act "
        "interest increase order demand claim stage spirit stem plastic good sport"
    ).split()
)

# Openers, pairs, verb phrases and connectors of composed IOI introductions.
V2_OPENERS = (
    "",
    "Yesterday ",
    "On Sunday ",
    "Early in the morning ",
    "After school ",
    "Last week ",
    "One day ",
    "That evening ",
    "In the spring ",
    "Around noon ",
    "On Friday night ",
    "Two days ago ",
    "Before dinner ",
    "In the afternoon ",
)
V2_PAIRS = ("{A} and {B}", "{A} and {B}", "Both {A} and {B}", "{A} together with {B}", "{A}, with {B},")
V2_VERB_PHRASES = (
    "went to the {place}",
    "walked into the {place}",
    "stopped at the {place}",
    "had coffee at the {place}",
    "waited outside the {place}",
    "looked around the {place}",
    "arrived late at the {place}",
    "ate breakfast at the {place}",
    "ran to the {place}",
    "came back from the {place}",
    "spent an hour at the {place}",
    "drove past the {place}",
    "found a {obj} near the {place}",
    "were cleaning the {place}",
    "were painting the {place}",
    "stood in line at the {place}",
)
V2_CONNECTORS = (
    ". Then",
    ". Later",
    ". Afterwards",
    ". Soon",
    ". After that,",
    ". In the end,",
    ". Next,",
    ". That night",
    ". Right away",
    ", and",
    ", and then",
    ", where",
)
# IOI actions by the preposition they end in: the answer is the other name whatever the preposition.
V2_ACTIONS = {
    "to": (
        "gave the {obj} to",
        "handed a {obj} to",
        "passed the {obj} to",
        "sent a postcard to",
        "showed the {obj} to",
        "sold a {obj} to",
        "wrote a long letter to",
        "talked to",
        "listened to",
        "spoke quietly to",
        "read the news to",
        "sang to",
        "ran over to",
    ),
    "at": (
        "laughed at",
        "stared at",
        "glared at",
        "looked at",
        "yelled at",
        "winked at",
        "frowned at",
        "threw the {obj} at",
        "aimed the {obj} at",
        "waved at",
        "barked at",
        "peered at",
    ),
    "with": ("shared the {obj} with", "left the {obj} with", "played cards with", "argued with", "danced with"),
    "for": ("bought a {obj} for", "made a {obj} for", "saved a seat for", "cooked dinner for", "waited for"),
    "from": ("took the {obj} from", "borrowed a {obj} from", "got a {obj} from", "heard the news from"),
    "about": ("asked about", "talked about", "worried about", "wrote a song about"),
    "on": ("called on", "relied on", "checked on", "spied on"),
    "toward": ("ran toward", "walked towards", "turned toward"),
    "into": ("bumped into", "ran into"),
    "of": ("thought of", "took a photo of", "was jealous of", "was proud of"),
    "other": ("stood behind", "sat next to", "ran after", "played against", "leaned against", "stood near", "hid from"),
}
_WORD = re.compile(r"[A-Za-z]+")
_PHRASES = list(zip(GEN_FRAME_PHRASES, frame_patterns(), strict=True))
V2_SVA_EXTRA_PREPS = "underneath alongside opposite upon throughout beyond".split()
V2_SVA_VERBS = (("is", "are"), ("was", "were"), ("has", "have"))
# bracket sentences: depth 1-3, and the most words a bracket's inside may take (a depth-1 inside takes a
# uniform 1..budget words), drawn with these weights
V2_BRACKET_DEPTHS = ((1, 2, 3), (0.5, 0.35, 0.15))
V2_BRACKET_BUDGETS = ((12, 30, 60), (0.4, 0.3, 0.3))


def brown_noun_pairs(package_dir: Path, min_singular: int = 10, min_plural: int = 3) -> list[tuple[str, str]]:
    """(singular, plural) pairs of Brown's training files: a word tagged `nn` at least `min_singular` times and
    its '-s', '-es' or '-ies' form tagged `nns` at least `min_plural` times; most frequent first.

    Some of these are not nouns in both forms (`_NOT_NOUN_PAIRS` drops the common ones); the build keeps
    only pairs whose two forms are single tokens.
    """
    from core.build.corpus import training_tagged_words

    singular: Counter[str] = Counter()
    plural: Counter[str] = Counter()
    for word, tag in training_tagged_words(package_dir):
        if word.isalpha() and word.islower():
            if tag == "nn":
                singular[word] += 1
            elif tag == "nns":
                plural[word] += 1
    pairs = []
    for s, count in singular.most_common():
        if count < min_singular or s in _NOT_NOUN_PAIRS:
            continue
        forms = [s + "s", s + "es"] + ([s[:-1] + "ies"] if s.endswith("y") else [])
        for p in forms:
            if plural.get(p, 0) >= min_plural:
                pairs.append((s, p))
                break
    return pairs


V3_MIN_PROPER_NOUN_COUNT = 3


def brown_proper_nouns(package_dir: Path, min_count: int = V3_MIN_PROPER_NOUN_COUNT) -> list[str]:
    """Capitalised words Brown's training files tag `np` (proper noun) at least `min_count` times, most
    frequent first, less every generalisation word: v3's pool of about two thousand names.

    People, places, months and firms alike: an IOI or copy sentence over names this many and this varied
    rewards copying whichever token was said, not recalling a few hundred names one by one (build 5 and
    v2 copied the names their task text used and no others; docs/default-model.md).
    """
    from core.build.corpus import training_tagged_words

    counts: Counter[str] = Counter()
    for word, tag in training_tagged_words(package_dir):
        if tag == "np" and word.isalpha() and word[0].isupper() and word[1:].islower():
            counts[word] += 1
    held = heldout_words()
    return [w for w, n in counts.most_common() if n >= min_count and w not in held]


# v4: the share of IOI and copy sentences whose names are random capitalised vocabulary words, and of
# copy sentences that are a random word sequence said twice (generic induction over the whole vocabulary)
V4_RANDOM_NAME_SHARE = 0.5
V4_RANDOM_SEQUENCE_SHARE = 0.25
# capitalised words are no random name when their lower-case form is among the tokenizer's first words
# (its earliest merges, the most frequent words: "The", "He", "Then" stay what they are)
V4_COMMON_WORDS = 500

# v9: IOI actions taken from Brown, "<pronoun> <up to five words> <preposition> <pronoun>" with the words and
# preposition kept ("glanced at", "caught up with", "passed on to"), beside v2's hand-written ones
V9_BROWN_ACTION_SHARE = 0.5
# the versions whose IOI takes actions (v9 on; v11-v15 are v9's text in a larger model) and introductions and
# connectors (v10) from Brown
BROWN_ACTION_VERSIONS = ("v9", "v10", "v11", "v12", "v13", "v14", "v15")
BROWN_INTRO_VERSIONS = ("v10",)
# v14: connectors of random words, so that no word before the action's subject marks it
RANDOM_CONNECTOR_VERSIONS = ("v14", "v15")
V14_RANDOM_CONNECTOR_SHARE = 0.5
_ACTION_PREPOSITIONS = (
    "to|at|with|for|from|about|on|toward|towards|into|of|behind|near|after|against|beside|past|around|over|"
    "across|upon|under|beneath|without"
)
_BROWN_ACTION = re.compile(
    rf"\b(?:He|She|he|she|They|they|I|We|we) ((?:[a-z]+ ){{0,4}}?(?:{_ACTION_PREPOSITIONS})) (?:him|her|them|me|us)\b"
)
_PRONOUNS = frozenset("he she it they i we you him her them me us his".split())


def brown_actions(sentences: list[str]) -> list[str]:
    """Distinct verb phrases that end in a preposition and take a person in `sentences`: what follows a subject
    pronoun up to a preposition and an object pronoun ("She glanced at him" -> "glanced at"), in first-seen order.
    Phrases with another pronoun inside are left out."""
    found: dict[str, None] = {}
    for sentence in sentences:
        for match in _BROWN_ACTION.finditer(sentence):
            phrase = match.group(1)
            if not _PRONOUNS & set(phrase.split()):
                found.setdefault(phrase)
    return list(found)


# v10: IOI introductions and connectors taken from Brown beside v2's composed ones (after the curriculum)
V10_BROWN_INTRO_SHARE = 0.3
V10_BROWN_CONNECTOR_SHARE = 0.5
# a connector is kept when Brown has it at least this often (drops one-off fragments such as ". Having no choice,")
V10_MIN_CONNECTOR_COUNT = 2
_OBJECT_HER = re.compile(
    r"^(?:[.,;:!?]|$| (?:the|a|an|to|at|with|for|from|in|on|into|about|up|down|out|off|back|and|as|that|again|away|"
    r"so|too|once|now|then|over|by)\b(?![-']))"
)
_NOT_CONNECTOR_START = frozenset(
    "what was did could would does had why how is do can will should where who which were are has have may might must "
    "shall whom whose this these those there".split()
)
_ALL_PRONOUNS = _PRONOUNS | frozenset(
    "hers its their theirs my mine our ours your yours himself herself themselves ourselves myself yourself".split()
)
_LEAD_CONNECTOR = re.compile(r"^([A-Z][a-z]+(?: [a-z]+){0,3})(,?) (?:he|she|they) [a-z]")
_MID_CONNECTOR = re.compile(r"[a-z], ((?:[a-z]+ ){0,2}[a-z]+),? (?:he|she|they) [a-z]")


def _frame_sentences(sentences: list[str]) -> list[str]:
    """Sentences fit to frame an IOI introduction: 5-22 words, a full stop, no quotes or braces, no capital after the
    first word (no third person named)."""
    return [
        s for s in sentences if s.endswith(".") and 5 <= len(s.split()) <= 22 and not re.search(r"\s[A-Z]|[\"{}]", s)
    ]


def brown_pair_intros(sentences: list[str]) -> list[str]:
    """IOI introductions from sentences about two people, as templates over {A} and {B} without the full stop.

    A sentence whose only pronouns are a subject he/she and a later object him/her gives "{A} ... {B}"
    ("He turned to her again." -> "{A} turned to {B} again"); one that starts with "We" and has no other
    pronoun gives "{A} and {B} ..." ("We were sitting together, talking."). "her" followed by a noun
    (a possessive) is left out."""
    out: dict[str, None] = {}
    for s in _frame_sentences(sentences):
        words = re.findall(r"[A-Za-z']+", s)
        pronouns = [w.lower() for w in words if w.lower() in _ALL_PRONOUNS]
        if pronouns == ["we"] and s.startswith("We "):
            out.setdefault("{A} and {B}" + s[len("We") : -1])
        elif len(pronouns) == 2 and pronouns[0] in ("he", "she") and pronouns[1] in ("him", "her"):
            subject = re.search(r"\b(?:He|he|She|she)\b", s)
            obj = re.search(rf"\b{pronouns[1]}\b", s[subject.end() :])
            if obj is None or (pronouns[1] == "her" and not _OBJECT_HER.match(s[subject.end() + obj.end() :])):
                continue
            at = subject.end() + obj.start()
            text = s[: subject.start()] + "{A}" + s[subject.end() : at] + "{B}" + s[at + len(pronouns[1]) : -1]
            out.setdefault(text)
    return list(out)


def brown_connectors(sentences: list[str], min_count: int = V10_MIN_CONNECTOR_COUNT) -> list[str]:
    """Words that join a clause to one whose subject is a person, from `sentences`, as IOI connectors.

    A sentence's opening words before he/she/they give ". <words>" (". When", ". For a moment", ". In fact,");
    words after a comma and before he/she/they give ", <words>" (", but", ", and when"). Kept when seen at least
    `min_count` times; none holds a pronoun, and none opens a question."""

    def joins(phrase: str) -> bool:  # no pronoun, no question's opening, no "... said"
        words = phrase.lower().split()
        return not _ALL_PRONOUNS & set(words) and words[0] not in _NOT_CONNECTOR_START and words[-1] != "said"

    counts: Counter[str] = Counter()
    for s in sentences:
        lead = _LEAD_CONNECTOR.match(s)
        if lead and joins(lead.group(1)):
            counts[". " + lead.group(1) + lead.group(2)] += 1
        for mid in _MID_CONNECTOR.finditer(s):
            if joins(mid.group(1)):
                counts[", " + mid.group(1)] += 1
    return [c for c, n in counts.items() if n >= min_count]


def connector_words(sentences: list[str]) -> list[str]:
    """Lower-case words of `sentences` (letters only, no pronoun), each once, in order of first use: v14's
    random connectors."""
    words = (w for s in sentences for w in re.findall(r"(?<![\w'-])[a-z]+(?![\w'-])", s))
    return [w for w in dict.fromkeys(words) if w not in _ALL_PRONOUNS]


def random_connector(rng: random.Random, words: list[str]) -> str:
    """What joins an IOI introduction to its action in v14: ". " and 1-3 random `words` (the first capitalised),
    or ", " and 1-2 of them, a comma after either half the time (". Quiet river open,", ", rather fast")."""
    if rng.random() < 0.5:
        picked = [rng.choice(words) for _ in range(rng.randint(1, 3))]
        text = ". " + " ".join([picked[0].capitalize(), *picked[1:]])
    else:
        text = ", " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 2)))
    return text + ("," if rng.random() < 0.5 else "")


def vocabulary_words(tok) -> list[str]:
    """The words a `tokenizers.Tokenizer` encodes as one token after a space (ASCII letters, two or more), in id order."""
    out = []
    for i in range(tok.get_vocab_size()):
        s = tok.decode([i])
        if s.startswith(" ") and len(s) > 2 and s[1:].isascii() and s[1:].isalpha():
            out.append(s[1:])
    return out


def v2_pools(package_dir: Path | None) -> tuple[list[str], list[tuple[str, str]]]:
    """Candidate names and noun pairs of v2 (before the single-token filter): v1's, `V2_EXTRA_NAMES` and
    Brown's NN/NNS pairs, less every generalisation name and noun."""
    held = heldout_words()
    names = [n for n in dict.fromkeys(list(NAMES) + V2_EXTRA_NAMES) if n not in held]
    nouns = list(NOUNS) + (brown_noun_pairs(package_dir) if package_dir else [])
    nouns = [p for p in dict.fromkeys(nouns) if not (set(p) & held) and p not in GEN_NOUNS]
    return names, nouns


def clean_sentences(sentences: list[str], extra_words: frozenset[str] = frozenset()) -> list[str]:
    """`sentences` less those containing a generalisation name, noun or frame phrase (or one of `extra_words`)."""
    words = heldout_words() | extra_words
    # each phrase's longest word, lower-cased: a cheap test before its regex (50k sentences in < 1 s)
    keyed = [(max(_WORD.findall(re.sub(r"\{\w+\}", "", ph)), key=len).lower(), p) for ph, p in _PHRASES]
    out = []
    for s in sentences:
        if set(_WORD.findall(s)) & words:
            continue
        lower = s.lower()
        if any(key in lower and p.search(s) for key, p in keyed):
            continue
        out.append(s)
    return out


class _V2Text:
    """The v2 generators over one split and one (already cleaned) sentence list."""

    def __init__(self, split: TaskSplit, sentences: list[str], ioi_stage: tuple[int, int, int]):
        self.split = split
        names = frozenset(split.train_names + split.heldout_names)
        self.sentences = clean_sentences(sentences, extra_words=names) or ["The day was long and the road was dry."]
        self.they = [
            s[len("They ") :]
            for s in self.sentences
            if s.startswith("They ") and s.endswith(".") and 5 <= len(s.split()) <= 22 and '"' not in s
        ]
        # fillers: no capitalised word after the first, so no other person is named
        self.fillers = [
            s
            for s in self.sentences
            if s.endswith(".") and 4 <= len(s.split()) <= 20 and not re.search(r"\s[A-Z]", s) and '"' not in s
        ] or self.sentences
        self.stage = ioi_stage
        self.actions = [(p, a) for p, acts in V2_ACTIONS.items() for a in acts]
        from_brown = split.task_text in BROWN_ACTION_VERSIONS
        self.brown_actions = brown_actions(self.sentences) if from_brown else []
        intros = split.task_text in BROWN_INTRO_VERSIONS
        self.brown_intros = brown_pair_intros(self.sentences) if intros else []
        self.brown_connectors = brown_connectors(self.sentences) if intros else []
        random_connectors = split.task_text in RANDOM_CONNECTOR_VERSIONS
        self.connector_words = connector_words(self.fillers) if random_connectors else []
        # v4: capitalised vocabulary words as names, and a split whose names they are (for copy text)
        self.words = list(split.vocabulary_words)
        common = {w.lower() for w in self.words[:V4_COMMON_WORDS]}
        self.random_names = [w for w in self.words if w[0].isupper() and w[1:].islower() and w.lower() not in common]
        self.random_split = (
            TaskSplit(tuple(self.random_names), (), split.train_nouns, split.heldout_nouns, task_text=split.task_text)
            if len(self.random_names) >= 5
            else None
        )

    def _random_names(self, rng: random.Random) -> bool:
        """Whether this sentence's names are random vocabulary words (v4-v6 and v8-v15, after the IOI curriculum)."""
        return self.random_split is not None and not any(self.stage) and rng.random() < V4_RANDOM_NAME_SHARE

    def ioi(self, rng: random.Random) -> str:
        n_names, n_intros, n_actions = self.stage
        names = self.random_names if self._random_names(rng) else self.split.train_names[: n_names or None]
        a, b = rng.sample(names, 2)
        subject, indirect = (b, a) if rng.random() < 0.5 else (a, b)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        if n_intros or n_actions:  # the curriculum: v1's first templates only
            intro = rng.choice(IOI_INTROS_TRAIN[: n_intros or None]).format(A=a, B=b, place=place, obj=obj)
            action = rng.choice(IOI_ACTIONS_TRAIN[: n_actions or None]).format(S=subject, obj=rng.choice(OBJECTS))
            return f"{intro}{action} {indirect}."
        r = rng.random()
        if r < 0.25:
            intro = rng.choice(IOI_INTROS_TRAIN).format(A=a, B=b, place=place, obj=obj)
        elif self.brown_intros and rng.random() < V10_BROWN_INTRO_SHARE:
            body = rng.choice(self.brown_intros).format(A=a, B=b)
            intro = body + self._connector(rng)
        else:
            if r < 0.6 or not self.they:
                pair = rng.choice(V2_PAIRS).format(A=a, B=b)
                opener = rng.choice(V2_OPENERS)
                vp = rng.choice(V2_VERB_PHRASES).format(place=place, obj=obj)
                body = f"{opener}{pair} {vp}"
            else:
                body = f"{a} and {b} " + rng.choice(self.they)[:-1]
            if rng.random() < 0.3:
                body += ". " + rng.choice(self.fillers)[:-1]
            intro = body + self._connector(rng)
        if r < 0.25 and rng.random() < 0.5:
            action = rng.choice(IOI_ACTIONS_TRAIN).format(S=subject, obj=rng.choice(OBJECTS))
        elif self.brown_actions and rng.random() < V9_BROWN_ACTION_SHARE:
            action = f" {subject} {rng.choice(self.brown_actions)}"
        else:
            action = f" {subject} " + rng.choice(self.actions)[1].format(obj=rng.choice(OBJECTS))
        return f"{intro}{action} {indirect}."

    def _connector(self, rng: random.Random) -> str:
        """What joins an IOI introduction to its action: v2's, or Brown's for v10 half the time, or random
        words for v14 half the time."""
        if self.connector_words and rng.random() < V14_RANDOM_CONNECTOR_SHARE:
            return random_connector(rng, self.connector_words)
        if self.brown_connectors and rng.random() < V10_BROWN_CONNECTOR_SHARE:
            return rng.choice(self.brown_connectors)
        return rng.choice(V2_CONNECTORS)

    def sva(self, rng: random.Random) -> str:
        nouns = self.split.train_nouns
        n1, n2, n3 = (rng.choice(nouns) for _ in range(3))
        plural1 = rng.random() < 0.5
        plural2 = (not plural1) if rng.random() < 0.7 else plural1
        subject, distractor = n1[plural1], n2[plural2]
        adj = rng.choice(ADJECTIVES) + " " if rng.random() < 0.4 else ""
        preps = list(SVA_PREPS_TRAIN) + V2_SVA_EXTRA_PREPS
        kind = rng.random()
        if kind < 0.4:
            phrase = f"The {subject} {rng.choice(preps)} the {adj}{distractor}"
        elif kind < 0.55:
            third = n3[rng.random() < 0.5]
            phrase = f"The {subject} {rng.choice(preps)} the {adj}{distractor} {rng.choice(preps)} the {third}"
        elif kind < 0.85:
            phrase = f"The {subject} that the {adj}{distractor} {rng.choice(self.split.train_rel_verbs)}"
        else:  # a subject relative clause: the verb inside agrees with the subject too
            inner = ("have" if plural1 else "has") if rng.random() < 0.5 else rng.choice(self.split.train_rel_verbs)
            phrase = f"The {subject} that {inner} the {adj}{distractor}"
        singular_verb, plural_verb = rng.choice(V2_SVA_VERBS)
        verb = plural_verb if plural1 else singular_verb
        rest = rng.choice(PREDICATES) if verb in ("is", "are", "was", "were") else f"a {rng.choice(OBJECTS)}"
        sentence = f"{phrase} {verb} {rest}."
        if rng.random() < 0.3:
            sentence = rng.choice(self.fillers) + " " + sentence
        return sentence

    def _inside(self, rng: random.Random, budget: int, depth: int) -> str:
        """Words for one bracket's inside, with `depth - 1` more brackets nested in it; at most `budget` words."""
        n = max(1, rng.randint(1, budget) if depth == 1 else rng.randint(1, max(1, budget // 2)))
        text = words_from(rng, self.sentences, n).split() or ["so"]  # (a span of punctuation only is empty)
        if depth > 1:
            inner = "(" + self._inside(rng, max(1, budget - n), depth - 1) + ")"
            at = rng.randint(1, len(text))
            text = text[:at] + [inner] + text[at:]
        return " ".join(text)

    def brackets(self, rng: random.Random) -> str:
        depth = rng.choices(V2_BRACKET_DEPTHS[0], weights=V2_BRACKET_DEPTHS[1])[0]
        budget = rng.choices(V2_BRACKET_BUDGETS[0], weights=V2_BRACKET_BUDGETS[1])[0]
        prefix = words_from(rng, self.sentences, rng.randint(2, 8))
        inside = self._inside(rng, budget, depth)
        opening, closing = ("(", ")") if rng.random() < 0.85 else ("[", "]")
        if opening == "[":
            inside = inside.replace("(", "[").replace(")", "]")
        rest = words_from(rng, self.sentences, rng.randint(1, 8)) if rng.random() < 0.6 else ""
        return f"{prefix} {opening}{inside}{closing}" + (f" {rest}." if rest else ".")

    def copy(self, rng: random.Random) -> str:
        if self.random_split is not None and rng.random() < V4_RANDOM_SEQUENCE_SHARE:
            sequence = " ".join(rng.choices(self.words, k=rng.randint(4, 20)))
            return f"{sequence}. {sequence}."
        split = self.random_split if self._random_names(rng) else self.split
        return _copy_text(rng, split, self.sentences)

    def number(self, rng: random.Random) -> str:
        return _number_text(rng, self.split)


def training_text_generators_v2(
    split: TaskSplit, sentences: list[str], ioi_stage: tuple[int, int, int] = (0, 0, 0)
) -> dict[str, Callable[[random.Random], str]]:
    """v2's named generators of one training sentence each (same names as v1's)."""
    text = _V2Text(split, sentences, ioi_stage)
    return {"ioi": text.ioi, "sva": text.sva, "brackets": text.brackets, "copy": text.copy, "number": text.number}


# v1's held-out SVA prepositions and relative-clause verbs must stay out of v2 text (the evaluation's
# held-out figures use them); checked once at import.
assert not set(V2_SVA_EXTRA_PREPS) & set(SVA_PREPS_HELDOUT)
assert not set(SVA_REL_VERBS_HELDOUT) & {w for acts in V2_ACTIONS.values() for a in acts for w in a.split()}
assert not set(GEN_NAMES) & set(V2_EXTRA_NAMES)
