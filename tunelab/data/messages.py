"""Rows as messages: a read record converted by its format (tunelab.data.formats) into chat messages.

rows, problems = convert(records, "prompt_completion", FormatContext())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tunelab.data import formats
from tunelab.data.formats import FormatContext
from tunelab.data.problems import Problem, RowError
from tunelab.data.readers import Record
from tunelab.data.templates import Message

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One good row as messages, and where it came from (`where` is file:line or file[index])."""

    messages: list[Message]
    where: str
    line: int
    # The record as read: an encoder classifier reads its text field, not the rendered prompt.
    fields: dict | None = field(default=None, compare=False, repr=False)
    task: str | None = field(default=None, compare=False)  # the source's task when data.train lists several


def convert(records: list[Record], fmt: str, ctx: FormatContext) -> tuple[list[Row], list[Problem]]:
    def row(record: Record) -> Row:
        return Row(formats.to_messages(record.fields, fmt, ctx), record.where, record.line, record.fields)

    return convert_records(records, row)


def convert_records(records: list[Record], make: Callable[[Record], T]) -> tuple[list[T], list[Problem]]:
    """`make(record)` for each record that parsed; a record that did not, or whose `make` raised a RowError, is
    a problem instead."""
    rows, problems = [], []
    for record in records:
        if record.fields is None:
            problems.append(record.problem())
            continue
        try:
            rows.append(make(record))
        except RowError as err:
            problems.append(Problem.of(record.where, err))
    return rows, problems
