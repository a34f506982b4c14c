"""classification: {"text": str, "label": str | int}, trained as generation of the label.

The user turn lists the label set and asks for one; the assistant answer is the label. The label set is
`data.labels`, else the labels seen in the training rows; a label outside it is a bad row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from tunelab.data.formats.fields import FormatContext, text_field
from tunelab.data.problems import RowError
from tunelab.data.templates import Message

FIELDS = "{text, label}"
PROMPT_FIELD, COMPLETION_FIELD = "text", "label"
RAW = False


def detect(fields: Collection[str]) -> bool:
    return "text" in fields and "label" in fields


def to_messages(row: dict[str, Any], ctx: FormatContext) -> list[Message]:
    if ctx.labels is None:
        raise ValueError("classification rows need the label set: pass FormatContext(labels=...)")
    text = text_field(row, "text")
    label = label_of(row)
    if label not in ctx.labels:
        raise RowError(
            "label_not_in_set",
            "label",
            f"{label!r} is not in the label set ({', '.join(ctx.labels)})",
            "fix the label, or add it to data.labels",
        )
    return [{"role": "user", "content": prompt(text, ctx.labels)}, {"role": "assistant", "content": label}]


def prompt(text: str, labels: Iterable[str]) -> str:
    return (
        f"Classify the text into one of these labels: {', '.join(labels)}.\n"
        f"Answer with the label only.\n\nText: {text}"
    )


def label_of(row: dict[str, Any]) -> str:
    """The label as a string; whole numbers (0/1 class ids) are allowed and become "0"/"1"."""
    value = row.get("label")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text_field(row, "label")


def label_set(rows: Iterable[dict[str, Any]], configured: list[str] | None) -> tuple[str, ...]:
    """`data.labels` as given, else the sorted distinct labels of the (well-formed) training rows."""
    if configured:
        return tuple(configured)
    seen = set()
    for row in rows:
        try:
            seen.add(label_of(row))
        except RowError:
            continue  # reported when the row is converted
    return tuple(sorted(seen))
