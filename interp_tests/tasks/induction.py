"""Induction: a random word sequence, then its repeat cut short; the answer is the repeat's next word.

" oil tree port lamp sea oil tree" -> " port". STR replaces the answer's first occurrence by another word
z (" oil tree fox lamp sea oil tree"), so the corrupted prompt's answer, and ``wrong``, is z.
The prompt starts with a space so that every word, the first included, is the same token both times.
"""

from __future__ import annotations

import random
from typing import Any

from ..errors import PromptError
from ..pairs import PromptPairs
from .checks import check_alignment, require_n, single_token_items
from .template import last_word_span
from .words import WORDS


def _text(words: list[str]) -> str:
    return "".join(" " + w for w in words)


def induction(n: int, seed: int = 0, length: int = 10, tokenizer: Any = None) -> PromptPairs:
    """``n`` pairs of ``length`` random words followed by 2..length-1 of them repeated; spans corrupt, end."""
    require_n("induction", n)
    if not isinstance(length, int) or length < 3:
        raise PromptError(f"induction: length must be an integer >= 3, got {length!r}.")
    words = single_token_items("induction", "words", WORDS, tokenizer, minimum=length + 1)
    rng = random.Random(f"induction-{seed}-{length}")
    clean, corrupted, answer, wrong = [], [], [], []
    spans: dict[str, list] = {"corrupt": [], "end": []}
    for _ in range(n):
        *sequence, replacement = rng.sample(words, length + 1)
        cut = rng.randint(2, length - 1)
        text = _text(sequence + sequence[:cut])
        changed = sequence[:cut] + [replacement] + sequence[cut + 1 :]
        start = len(_text(sequence[:cut])) + 1
        clean.append(text)
        corrupted.append(_text(changed + sequence[:cut]))
        answer.append(" " + sequence[cut])
        wrong.append(" " + replacement)
        spans["corrupt"].append((start, start + len(sequence[cut])))
        spans["end"].append(last_word_span(text))
    return check_alignment("induction", PromptPairs(clean, corrupted, answer, wrong, spans=spans), tokenizer)
