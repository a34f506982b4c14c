"""Row formats: one small module per format, all the same shape, in the `FORMATS` registry.

Each module has `FIELDS` (for messages), `PROMPT_FIELD`/`COMPLETION_FIELD` (named in length errors),
`RAW` (True: raw text, no template), `detect(fields) -> bool` and `to_messages(row, ctx) -> messages`,
which raises `RowError` for a bad row. Adding a format is a new module plus one line below; the order is
the detection order (classification before text: {text, label} rows also have a text field).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from types import ModuleType
from typing import Any

from tunelab.data.formats import alpaca, chat, classification, prompt_completion, text
from tunelab.data.formats.fields import FormatContext
from tunelab.data.templates import Message

FORMATS: dict[str, ModuleType] = {
    "chat": chat,
    "prompt_completion": prompt_completion,
    "alpaca": alpaca,
    "classification": classification,
    "text": text,
}

__all__ = ["FORMATS", "FormatContext", "detect", "get", "majority_format", "to_messages"]


def get(name: str) -> ModuleType:
    if name not in FORMATS:
        raise ValueError(f"unknown data format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]


def detect(fields: Collection[str]) -> str | None:
    """The first format whose fields the row has, or None."""
    return next((name for name, module in FORMATS.items() if module.detect(fields)), None)


def majority_format(rows: list[dict[str, Any]]) -> str | None:
    """The format most rows look like (ties: registry order), so that one malformed first row neither
    decides the format nor hides it; rows that do not fit it are then reported as bad rows."""
    counts = Counter(name for name in (detect(row) for row in rows) if name)
    if not counts:
        return None
    order = list(FORMATS)
    return max(counts, key=lambda name: (counts[name], -order.index(name)))


def to_messages(row: dict[str, Any], fmt: str, ctx: FormatContext | None = None) -> list[Message]:
    """Convert one row of format `fmt` to messages; raises RowError for a bad row."""
    return get(fmt).to_messages(row, ctx or FormatContext())


def describe() -> str:
    """The formats and their fields, for "cannot tell the format" errors."""
    return "; ".join(f"{name} {module.FIELDS}" for name, module in FORMATS.items())
