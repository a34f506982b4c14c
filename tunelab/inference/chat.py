"""`tunelab chat`: a conversation with a model or run, each answer streamed piece by piece as it decodes.

run_chat("runs/demo", Decoding(), LoadOptions())
"""

from __future__ import annotations

from typing import Any

from tunelab.console import console
from tunelab.inference.generation import Decoding, stream
from tunelab.inference.loading import Loaded, LoadOptions, load_model_or_runs


def print_streamed(loaded: Loaded, prompt: Any, dec: Decoding, system: str | None) -> str:
    """Print the answer piece by piece as it is generated (the first words show while the rest decode)."""
    pieces = []
    for piece in stream(loaded.model, loaded.tokenizer, prompt, dec, template=loaded.template, system=system):
        print(piece, end="", flush=True)
        pieces.append(piece)
    print()
    return "".join(pieces)


def run_chat(model_ref: str, dec: Decoding, options: LoadOptions, *, system: str | None) -> None:
    loaded = load_model_or_runs(model_ref, options)
    history: list[dict[str, str]] = []
    switch = f"; /adapter NAME switches ({', '.join(loaded.adapters)})" if loaded.adapters else ""
    console.print(f"chatting with {loaded.source} (empty line or Ctrl-D quits{switch})", markup=False)
    while True:
        try:
            user = input("you> ")
        except EOFError:
            break
        if not user.strip():
            break
        if user.startswith("/adapter ") and loaded.adapters:
            loaded.use(user.removeprefix("/adapter ").strip())  # same base, no reload; a new conversation
            history = []
            console.print(f"now using adapter {loaded.source}", markup=False)
            continue
        history.append({"role": "user", "content": user})
        print("assistant> ", end="", flush=True)
        answer = print_streamed(loaded, history, dec, system or loaded.system)
        history.append({"role": "assistant", "content": answer})
