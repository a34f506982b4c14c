"""Preflight: read the files, detect the format, convert every row to messages and check it, with no tokenizer.

    rows = preflight(cfg)   # RowSet, or DataError listing every bad row (file:line, field, reason, fix)

Checks here: parse, fields, types, roles, labels, train/validation duplicates. Length checks need the
tokenizer and live in tunelab.data.encode. With data.val_size, copies of one row stay on one side of the split.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from tunelab.config import DataConfig, RunConfig
from tunelab.config.schema import TrainSource
from tunelab.console import info
from tunelab.data import formats
from tunelab.data.formats import FormatContext
from tunelab.data.messages import Row, convert
from tunelab.data.problems import Problem, RowError, listing, resolve
from tunelab.data.readers import Record, read
from tunelab.data.replay import replay_rows
from tunelab.data.tasks import TaskMix, mix, mix_counts
from tunelab.data.templates import Message
from tunelab.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class RowSet:
    format: str
    labels: list[str] | None  # the classification label set; None for other formats
    train: list[Row]
    validation: list[Row]  # empty when there is no validation data
    rows_read: int  # records read from train (+ validation), good and bad
    skipped: dict[str, int] = field(default_factory=dict)  # bad rows dropped, per reason (on_bad_rows=skip)
    replayed: int = 0  # general rows mixed into train (data.replay_fraction)
    repeats: int = 0  # train rows that repeat an earlier one, kept on its side of the data.val_size split
    # The bad rows found here, kept so that building on these rows (data.build) adds its length problems to them
    # instead of reading and converting the files a second time.
    problems: list[Problem] = field(default_factory=list)
    tasks: list[TaskMix] = field(default_factory=list)  # several tasks: what the training mix holds of each

    @property
    def own_train(self) -> list[Row]:
        """The user's training rows, without the general rows replay added (they come last)."""
        return self.train[: len(self.train) - self.replayed]


def preflight(cfg: RunConfig) -> RowSet:
    """Read + parse + field/type/role/label/duplicate checks, val_size split; no tokenizer. Raises DataError
    for bad rows unless data.on_bad_rows lets them be skipped; the skip warning is data.build's, said once."""
    rows, problems = collect(cfg)
    rows.skipped = resolve(problems, rows.rows_read, cfg.data)
    rows.problems = problems
    return rows


def warn_skipped(skipped: dict[str, int]) -> None:
    """Say once what on_bad_rows=skip dropped (by the step that builds the rows, which knows every problem)."""
    if skipped:
        log.warning("skipped %d bad row(s): %s", sum(skipped.values()), skipped)


def collect(cfg: RunConfig) -> tuple[RowSet, list[Problem]]:
    """The good rows and the problems of the bad ones, without deciding what to do about them."""
    tasks = [read_task(cfg, source) for source in cfg.data.sources()]
    fmt = mixed_format(tasks)
    train, mixes = (tasks[0].train, []) if len(tasks) == 1 else mix_tasks(cfg, tasks)
    replayed, replay_problems = replay_rows(cfg, "chat" if len(tasks) > 1 else fmt, len(train))
    train = train + replayed
    validation, dup_problems = drop_duplicates(train, [row for t in tasks for row in t.validation])
    labels = [label for t in tasks for label in (t.labels or [])] if any(t.labels for t in tasks) else None
    rows = RowSet(
        fmt,
        list(dict.fromkeys(labels)) if labels is not None else None,
        train,
        validation,
        sum(t.rows_read for t in tasks),
        replayed=len(replayed),
        repeats=sum(t.repeats for t in tasks),
        tasks=mixes,
    )
    return rows, [p for t in tasks for p in t.problems] + replay_problems + dup_problems


@dataclass
class TaskRows:
    """One training source read, split and converted: its rows tagged with the task (several tasks only)."""

    source: TrainSource
    format: str
    labels: list[str] | None
    train: list[Row]
    validation: list[Row]
    rows_read: int
    repeats: int
    problems: list[Problem]


def read_task(cfg: RunConfig, source: TrainSource) -> TaskRows:
    """Read one source, hold out its validation rows (data.val_size, or the data.validation file), convert both."""
    train_records = read(source.path, "train")
    val_records = read(Path(cfg.data.validation), "validation") if cfg.data.validation else []
    repeats = 0
    fmt = resolve_format(source.format or cfg.data.format, train_records, source.path)
    if cfg.data.val_size is not None:
        groups = repeat_groups(train_records, cfg.data.model_copy(update={"format": fmt}))
        repeats = len(train_records) - len(groups)
        if repeats:
            info(f"data.val_size: {repeats} row(s) repeat an earlier row; each kept on the same side of the split")
        train_records, val_records = split(train_records, cfg.data.val_size, cfg.train.seed, groups)
    ctx = context(fmt, train_records, cfg.data.labels)
    train, problems = convert(train_records, fmt, ctx)
    validation, val_problems = convert(val_records, fmt, ctx)
    if cfg.data.several_tasks:
        train, validation = (tag(rows, source) for rows in (train, validation))
    labels = list(ctx.labels) if ctx.labels is not None else None
    read_count = len(train_records) + len(val_records)
    return TaskRows(source, fmt, labels, train, validation, read_count, repeats, problems + val_problems)


def tag(rows: list[Row], source: TrainSource) -> list[Row]:
    """Rows of one task: named by it, with its system prompt unless a row has its own."""
    system = [{"role": "system", "content": source.system}] if source.system else []
    return [
        replace(
            row,
            task=source.task,
            messages=row.messages if row.messages[0]["role"] == "system" else system + row.messages,
        )
        for row in rows
    ]


def mixed_format(tasks: list[TaskRows]) -> str:
    """The rows' format (several tasks: the first source's, for rendering; raw text does not mix with turns)."""
    raw = [t for t in tasks if formats.get(t.format).RAW]
    if len(tasks) > 1 and raw:
        raise DataError(
            f"{raw[0].source.path}: raw text ({raw[0].format}) cannot be mixed with other tasks",
            ["train it in a run of its own, or give its rows a prompt and an answer"],
        )
    return tasks[0].format


def mix_tasks(cfg: RunConfig, tasks: list[TaskRows]) -> tuple[list[Row], list[TaskMix]]:
    """The training rows of several tasks at their shares (data.tasks), and what the mix holds of each."""
    available = {t.source.task: len(t.train) for t in tasks}
    empty = [name for name, n in available.items() if not n]
    if empty:
        raise DataError(f"task {empty[0]!r} has no good training rows", ["fix its rows, or remove the source"])
    weighted = tasks[0].source.weight is not None
    counts = mix_counts(available, {t.source.task: t.source.weight for t in tasks} if weighted else None)
    train = mix({t.source.task: t.train for t in tasks}, counts, cfg.train.seed)
    total = sum(counts.values())
    mixes = [
        TaskMix(
            t.source.task,
            str(t.source.path),
            t.format,
            len(t.train),
            counts[t.source.task],
            counts[t.source.task] / total,
            len(t.validation),
            t.source.weight,
        )
        for t in tasks
    ]
    info("tasks: " + ", ".join(f"{m.name} {m.used} rows ({100 * m.share:.0f}%)" for m in mixes))
    return train, mixes


def split(
    records: list[Record], val_size: float, seed: int, groups: list[list[int]] | None = None
) -> tuple[list[Record], list[Record]]:
    """Hold out a share (0 < val_size < 1) or a count of rows, the same ones for the same seed. The copies of
    a row (`groups`, from repeat_groups; None: as data.format auto sees them) go together and count once."""
    groups = groups if groups is not None else repeat_groups(records)
    n = len(groups)
    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * n))
    if n_val >= n:
        raise DataError(
            f"data.val_size={val_size:g} leaves no training rows",
            [f"data.val_size: {n_val} of {n} rows held out; use a smaller share or count, or a validation file"],
        )
    # With no repeats (one row per group) this picks exactly the rows it always has: published runs depend on it.
    held = {i for g in random.Random(seed).sample(range(n), n_val) for i in groups[g]}
    # Both parts keep file order, so reports and errors read top to bottom.
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def repeat_groups(records: list[Record], data: DataConfig | None = None) -> list[list[int]]:
    """Indices of the records grouped by dedup_key, in order of first appearance; a record that does not
    convert is a group of its own. Split apart, copies of one row would be refused as a train/validation leak.
    `data` gives the format and labels (None: the format detected, the rows' own labels)."""
    fmt = data.format if data is not None and data.format != "auto" else None
    fmt = fmt or formats.majority_format([r.fields for r in records if r.fields is not None])
    if fmt is None:
        return [[i] for i in range(len(records))]  # reported as it always is, after the split
    # The label set of all rows, not just those the split will train on: for grouping, only equality matters.
    ctx = context(fmt, records, data.labels if data is not None else None)
    groups: dict[object, list[int]] = {}
    for i, record in enumerate(records):
        key: object = ("unconverted", i)
        if record.fields is not None:
            try:
                key = dedup_key(formats.to_messages(record.fields, fmt, ctx))
            except RowError:
                pass
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# Preference rows (tunelab.data.preference) train a preference objective, not sft.
PREFERENCE_FORMATS = ("pairs", "openai_preference", "kto", "prompts")
PREFERENCE_FIELDS = (
    {"prompt", "chosen", "rejected"},
    {"input", "preferred_output"},
    {"prompt", "completion", "label"},
)


def resolve_format(configured: str, records: list[Record], path: Path) -> str:
    if configured in PREFERENCE_FORMATS:
        raise DataError(
            f"data.format={configured} is data for a preference objective, and objective is sft",
            [f"set objective.name ({'dpo, orpo or kto' if configured != 'prompts' else 'grpo'}) in the config"],
        )
    if configured != "auto":
        return configured
    parsed = [r.fields for r in records if r.fields is not None]
    if not parsed:  # no fields to tell a format by: say why no row could be read
        raise DataError(f"{path}: no row could be read", listing([r.problem() for r in records]))
    fmt = formats.majority_format(parsed)
    if fmt is None:
        first = next((r for r in records if r.fields is not None), records[0])
        fields = ", ".join(sorted(first.fields or {})) or "none"
        if any(wanted <= set(first.fields or {}) for wanted in PREFERENCE_FIELDS):
            raise DataError(
                f"{path}: these rows compare or judge answers (preference data), and objective is sft",
                [f"{first.where}: fields {{{fields}}}: set objective: dpo (or orpo, kto) to train on them"],
            )
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
