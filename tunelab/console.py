"""One console for human-facing output (stderr, so stdout stays clean for results and piping)."""

from __future__ import annotations

import logging

from rich.console import Console

console = Console(stderr=True, highlight=False)

# bitsandbytes (imported by peft whenever it is installed) warns at import on every AVX512-bf16 CPU that an
# optional kernel cannot be downloaded from the hub; its built-in fallback runs instead. Not a user's problem.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def info(message: str) -> None:
    console.print(message)
