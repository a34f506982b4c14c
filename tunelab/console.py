"""One console for human-facing output (stderr, so stdout stays clean for results and piping)."""

from __future__ import annotations

import logging
import os

from rich.console import Console

console = Console(stderr=True, highlight=False)

# bitsandbytes (imported by peft whenever it is installed) warns at import on every AVX512-bf16 CPU that an
# optional kernel cannot be downloaded from the hub; its built-in fallback runs instead. Not a user's problem.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def is_main_process() -> bool:
    """Rank 0 of a multi-process run (launchers set RANK), or a single process: the one that prints and writes."""
    return os.environ.get("RANK", "0") == "0"


def info(message: str) -> None:
    if is_main_process():  # the other processes of a multi-process run do the same work silently
        console.print(message)
