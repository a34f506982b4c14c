"""Rows → tokenized training data: `build(cfg, tokenizer)` is what training calls.

    data = build(cfg, tokenizer)   # BuiltData(train, validation, report); DataError for bad rows

The datasets have columns input_ids, attention_mask and labels (unpadded lists of ints, -100 where a
token is not trained). Preflight and length problems are resolved together, so `data.on_bad_rows=error`
lists them all at once and `data.max_skip_fraction` counts every dropped row.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tunelab.config import RunConfig
from tunelab.data.encode import Encoded, check_lengths, check_tokenizer, encode_rows, examples, template_name
from tunelab.data.problems import Problem, resolve
from tunelab.data.rows import RowSet, collect, warn_skipped
from tunelab.errors import DataError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    format: str
    template: str  # chat_template, custom, or the plain template's name
    labels: list[str] | None  # the classification label set
    rows_read: int  # train (+ validation) records read, good and bad
    rows: dict[str, int]  # good rows per split
    examples: dict[str, int]  # dataset rows per split (raw text split into blocks makes more)
    skipped: dict[str, int] = field(default_factory=dict)  # dropped bad rows per reason
    replayed: int = 0  # general rows mixed into train (data.replay_fraction), counted in rows["train"]
    repeats: int = 0  # rows that repeat an earlier one (kept on one side of a data.val_size split)
    tasks: list[dict[str, Any]] = field(default_factory=list)  # several tasks: each one's part of the mix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuiltData:
    train: datasets.Dataset
    validation: datasets.Dataset | None
    report: DataReport
    validation_rows: list = field(default_factory=list)  # the validation rows as messages (for generation)


@dataclass
class Checked:
    """Every well-formed row encoded, those that also fit max_seq_length, and every problem (unresolved)."""

    rows: RowSet
    encoded: dict[str, list[Encoded]]
    kept: dict[str, list[Encoded]]
    problems: list[Problem]


def encode_checked(cfg: RunConfig, tokenizer: Any, rows: RowSet | None = None) -> Checked:
    """Preflight (unless its `rows` are given) + render + tokenize + length checks; nothing is raised for bad rows
    yet."""
    check_tokenizer(tokenizer, cfg.data)
    rows, problems = (rows, list(rows.problems)) if rows is not None else collect(cfg)
    checked = Checked(rows, encoded={}, kept={}, problems=problems)
    for split, split_rows in (("train", rows.train), ("validation", rows.validation)):
        checked.encoded[split] = encode_rows(tokenizer, split_rows, rows.format, cfg.data)
        checked.kept[split], length_problems = check_lengths(
            checked.encoded[split], rows.format, cfg.train.max_seq_length
        )
        checked.problems += length_problems
    return checked


def build(cfg: RunConfig, tokenizer: Any, rows: RowSet | None = None) -> BuiltData:
    """Preflight (or its `rows`, read once) + render + tokenize + length checks. Raises DataError (see
    data.on_bad_rows)."""
    checked = encode_checked(cfg, tokenizer, rows)
    rows, encoded = checked.rows, checked.kept
    skipped = resolve(checked.problems, rows.rows_read, cfg.data)
    warn_skipped(skipped)
    if not encoded["train"]:
        files = cfg.data.train_files
        raise DataError("no training rows left", [f"{files}: every row was bad; see the skipped counts"])
    import datasets  # here: ~1.3 s of import that reading or generating (which use this package) must not pay

    max_len = cfg.train.max_seq_length
    train = datasets.Dataset.from_dict(examples(encoded["train"], rows.format, max_len))
    validation = None
    if encoded["validation"]:
        validation = datasets.Dataset.from_dict(examples(encoded["validation"], rows.format, max_len))
    report = DataReport(
        format=rows.format,
        template=template_name(tokenizer, cfg.data.template, rows.format),
        labels=rows.labels,
        rows_read=rows.rows_read,
        rows={"train": len(encoded["train"]), "validation": len(encoded["validation"])},
        examples={"train": len(train), "validation": len(validation) if validation is not None else 0},
        skipped=skipped,
        replayed=rows.replayed,
        repeats=rows.repeats,
        tasks=[t.to_dict() for t in rows.tasks],
    )
    return BuiltData(train, validation, report, rows.validation)
