"""Command-line usage mistakes as one line: what is wrong, the valid choices or the nearest option, exit 2.

    describe(exc, app)  # -> "tunelab generate: no such option --max-new-token; did you mean --max-new-tokens?"

typer raises click's usage errors from its own copy of click (typer._click), so they are matched by name and
read through their public attributes, not by class.
"""

from __future__ import annotations

import difflib
import re
from typing import Any


def describe(exc: Any, app: Any) -> str:
    """One line for a typer/click usage error `exc` raised by `app`."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "tunelab"
    kind = type(exc).__name__
    if kind == "NoSuchOption":
        return f"{where}: no such option {exc.option_name}; {_nearest_option(exc, ctx)}"
    message = " ".join(exc.format_message().split())  # click wraps some messages over lines
    message = message.replace("Value error, ", "")  # pydantic's prefix on typer's Literal check
    message = re.sub(r"Missing argument '(\w+)'", lambda m: f"Missing argument {m[1].upper()}", message)
    if "No such command" in message:
        return f"{where}: {message.rstrip('.')}{_commands(app, message)}"
    return f"{where}: {message} (usage: {_usage(where, ctx)}; see {where} --help)"


def _usage(where: str, ctx: Any) -> str:
    """`tunelab train [OPTIONS] CONFIG [OVERRIDES]...`, built from the parameters (typer's own usage line carries
    rich markup)."""
    parts = [where, "[OPTIONS]"]
    for param in ctx.command.params if ctx is not None else []:
        if param.param_type_name == "argument":
            name = (param.name or "").upper()
            name += "..." if param.nargs == -1 else ""
            parts.append(name if param.required else f"[{name}]")
    return " ".join(parts)


def _nearest_option(exc: Any, ctx: Any) -> str:
    options = sorted(
        {name for param in (ctx.command.params if ctx else []) for name in param.opts if name[:2] == "--"}
    )
    close = exc.possibilities or difflib.get_close_matches(exc.option_name, options, n=3, cutoff=0.5)
    if close:
        return f"did you mean {' or '.join(close)}?"  # best match first
    return f"options: {', '.join(options)}" if options else "this command takes no options"


def _commands(app: Any, message: str) -> str:
    if "Did you mean" in message:
        return ""
    names = sorted(command.name or command.callback.__name__ for command in app.registered_commands)
    return f"; commands: {', '.join(names)}"
