"""Templated text for the seed paper's behaviours, and their held-out evaluation items.

Three tasks, each an item `prompt -> (correct, incorrect)` judged by which of the two next tokens
has the higher logit:
- **ioi**: "When Mary and John went to the store, John gave a drink to" -> " Mary" over " John".
- **sva**: "The keys to the old cabinet" -> " are" over " is" (distractor noun of the other number).
- **brackets**: inside an open "(", a finished clause is followed by ")" rather than "."; outside
  one, by "." rather than ")".

Generalisation, not memorisation, is the point: names, nouns and templates are split into a
training part and a held-out part. The held-out names and nouns still occur in training text, in
*other* frames (name-copying lists and retrieval; determiners and pronouns that show a noun's
number), so their embeddings are trained while the tasks' own sentences with them stay unseen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TASKS = ("ioi", "sva", "brackets")
# Versions of the training text: v1 made build 5 (the shipped default); v2 (core.build.tasks_v2)
# teaches the behaviours in general form.
TASK_TEXT_VERSIONS = ("v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15")
# versions whose split keeps the tokenizer's vocabulary words (random names and sequences; v5 and v6 are
# v4's text, trained differently; v7 is v2's text, trained as v6 with more induction rows; v8 is v4's
# text trained as v7; v9 v8's with IOI actions from Brown; v10 v9's with IOI introductions and connectors from
# Brown; v11 is v9's text in a 6-layer model; v12 v11's with a fixed bracket head from the start; v13 v12's
# with that head's write 16 times larger; v14 v13's with random connectors in IOI; v15 v14's with a space
# before a text's first word)
VOCABULARY_WORD_VERSIONS = ("v4", "v5", "v6", "v8", "v9", "v10", "v11", "v12", "v13", "v14", "v15")


def check_task_text(version: str) -> str:
    """`version` if it is one of `TASK_TEXT_VERSIONS`, else a ValueError that lists them."""
    if version not in TASK_TEXT_VERSIONS:
        raise ValueError(f"unknown task text {version!r}; choose one of {', '.join(TASK_TEXT_VERSIONS)}")
    return version


# Common English first names; the build keeps those that are one token with a leading space.
NAMES = (
    "Mary John Tom James Anna Paul Mark Sarah David Lisa Peter Kate Jack Emma Sam Laura Mike Jane "
    "Alex Chris Dan Ben Nick Amy Ann Rose Tim Joe Bill Bob Fred Frank George Henry Jim Ken Ruth Carl "
    "Helen Alice Jean Joan Susan Linda Karen Nancy Betty Grace Lucy Julia Diana Carol Martha Kelly "
    "Adam Eric Greg Ray Roy Ted Tony Steve Walter Arthur Harry Eddie Jerry Larry Louis Victor Oscar "
    "Hugo Max Leo Ian Ryan Sean Kevin Brian Jason Scott Gary Dennis Bruce Roger Ralph Philip Simon "
    "Jacob Luke Matt Nathan Owen Adrian Ellen Irene Judy Joyce Janet Diane Clara Eva Nora Vera Ida "
    "Ella Ada Mabel Edith Agnes Hazel Pearl Sally Molly Polly Dolly Jenny Nina Tina Gina Rita Paula "
    "Marie Louise Sophie Kate Jill Beth Meg Liz Sue Pat Joy Fay May June Hope"
).split()

# (singular, plural) nouns for agreement.
NOUNS = tuple(
    tuple(pair.split("/"))  # type: ignore[misc]
    for pair in (
        "key/keys book/books dog/dogs cat/cats car/cars boy/boys girl/girls house/houses tree/trees "
        "bird/birds door/doors friend/friends teacher/teachers student/students doctor/doctors "
        "letter/letters window/windows road/roads horse/horses ship/ships river/rivers table/tables "
        "picture/pictures farmer/farmers officer/officers worker/workers child/children man/men "
        "woman/women box/boxes city/cities story/stories idea/ideas plan/plans player/players "
        "singer/singers writer/writers king/kings soldier/soldiers nurse/nurses lawyer/lawyers "
        "engine/engines machine/machines song/songs flower/flowers garden/gardens village/villages "
        "bridge/bridges chair/chairs lamp/lamps wall/walls report/reports judge/judges leader/leaders "
        "member/members neighbor/neighbors brother/brothers sister/sisters church/churches "
        "school/schools street/streets officer/officers girl/girls"
    ).split()
)
NOUNS = tuple(dict.fromkeys(NOUNS))  # drop repeats, keep order

PLACES = (
    "store market park school office station church library hospital garden restaurant house beach "
    "museum hotel theater bank farm river village"
).split()
OBJECTS = (
    "drink book ball letter bag gift key ring pen cup hat box coin map ticket flower apple card photo note"
).split()
ADJECTIVES = "old new small large red dark bright quiet heavy empty famous strange tall young".split()
PREDICATES = "ready open closed broken missing lost clean late safe full here old new".split()

# IOI: an introduction naming A and B, then an action by S ending before the indirect object.
IOI_INTROS_TRAIN = (
    "When {A} and {B} went to the {place},",
    "After {A} and {B} arrived at the {place},",
    "While {A} and {B} were working at the {place},",
    "{A} and {B} went to the {place}. Then",
    "Yesterday {A} and {B} had lunch at the {place}, and",
    "When {A} and {B} got a {obj} at the {place},",
    "Friends {A} and {B} found a {obj} at the {place}. Then",
    "{A} and {B} were at the {place} all day, and",
    "As {A} and {B} walked to the {place},",
    "On Monday, {A} and {B} visited the {place}, and",
    "{A} and {B} met at the {place}, where",
    "Later that day {A} and {B} cleaned the {place}, and",
    "Since {A} and {B} were late for the {place},",
    "{A} met {B} at the {place}, and",
    "In the morning {A} and {B} drove to the {place}. There",
    "After a long day at the {place}, {A} and {B} sat down, and",
    "Last night {A} and {B} had dinner at the {place}, and",
    "{A} and {B} were talking at the {place}. Afterwards",
    "The day {A} and {B} moved to the {place},",
    "{A} and {B} were playing near the {place}, and then",
    "At the {place}, {A} and {B} talked for an hour, and then",
    "Because {A} and {B} stayed at the {place} late,",
)
IOI_INTROS_HELDOUT = (
    "Once {A} and {B} reached the {place},",
    "{A} and {B} spent the evening at the {place}. Later",
    "Before {A} and {B} left the {place},",
)
IOI_ACTIONS_TRAIN = (
    " {S} gave a {obj} to",
    " {S} handed the {obj} to",
    " {S} passed the {obj} to",
    " {S} sent a letter to",
    " {S} said goodbye to",
    " {S} threw the {obj} to",
    " {S} showed the {obj} to",
    " {S} offered a {obj} to",
    " {S} read a story to",
    " {S} sold the {obj} to",
    " {S} returned the {obj} to",
    " {S} waved to",
    " {S} took the {obj} and gave it to",
    " {S} told a joke to",
    " {S} gave the {obj} back to",
    " {S} tossed the {obj} to",
    " {S} sang a song to",
    " {S} explained the plan to",
    " {S} left the {obj} with",
    " {S} mailed the {obj} to",
)
IOI_ACTIONS_HELDOUT = (
    " {S} brought the {obj} to",
    " {S} lent the {obj} to",
    " {S} wrote a note to",
)

# Many training prepositions and relative-clause verbs, so that a held-out one is a new word in a
# familiar frame: with four training verbs the default model was at chance after a held-out verb,
# while held-out prepositions were at 0.91-0.96. With these 64 verbs it still learned agreement
# verb by verb (held-out verbs 0.49, every training verb 1.00), so the build adds Brown's
# past-tense verbs (`make_split(extra_rel_verbs=...)`, README "Known gaps").
SVA_PREPS_TRAIN = (
    "near on by with under in of to from for at inside outside over across along around past against "
    "among beyond below beneath into toward without within after before like"
).split()
SVA_PREPS_HELDOUT = "beside above behind".split()
SVA_REL_VERBS_TRAIN = tuple(
    (
        "saw liked found met loved called visited watched heard chose followed trusted painted built bought "
        "sold wanted remembered feared praised thanked described told asked kept left brought sent showed "
        "moved carried opened closed cleaned fixed washed drew took made used needed hated missed married "
        "joined led taught served fed paid raised saved hid held caught chased pushed pulled noticed "
        "admired greeted blamed warned invited"
    ).split()
)
SVA_REL_VERBS_HELDOUT = ("knew", "helped")
SVA_VERBS = (("is", "are"), ("was", "were"))


@dataclass(frozen=True)
class TaskItem:
    """One evaluation item: the model should give `correct` a higher logit than `incorrect` after `prompt`."""

    task: str
    prompt: str
    correct: str
    incorrect: str


@dataclass(frozen=True)
class TaskSplit:
    """Which names, nouns and templates are for training text and which are held out for evaluation."""

    train_names: tuple[str, ...]
    heldout_names: tuple[str, ...]
    train_nouns: tuple[tuple[str, str], ...]
    heldout_nouns: tuple[tuple[str, str], ...]
    # relative-clause verbs of training text, and verbs kept out of it to watch generalisation
    # during training (never the evaluation's SVA_REL_VERBS_HELDOUT)
    train_rel_verbs: tuple[str, ...] = SVA_REL_VERBS_TRAIN
    validation_rel_verbs: tuple[str, ...] = ()
    # which training text the generators make: one of TASK_TEXT_VERSIONS
    task_text: str = "v1"
    # v4-v6: the tokenizer's single-token words, less every held-out and task name (random names and
    # repeated random word sequences; core.build.tasks_v2)
    vocabulary_words: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """Plain-JSON form for the build manifest (`task_text` only when not v1, so v1 manifests stay as they were)."""
        out = {
            "train_names": list(self.train_names),
            "heldout_names": list(self.heldout_names),
            "train_nouns": [list(n) for n in self.train_nouns],
            "heldout_nouns": [list(n) for n in self.heldout_nouns],
            "train_rel_verbs": list(self.train_rel_verbs),
            "validation_rel_verbs": list(self.validation_rel_verbs),
        }
        if self.task_text != "v1":
            out["task_text"] = self.task_text
        if self.vocabulary_words:
            out["vocabulary_words"] = list(self.vocabulary_words)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> TaskSplit:
        """Inverse of `to_json`."""
        return cls(
            train_names=tuple(obj["train_names"]),
            heldout_names=tuple(obj["heldout_names"]),
            train_nouns=tuple(tuple(n) for n in obj["train_nouns"]),  # type: ignore[misc]
            heldout_nouns=tuple(tuple(n) for n in obj["heldout_nouns"]),  # type: ignore[misc]
            train_rel_verbs=tuple(obj.get("train_rel_verbs", SVA_REL_VERBS_TRAIN)),
            validation_rel_verbs=tuple(obj.get("validation_rel_verbs", ())),
            task_text=obj.get("task_text", "v1"),
            vocabulary_words=tuple(obj.get("vocabulary_words", ())),
        )


def make_split(
    names: list[str],
    nouns: list[tuple[str, str]],
    seed: int = 0,
    heldout_frac: float = 0.2,
    extra_rel_verbs: Sequence[str] = (),
    n_validation_verbs: int = 12,
    task_text: str = "v1",
    extra_train_names: Sequence[str] = (),
    vocabulary_words: Sequence[str] = (),
) -> TaskSplit:
    """Shuffle names and nouns with `seed` and hold out `heldout_frac` of each.

    `extra_train_names` (v3's proper nouns) join the training names after the shuffled ones, never the
    held-out ones, so the held-out figures keep measuring person names. `vocabulary_words` (v4's
    random names and word sequences) are kept less every name of the split and every generalisation word.

    Relative-clause verbs for training are `SVA_REL_VERBS_TRAIN` plus `extra_rel_verbs` (e.g. Brown's
    past-tense verbs), less the evaluation's held-out verbs and `n_validation_verbs` of the extra
    ones drawn with `seed` for the validation curve.
    """
    rng = random.Random(seed)
    names = list(dict.fromkeys(names))
    nouns = list(dict.fromkeys(nouns))
    rng.shuffle(names)
    rng.shuffle(nouns)
    n_names = max(2, round(len(names) * heldout_frac))
    n_nouns = max(2, round(len(nouns) * heldout_frac))
    extra = [v for v in dict.fromkeys(extra_rel_verbs) if v not in SVA_REL_VERBS_TRAIN + SVA_REL_VERBS_HELDOUT]
    validation_verbs = random.Random(seed + 1).sample(extra, min(n_validation_verbs, len(extra))) if extra else []
    train_verbs = [v for v in SVA_REL_VERBS_TRAIN + tuple(extra) if v not in validation_verbs]
    extra_names = [n for n in dict.fromkeys(extra_train_names) if n not in names]
    words = random_name_pool(vocabulary_words, names + extra_names)
    return TaskSplit(
        train_names=tuple(names[n_names:] + extra_names),
        heldout_names=tuple(names[:n_names]),
        train_nouns=tuple(nouns[n_nouns:]),
        heldout_nouns=tuple(nouns[:n_nouns]),
        train_rel_verbs=tuple(train_verbs),
        validation_rel_verbs=tuple(validation_verbs),
        task_text=check_task_text(task_text),
        vocabulary_words=tuple(words),
    )


def random_name_pool(vocabulary_words: Sequence[str], names: Sequence[str]) -> list[str]:
    """`vocabulary_words` (deduplicated, in order) less every one of `names` and every generalisation word:
    the words a split may use as random names and sequences, so no held-out name enters training text."""
    from core.build.generalisation import heldout_words

    excluded = heldout_words() | set(names)
    return [w for w in dict.fromkeys(vocabulary_words) if w not in excluded]


def task_pools(version: str, package_dir=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Candidate names and (singular, plural) nouns of a task-text version, before the single-token filter.

    v1: `NAMES` and `NOUNS`; v2-v11: `core.build.tasks_v2.v2_pools` (hundreds of names, Brown's NN/NNS
    pairs from the tagged package in `package_dir`).
    """
    if check_task_text(version) != "v1":
        from core.build.tasks_v2 import v2_pools

        return v2_pools(package_dir)
    return list(NAMES), list(NOUNS)


def extra_training_names(version: str, package_dir=None) -> list[str]:
    """Names only training text uses, before the single-token filter: v3's proper nouns from Brown
    (`core.build.tasks_v2.brown_proper_nouns`, less every generalisation word); none for v1 and v2."""
    if check_task_text(version) != "v3" or package_dir is None:
        return []
    from core.build.tasks_v2 import brown_proper_nouns

    return brown_proper_nouns(package_dir)


def tokenizer_only_text(version: str) -> list[str]:
    """Lines the tokenizer trains on besides Brown and task text (the model never sees them).

    v1: none. v2: the generalisation sets' names and nouns, 400 times each, so that they stay single
    tokens although no task text has them (with v2's larger pools, Brown alone left 13 of the 30 names
    and 6 of the 28 noun pairs single tokens).
    """
    if check_task_text(version) == "v1":
        return []
    from core.build.generalisation import heldout_words

    line = " ".join(sorted(heldout_words()))
    return [line] * 400


# ---------------------------------------------------------------------------------------------
# Items (prompt, correct, incorrect)


def ioi_item(
    rng: random.Random, names: tuple[str, ...], heldout_templates: bool, n_intros: int = 0, n_actions: int = 0
) -> TaskItem:
    """An IOI prompt whose answer is the name said once; ABBA and BABA orders equally often.

    `n_intros`/`n_actions` > 0 restrict the templates to the first ones of the list (a curriculum).
    """
    intros = IOI_INTROS_HELDOUT if heldout_templates else IOI_INTROS_TRAIN
    actions = IOI_ACTIONS_HELDOUT if heldout_templates else IOI_ACTIONS_TRAIN
    intros, actions = intros[: n_intros or None], actions[: n_actions or None]
    a, b = rng.sample(names, 2)
    subject, indirect = (b, a) if rng.random() < 0.5 else (a, b)
    fill = {"A": a, "B": b, "place": rng.choice(PLACES), "obj": rng.choice(OBJECTS)}
    intro = rng.choice(intros).format(**fill)
    action = rng.choice(actions).format(S=subject, obj=rng.choice(OBJECTS))
    return TaskItem("ioi", intro + action, " " + indirect, " " + subject)


def sva_item(
    rng: random.Random,
    nouns: tuple[tuple[str, str], ...],
    distractors: tuple[tuple[str, str], ...],
    heldout_templates: bool,
    rel_share: float = 0.3,
    train_verbs: Sequence[str] = SVA_REL_VERBS_TRAIN,
) -> TaskItem:
    """An agreement prompt 'The N1 <prep> the N2' or, `rel_share` of the time, 'The N1 that the N2 <verb>'.

    N2 has the other number 70% of the time. Verbs come from `SVA_REL_VERBS_HELDOUT` when
    `heldout_templates`, else from `train_verbs`.
    """
    n1 = rng.choice(nouns)
    n2 = rng.choice([d for d in distractors if d != n1])
    plural1 = rng.random() < 0.5
    plural2 = (not plural1) if rng.random() < 0.7 else plural1
    subject = n1[1] if plural1 else n1[0]
    distractor = n2[1] if plural2 else n2[0]
    adj = rng.choice(ADJECTIVES) + " " if rng.random() < 0.5 else ""
    if rng.random() < 1 - rel_share:
        prep = rng.choice(SVA_PREPS_HELDOUT if heldout_templates else SVA_PREPS_TRAIN)
        prompt = f"The {subject} {prep} the {adj}{distractor}"
    else:
        verb = rng.choice(SVA_REL_VERBS_HELDOUT if heldout_templates else train_verbs)
        prompt = f"The {subject} that the {adj}{distractor} {verb}"
    singular_verb, plural_verb = rng.choice(SVA_VERBS)
    correct, incorrect = (plural_verb, singular_verb) if plural1 else (singular_verb, plural_verb)
    return TaskItem("sva", prompt, " " + correct, " " + incorrect)


def _clause(rng: random.Random, sentences: list[str], min_words: int, max_words: int) -> str:
    """A run of words from a random sentence, cut to a random length, without end punctuation."""
    for _ in range(100):
        words = rng.choice(sentences).split()
        if len(words) >= min_words:
            break
    n = rng.randint(min_words, min(max_words, len(words)))
    start = rng.randint(0, len(words) - n)
    text = " ".join(words[start : start + n])
    return text.strip(" ,;:.!?()[]\"'")


def bracket_item(rng: random.Random, sentences: list[str], inside: bool) -> TaskItem:
    """'<prefix> (<clause>' -> ')' over '.', or, with no bracket open, '<prefix> <clause>' -> '.' over ')'."""
    prefix = _clause(rng, sentences, 3, 10)
    content = _clause(rng, sentences, 1, 16)
    if inside:
        return TaskItem("brackets", f"{prefix} ({content}", ")", ".")
    return TaskItem("brackets", f"{prefix} {content}", ".", ")")


def evaluation_items(
    task: str, split: TaskSplit, validation_sentences: list[str], n: int, seed: int = 1234
) -> list[TaskItem]:
    """`n` held-out items of `task`: held-out names, nouns and templates; bracket text from validation files."""
    rng = random.Random(seed)
    if task == "ioi":
        return [ioi_item(rng, split.heldout_names, heldout_templates=True) for _ in range(n)]
    if task == "sva":
        distractors = split.train_nouns + split.heldout_nouns
        return [sva_item(rng, split.heldout_nouns, distractors, heldout_templates=True) for _ in range(n)]
    if task == "brackets":
        return [bracket_item(rng, validation_sentences, inside=i % 2 == 0) for i in range(n)]
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def training_items(task: str, split: TaskSplit, n: int, seed: int = 4321) -> list[TaskItem]:
    """`n` items of `task` ('ioi' or 'sva') from training names, nouns and templates: what was learned, not generalised."""
    rng = random.Random(seed)
    if task == "ioi":
        return [ioi_item(rng, split.train_names, heldout_templates=False) for _ in range(n)]
    if task == "sva":
        verbs = split.train_rel_verbs
        return [sva_item(rng, split.train_nouns, split.train_nouns, False, train_verbs=verbs) for _ in range(n)]
    raise ValueError(f"training items exist for ioi and sva, not {task!r}")


def validation_verb_items(split: TaskSplit, n: int, seed: int = 8765) -> list[TaskItem]:
    """`n` relative-clause agreement items with training nouns and the split's validation verbs (none in training text).

    The learning curve of verb generalisation, apart from the evaluation's held-out verbs.
    """
    if not split.validation_rel_verbs:
        raise ValueError("this task split has no validation verbs (made without extra_rel_verbs)")
    rng = random.Random(seed)
    nouns, verbs = split.train_nouns, split.validation_rel_verbs
    return [sva_item(rng, nouns, nouns, False, rel_share=1.0, train_verbs=verbs) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Training text: complete sentences built from the same generators, plus text that teaches the
# mechanisms (copying names from context, a noun's number) with every name and noun.


def _ioi_sentence(rng: random.Random, split: TaskSplit, stage: tuple[int, int, int]) -> str:
    n_names, n_intros, n_actions = stage
    item = ioi_item(rng, split.train_names[: n_names or None], False, n_intros, n_actions)
    return item.prompt + item.correct + "."


def _sva_sentence(rng: random.Random, split: TaskSplit) -> str:
    nouns = split.train_nouns
    item = sva_item(rng, nouns, nouns, heldout_templates=False, rel_share=0.45, train_verbs=split.train_rel_verbs)
    return item.prompt + item.correct + " " + rng.choice(PREDICATES) + "."


def _bracket_sentence(rng: random.Random, sentences: list[str]) -> str:
    prefix = _clause(rng, sentences, 2, 10)
    content = _clause(rng, sentences, 1, 18)
    rest = _clause(rng, sentences, 1, 8) if rng.random() < 0.6 else ""
    opening, closing = ("(", ")") if rng.random() < 0.85 else ("[", "]")
    return f"{prefix} {opening}{content}{closing}" + (f" {rest}." if rest else ".")


def _copy_text(rng: random.Random, split: TaskSplit, sentences: list[str]) -> str:
    """Text whose continuation is a name (or span) seen earlier in context: induction and retrieval."""
    names = split.train_names + split.heldout_names
    kind = rng.randrange(7)
    if kind == 0:  # a list of names, repeated
        group = rng.sample(names, rng.randint(2, 5))
        listed = ", ".join(group[:-1]) + " and " + group[-1]
        return f"{listed} came to the {rng.choice(PLACES)}. Later {listed} went home."
    if kind == 1:  # who has what
        people = rng.sample(names, rng.randint(2, 4))
        things = rng.sample(OBJECTS, len(people))
        facts = " ".join(f"{p} has the {t}." for p, t in zip(people, things, strict=True))
        i = rng.randrange(len(people))
        return f"{facts} The {things[i]} belongs to {people[i]}."
    if kind == 2:  # a span of text, repeated (generic induction)
        span = _clause(rng, sentences, 6, 16)
        return f"{span}. {span}."
    if kind == 3:  # a name said, then called again
        a = rng.choice(names)
        return f"{a} {rng.choice(['said', 'smiled', 'waited', 'laughed'])}. Everyone looked at {a}."
    if kind == 5:  # two names, one of them repeated; the answer is the other one (not an IOI template)
        a, b = rng.sample(names, 2)
        thing = rng.choice(OBJECTS)
        return f"{a} and {b} both wanted the {thing}. {a} already had one, so the {thing} went to {b}."
    if kind == 6:
        a, b = rng.sample(names, 2)
        return f"Either {a} or {b} was at the {rng.choice(PLACES)}. It was not {a}, so it was {b}."
    people = rng.sample(names, 2)
    thing = rng.choice(OBJECTS)
    return f"The {thing} was with {people[0]}, not {people[1]}. So the {thing} was with {people[0]}."


NUMBER_DETERMINERS = (
    ("this", "that", "one", "a", "every", "each", "the only", "another"),
    ("these", "those", "two", "many", "several", "both", "all the", "some", "three", "few"),
)
NUMBER_PRONOUNS = (("it", "itself", "its"), ("them", "themselves", "their"))
NUMBER_ATTRIBUTES = ("color", "place", "name", "shape")  # what a noun 'lost' in the possessive frames


def _number_text(rng: random.Random, split: TaskSplit, heldout_share: float = 0.5) -> str:
    """Frames where a noun's number shows without subject-verb agreement (determiners, pronouns).

    Held-out nouns are drawn `heldout_share` of the time: this is where their number is learned,
    since their agreement sentences are held out.
    """
    pool = (
        split.heldout_nouns
        if split.heldout_nouns and rng.random() < heldout_share
        else split.train_nouns + split.heldout_nouns
    )
    singular, plural = rng.choice(pool)
    is_plural = rng.random() < 0.5
    noun = plural if is_plural else singular
    det = rng.choice(NUMBER_DETERMINERS[is_plural])
    obj, reflexive, possessive = NUMBER_PRONOUNS[is_plural]
    kind = rng.randrange(8)
    if kind == 0:
        return f"She looked at {det} {noun} for a while."
    if kind == 1:
        return f"I saw the {noun} and liked {obj}."
    if kind == 2:
        return f"He thought about the {noun} {reflexive}."
    if kind == 3:
        return f"We found the {noun} where {'they' if is_plural else 'it'} had been left."
    if kind == 4:
        head = det.capitalize() if rng.random() < 0.5 else "The"
        return f"{head} {noun} near the {rng.choice(PLACES)} lost {possessive} {rng.choice(NUMBER_ATTRIBUTES)}."
    if kind == 7:  # the number carried across a relative clause, shown by a pronoun (not by a verb)
        other = rng.choice(split.train_nouns)[rng.random() < 0.5]
        verb = rng.choice(split.train_rel_verbs)
        return f"The {noun} that the {other} {verb} lost {possessive} {rng.choice(NUMBER_ATTRIBUTES)}."
    if kind == 5:
        many = rng.choice(NUMBER_DETERMINERS[1][1:])
        return f"I had one {singular} once, and now I have {many} {plural}."
    return f"{det.capitalize()} {noun} {rng.choice(['of mine', 'by the road', 'in the picture', 'we saw'])}, and {det} {noun} only."


def training_text_generators(
    split: TaskSplit, sentences: list[str], ioi_stage: tuple[int, int, int] = (0, 0, 0)
) -> dict[str, Callable[[random.Random], str]]:
    """Named generators of one training sentence each, for the build's data mix.

    `ioi_stage = (names, intro templates, action templates)`: IOI sentences use only the first of
    each (0 = all), the build's IOI curriculum. `split.task_text` picks the version (v2:
    `core.build.tasks_v2`; v3 is v2's text over a larger name pool; v4 v2's text with random
    vocabulary words as names half the time, and repeated random word sequences; v5, v6 and v8 train
    on v4's text; v9 adds IOI actions taken from Brown, v10 introductions and connectors too; v11 is v9's).
    """
    if check_task_text(split.task_text) != "v1":
        from core.build.tasks_v2 import training_text_generators_v2

        return training_text_generators_v2(split, sentences, ioi_stage)
    return {
        "ioi": lambda rng: _ioi_sentence(rng, split, ioi_stage),
        "sva": lambda rng: _sva_sentence(rng, split),
        "brackets": lambda rng: _bracket_sentence(rng, sentences),
        "copy": lambda rng: _copy_text(rng, split, sentences),
        "number": lambda rng: _number_text(rng, split),
    }
