"""Preflight: read the files, detect the format, convert every row to messages and check it, with no tokenizer.

    rows = preflight(cfg)   # RowSet, or DataError listing every bad row (file:line, field, reason, fix)

Checks here: parse, fields, types, roles, labels, train/validation duplicates. Length checks need the
tokenizer and live in tunelab.data.encode.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.data import formats
from tunelab.data.formats import FormatContext
from tunelab.data.problems import Problem, RowError, resolve
from tunelab.data.readers import Record, read
from tunelab.data.replay import replay_rows
from tunelab.data.templates import Message
from tunelab.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One good row as messages, and where it came from (`where` is file:line or file[index])."""

    messages: list[Message]
    where: str
    line: int
    # The record as read: an encoder classifier reads its text field, not the rendered prompt.
    fields: dict | None = field(default=None, compare=False, repr=False)


@dataclass
class RowSet:
    format: str
    labels: list[str] | None  # the classification label set; None for other formats
    train: list[Row]
    validation: list[Row]  # empty when there is no validation data
    rows_read: int  # records read from train (+ validation), good and bad
    skipped: dict[str, int] = field(default_factory=dict)  # bad rows dropped, per reason (on_bad_rows=skip)
    replayed: int = 0  # general rows mixed into train (data.replay_fraction)


def preflight(cfg: RunConfig) -> RowSet:
    """Read + parse + field/type/role/label/duplicate checks, val_size split; no tokenizer. Raises DataError."""
    rows, problems = collect(cfg)
    rows.skipped = resolve(problems, rows.rows_read, cfg.data)
    if rows.skipped:
        log.warning("skipped %d bad row(s): %s", sum(rows.skipped.values()), rows.skipped)
    return rows


def collect(cfg: RunConfig) -> tuple[RowSet, list[Problem]]:
    """The good rows and the problems of the bad ones, without deciding what to do about them."""
    train_records = read(Path(cfg.data.train), "train")
    val_records = read(Path(cfg.data.validation), "validation") if cfg.data.validation else []
    if cfg.data.val_size is not None:
        train_records, val_records = split(train_records, cfg.data.val_size, cfg.train.seed)
    fmt = resolve_format(cfg.data.format, train_records, Path(cfg.data.train))
    ctx = context(fmt, train_records, cfg.data.labels)
    train, problems = convert(train_records, fmt, ctx)
    replayed, replay_problems = replay_rows(cfg, fmt, len(train))
    train += replayed
    validation, val_problems = convert(val_records, fmt, ctx)
    validation, dup_problems = drop_duplicates(train, validation)
    labels = list(ctx.labels) if ctx.labels is not None else None
    rows = RowSet(fmt, labels, train, validation, len(train_records) + len(val_records), replayed=len(replayed))
    return rows, problems + replay_problems + val_problems + dup_problems


def split(records: list[Record], val_size: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Hold out a share (0 < val_size < 1) or a count of rows, the same ones for the same seed."""
    n = len(records)
    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * n))
    if n_val >= n:
        raise DataError(
            f"data.val_size={val_size:g} leaves no training rows",
            [f"data.val_size: {n_val} of {n} rows held out; use a smaller share or count, or a validation file"],
        )
    held = set(random.Random(seed).sample(range(n), n_val))
    # Both parts keep file order, so reports and errors read top to bottom.
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def resolve_format(configured: str, records: list[Record], path: Path) -> str:
    if configured != "auto":
        return configured
    parsed = [r.fields for r in records if r.fields is not None]
    fmt = formats.majority_format(parsed)
    if fmt is None:
        first = next((r for r in records if r.fields is not None), records[0])
        fields = ", ".join(sorted(first.fields or {})) or "none"
        raise DataError(
            f"{path}: cannot tell the data format from the fields of the rows",
            [
                f"{first.where}: fields {{{fields}}} fit no format; the formats are {formats.describe()}. "
                "Rename the fields, or set data.format"
            ],
        )
    return fmt


def context(fmt: str, train_records: list[Record], labels: list[str] | None) -> FormatContext:
    module = formats.get(fmt)
    if not hasattr(module, "label_set"):
        return FormatContext()
    return FormatContext(labels=module.label_set((r.fields for r in train_records if r.fields), labels))


def convert(records: list[Record], fmt: str, ctx: FormatContext) -> tuple[list[Row], list[Problem]]:
    rows, problems = [], []
    for record in records:
        if record.fields is None:
            problems.append(Problem(record.where, "unparseable", "", record.error, "fix or remove the row"))
            continue
        try:
            rows.append(Row(formats.to_messages(record.fields, fmt, ctx), record.where, record.line, record.fields))
        except RowError as err:
            problems.append(Problem.of(record.where, err))
    return rows, problems


def drop_duplicates(train: list[Row], validation: list[Row]) -> tuple[list[Row], list[Problem]]:
    """Validation rows that are also training rows (after whitespace normalization) inflate eval scores."""
    seen = {dedup_key(row.messages): row.where for row in train}
    kept, problems = [], []
    for row in validation:
        twin = seen.get(dedup_key(row.messages))
        if twin is None:
            kept.append(row)
            continue
        reason = f"the same row is in the training data at {twin} (after whitespace normalization)"
        problems.append(Problem(row.where, "duplicate", "", reason, "remove it from one of the two"))
    return kept, problems


def dedup_key(messages: list[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], " ".join(m["content"].split())) for m in messages)
