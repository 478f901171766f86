"""Tokenizer checks shared by the generators: keep single-token vocabulary, refuse misaligned pairs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import PromptError
from ..pairs import PromptPairs


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def is_single_token(tokenizer: Any, text: str) -> bool:
    """True when ``text`` is one known token (an unknown-word token does not count)."""
    ids = token_ids(tokenizer, text)
    return len(ids) == 1 and (tokenizer.unk_token_id is None or ids[0] != tokenizer.unk_token_id)


def single_token_items(
    task: str, what: str, items: Sequence[str], tokenizer: Any, *, minimum: int, prefix: str = " "
) -> list[str]:
    """The items that are single tokens as ``prefix + item``; warn naming the dropped ones.

    Raises ``PromptError`` naming the failing items when fewer than ``minimum`` remain.
    """
    if tokenizer is None:
        return list(items)
    kept = [item for item in items if is_single_token(tokenizer, prefix + item)]
    dropped = [item for item in items if item not in kept]
    if len(kept) < minimum:
        raise PromptError(
            f"{task}: only {len(kept)} of {len(items)} {what} are single tokens for this tokenizer, but the task "
            f"needs at least {minimum}. Not single tokens: {dropped[:40]}{'...' if len(dropped) > 40 else ''}."
        )
    if dropped:
        warnings.warn(
            f"{task}: dropped {len(dropped)} {what} that are not single tokens for this tokenizer: "
            f"{dropped[:40]}{'...' if len(dropped) > 40 else ''}.",
            stacklevel=3,
        )
    return kept


def check_alignment(task: str, pairs: PromptPairs, tokenizer: Any) -> PromptPairs:
    """Raise ``PromptError`` unless every pair tokenizes to equal lengths with single-token answers."""
    if tokenizer is not None:
        tokenized = pairs.tokenize(tokenizer)
        if tokenized.length_mismatch is not None:
            raise PromptError(f"{task}: {tokenized.length_mismatch}")
    return pairs


def require_n(task: str, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise PromptError(f"{task}: n must be a positive integer, got {n!r}.")
