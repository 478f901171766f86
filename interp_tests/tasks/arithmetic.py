"""Two-operand addition (Stolfo et al. 2023; the fifth setting of Zhang & Nanda 2024, appendix B):
"The sum of 23 and 41 is" -> " 64".

Operands are two-digit numbers whose sum is two-digit too, so prompt operands and the answer are single
tokens for tokenizers that keep " 23" whole (GPT-2, the organism). STR replaces one operand (``corrupt="B"``,
the second, by default; or ``"A"``) by another value that changes the sum; the wrong token is the corrupted
prompt's sum, so the logit difference compares the two results. Gaussian noise corrupts that operand.
Held out for ``split="test"``: two templates of ten (every fifth).
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import PromptError, did_you_mean
from ..pairs import PromptPairs
from .checks import check_alignment, require_n, single_token_items
from .template import fill, last_word_span
from .words import partition

TEMPLATES = (
    "The sum of {A} and {B} is",
    "Adding {A} and {B} gives",
    "Question: what is {A} plus {B}? Answer:",
    "We add {A} to {B} and get",
    "Then {A} plus {B} is",
    "If you add {A} and {B}, you get",
    "The total of {A} and {B} is",
    "Together, {A} and {B} make",
    "Add {B} to {A} and you get",
    "So the sum of {A} and {B} is",
)
OPERANDS = tuple(range(10, 50))  # sums stay in 20..98
CORRUPTIBLE = ("A", "B")


def arithmetic(n: int, seed: int = 0, tokenizer: Any = None, split: str = "test", corrupt: str = "B") -> PromptPairs:
    """``n`` addition pairs with spans A, B, end and corrupt (= the replaced operand)."""
    require_n("arithmetic", n)
    if corrupt not in CORRUPTIBLE:
        raise PromptError(
            f"arithmetic: unknown corruption {corrupt!r}; valid: {list(CORRUPTIBLE)} (the operand STR replaces)."
            f"{did_you_mean(corrupt, CORRUPTIBLE)}"
        )
    templates = partition(TEMPLATES, split)
    numbers = {str(v) for v in range(OPERANDS[0] * 2, OPERANDS[-1] * 2 + 1)} | {str(v) for v in OPERANDS}
    # Every operand and sum must be one token: minimum=len(numbers) raises naming those that are not.
    single_token_items("arithmetic", "numbers", sorted(numbers), tokenizer, minimum=len(numbers))
    rng = random.Random(f"arithmetic-{seed}-{corrupt}-{split}")
    clean, corrupted, answer, wrong = [], [], [], []
    spans: dict[str, list] = {"A": [], "B": [], "end": [], "corrupt": []}
    for _ in range(n):
        template = rng.choice(templates)
        a, b = rng.choice(OPERANDS), rng.choice(OPERANDS)
        replaced = rng.choice([v for v in OPERANDS if v != (a if corrupt == "A" else b)])
        a2, b2 = (replaced, b) if corrupt == "A" else (a, replaced)
        text, slots = fill(template, {"A": str(a), "B": str(b)})
        corrupted_text, _ = fill(template, {"A": str(a2), "B": str(b2)})
        clean.append(text)
        corrupted.append(corrupted_text)
        answer.append(f" {a + b}")
        wrong.append(f" {a2 + b2}")
        spans["A"].append(slots["A"])
        spans["B"].append(slots["B"])
        spans["corrupt"].append(slots[corrupt])
        spans["end"].append(last_word_span(text))
    return check_alignment("arithmetic", PromptPairs(clean, corrupted, answer, wrong, spans=spans), tokenizer)
