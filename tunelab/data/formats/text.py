"""text: {"text": str}, raw text for continued pre-training.

No template: every token is trained and EOS is appended. A text longer than train.max_seq_length is
split into blocks (see tunelab.data.encode.encode_raw), never truncated.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tunelab.data.formats.fields import FormatContext, text_field
from tunelab.data.templates import Message

FIELDS = "{text}"
PROMPT_FIELD, COMPLETION_FIELD = "text", "text"
RAW = True


def detect(fields: Collection[str]) -> bool:
    return "text" in fields


def to_messages(row: dict[str, Any], ctx: FormatContext) -> list[Message]:
    return [{"role": "assistant", "content": text_field(row, "text")}]
