"""One console for human-facing output (stderr, so stdout stays clean for results and piping)."""

from __future__ import annotations

import logging
import os

from rich.console import Console

console = Console(stderr=True, highlight=False)

# bitsandbytes (imported by peft whenever it is installed) warns at import on every AVX512-bf16 CPU that an
# optional kernel cannot be downloaded from the hub; its built-in fallback runs instead. Not a user's problem.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


# The rank as accelerate reads it (accelerate.utils.environment): torchrun's, else an MPI launcher's. Read here
# without importing accelerate: the console is imported by every command, and accelerate brings torch (1 s).
RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def is_main_process() -> bool:
    """Rank 0 of a multi-process run, or a single process: the one that prints and writes."""
    return next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), "0") == "0"


def info(message: str) -> None:
    if is_main_process():  # the other processes of a multi-process run do the same work silently
        console.print(message)
