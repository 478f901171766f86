"""Seeded generators of clean/corrupted prompt pairs for the tasks studied by Zhang & Nanda (2024).

Each generator takes ``n``, ``seed`` and an optional ``tokenizer`` and returns a ``PromptPairs`` with named
character spans (``"corrupt"`` marks what Gaussian noise corrupts). The same seed gives the same pairs.
Given a tokenizer, a generator keeps only the vocabulary that is single tokens for it (warning with the
dropped items, raising ``PromptError`` naming them when too few remain) and checks that clean and
corrupted prompts have equal token lengths.

``split`` ("test" by default, "train", "all") draws from a deterministic part of the name, template and
noun lists: the organism trains on "train" and is measured on the held-out "test" part.

``TASKS`` maps names to generators so a claim can say ``task: {name: ioi, n: 64, seed: 0, corrupt: S2}``.

User tasks (``from_file``) are JSONL (one record per line) or YAML (a list of records, or a mapping with
a ``pairs:`` list). Each record has::

    clean:              the clean prompt (string)
    corrupted:          its corrupted twin, same token length (string; give it for all records or none)
    answer:             the clean answer: a single-token string (" Mary"), a token id, or a list of them
    wrong:              the corrupted prompt's answer, in the same forms
    corrupt_positions:  optional token indices that Gaussian noise corrupts
    spans:              optional {name: [start, end]} character spans of the clean prompt; a sweep's
                        positions="name" patches the span's last token, "corrupt" marks noised tokens
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..pairs import PromptPairs
from .arithmetic import arithmetic
from .docstring import docstring
from .factual import factual, load_facts
from .greater_than import greater_than
from .induction import induction
from .ioi import ioi


def from_file(path: str | Path) -> PromptPairs:
    """User-written pairs from a JSONL or YAML file in the schema above."""
    return PromptPairs.load(path)


TASKS: dict[str, Callable[..., PromptPairs]] = {
    "ioi": ioi,
    "greater_than": greater_than,
    "factual": factual,
    "docstring": docstring,
    "induction": induction,
    "arithmetic": arithmetic,
    "file": from_file,
}

__all__ = ["TASKS", "arithmetic", "docstring", "factual", "from_file", "greater_than", "induction", "ioi", "load_facts"]
