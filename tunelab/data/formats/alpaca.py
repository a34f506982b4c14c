"""alpaca: {"instruction": str, "input": str (optional), "output": str}; the output is trained.

The input, when there is one, follows the instruction after a blank line, as in the Stanford Alpaca data.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tunelab.data.formats.fields import FormatContext, text_field
from tunelab.data.templates import Message

FIELDS = "{instruction, input (optional), output}"
PROMPT_FIELD, COMPLETION_FIELD = "instruction", "output"
RAW = False


def detect(fields: Collection[str]) -> bool:
    return "instruction" in fields and "output" in fields


def to_messages(row: dict[str, Any], ctx: FormatContext) -> list[Message]:
    instruction = text_field(row, "instruction")
    extra = text_field(row, "input", optional=True)
    output = text_field(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
