"""Field checks shared by the format converters: each raises a `RowError` that names the field and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.data.problems import RowError


@dataclass(frozen=True)
class FormatContext:
    """What a converter needs beyond the row: the classification label set (None for other formats)."""

    labels: tuple[str, ...] | None = None


def text_field(row: dict[str, Any], name: str, path: str | None = None, optional: bool = False) -> str:
    """The string in row[name]; missing/empty (unless optional) or not a string is a RowError.

    `path` is how the field is named in errors (e.g. messages[2].content); None (a null in Parquet or a
    datasets dir, where columns are shared by all rows) counts as missing.
    """
    path = path or name
    value = row.get(name)
    if value is None:
        if optional:
            return ""
        raise RowError("missing_field", path, "is missing", f"add {path!r} with a non-empty string")
    if not isinstance(value, str):
        raise RowError("wrong_type", path, f"is a {type_name(value)}, not a string", f"write {path!r} as a string")
    if not value.strip() and not optional:
        raise RowError("missing_field", path, "is empty", f"give {path!r} some text, or remove the row")
    return value


def type_name(value: Any) -> str:
    return {dict: "object", list: "list", bool: "boolean", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
