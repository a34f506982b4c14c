"""Preference data: answers compared (pairs) or judged (good/bad), read and checked before any model loads.

    rows = preflight(cfg)   # PreferenceSet, or DataError listing every bad row (file:line, field, reason, fix)

Formats (`data.format`, or detected from the rows' fields):
- pairs: {"prompt", "chosen", "rejected"}; each a string, or a message list (the prompt's ends with a user turn;
  an answer's is one assistant message), so TRL's "conversational" rows read as they are;
- openai_preference: OpenAI's preference fine-tuning JSONL, {"input": {"messages": [...]}, "preferred_output":
  [assistant message], "non_preferred_output": [assistant message]}, so DPO files made for OpenAI work here;
- kto: {"prompt", "completion", "label": true|false} (unpaired, for objective kto; pairs are unpaired for it too);
- prompts: {"prompt", "reference"?, ...} for objective grpo: what to answer, and what the rewards compare with
  (a prompt_completion row's completion is its reference); every other field goes to the rewards as a column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig
from tunelab.data.formats.chat import message
from tunelab.data.formats.fields import text_field, type_name
from tunelab.data.messages import convert_records
from tunelab.data.problems import Problem, RowError, listing, resolve
from tunelab.data.readers import Record, read
from tunelab.data.rows import split
from tunelab.data.templates import Message
from tunelab.errors import DataError


@dataclass(frozen=True)
class Pair:
    """A prompt with a preferred and a rejected answer."""

    prompt: list[Message]
    chosen: str
    rejected: str
    where: str


@dataclass(frozen=True)
class Judged:
    """A prompt with one answer labelled desirable (True) or undesirable (False)."""

    prompt: list[Message]
    completion: str
    desirable: bool
    where: str


@dataclass(frozen=True)
class Prompted:
    """A prompt to sample answers for, with the fields the rewards read (`reference`, ...)."""

    prompt: list[Message]
    columns: dict[str, Any]
    where: str


@dataclass
class PreferenceSet:
    format: str
    train: list[Any]  # Pair, Judged or Prompted rows
    validation: list[Any]
    rows_read: int
    skipped: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    labels: None = None  # no classification labels: the same attribute as a RowSet's

    def to_dict(self) -> dict[str, Any]:
        """The run's data report (metrics.json)."""
        desirable = [r.desirable for r in self.train if isinstance(r, Judged)]
        counts = {"desirable": sum(desirable), "undesirable": len(desirable) - sum(desirable)} if desirable else {}
        sizes = {"train_rows": len(self.train), "validation_rows": len(self.validation)}
        return {"format": self.format, **sizes, "rows_read": self.rows_read, "skipped": self.skipped, **counts}


def _missing(name: str) -> RowError:
    return RowError("missing_field", name, "is missing", f"add {name!r}")


def _prompt(value: Any, name: str) -> list[Message]:
    if value is None:
        raise _missing(name)
    if isinstance(value, str):
        return [{"role": "user", "content": text_field({name: value}, name)}]
    if not isinstance(value, list) or not value:
        raise RowError("wrong_type", name, f"is a {type_name(value)}", f"write {name!r} as a string or messages")
    messages = [message(i, m, name) for i, m in enumerate(value)]
    if messages[-1]["role"] != "user":
        last = f"{name}[{len(value) - 1}].role"
        raise RowError("unknown_role", last, "is not user", "end the prompt with the user's message; answers go apart")
    return messages


def _answer(value: Any, name: str) -> str:
    """An answer: a string, or a list of exactly one assistant message."""
    if value is None:
        raise _missing(name)
    if isinstance(value, str):
        return text_field({name: value}, name)
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} messages" if isinstance(value, list) else f"a {type_name(value)}"
        raise RowError("wrong_type", name, f"is {got}", f"write {name!r} as a string or one assistant message")
    answer = message(0, value[0], name)
    if answer["role"] != "assistant":
        raise RowError("unknown_role", f"{name}[0].role", f"is {answer['role']!r}", "the answer is the assistant's")
    return answer["content"]


def _pair(prompt: list[Message], chosen: str, rejected: str, where: str, names: tuple[str, str]) -> Pair:
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        raise RowError("nothing_to_train", f"{names[0]}/{names[1]}", "are the same answer", "remove the row")
    return Pair(prompt, chosen, rejected, where)


def pairs(row: dict[str, Any], where: str) -> Pair:
    prompt = _prompt(row.get("prompt"), "prompt")
    return _pair(prompt, _answer(row.get("chosen"), "chosen"), _answer(row.get("rejected"), "rejected"), where, _PAIR)


def openai_preference(row: dict[str, Any], where: str) -> Pair:
    given = row.get("input")
    if not isinstance(given, dict) or "messages" not in given:
        raise RowError("missing_field", "input.messages", "is missing", "write input as {messages: [...]}")
    prompt = _prompt(given["messages"], "input.messages")
    chosen = _answer(row.get("preferred_output"), "preferred_output")
    return _pair(prompt, chosen, _answer(row.get("non_preferred_output"), "non_preferred_output"), where, _OPENAI)


def kto(row: dict[str, Any], where: str) -> Judged:
    label = row.get("label")
    if not isinstance(label, bool):
        raise RowError("wrong_type", "label", f"is {label!r}", "label must be true (desirable) or false (undesirable)")
    return Judged(_prompt(row.get("prompt"), "prompt"), _answer(row.get("completion"), "completion"), label, where)


def prompts(row: dict[str, Any], where: str) -> Prompted:
    columns = {key: value for key, value in row.items() if key != "prompt"}
    if "reference" not in columns and "completion" in columns:
        columns["reference"] = columns.pop("completion")
    if "reference" in columns and not isinstance(columns["reference"], str):
        raise RowError("wrong_type", "reference", f"is a {type_name(columns['reference'])}", "write it as a string")
    return Prompted(_prompt(row.get("prompt"), "prompt"), columns, where)


_PAIR, _OPENAI = ("chosen", "rejected"), ("preferred_output", "non_preferred_output")
# name -> (the fields that tell the format, converter). Detection order: openai_preference's rows have no prompt.
FORMATS: dict[str, tuple[set[str], Callable[[dict[str, Any], str], Any]]] = {
    "pairs": ({"prompt", "chosen", "rejected"}, pairs),
    "openai_preference": ({"input", "preferred_output", "non_preferred_output"}, openai_preference),
    "kto": ({"prompt", "completion", "label"}, kto),
    "prompts": ({"prompt"}, prompts),
}
# The formats each preference objective trains on.
ACCEPTS = {"dpo": ("pairs", "openai_preference"), "orpo": ("pairs", "openai_preference")}
ACCEPTS["kto"] = ("kto", "pairs", "openai_preference")
ACCEPTS["grpo"] = ("prompts",)


def preflight(cfg: RunConfig) -> PreferenceSet:
    """Read, detect, convert and check every row (no tokenizer); the val_size split; train/validation duplicates."""
    train_records = read(cfg.data.sources()[0].path, "train")
    val_records = read(Path(cfg.data.validation), "validation") if cfg.data.validation else []
    fmt = _format(cfg, train_records)
    if cfg.data.val_size is not None:
        groups = _groups(train_records, fmt)
        train_records, val_records = split(train_records, cfg.data.val_size, cfg.train.seed, groups)
    train, problems = _convert(train_records, fmt)
    validation, val_problems = _convert(val_records, fmt)
    seen = {_key(r): r.where for r in train}
    for r in list(validation):
        if _key(r) in seen:
            validation.remove(r)
            reason = f"the same row is in the training data at {seen[_key(r)]}"
            val_problems.append(Problem(r.where, "duplicate", "", reason, "remove it from one of the two"))
    if cfg.objective.name == "kto":  # after the checks, so that a bad pair counts as one bad row
        train, validation = _judged(train), _judged(validation)
    if cfg.objective.name == "grpo":
        train, problems = _with_references(train, problems, cfg.objective.rewards)
        validation, val_problems = _with_references(validation, val_problems, cfg.objective.rewards)
    rows = PreferenceSet(fmt, train, validation, len(train_records) + len(val_records))
    rows.problems = problems + val_problems
    rows.skipped = resolve(rows.problems, rows.rows_read, cfg.data)
    return rows


def _format(cfg: RunConfig, records: list[Record]) -> str:
    accepted = ACCEPTS[cfg.objective.name]
    wanted = f"objective {cfg.objective.name} trains on {' or '.join(accepted)} rows"
    if cfg.data.format != "auto":
        if cfg.data.format not in accepted:
            raise DataError(f"data.format={cfg.data.format}: {wanted}", [_describe(accepted)])
        return cfg.data.format
    parsed = [r for r in records if r.fields is not None]
    if not parsed:
        raise DataError(f"{cfg.data.train_files}: no row could be read", listing([r.problem() for r in records]))
    counts = {name: sum(FORMATS[name][0] <= set(r.fields) for r in parsed) for name in accepted}
    best = max(accepted, key=lambda name: counts[name])
    if counts[best] == 0:
        fields = ", ".join(sorted(parsed[0].fields))
        raise DataError(
            f"{cfg.data.train_files}: {wanted}", [f"{parsed[0].where}: fields {{{fields}}}; {_describe(accepted)}"]
        )
    return best


def _describe(accepted: tuple[str, ...]) -> str:
    return "; ".join(f"{name}: {{{', '.join(sorted(FORMATS[name][0]))}}}" for name in accepted)


def _convert(records: list[Record], fmt: str) -> tuple[list[Any], list[Problem]]:
    return convert_records(records, lambda record: FORMATS[fmt][1](record.fields, record.where))


def _with_references(rows: list[Prompted], problems: list[Problem], rewards: list[Any]):
    """Rows whose rewards can score them: exact_match and field_match compare with the row's reference (a JSON
    object for field_match); the others are bad rows."""
    needs = {reward.name for reward in rewards} & {"exact_match", "field_match"}
    if not needs:
        return rows, problems
    kept = []
    for row in rows:
        reference = row.columns.get("reference")
        if reference is None:
            fix = f"add the expected answer as 'reference' (rewards {', '.join(sorted(needs))} compare with it)"
            problems.append(Problem(row.where, "missing_field", "reference", "is missing", fix))
        elif "field_match" in needs and not isinstance(_json_object(reference), dict):
            fix = "field_match compares JSON fields: write the reference as a JSON object"
            problems.append(Problem(row.where, "wrong_type", "reference", "is not a JSON object", fix))
        else:
            kept.append(row)
    return kept, problems


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _judged(rows: list[Any]) -> list[Judged]:
    return [judged for row in rows for judged in (unpaired(row) if isinstance(row, Pair) else [row])]


def unpaired(pair: Pair) -> list[Judged]:
    """A pair as KTO reads it: its chosen answer desirable, its rejected answer undesirable."""
    return [Judged(pair.prompt, pair.chosen, True, pair.where), Judged(pair.prompt, pair.rejected, False, pair.where)]


def _key(row: Any) -> str:
    if isinstance(row, Prompted):
        answers = [json.dumps(row.columns, sort_keys=True)]
    else:
        answers = [row.chosen, row.rejected] if isinstance(row, Pair) else [row.completion, row.desirable]
    return json.dumps([[(m["role"], " ".join(m["content"].split())) for m in row.prompt], answers])


def _groups(records: list[Record], fmt: str) -> list[list[int]]:
    """Records grouped as the duplicate check sees them: copies of a row stay on one side of the val_size split
    (split apart, they would be refused as a train/validation leak). A record that does not convert is alone."""
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        key = f"unconverted {i}"
        if record.fields is not None:
            try:
                key = _key(FORMATS[fmt][1](record.fields, record.where))
            except RowError:
                pass
        groups.setdefault(key, []).append(i)
    return list(groups.values())
