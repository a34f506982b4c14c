"""`tunelab models`: the built-ins and every converted model in the cache, with sizes on disk.

render(Console())  # or: rows = list_models(); console.print(models_table(rows))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.models.registry import BUILTINS, MARKER, is_converted, models_cache


def list_models() -> list[dict[str, Any]]:
    """One dict per model: name, kind, description, installed, converted, path, size_bytes, source."""
    cache = models_cache()
    rows = [_builtin_row(alias, cache / alias) for alias in BUILTINS]
    if cache.is_dir():
        for path in sorted(cache.iterdir()):
            if path.name not in BUILTINS and not path.name.startswith(".") and is_converted(path):
                rows.append(_converted_row(path))
    return rows


def _builtin_row(alias: str, converted_dir: Path) -> dict[str, Any]:
    builtin = BUILTINS[alias]
    source = builtin.hf_path() if builtin.hf_dir else builtin.gguf_path()
    # A shipped Hugging Face directory is used as it is; a GGUF is converted on first use.
    ready = source if builtin.hf_dir else (converted_dir if is_converted(converted_dir) else None)
    return {
        "name": alias,
        "kind": "builtin",
        "description": builtin.description,
        "installed": source is not None,
        "install_hint": None if source else builtin.install_hint(),
        "converted": ready is not None,
        "path": str(ready) if ready else None,
        "size_bytes": dir_size(ready) if ready else None,
        "source": str(source) if source else None,
        "source_bytes": (dir_size(source) if source.is_dir() else source.stat().st_size) if source else None,
    }


def _converted_row(path: Path) -> dict[str, Any]:
    """A converted user GGUF; its marker records where it came from."""
    info = json.loads((path / MARKER).read_text())
    source = Path(info.get("source", ""))
    return {
        "name": path.name,
        "kind": "gguf",
        "description": f"converted from {source}",
        "installed": source.is_file(),
        "install_hint": None,
        "converted": True,
        "path": str(path),
        "size_bytes": dir_size(path),
        "source": str(source),
        "source_bytes": info.get("source_bytes"),
    }


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    units, size, i = ("B", "KB", "MB", "GB", "TB"), float(n), 0
    while size >= 1024 and i < len(units) - 1:
        size, i = size / 1024, i + 1
    return f"{n} B" if i == 0 else f"{size:.1f} {units[i]}"


def models_table(rows: list[dict[str, Any]] | None = None) -> Any:
    """A rich Table of `rows` (default: list_models())."""
    from rich.table import Table

    table = Table(title=f"Models (cache: {models_cache()})")
    # Names and sizes never wrap (`tunelab models | grep NAME` must find whole names on an 80-column pipe); the
    # free text wraps at word boundaries instead.
    for column in ("name", "kind", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("installed")
    table.add_column("converted")
    table.add_column("description", ratio=1, overflow="fold")
    for row in list_models() if rows is None else rows:
        installed = "yes" if row["installed"] else f"no: {row['install_hint'] or 'source file gone'}"
        converted = "yes" if row["converted"] else "no (on first use)"
        table.add_row(
            row["name"], row["kind"], human_size(row["size_bytes"]), installed, converted, row["description"]
        )
    return table


def render(console: Any = None) -> None:
    """Print the models table to `console` (a rich Console; default: a new one on stdout)."""
    from rich.console import Console

    (console or Console()).print(models_table())
