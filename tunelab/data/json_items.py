"""The elements of a JSON array found without parsing it whole: for a file `json.loads` cannot take at once
because some row is nested too deeply (tunelab.data.readers then parses each element alone).

    list(top_level_items('[{"a": 1}, {"b": [2, 3]}]'))   # [(1, 9), (10, 24)]: each element's text, spaces kept
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# A JSON string (escapes included) or a bracket or comma outside one: enough to find a list's elements.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


def top_level_items(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each element of the top-level JSON list in `text`."""
    depth, start = 0, 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            start = match.end() if depth == 1 else start
        elif token in ("]", "}"):
            depth -= 1
            if depth == 0:
                if text[start : match.start()].strip():  # "[]" has no element
                    yield start, match.start()
                return
        elif token == "," and depth == 1:
            yield start, match.start()
            start = match.end()
