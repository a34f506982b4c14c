"""prompt_completion: {"prompt": str, "completion": str}; the completion is trained, the prompt is not."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tunelab.data.formats.fields import FormatContext, text_field
from tunelab.data.templates import Message

FIELDS = "{prompt, completion}"
PROMPT_FIELD, COMPLETION_FIELD = "prompt", "completion"
RAW = False


def detect(fields: Collection[str]) -> bool:
    return "prompt" in fields and "completion" in fields


def to_messages(row: dict[str, Any], ctx: FormatContext) -> list[Message]:
    prompt = text_field(row, "prompt")
    completion = text_field(row, "completion")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
