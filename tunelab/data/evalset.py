"""Test rows for evaluation and generation: each one is the prompt messages and the reference answer.

    examples = read_eval_examples(Path("test.jsonl"), cfg)
    prompt = render_prompt(tokenizer, ex.messages, cfg.data.template, cfg.data.system)

Rows are read, converted and checked exactly as training rows are (same formats, same errors,
same data.on_bad_rows); the final assistant turn becomes the reference. The config's system prompt is
not in `messages`: pass it to `render_prompt`, as training does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tunelab.config import RunConfig
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


def read_eval_examples(path: Path, cfg: RunConfig, labels: list[str] | None = None) -> list[EvalExample]:
    """Each test row → EvalExample. `labels`: the label set training used (default: as training derives it)."""
    records = read(Path(path), "test")
    # A preference run trained on pairs (or prompts); its test rows are prompts with answers, in their own format.
    configured = cfg.data.format if cfg.data.format not in PREFERENCE_FORMATS else "auto"
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
    """The label set training derived from its own rows (val_size split included), so prompts match."""
    if not hasattr(formats.get(fmt), "label_set"):
        return None
    records = read(Path(cfg.data.train), "train")
    if cfg.data.val_size is not None:
        records, _ = split(records, cfg.data.val_size, cfg.train.seed, repeat_groups(records, cfg.data))
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
