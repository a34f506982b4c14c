"""The `tunelab` command: thin commands that parse, call one library function and render the result.

tunelab train configs/lora.yaml train.learning_rate=1e-4
tunelab generate runs/demo "Where is my refund?"
"""

from __future__ import annotations

import atexit
import gc
import sys

import typer

from tunelab.cli import usage
from tunelab.cli.app import _split, app
from tunelab.console import console, info
from tunelab.errors import TunelabError

# Each stage's module registers its commands on `app` when imported; this order is the order of `tunelab --help`.
# isort: off
from tunelab.cli import train, sweeps, infer, retrieval, evaluate, export  # noqa: F401
# isort: on

__all__ = ["_split", "app", "main"]

# Commands that train or evaluate at length re-run themselves on tcmalloc when the machine has it
# (tunelab.launch: a third less memory, no slower).
ALLOCATOR_COMMANDS = {"train", "cv", "search", "demo", "eval", "compare", "feedback"}


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # a command's own process (not a call from Python)
        # At exit, the interpreter's last full collection walks every object torch, transformers and peft made,
        # for memory the OS takes back anyway: 1.7 s a process (measured), paid by every command and by each of
        # the N processes of `--nproc N`. Frozen first (atexit runs before that collection), exit takes 0.3 s.
        atexit.register(gc.freeze)
    try:
        if argv is None and next((a for a in sys.argv[1:] if not a.startswith("-")), None) in ALLOCATOR_COMMANDS:
            from tunelab import launch

            launch.rerun_with_tcmalloc()
        code = app(args=argv, standalone_mode=False, prog_name="tunelab")
    except TunelabError as exc:
        fail(str(exc))
    except typer.TyperException as exc:  # typer's own click: usage errors (unknown option, bad value, ...)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `tunelab` alone: the help, as asked
            print(exc.format_message(), file=sys.stderr)
            sys.exit(0)
        fail(usage.describe(exc, app))
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    # typer turns Ctrl-C into Exit(130), which a non-standalone call returns instead of raising.
    if code == 130:
        info("[yellow]interrupted[/] (a training run stopped this way stays incomplete; --resume goes on)")
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def fail(message: str) -> None:
    console.print("[bold red]error:[/]", end=" ")
    console.print(message, markup=False, soft_wrap=True)  # paths and [brackets] printed as they are
    sys.exit(2)
