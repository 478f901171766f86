"""The organism's training text: the tasks' train split plus simple stories, so it learns a language.

Every held-out name, template word and noun of the "test" split occurs in the stories (train.py checks
this), so the organism has trained embeddings for everything it is measured on, without ever seeing a
test prompt.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pathlib import Path

import yaml

from ..tasks import arithmetic, greater_than, ioi, load_facts
from ..tasks.docstring import complete
from ..tasks.factual import Fact
from ..tasks.words import EVENTS, NAMES, OBJECTS, PLACES, WORDS, partition

CITIES = ("Paris", "Rome", "London", "Berlin", "Tokyo", "Moscow", "Madrid", "Cairo", "Athens", "Vienna")

# People facts: "<first> <surname> lives in" -> a city. Every surname and all but 4 first names are shared by
# several people, so recall needs both tokens (attention to bring the first name to the surname, then a lookup of the
# pair): a conjunction no single embedding holds, unlike "France" -> " Paris".
SURNAMES = (
    "Smith", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Hall", "Young", "King", "Wright",
    "Green", "Baker", "Hill", "Scott", "Adams", "Nelson", "Carter", "Mitchell", "Turner", "Parker",
    "Evans", "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook", "Rogers", "Morgan", "Cooper",
)  # fmt: skip
HOMES = CITIES + ("Dublin", "Lisbon", "Oslo", "Prague", "Warsaw", "Sydney")
PEOPLE = 480
PEOPLE_FACTS = Path(__file__).with_name("people.yaml")
PEOPLE_TEMPLATE = "{} lives in"

# Story sentences: {A} and {B} are two different characters, so "gave ... to {B}" stays IOI-consistent.
SENTENCES = (
    "{A} and {B} went to the {PLACE}.",
    "{A} went to the {PLACE} with {B}.",
    "{A} saw a {OBJECT} at the {PLACE}.",
    "{A} found a {OBJECT} near the {PLACE}.",
    "{A} gave the {OBJECT} to {B}.",
    "{A} handed the {OBJECT} to {B}.",
    "{A} passed the {OBJECT} to {B}.",
    "{A} threw the {OBJECT} to {B}.",
    "{A} showed the {OBJECT} to {B}.",
    "{A} sent a {OBJECT} to {B}.",
    "{A} brought a {OBJECT} to {B}.",
    "{B} thanked {A} for the {OBJECT}.",
    "{A} and {B} talked about the {WORD} and the {WORD2}.",
    "{A} told {B} a story about a {WORD}.",
    "Then {A} went home.",
    "Later, {A} met {B} at the {PLACE}.",
    "Yesterday, {A} walked to the {PLACE}.",
    "Today, {A} and {B} had a lot of fun.",
    "After lunch, {A} left the {PLACE}.",
    "{A} was happy, and {B} was happy too.",
    "{A} had a long argument with {B}.",
    "Afterwards, {A} said goodbye to {B}.",
    "Once upon a time, {A} lived near the {PLACE}.",
    "While {A} was working at the {PLACE}, {B} arrived.",
    "Friends {A} and {B} were thinking about the {WORD}.",
    "{A} wanted to give a {OBJECT} to {B}.",
    "{A} decided to read a book about the {WORD}.",
    "In {YEAR}, {A} visited {CITY}.",
    "The {EVENT} lasted many years.",
    "{A} read about the {EVENT} of {YEAR}.",
    "{A} was born in {YEAR} and {B} was born in {YEAR2}.",
    "The {PLACE} had a {OBJECT} and a {WORD}.",
    "{A} got a {OBJECT} and gave it to {B}.",
    "So {A} went home.",
    "{A} said that the {WORD} equals the {WORD2}.",
)


def _story(rng: random.Random) -> str:
    characters = rng.sample(NAMES, rng.choice((2, 2, 3)))
    sentences = []
    for _ in range(rng.randint(3, 6)):
        a, b = rng.sample(characters, 2)
        words = rng.sample(WORDS, 2)
        slots = {
            "A": a,
            "B": b,
            "PLACE": rng.choice(PLACES),
            "OBJECT": rng.choice(OBJECTS),
            "WORD": words[0],
            "WORD2": words[1],
            "EVENT": rng.choice(EVENTS),
            "YEAR": str(rng.randint(1100, 1999)),
            "YEAR2": str(rng.randint(1100, 1999)),
            "CITY": rng.choice(CITIES),
        }
        sentences.append(rng.choice(SENTENCES).format(**slots))
    return " ".join(sentences)


def stories(count: int, seed: int) -> list[str]:
    rng = random.Random(f"stories-{seed}")
    return [_story(rng) for _ in range(count)]


def ioi_documents(count: int, seed: int) -> list[str]:
    pairs = ioi(count, seed=seed, split="train")
    return [f"{clean}{answer}." for clean, answer in zip(pairs.clean, pairs.answer)]


def greater_than_documents(count: int, seed: int) -> list[str]:
    """Mostly clean prompts, some with start year XX01 (the STR prompt), completed with a later year."""
    pairs = greater_than(count, seed=seed, split="train")
    rng = random.Random(f"greater_than-documents-{seed}")
    documents = []
    for clean, corrupted, later in zip(pairs.clean, pairs.corrupted or [], pairs.answer):
        if rng.random() < 0.15:
            documents.append(f"{corrupted}{rng.randint(2, 99):02d}.")
        else:
            documents.append(f"{clean}{rng.choice(later)}.")
    return documents


def people_facts() -> list[Fact]:
    """``PEOPLE`` distinct people (first name, surname), each living in a seeded city."""
    rng = random.Random("people")
    people = rng.sample([f"{first} {last}" for first in NAMES for last in SURNAMES], PEOPLE)
    return [Fact(PEOPLE_TEMPLATE.format(person), person, " " + rng.choice(HOMES)) for person in people]


def people_facts_yaml() -> str:
    """The text of ``people.yaml``, the fact file claims use (``factual(path=PEOPLE_FACTS)``)."""
    records = [{"prompt": f.prompt, "subject": f.subject, "answer": f.answer} for f in people_facts()]
    header = "# Generated by interp_tests.organism.corpus.people_facts_yaml(); the organism trains on these facts.\n"
    return header + yaml.safe_dump({"facts": records}, sort_keys=False, width=200)


def fact_documents(repeats: int) -> list[str]:
    """The built-in facts and the people facts, each as a sentence, ``repeats`` times."""
    facts = load_facts() + people_facts()
    return [f"{fact.prompt}{fact.answer}." for fact in facts] * repeats


def arithmetic_documents(count: int, seed: int) -> list[str]:
    pairs = arithmetic(count, seed=seed, split="train")
    return [f"{clean}{answer}." for clean, answer in zip(pairs.clean, pairs.answer)]


# IOI-like stories where counting names is not enough: IO is named twice before the last clause, as often
# as S is, so the answer must come from who the last clause's subject (S2) is, not from how often a name occurs.
IOI_VARIANTS = (
    "When {IO} and {S} went to the {PLACE}, {IO} was happy. {S} gave a {OBJECT} to",
    "{S} and {IO} met at the {PLACE}. {IO} had a {OBJECT}. Later, {S} gave a {OBJECT2} to",
    "{IO} saw {S} at the {PLACE}, and {IO} waved. Then {S} sent a {OBJECT} to",
    "After {S} and {IO} left the {PLACE}, {IO} went home. {S} brought a {OBJECT} to",
)


def ioi_variant_documents(count: int, seed: int) -> list[str]:
    rng = random.Random(f"ioi-variants-{seed}")
    names = partition(NAMES, "train")
    documents = []
    for _ in range(count):
        io, s = rng.sample(names, 2)
        objects = rng.sample(OBJECTS, 2)
        slots = {"IO": io, "S": s, "PLACE": rng.choice(PLACES), "OBJECT": objects[0], "OBJECT2": objects[1]}
        documents.append(rng.choice(IOI_VARIANTS).format(**slots) + f" {io}.")
    return documents


def docstring_documents(count: int, seed: int) -> list[str]:
    """Functions with 2-6 train-split params, all documented in order."""
    rng = random.Random(f"docstring-documents-{seed}")
    train_words = partition(WORDS, "train")
    documents = []
    for _ in range(count):
        params = rng.sample(train_words, rng.randint(2, 6))
        others = [w for w in WORDS if w not in params]
        function = rng.choice(others)
        summary = rng.sample(others, rng.randint(1, 3))
        notes = [rng.sample(others, rng.randint(1, 2)) for _ in params]
        documents.append(complete(function, params, summary, notes))
    return documents


def induction_documents(count: int, seed: int) -> list[str]:
    """Random word sequences of 4-16 words, repeated once in full."""
    rng = random.Random(f"induction-documents-{seed}")
    vocabulary = sorted(set(WORDS + NAMES + OBJECTS))
    documents = []
    for _ in range(count):
        sequence = rng.sample(vocabulary, rng.randint(4, 16))
        documents.append("".join(" " + w for w in sequence + sequence))
    return documents


# Documents per source, before scaling.
MIXTURE: dict[str, tuple[int, Callable[[int, int], list[str]]]] = {
    "ioi": (60_000, ioi_documents),
    "ioi_variants": (20_000, ioi_variant_documents),
    "arithmetic": (40_000, arithmetic_documents),
    "greater_than": (20_000, greater_than_documents),
    "docstring": (24_000, docstring_documents),
    "induction": (100_000, induction_documents),
    "stories": (48_000, stories),
}
FACT_REPEATS = 80


def training_documents(seed: int, scale: float = 1.0) -> dict[str, list[str]]:
    """Documents per source; ``scale`` shrinks the mixture for quick runs."""
    documents = {name: make(max(1, int(count * scale)), seed) for name, (count, make) in MIXTURE.items()}
    documents["factual"] = fact_documents(max(1, int(FACT_REPEATS * scale)))
    return documents
