"""chat: {"messages": [{"role", "content", "weight"?}, ...]}, the OpenAI fine-tuning JSONL format.

Roles are system, user and assistant. Assistant turns are trained unless they carry `"weight": 0`
(https://platform.openai.com/docs/guides/supervised-fine-tuning); a row must train at least one turn.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tunelab.data.formats.fields import FormatContext, text_field, type_name
from tunelab.data.problems import RowError
from tunelab.data.templates import Message

FIELDS = "{messages: [{role, content, weight?}]}"
PROMPT_FIELD, COMPLETION_FIELD = "messages", "messages"
RAW = False
ROLES = ("system", "user", "assistant")


def detect(fields: Collection[str]) -> bool:
    return "messages" in fields


def to_messages(row: dict[str, Any], ctx: FormatContext) -> list[Message]:
    messages = row.get("messages")
    if messages is None:
        raise RowError("missing_field", "messages", "is missing", "add 'messages': a list of {role, content}")
    if not isinstance(messages, list):
        raise RowError(
            "wrong_type",
            "messages",
            f"is a {type_name(messages)}, not a list",
            "write 'messages' as a list of {role, content} objects (a CSV cell cannot hold one: use JSONL)",
        )
    if not messages:
        raise RowError("missing_field", "messages", "is empty", "add at least a user and an assistant message")
    out = [message(i, m) for i, m in enumerate(messages)]
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in out):
        raise RowError(
            "nothing_to_train",
            "messages",
            "has no assistant message with weight 1, so nothing would be trained",
            "add an assistant reply, or remove the row",
        )
    return out


def message(i: int, m: Any, field: str = "messages") -> Message:
    """Element i of a message list (in `field`) as a checked {role, content, weight?} message."""
    path = f"{field}[{i}]"
    if not isinstance(m, dict):
        raise RowError("wrong_type", path, f"is a {type_name(m)}, not an object", "write it as {role, content}")
    role = m.get("role")
    if role is None:
        raise RowError("missing_field", f"{path}.role", "is missing", f"add a role: one of {', '.join(ROLES)}")
    if role not in ROLES:
        raise RowError("unknown_role", f"{path}.role", f"unknown role {role!r}", f"use one of {', '.join(ROLES)}")
    message: Message = {"role": role, "content": text_field(m, "content", path=f"{path}.content")}
    weight = m.get("weight")
    if weight is not None and (type(weight) is not int or weight not in (0, 1)):
        raise RowError("wrong_type", f"{path}.weight", f"is {weight!r}", "weight must be 0 (not trained) or 1")
    if role == "assistant" and weight == 0:
        message["weight"] = 0
    return message
