"""Bad rows: what is wrong where, and what `data.on_bad_rows` does about it.

Every check (parse, fields, types, roles, labels, duplicates, lengths) reports a `Problem` for one row;
`resolve` then either raises one `DataError` listing them all or drops those rows and counts them per reason.
Many rows with the same problem (a column missing from every row) are listed once, with a count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from tunelab.config import DataConfig
from tunelab.errors import DataError

MAX_LISTED = 20  # a DataError lists this many distinct problems, then "and N more"

# The reasons a row is bad, as counted in reports (skip mode) and inspect.
REASONS = (
    "unparseable",
    "not_text",  # not UTF-8, or a NUL character: binary data, not text
    "too_large",  # over readers.MAX_ROW_BYTES
    "missing_field",
    "wrong_type",
    "unknown_role",
    "label_not_in_set",
    "nothing_to_train",
    "duplicate",
    "prompt_too_long",
    "truncated",
)


class RowError(Exception):
    """Raised by a format's `to_messages` (and the length checks) for one bad row."""

    def __init__(self, kind: str, field: str, reason: str, fix: str):
        if kind not in REASONS:
            raise ValueError(f"unknown bad-row reason {kind!r}; choose one of {', '.join(REASONS)}")
        super().__init__(f"{field}: {reason}")
        self.kind, self.field, self.reason, self.fix = kind, field, reason, fix


@dataclass(frozen=True)
class Problem:
    """One bad row: `where` is file:line (JSONL, CSV) or file[index] (JSON, Parquet, datasets dir);
    `field` is "" when the problem is the whole row."""

    where: str
    kind: str
    field: str
    reason: str
    fix: str

    @classmethod
    def of(cls, where: str, err: RowError) -> Problem:
        return cls(where, err.kind, err.field, err.reason, err.fix)

    def __str__(self) -> str:
        field = f"field '{self.field}': " if self.field else ""  # no field for a row that does not parse
        return f"{self.where}: {field}{self.reason}; {self.fix}"


def listing(problems: list[Problem]) -> list[str]:
    """The problems as lines for a DataError, rows with the same problem (kind, field, reason, fix) as one
    line at the first of them with a count, capped at MAX_LISTED lines."""
    groups: dict[tuple[str, str, str, str], list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.kind, p.field, p.reason, p.fix), []).append(p)
    shown = [_once(same) for same in list(groups.values())[:MAX_LISTED]]
    rest = list(groups.values())[MAX_LISTED:]
    if rest:
        rows = sum(len(same) for same in rest)
        shown.append(f"and {rows} more" if rows == len(rest) else f"and {rows} more rows ({len(rest)} problems)")
    return shown


def _once(same: list[Problem]) -> str:
    if len(same) == 1:
        return str(same[0])
    more = len(same) - 1
    return str(replace(same[0], where=f"{same[0].where} (and {more} more row{'s' if more > 1 else ''})"))


def count_by_reason(problems: list[Problem]) -> dict[str, int]:
    counts = Counter(p.kind for p in problems)
    return {kind: counts[kind] for kind in REASONS if counts[kind]}


def resolve(problems: list[Problem], total_rows: int, cfg: DataConfig) -> dict[str, int]:
    """Raise for bad rows (on_bad_rows=error, or too many skipped); else return skipped counts per reason."""
    if not problems:
        return {}
    if len({p.where for p in problems}) >= total_rows:  # skipping would leave nothing: do not suggest it
        raise DataError(f"every row is bad ({total_rows} read): fix the data; skipping leaves none", listing(problems))
    if cfg.on_bad_rows == "error":
        raise DataError(
            f"{len(problems)} bad row(s) in the data: fix them, or set data.on_bad_rows=skip to drop them",
            listing(problems),
        )
    share = len(problems) / max(total_rows, 1)
    if share > cfg.max_skip_fraction:
        raise DataError(
            f"{len(problems)} of {total_rows} rows are bad ({share:.1%}), more than data.max_skip_fraction="
            f"{cfg.max_skip_fraction:g}: fix the data, or raise data.max_skip_fraction if dropping them is intended",
            listing(problems),
        )
    return count_by_reason(problems)
