"""Forgetting probe data: the built-in general sets, and loaders for a user's own retention sets.

    items = builtin_mc()                       # general-knowledge multiple choice, scored by log-likelihood
    texts = builtin_texts()                    # general English prose, scored by perplexity
    items = load_mc(Path("my_probe.jsonl"))    # {"question", "choices", "answer", optional "id", "subject"}
    texts = load_texts(Path("my_text.jsonl"))  # {"text"}

The built-in sets were written for this project (not copied from public benchmarks, which a base model may
have memorized) and live in `probe_data/` inside the package. They are easy-to-medium on purpose: a small
chat model should score well above chance but far from perfect, so a fine-tune's loss of ability shows.
User files are read like training data (JSONL, one object per line); every bad row is reported at once as
a `DataError` naming file:line, field and reason.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from tunelab.data.problems import Problem, listing
from tunelab.data.readers import Record, read
from tunelab.errors import DataError

T = TypeVar("T")
ROLE = "retention"  # names the data in reader errors ("retention data not found: ...")


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question; `answer` is the 0-based index of the correct choice."""

    question: str
    choices: list[str]
    answer: int
    id: str = ""
    subject: str = ""


def builtin_mc() -> list[MCItem]:
    """The built-in general-knowledge questions (4 choices each, answer positions balanced)."""
    with _builtin("general_mc.jsonl") as path:
        return load_mc(path)


def builtin_texts() -> list[str]:
    """The built-in general English passages (80-200 words each)."""
    with _builtin("general_text.jsonl") as path:
        return load_texts(path)


def load_mc(path: Path) -> list[MCItem]:
    """Multiple-choice items from a JSONL file; raises DataError listing every bad row."""
    return _load(Path(path), _mc_item)


def load_texts(path: Path) -> list[str]:
    """Passages from a JSONL file of {"text": ...} rows; raises DataError listing every bad row."""
    return _load(Path(path), lambda fields, record, problems: _text(fields, "text", record, problems) or None)


def _load(path: Path, parse: Callable[[dict[str, Any], Record, list[Problem]], T | None]) -> list[T]:
    """Each row through `parse`, which appends a Problem and returns None for a bad row; raise for all at once."""
    items, problems = [], []
    for record in read(path, ROLE):
        if record.fields is None:
            problems.append(record.problem())
        elif (item := parse(record.fields, record, problems)) is not None:
            items.append(item)
    if problems:
        head = f"{path}: {len(problems)} problem(s) in the {ROLE} data; fix or remove these rows"
        raise DataError(head, listing(problems))
    return items


def _builtin(name: str) -> AbstractContextManager[Path]:
    # as_file gives a real path even if the package is installed as a zip; for a normal install it is the file.
    return resources.as_file(resources.files("tunelab.evaluation").joinpath("probe_data", name))


def _mc_item(fields: dict[str, Any], record: Record, problems: list[Problem]) -> MCItem | None:
    before = len(problems)
    question = _text(fields, "question", record, problems)
    choices = _choices(fields, record, problems)
    answer = _answer(fields, choices, record, problems)
    item_id = _optional_text(fields, "id", record, problems)
    subject = _optional_text(fields, "subject", record, problems)
    if len(problems) > before or choices is None or answer is None:
        return None
    return MCItem(question, choices, answer, item_id, subject)


def _choices(fields: dict[str, Any], record: Record, problems: list[Problem]) -> list[str] | None:
    if "choices" not in fields:
        problems.append(_missing(record, "choices", 'add "choices": a list of answer strings'))
        return None
    choices = fields["choices"]
    fix = 'give "choices" as a list of at least two distinct, non-empty strings'
    if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
        problems.append(_bad(record, "choices", "is not a list of non-empty strings", fix))
        return None
    if len(choices) < 2:
        problems.append(_bad(record, "choices", f"has {len(choices)} choice(s); a question needs at least 2", fix))
        return None
    # Identical choices get identical scores, so the item could never be scored correctly.
    if len({c.strip() for c in choices}) < len(choices):
        problems.append(_bad(record, "choices", "has duplicate choices", fix))
        return None
    return choices


def _answer(fields: dict[str, Any], choices: list[str] | None, record: Record, problems: list[Problem]) -> int | None:
    if "answer" not in fields:
        problems.append(_missing(record, "answer", 'add "answer": the 0-based index of the correct choice'))
        return None
    answer = fields["answer"]
    # bool is an int subclass; `true` as an answer is a mistake, not index 1.
    if not isinstance(answer, int) or isinstance(answer, bool):
        reason = f"is {answer!r}, not an integer"
        problems.append(_bad(record, "answer", reason, "give the 0-based index of the correct choice, e.g. 0"))
        return None
    if choices is not None and not 0 <= answer < len(choices):
        reason = f"{answer} is out of range for {len(choices)} choices"
        problems.append(_bad(record, "answer", reason, f"use 0 to {len(choices) - 1} (0-based index into choices)"))
        return None
    return answer


def _text(fields: dict[str, Any], name: str, record: Record, problems: list[Problem]) -> str:
    if name not in fields:
        problems.append(_missing(record, name, f'add "{name}"'))
        return ""
    value = fields[name]
    if not isinstance(value, str) or not value.strip():
        problems.append(_bad(record, name, "is not a non-empty string", f'give "{name}" as text'))
        return ""
    return value


def _optional_text(fields: dict[str, Any], name: str, record: Record, problems: list[Problem]) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        problems.append(_bad(record, name, f"is {value!r}, not a string", f'give "{name}" as text or leave it out'))
        return ""
    return value


def _missing(record: Record, name: str, fix: str) -> Problem:
    return Problem(record.where, "missing_field", name, "is missing", fix)


def _bad(record: Record, name: str, reason: str, fix: str) -> Problem:
    return Problem(record.where, "wrong_type", name, reason, fix)
