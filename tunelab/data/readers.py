"""Read a data file into records: JSONL, JSON (a list of objects), CSV, Parquet, or a saved `datasets` dir.

    records = read(Path("train.jsonl"), role="train")

Each record keeps where it came from: `file:line` (1-based; the CSV header is line 1) for JSONL and CSV,
`file[index]` (0-based) for JSON, Parquet and datasets dirs, which have rows but no lines. A row that cannot
be used becomes a record with an `error` (a bad row, reported with the others): one that does not parse, is
not UTF-8 (JSONL), holds a NUL character, is nested too deeply, or is over MAX_ROW_BYTES. A file that cannot
be read at all raises `DataError` at once. Text files are UTF-8; a leading BOM (as Excel writes) is allowed.
JSONL and CSV are read line by line with bounded reads, so a huge line is never held whole.
"""

from __future__ import annotations

import csv
import errno
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tunelab.data.json_items import top_level_items
from tunelab.data.problems import Problem
from tunelab.errors import DataError

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")

# The most text one row may hold. 8 MiB is far above any context window (a 128k-token context is about
# 0.5 MiB of text, so such a row could only ever be truncated) and far below what breaks the pipeline: a
# 200 MB row is read whole and then aborts the process inside the Rust tokenizer. Checked before parsing.
MAX_ROW_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024  # how much of an over-long line is read at a time while skipping it
_BOM = b"\xef\xbb\xbf"
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # a line break at a CR not followed by LF, as text mode reads
TOO_LARGE_FIX = "split it into smaller rows or remove it"
NUL_REASON = r"contains a NUL byte (\x00): binary data or a broken export"


@dataclass(frozen=True)
class Record:
    where: str
    line: int  # 1-based line (JSONL, CSV) or 0-based row index (JSON, Parquet, datasets)
    fields: dict[str, Any] | None  # None for a bad row; the fields below say what is wrong
    error: str = ""  # the reason
    kind: str = "unparseable"  # one of problems.REASONS
    field: str = ""  # the top-level field at fault; "" for the whole row
    fix: str = "fix or remove the row"

    def problem(self) -> Problem:
        return Problem(self.where, self.kind, self.field, self.error, self.fix)


def read(path: Path, role: str = "train") -> list[Record]:
    """All records of one file. `role` (train/validation/test) names the config key in errors."""
    _check_exists(path, role)
    reader = _reader_for(path, role)
    try:
        records = reader(path)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if not records:
        raise DataError(f"{path}: no rows", [f"{path}: the {role} data is empty; give a file with at least one row"])
    return records


def _check_exists(path: Path, role: str) -> None:
    # Path.exists() is False for a symlink loop too, which would then read as "no such file".
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problem = f"{path}: a symbolic link that leads back to itself (ELOOP); point at the real file"
            raise DataError(f"{role} data is a symlink loop: {path}", [problem]) from None
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise _unreadable(path, exc) from None
        problem = f"{path}: no such file or directory; check the path"
        raise DataError(f"{role} data not found: {path}", [problem]) from None


def _unreadable(path: Path, exc: OSError) -> DataError:
    return DataError(f"{path}: cannot be read", [f"{path}: {exc}; check the file and its permissions"])


def _reader_for(path: Path, role: str) -> Callable[[Path], list[Record]]:
    if path.is_dir():
        return lambda p: _read_datasets_dir(p, role)
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    suffix = path.suffix.lower()
    if suffix not in readers:
        raise DataError(
            f"{path}: unknown data file type {suffix or '(no extension)'!r}",
            [f"{path}: use {', '.join(EXTENSIONS)}, or a directory written by datasets' save_to_disk"],
        )
    return readers[suffix]


@dataclass
class _Overlong(Exception):
    """A line over MAX_ROW_BYTES, already skipped: yielded by _physical_lines in its place, raised by _CsvLines."""

    size: int  # bytes in the line
    quotes: int  # '"' characters in it: CSV needs them to find where the row ends


def _physical_lines(f: BinaryIO) -> Iterator[bytes | _Overlong]:
    """The lines of a binary file, each with its ending (LF, CRLF or a lone CR, as text mode splits them),
    without a leading BOM. A line over MAX_ROW_BYTES comes as _Overlong, skipped in chunks, never held whole."""
    limit = MAX_ROW_BYTES
    if f.read(len(_BOM)) != _BOM:
        f.seek(0)
    raw = f.readline(limit + 1)
    while raw:
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield _skip_line(f, raw)
        else:
            yield from (piece for piece in _LONE_CR.split(raw) if piece) if b"\r" in raw else (raw,)
        raw = f.readline(limit + 1)


def _skip_line(f: BinaryIO, head: bytes) -> _Overlong:
    size, quotes, chunk = len(head), head.count(b'"'), head
    while chunk and not chunk.endswith(b"\n"):
        chunk = f.readline(_CHUNK)
        size, quotes = size + len(chunk), quotes + chunk.count(b'"')
    return _Overlong(size, quotes)


def _undecodable(raw: bytes, exc: UnicodeDecodeError) -> tuple[int, str]:
    """(line within `raw`, 1-based, and the reason) for bytes that are not UTF-8."""
    line_start = raw.rfind(b"\n", 0, exc.start) + 1
    column = len(raw[line_start : exc.start].decode("utf-8")) + 1  # characters, as an editor counts them
    return raw.count(b"\n", 0, exc.start) + 1, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column})"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _too_large(what: str) -> str:
    return f"{what} over the {_size(MAX_ROW_BYTES)} limit on one row (far more than any context window)"


def _oversized(where: str, line: int, what: str) -> Record:
    return Record(where, line, None, _too_large(what), "too_large", "", TOO_LARGE_FIX)


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open("rb") as f:
        for number, line in enumerate(_physical_lines(f), start=1):
            record = _jsonl_record(path, number, line)
            if record is not None:  # None: a blank line, not a row
                records.append(record)
    return records


def _jsonl_record(path: Path, number: int, line: bytes | _Overlong) -> Record | None:
    where = f"{path}:{number}"
    if isinstance(line, _Overlong):
        return _oversized(where, number, f"the line is {_size(line.size)},")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Record(where, number, None, _undecodable(line, exc)[1], "not_text", "", "save the file as UTF-8")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(where, number, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return _too_deep(where, number)
    if not isinstance(value, dict):
        return Record(where, number, None, f"a JSON {type(value).__name__}, not an object; write one object per line")
    return _checked(where, number, value)


def _too_deep(where: str, index: int) -> Record:
    # json.loads recurses once per level and gives up near Python's recursion limit (about 1000 levels).
    reason = "nested too deeply to read (more levels than Python's JSON parser allows)"
    return Record(where, index, None, reason, fix="flatten the row; a training row needs only a few levels")


def _read_json(path: Path) -> list[Record]:
    raw = path.read_bytes().removeprefix(_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, reason = _undecodable(raw, exc)
        raise DataError(f"{path}: not UTF-8 text", [f"{path}:{line}: {reason}; save the file as UTF-8"]) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid_json(path, text, exc.pos, exc.msg) from None
    except RecursionError:  # some row is nested too deeply
        if text.lstrip().startswith("["):
            return _read_json_rows_one_by_one(path, text)
        value = None
    if not isinstance(value, list):
        raise DataError(
            f"{path}: not a list of rows",
            [f"{path}: a .json data file must be a list of objects; for one object per line, use .jsonl"],
        )
    return [_indexed(path, i, row) for i, row in enumerate(value)]


def _invalid_json(path: Path, text: str, pos: int, msg: str) -> DataError:
    line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
    return DataError(f"{path}: not valid JSON", [f"{path}:{line}: {msg} at column {column}"])


def _read_json_rows_one_by_one(path: Path, text: str) -> list[Record]:
    """A file json.loads cannot parse whole because some row is nested too deeply: find the rows of the
    top-level list without recursion and parse each alone, so only the deep rows are bad."""
    records = []
    for index, (start, end) in enumerate(top_level_items(text)):
        where, item = f"{path}[{index}]", text[start:end]
        if len(item) > MAX_ROW_BYTES:  # characters: at least as many bytes; checked before parsing
            records.append(_oversized(where, index, "the row's text is"))
            continue
        try:
            records.append(_indexed(path, index, json.loads(item)))
        except json.JSONDecodeError as exc:
            raise _invalid_json(path, text, start + exc.pos, exc.msg) from None
        except RecursionError:
            records.append(_too_deep(where, index))
    return records


def _indexed(path: Path, index: int, row: Any) -> Record:
    where = f"{path}[{index}]"
    if not isinstance(row, dict):
        return Record(where, index, None, f"a {type(row).__name__}, not an object with named fields")
    return _checked(where, index, row)


def _checked(where: str, line: int, fields: dict[str, Any]) -> Record:
    """The record, or a bad row when a parsed row holds a NUL character or more than MAX_ROW_BYTES of text."""
    size = 0
    for name, value in fields.items():
        stack = [name, value]  # a loop, not recursion: a row may be nested as deep as its file allows
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if "\x00" in item:
                    return Record(where, line, None, NUL_REASON, "not_text", str(name), "remove it")
                size += len(item) if item.isascii() else len(item.encode("utf-8", "surrogatepass"))
            elif isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list | tuple):
                stack += item
            else:
                size += len(item) if isinstance(item, bytes) else 8  # a number, bool or None: a few characters
            if size > MAX_ROW_BYTES:
                return _oversized(where, line, "the row's text is")
    return Record(where, line, fields)


class _CsvLines:
    """Decoded, counted lines for csv.reader. A line over MAX_ROW_BYTES raises _Overlong through the reader
    (which then starts afresh); one that is not UTF-8 raises DataError."""

    def __init__(self, path: Path, f: BinaryIO):
        self.path, self.lines, self.number, self.quotes = path, _physical_lines(f), 0, 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.number += 1
        if isinstance(line, _Overlong):
            self.quotes += line.quotes
            raise line
        self.quotes += line.count(b'"')
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"{self.path}:{self.number}: {_undecodable(line, exc)[1]}; save the file as UTF-8"
            raise DataError(f"{self.path}: not UTF-8 text", [problem]) from None

    def start_row(self) -> int:
        self.quotes = 0
        return self.number + 1

    def skip_rest_of_row(self, start: int) -> int:
        """After an error mid-row, skip the lines of a quoted cell still open (an odd count of quotes since the
        row began), so that the reader starts again at the next row; the row's last line."""
        while self.quotes % 2:
            line = next(self.lines, None)
            if line is None:
                reason = "a quoted cell opened in this row never closes"
                raise DataError(
                    f"{self.path}: cannot find where the row at line {start} ends",
                    [f"{self.path}:{start}: {reason}; close it or remove the row"],
                )
            self.number += 1
            self.quotes += line.quotes if isinstance(line, _Overlong) else line.count(b'"')
        return self.number


def _read_csv(path: Path) -> list[Record]:
    # The csv module's own cell limit (128 KiB, process-wide) raises mid-file; the row limit is the one meant.
    old_limit = csv.field_size_limit(MAX_ROW_BYTES)
    try:
        with path.open("rb") as f:
            return list(_csv_records(path, _CsvLines(path, f)))
    finally:
        csv.field_size_limit(old_limit)


def _csv_records(path: Path, lines: _CsvLines) -> Iterator[Record]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except (csv.Error, _Overlong):
        problem = f"{path}:1: {_too_large('the header line is')}; the first line must be the column names"
        raise DataError(f"{path}: the header is too large", [problem]) from None
    if header is None:
        return
    while True:
        start = lines.start_row()
        try:
            values = next(reader)
        except StopIteration:
            return
        except (csv.Error, _Overlong) as exc:  # the reader starts afresh at the line after the row
            at = lines.number
            yield _csv_error(path, (start, at, lines.skip_rest_of_row(start)), exc)
            continue
        if values:  # blank lines are not rows
            yield _csv_record(path, start, header, values)


def _csv_error(path: Path, lines: tuple[int, int, int], exc: Exception) -> Record:
    """A bad row for an error at line `at` of the row from `start` to `end`."""
    start, at, end = lines
    span = f" (lines {start}-{end})" if end > start else ""
    where = f"{path}:{start}"
    if isinstance(exc, _Overlong):
        return _oversized(where, start, f"line {at} is {_size(exc.size)},")
    if "field limit" in str(exc):  # csv.Error has no code to tell its errors apart
        return _oversized(where, start, f"a cell{span} is")
    return Record(where, start, None, f"not valid CSV{span} ({exc})")


def _csv_record(path: Path, line: int, header: list[str], values: list[str]) -> Record:
    where = f"{path}:{line}"
    if len(values) != len(header):
        reason = f"has {len(values)} values but the header has {len(header)} columns; quote values that hold commas"
        return Record(where, line, None, reason)
    return _checked(where, line, dict(zip(header, values, strict=True)))


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a readable Parquet file", [f"{path}: {exc}; re-export the file"]) from None
    return [_indexed(path, i, row) for i, row in enumerate(rows)]


def _read_datasets_dir(path: Path, role: str) -> list[Record]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(
            f"{path}: not a saved datasets directory",
            [f"{path}: {exc}; point at a file, or at a directory written by Dataset.save_to_disk"],
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = _pick_split(path, loaded, role)
    return [_indexed(path, i, row) for i, row in enumerate(loaded.to_list())]


def _pick_split(path: Path, dataset_dict: Any, role: str) -> Any:
    splits = list(dataset_dict)
    if len(splits) == 1:
        return dataset_dict[splits[0]]
    if role in dataset_dict:
        return dataset_dict[role]
    raise DataError(
        f"{path}: a DatasetDict with splits {', '.join(splits)} and none named {role!r}",
        [f"{path}: save the {role} split on its own (dataset_dict[{splits[0]!r}].save_to_disk(...))"],
    )
