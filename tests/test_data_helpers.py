"""Helpers shared by the tests/test_data_*.py files: write rows in any file type, build a RunConfig."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, validate


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as .jsonl, .json, .csv, .parquet, or (no suffix) a saved `datasets` directory."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def make_cfg(train: Path, max_seq_length: int = 1024, seed: int = 42, **data: Any) -> RunConfig:
    return validate({"data": {"train": str(train), **data}, "train": {"max_seq_length": max_seq_length, "seed": seed}})


def qa_rows(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"Question number {i}?", "completion": f"Answer {i}."} for i in range(n)]
