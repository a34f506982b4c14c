"""Data: read files, convert rows to messages (one converter per format), tokenize with label masks.

    rows = preflight(cfg)                # no tokenizer: parse, fields, types, roles, labels, duplicates
    data = build(cfg, tokenizer)         # + render, tokenize, length checks → BuiltData(train, validation, report)
    report = inspect(cfg, tokenizer)     # what training would see; report.render(console)
    tests = read_eval_examples(path, cfg)

Bad rows raise DataError with file:line, field, reason and fix (or are skipped: data.on_bad_rows).
"""

from __future__ import annotations

from typing import Any

from tunelab.data.build import BuiltData, DataReport, build
from tunelab.data.evalset import EvalExample, read_eval_examples
from tunelab.data.formats import FORMATS, FormatContext
from tunelab.data.formats import to_messages as _to_messages
from tunelab.data.inspection import InspectReport, inspect
from tunelab.data.messages import Row
from tunelab.data.problems import Problem, RowError
from tunelab.data.rows import RowSet, preflight
from tunelab.data.templates import Message

__all__ = [
    "FORMATS",
    "BuiltData",
    "DataReport",
    "EvalExample",
    "FormatContext",
    "InspectReport",
    "Problem",
    "Row",
    "RowError",
    "RowSet",
    "build",
    "build_for_task",
    "inspect",
    "preflight",
    "read_eval_examples",
    "to_messages",
]


def build_for_task(cfg: Any, tokenizer: Any, task: str, rows: RowSet | None = None) -> BuiltData:
    """`build` for causal LMs; text + label ids for an encoder classifier (data.classifier); prompt and answer
    apart for an encoder-decoder (data.seq2seq). `rows`: preflight's, so the files are read once."""
    if task == "sequence_classification":
        from tunelab.data.classifier import build_for_classifier

        return build_for_classifier(cfg, tokenizer, rows)
    if task == "seq2seq":
        from tunelab.data.seq2seq import build_for_seq2seq

        return build_for_seq2seq(cfg, tokenizer, rows)
    return build(cfg, tokenizer, rows)


def to_messages(row: dict[str, Any], fmt: str, ctx: FormatContext | None = None) -> list[Message]:
    """One row of format `fmt` as messages; raises RowError (kind, field, reason, fix) for a bad row.

    `ctx.labels` is required for classification (the label set listed in the prompt).
    """
    return _to_messages(row, fmt, ctx)
