"""Python docstring completion (Heimersheim & Janiak 2023; Zhang & Nanda 2024 appendix D).

    def port(self, load, size, files, last, mode):
        \"\"\"oil column piece

        :param load: crime population
        :param size: unit dark
        :param

The answer is the next parameter of the def line, C_def (" files"). STR replaces C_def in the def line by
another word, which becomes the corrupted prompt's answer (wrong). ``docstring()`` always uses this
layout (three parameters before two extra ones, two documented), so token positions line up across
prompts; ``render`` also makes the other layouts the organism trains on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ..pairs import PromptPairs, Span
from .checks import check_alignment, require_n, single_token_items
from .words import WORDS, partition

INDENT = "    "


def _head(function: str, params: Sequence[str], summary: Sequence[str]) -> str:
    return f"def {function}(self, {', '.join(params)}):\n{INDENT}\"\"\"{' '.join(summary)}\n\n"


def _param_line(param: str, note: Sequence[str]) -> str:
    return f"{INDENT}:param {param}: {' '.join(note)}\n"


def render(
    function: str, params: Sequence[str], summary: Sequence[str], notes: Sequence[Sequence[str]]
) -> tuple[str, dict[str, Span]]:
    """A def line and a docstring documenting ``len(notes)`` params, ending in an open ``:param``.

    Spans: ``"next_def"`` is the def-line parameter that the open ``:param`` should name, ``"end"`` the
    final ``:param``.
    """
    text = _head(function, params, summary) + "".join(map(_param_line, params, notes)) + f"{INDENT}:param"
    start = len(f"def {function}(self, ") + sum(len(p) + 2 for p in params[: len(notes)])
    return text, {"next_def": (start, start + len(params[len(notes)])), "end": (len(text) - 6, len(text))}


def complete(function: str, params: Sequence[str], summary: Sequence[str], notes: Sequence[Sequence[str]]) -> str:
    """The whole function header with every param documented and the docstring closed (training text)."""
    return _head(function, params, summary) + "".join(map(_param_line, params, notes)) + f'{INDENT}"""\n'


def docstring(n: int, seed: int = 0, tokenizer: Any = None, split: str = "test") -> PromptPairs:
    """``n`` docstring pairs with spans C_def, end and corrupt (= C_def)."""
    require_n("docstring", n)
    params = single_token_items("docstring", "words", partition(WORDS, split), tokenizer, minimum=6)
    rng = random.Random(f"docstring-{seed}-{split}")
    clean, corrupted, answer, wrong = [], [], [], []
    spans: dict[str, list] = {"C_def": [], "end": [], "corrupt": []}
    for _ in range(n):
        chosen = rng.sample(params, 6)
        names, replacement = chosen[:5], chosen[5]
        function, *words = rng.sample([w for w in WORDS if w not in chosen], 8)
        summary, notes = words[:3], [words[3:5], words[5:7]]
        text, where = render(function, names, summary, notes)
        corrupted_text, _ = render(function, names[:2] + [replacement] + names[3:], summary, notes)
        clean.append(text)
        corrupted.append(corrupted_text)
        answer.append(" " + names[2])
        wrong.append(" " + replacement)
        spans["C_def"].append(where["next_def"])
        spans["corrupt"].append(where["next_def"])
        spans["end"].append(where["end"])
    return check_alignment("docstring", PromptPairs(clean, corrupted, answer, wrong, spans=spans), tokenizer)
