"""Greater-than (Hanna et al. 2023; Zhang & Nanda 2024 appendix E):
"The war lasted from the year 1745 to the year 17" -> any two-digit token above 45.

Years must tokenize as [XX][YY] so that the end year's two digits are one token. STR replaces YY by 01,
after which nearly every end year is plausible. The answer set is the two-digit tokens above YY and the
wrong set those below, so the probability metric sums P(years > YY) and the logit difference is
sum(logits > YY) - sum(logits < YY). YY is drawn from 02..98 so both sets are non-empty.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

from ..errors import PromptError
from ..pairs import PromptPairs
from .checks import check_alignment, is_single_token, require_n, single_token_items, token_ids
from .template import fill, last_word_span
from .words import EVENTS, partition

TEMPLATE = "The {NOUN} lasted from the year {XX}{YY} to the year {END}"
CENTURIES = tuple(range(11, 20))
START_YEARS = tuple(range(2, 99))
CORRUPT_YY = "01"


def two_digit(value: int) -> str:
    return f"{value:02d}"


def _valid_years(tokenizer: Any) -> tuple[list[tuple[int, int]], list[str]]:
    """(XX, YY) start years that tokenize as [" XX"]["YY"], and the single-token two-digit strings."""
    digits = [two_digit(v) for v in range(100) if is_single_token(tokenizer, two_digit(v))]
    missing = sorted(set(two_digit(v) for v in range(100)) - set(digits))
    if CORRUPT_YY in missing:
        raise PromptError(f"greater_than: {CORRUPT_YY!r} is not a single token for this tokenizer, so STR cannot run.")
    if missing:
        warnings.warn(f"greater_than: two-digit numbers that are not single tokens are left out: {missing}.", stacklevel=3)
    valid, broken = [], []
    for xx in CENTURIES:
        century = token_ids(tokenizer, f" {xx}")
        for yy in START_YEARS:
            ok = two_digit(yy) in digits and len(century) == 1
            ok = ok and any(int(d) > yy for d in digits) and any(int(d) < yy for d in digits)
            ok = ok and all(
                token_ids(tokenizer, f" {xx}{y}") == century + token_ids(tokenizer, y) for y in (two_digit(yy), CORRUPT_YY)
            )
            (valid if ok else broken).append((xx, yy))
    if not valid:
        raise PromptError(
            "greater_than: no start year tokenizes as [XX][YY] for this tokenizer, e.g. "
            f"{[f'{x}{two_digit(y)}' for x, y in broken[:10]]}."
        )
    if broken:
        warnings.warn(
            f"greater_than: dropped {len(broken)} start years that do not tokenize as [XX][YY]: "
            f"{[f'{x}{two_digit(y)}' for x, y in broken[:40]]}{'...' if len(broken) > 40 else ''}.",
            stacklevel=3,
        )
    return valid, digits


def greater_than(n: int, seed: int = 0, tokenizer: Any = None, split: str = "test") -> PromptPairs:
    """``n`` greater-than pairs with answer sets above/below YY and spans YY, end, corrupt (= YY)."""
    require_n("greater_than", n)
    nouns = single_token_items("greater_than", "nouns", partition(EVENTS, split), tokenizer, minimum=1)
    if tokenizer is None:
        years = [(xx, yy) for xx in CENTURIES for yy in START_YEARS]
        digits = [two_digit(v) for v in range(100)]
    else:
        years, digits = _valid_years(tokenizer)
    rng = random.Random(f"greater_than-{seed}-{split}")
    clean, corrupted, answer, wrong = [], [], [], []
    spans: dict[str, list] = {"YY": [], "end": [], "corrupt": []}
    for _ in range(n):
        noun = rng.choice(nouns)
        xx, yy = rng.choice(years)
        slots = {"NOUN": noun, "XX": str(xx), "END": str(xx)}
        text, where = fill(TEMPLATE, {**slots, "YY": two_digit(yy)})
        corrupted_text, _ = fill(TEMPLATE, {**slots, "YY": CORRUPT_YY})
        clean.append(text)
        corrupted.append(corrupted_text)
        answer.append([d for d in digits if int(d) > yy])
        wrong.append([d for d in digits if int(d) < yy])
        spans["YY"].append(where["YY"])
        spans["corrupt"].append(where["YY"])
        spans["end"].append(last_word_span(text))
    return check_alignment("greater_than", PromptPairs(clean, corrupted, answer, wrong, spans=spans), tokenizer)
