"""Read a data file into records: JSONL, JSON (a list of objects), CSV, Parquet, or a saved `datasets` dir.

    records = read(Path("train.jsonl"), role="train")

Each record keeps where it came from: `file:line` (1-based; the CSV header is line 1) for JSONL and CSV,
`file[index]` (0-based) for JSON, Parquet and datasets dirs, which have rows but no lines. A row that cannot
be parsed becomes a record with an `error` (a bad row, reported with the others); a file that cannot be
read at all raises `DataError` at once. Text files are UTF-8; a leading BOM (as Excel writes) is allowed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Record:
    where: str
    line: int  # 1-based line (JSONL, CSV) or 0-based row index (JSON, Parquet, datasets)
    fields: dict[str, Any] | None  # None when the row could not be parsed
    error: str = ""


def read(path: Path, role: str = "train") -> list[Record]:
    """All records of one file. `role` (train/validation/test) names the config key in errors."""
    if not path.exists():
        raise DataError(f"{role} data not found: {path}", [f"{path}: no such file or directory; check the path"])
    reader = _reader_for(path, role)
    try:
        records = reader(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text", [f"{path}: {exc}; save the file as UTF-8"]) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read", [f"{path}: {exc}; check the file and its permissions"]) from None
    if not records:
        raise DataError(f"{path}: no rows", [f"{path}: the {role} data is empty; give a file with at least one row"])
    return records


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


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8-sig") as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                records.append(_parse_json_line(path, number, text))
    return records


def _parse_json_line(path: Path, number: int, text: str) -> Record:
    where = f"{path}:{number}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Record(where, number, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(value, dict):
        return Record(where, number, None, f"a JSON {type(value).__name__}, not an object; write one object per line")
    return Record(where, number, value)


def _read_json(path: Path) -> list[Record]:
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        where = f"{path}:{exc.lineno}"
        raise DataError(f"{path}: not valid JSON", [f"{where}: {exc.msg} at column {exc.colno}"]) from None
    if not isinstance(value, list):
        raise DataError(
            f"{path}: not a list of rows",
            [f"{path}: a .json data file must be a list of objects; for one object per line, use .jsonl"],
        )
    return [_indexed(path, i, row) for i, row in enumerate(value)]


def _indexed(path: Path, index: int, row: Any) -> Record:
    where = f"{path}[{index}]"
    if not isinstance(row, dict):
        return Record(where, index, None, f"a {type(row).__name__}, not an object with named fields")
    return Record(where, index, row)


def _read_csv(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        start = reader.line_num + 1
        for values in reader:
            if values:  # blank lines are not rows
                records.append(_csv_record(path, start, header, values))
            start = reader.line_num + 1
    return records


def _csv_record(path: Path, line: int, header: list[str], values: list[str]) -> Record:
    where = f"{path}:{line}"
    if len(values) != len(header):
        reason = f"has {len(values)} values but the header has {len(header)} columns; quote values that hold commas"
        return Record(where, line, None, reason)
    return Record(where, line, dict(zip(header, values, strict=True)))


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
