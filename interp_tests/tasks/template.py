"""Fill ``{SLOT}`` templates while recording where each slot landed, so tasks can name character spans."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..pairs import Span

_SLOT = re.compile(r"\{([A-Z_0-9]+)\}")


def fill(template: str, values: Mapping[str, str]) -> tuple[str, dict[str, Span]]:
    """The filled text and the character span of each slot (the last one, when a slot repeats)."""
    parts: list[str] = []
    spans: dict[str, Span] = {}
    length = 0
    cursor = 0
    for match in _SLOT.finditer(template):
        literal = template[cursor : match.start()]
        value = values[match.group(1)]
        parts += [literal, value]
        length += len(literal)
        spans[match.group(1)] = (length, length + len(value))
        length += len(value)
        cursor = match.end()
    parts.append(template[cursor:])
    return "".join(parts), spans


def last_word_span(text: str) -> Span:
    """The span of the text's last space-separated word (the prompt's final token for word tokenizers)."""
    start = text.rstrip().rfind(" ") + 1
    return (start, len(text.rstrip()))
