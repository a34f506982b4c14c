"""Rows as messages: a read record converted by its format (tunelab.data.formats) into chat messages.

rows, problems = convert(records, "prompt_completion", FormatContext())
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.data import formats
from tunelab.data.formats import FormatContext
from tunelab.data.problems import Problem, RowError
from tunelab.data.readers import Record
from tunelab.data.templates import Message


@dataclass(frozen=True)
class Row:
    """One good row as messages, and where it came from (`where` is file:line or file[index])."""

    messages: list[Message]
    where: str
    line: int
    # The record as read: an encoder classifier reads its text field, not the rendered prompt.
    fields: dict | None = field(default=None, compare=False, repr=False)


def convert(records: list[Record], fmt: str, ctx: FormatContext) -> tuple[list[Row], list[Problem]]:
    rows, problems = [], []
    for record in records:
        if record.fields is None:
            problems.append(record.problem())
            continue
        try:
            rows.append(Row(formats.to_messages(record.fields, fmt, ctx), record.where, record.line, record.fields))
        except RowError as err:
            problems.append(Problem.of(record.where, err))
    return rows, problems
