"""Indirect object identification (Wang et al. 2023): "When John and Mary went to the store, John gave a
drink to" -> " Mary".

The first clause names IO and S1 (order BABA: S first, or ABBA: IO first), the second repeats the subject
as S2. Corruption variants (Zhang & Nanda 2024, section 3 and appendix F):

- ``"S2"``: S2 becomes IO, so the corrupted prompt's answer is S (wrong = S).
- ``"S1_IO"``: S1 and IO become two other names; S2 stays. Wrong = the corrupted prompt's IO.
- ``"ABC"``: S1, IO and S2 become three unrelated names (Wang et al.'s ABC distribution). Wrong = the clean
  prompt's S: the corrupted prompt says nothing about IO or S, so its logit difference IO - S is the
  no-information baseline (about 0) that the clean IO - S logit difference is measured against.

Only the S2 variant replaces one contiguous span, so only it sets a ``"corrupt"`` span; for the other two
Gaussian noise falls back to the tokens where clean and corrupted differ (exactly the replaced names).
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import PromptError, did_you_mean
from ..pairs import PromptPairs
from .checks import check_alignment, require_n, single_token_items
from .template import fill, last_word_span
from .words import NAMES, OBJECTS, PLACES, partition

# {A} and {B} are the first clause's names (S and IO in BABA order, IO and S in ABBA); {S} is S2.
TEMPLATES = (
    "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
    "The {PLACE} {A} and {B} went to had a {OBJECT}. {S} gave it to",
    "Then, {A} and {B} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "When {A} and {B} arrived at the {PLACE}, {S} handed a {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {S} brought a {OBJECT} to",
    "Yesterday, {A} and {B} met at the {PLACE}. {S} sent a {OBJECT} to",
    "Later, {A} and {B} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "Once {A} and {B} left the {PLACE}, {S} threw the {OBJECT} to",
    "When {A} and {B} were at the {PLACE}, {S} showed the {OBJECT} to",
    "Today, {A} and {B} walked to the {PLACE}. {S} passed a {OBJECT} to",
)

# Names each variant needs: IO and S, plus the replacement names.
CORRUPTIONS = {"S2": 2, "S1_IO": 4, "ABC": 5}


def ioi(n: int, seed: int = 0, corrupt: str = "S2", tokenizer: Any = None, split: str = "test") -> PromptPairs:
    """``n`` IOI pairs, half BABA and half ABBA on average, with spans IO, S1, S2, end (and corrupt for S2)."""
    require_n("ioi", n)
    if corrupt not in CORRUPTIONS:
        raise PromptError(
            f"ioi: unknown corruption {corrupt!r}; valid: {list(CORRUPTIONS)}.{did_you_mean(corrupt, CORRUPTIONS)}"
        )
    templates = partition(TEMPLATES, split, test_every=4)
    names = single_token_items("ioi", "names", partition(NAMES, split), tokenizer, minimum=CORRUPTIONS[corrupt])
    rng = random.Random(f"ioi-{seed}-{corrupt}-{split}")
    clean, corrupted, answer, wrong = [], [], [], []
    spans: dict[str, list] = {"IO": [], "S1": [], "S2": [], "end": []}
    if corrupt == "S2":
        spans["corrupt"] = []
    for _ in range(n):
        template = rng.choice(templates)
        io, s, *others = rng.sample(names, CORRUPTIONS[corrupt])
        abba = rng.random() < 0.5
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)

        def prompt(io_name: str, s1_name: str, s2_name: str) -> tuple[str, dict]:
            first, second = (io_name, s1_name) if abba else (s1_name, io_name)
            return fill(template, {"A": first, "B": second, "S": s2_name, "PLACE": place, "OBJECT": obj})

        text, slots = prompt(io, s, s)
        io_slot, s1_slot = ("A", "B") if abba else ("B", "A")
        if corrupt == "S2":
            corrupted_text, _ = prompt(io, s, io)
            wrong_name = s
            spans["corrupt"].append(slots["S"])
        elif corrupt == "S1_IO":
            new_io, new_s1 = others
            corrupted_text, _ = prompt(new_io, new_s1, s)
            wrong_name = new_io
        else:
            new_io, new_s1, new_s2 = others
            corrupted_text, _ = prompt(new_io, new_s1, new_s2)
            wrong_name = s
        clean.append(text)
        corrupted.append(corrupted_text)
        answer.append(" " + io)
        wrong.append(" " + wrong_name)
        spans["IO"].append(slots[io_slot])
        spans["S1"].append(slots[s1_slot])
        spans["S2"].append(slots["S"])
        spans["end"].append(last_word_span(text))
    return check_alignment("ioi", PromptPairs(clean, corrupted, answer, wrong, spans=spans), tokenizer)
