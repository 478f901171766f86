"""Factual recall in the PairedFacts style (Zhang & Nanda 2024, appendices B and I).

Two facts form a pair when their prompts share a template (the prompt with the subject taken out) and a
token length, and their answers differ: "The capital city of France is" / "The capital city of Japan is".
Each pair is used both ways, so every paired prompt is clean once and corrupted once. STR swaps the whole
subject; Gaussian noise corrupts all subject tokens (span "corrupt" = span "subject").

Fact files (``path=``) are JSONL, or YAML holding a list or a mapping with a ``facts:`` list, of records
``{prompt, subject, answer}``: the prompt contains the subject exactly once and the answer is the next
token as the model sees it, usually with a leading space (" Paris").
"""

from __future__ import annotations

import json
import random
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import PromptError
from ..pairs import PromptPairs
from .checks import check_alignment, is_single_token, require_n, token_ids

BUILT_IN_FACTS = Path(__file__).with_name("facts.yaml")


@dataclass(frozen=True)
class Fact:
    prompt: str
    subject: str
    answer: str

    @property
    def template(self) -> str:
        return self.prompt.replace(self.subject, "{}", 1)

    @property
    def subject_span(self) -> tuple[int, int]:
        start = self.prompt.index(self.subject)
        return (start, start + len(self.subject))


def load_facts(path: str | Path | None = None) -> list[Fact]:
    """Facts from a JSONL/YAML file of ``{prompt, subject, answer}`` records (default: the built-in set)."""
    path = Path(path) if path is not None else BUILT_IN_FACTS
    if not path.is_file():
        raise PromptError(f"factual: no fact file at {path}.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise PromptError(f"{path}: invalid JSON ({error.msg}).") from None
    elif path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text)
        records = data.get("facts") if isinstance(data, Mapping) else data
    else:
        raise PromptError(f"{path}: unknown fact file type {path.suffix!r}; use .jsonl, .yaml or .yml.")
    if not isinstance(records, list) or not records:
        raise PromptError(f"{path}: expected a non-empty list of fact records (or a mapping with a `facts:` list).")
    facts = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or set(record) != {"prompt", "subject", "answer"}:
            raise PromptError(f"{path}: fact {i} = {record!r:.80} must have exactly the keys prompt, subject, answer.")
        if not all(isinstance(record[k], str) and record[k] for k in ("prompt", "subject", "answer")):
            raise PromptError(f"{path}: fact {i}: prompt, subject and answer must be non-empty strings.")
        if record["prompt"].count(record["subject"]) != 1:
            raise PromptError(f"{path}: fact {i}: subject {record['subject']!r} must occur once in {record['prompt']!r}.")
        facts.append(Fact(record["prompt"], record["subject"], record["answer"]))
    return facts


def _length(fact: Fact, tokenizer: Any) -> int:
    """Prompt length in tokens, or subject length in words without a tokenizer."""
    return len(token_ids(tokenizer, fact.prompt)) if tokenizer is not None else len(fact.subject.split())


def _pair_up(group: list[Fact], rng: random.Random) -> list[tuple[Fact, Fact]]:
    """Disjoint pairs with distinct answers, chosen greedily from a shuffled group."""
    pool = group[:]
    rng.shuffle(pool)
    pairs = []
    while pool:
        first = pool.pop(0)
        partner = next((f for f in pool if f.answer != first.answer), None)
        if partner is not None:
            pool.remove(partner)
            pairs.append((first, partner))
    return pairs


def factual(n: int | None = None, seed: int = 0, path: str | Path | None = None, tokenizer: Any = None) -> PromptPairs:
    """Paired facts, each pair used both ways; ``n=None`` returns all of them, else the first ``n`` (seeded)."""
    if n is not None:
        require_n("factual", n)
    facts = load_facts(path)
    if tokenizer is not None:
        bad = [f.answer for f in facts if not is_single_token(tokenizer, f.answer)]
        facts = [f for f in facts if is_single_token(tokenizer, f.answer)]
        if bad:
            warnings.warn(f"factual: dropped facts whose answers are not single tokens: {sorted(set(bad))}.", stacklevel=2)
    rng = random.Random(f"factual-{seed}")
    groups: dict[tuple[str, int], list[Fact]] = defaultdict(list)
    for fact in facts:
        groups[(fact.template, _length(fact, tokenizer))].append(fact)
    directed = []
    for key in sorted(groups):
        for a, b in _pair_up(groups[key], rng):
            directed += [(a, b), (b, a)]
    if not directed:
        raise PromptError(
            "factual: no two facts share a template and token length with different answers, so no pair can be "
            f"formed from {len(facts)} facts."
        )
    rng.shuffle(directed)
    if n is not None:
        if n > len(directed):
            raise PromptError(f"factual: asked for n={n} pairs but these facts form only {len(directed)}.")
        directed = directed[:n]
    pairs = PromptPairs(
        [a.prompt for a, _ in directed],
        [b.prompt for _, b in directed],
        [a.answer for a, _ in directed],
        [b.answer for _, b in directed],
        spans={"subject": [a.subject_span for a, _ in directed], "corrupt": [a.subject_span for a, _ in directed]},
    )
    return check_alignment("factual", pairs, tokenizer)
