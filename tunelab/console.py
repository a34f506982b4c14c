"""One console for human-facing output (stderr, so stdout stays clean for results and piping)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message)
