"""Test rows for evaluation and generation: each one is the prompt messages and the reference answer.

    examples = read_eval_examples(Path("test.jsonl"), cfg)
    prompt = render_prompt(tokenizer, ex.messages, cfg.data.template, cfg.data.system)

Rows are read, converted and checked exactly as training rows are (same formats, same errors,
same data.on_bad_rows); the final assistant turn becomes the reference. The config's system prompt is
not in `messages`: pass it to `render_prompt`, as training does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.config.schema import TrainSource
from tunelab.data import formats
from tunelab.data.messages import Row, convert
from tunelab.data.problems import Problem, resolve
from tunelab.data.readers import read
from tunelab.data.rows import PREFERENCE_FORMATS, context, repeat_groups, resolve_format, split
from tunelab.data.templates import Message
from tunelab.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalExample:
    messages: list[Message]  # the prompt: every turn before the final assistant one
    reference: str  # the final assistant turn's text (the label, for classification)
    line: int  # 1-based line (JSONL, CSV) or 0-based row index (JSON, Parquet, datasets dir)
    where: str = ""  # file:line or file[index]
    fields: dict | None = None  # the record as read (an encoder classifier reads its text field)
    task: str | None = None  # several tasks: the test source's name, or the row's `task` field


def read_eval_examples(
    test: Path | list[TrainSource], cfg: RunConfig, labels: list[str] | None = None
) -> list[EvalExample]:
    """Each test row → EvalExample. `test`: a file, or (several tasks) a list of sources, each read with its task's
    format, system prompt and labels. `labels`: the label set training used (default: as training derives it)."""
    if isinstance(test, list):
        return [example for source in test for example in task_examples(source, cfg)]
    examples = file_examples(Path(test), cfg, cfg.data.format, labels)
    return [row_task(e, cfg) for e in examples] if cfg.data.several_tasks else examples


def test_paths(test: Path | list[TrainSource]) -> list[Path]:
    return [s.path for s in test] if isinstance(test, list) else [Path(test)]


def test_name(test: Path | list[TrainSource]) -> str:
    """The test data in reports: the file, or each task's file and name."""
    return ", ".join(f"{s.path} ({s.task})" for s in test) if isinstance(test, list) else str(test)


def task_examples(source: TrainSource, cfg: RunConfig) -> list[EvalExample]:
    """One test source's rows, read as the training task of the same name reads its own (when there is one)."""
    trained = {s.task: s for s in cfg.data.sources()}.get(source.task)
    fmt = source.format or (trained.format if trained else None) or cfg.data.format
    labels = task_labels(cfg, trained) if trained is not None else None
    system = source.system or (trained.system if trained else None)
    return [tagged(e, source.task, system) for e in file_examples(source.path, cfg, fmt, labels)]


def row_task(example: EvalExample, cfg: RunConfig) -> EvalExample:
    """A test row of a several-task run naming its task (a `task` field): that task's system prompt."""
    name = (example.fields or {}).get("task")
    trained = {s.task: s for s in cfg.data.sources()}.get(name) if isinstance(name, str) else None
    return tagged(example, name, trained.system) if trained is not None else example


def tagged(example: EvalExample, task: str, system: str | None) -> EvalExample:
    messages = example.messages
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return replace(example, task=task, messages=messages)


def file_examples(path: Path, cfg: RunConfig, configured: str, labels: list[str] | None) -> list[EvalExample]:
    records = read(Path(path), "test")
    # A preference run trained on pairs (or prompts); its test rows are prompts with answers, in their own format.
    configured = configured if configured not in PREFERENCE_FORMATS else "auto"
    fmt = resolve_format(configured, records, Path(path))
    if formats.get(fmt).RAW:
        raise DataError(
            f"{path}: {fmt} rows have no prompt and reference to evaluate",
            [f"{path}: evaluation needs prompt/answer rows (formats {formats.describe()}); raw text has none"],
        )
    ctx = context(fmt, records, labels or cfg.data.labels or training_labels(cfg, fmt))
    rows, problems = convert(records, fmt, ctx)
    examples = []
    for row in rows:
        example = to_example(row)
        if isinstance(example, Problem):
            problems.append(example)
        else:
            examples.append(example)
    skipped = resolve(problems, len(records), cfg.data)
    if skipped:
        log.warning("%s: skipped %d bad test row(s): %s", path, sum(skipped.values()), skipped)
    return examples


def training_labels(cfg: RunConfig, fmt: str) -> list[str] | None:
    """The label set training derived from its own rows (val_size split included), so prompts match; several
    tasks: the labels of every classification task."""
    if not hasattr(formats.get(fmt), "label_set"):
        return None
    labels = [label for source in cfg.data.sources() for label in task_labels(cfg, source) or []]
    return list(dict.fromkeys(labels))


def task_labels(cfg: RunConfig, source: TrainSource) -> list[str] | None:
    """The label set one training source derived from its rows (its val_size split included), or None."""
    records = read(source.path, "train")
    fmt = resolve_format(source.format or cfg.data.format, records, source.path)
    if not hasattr(formats.get(fmt), "label_set"):
        return None
    if cfg.data.val_size is not None:
        groups = repeat_groups(records, cfg.data.model_copy(update={"format": fmt}))
        records, _ = split(records, cfg.data.val_size, cfg.train.seed, groups)
    return list(context(fmt, records, None).labels or ())


def to_example(row: Row) -> EvalExample | Problem:
    *prompt, last = row.messages
    if last["role"] != "assistant" or not prompt:
        return Problem(
            row.where,
            "missing_field",
            "messages",
            "needs prompt turns followed by a final assistant turn (the reference answer)",
            "end the conversation with the expected assistant reply",
        )
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return EvalExample(messages, last["content"], row.line, row.where, row.fields)
