"""What `tunelab generate` and `tunelab chat` do, kept out of cli.py so the CLI stays thin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab.console import console, info
from tunelab.data.readers import read
from tunelab.errors import ConfigError, DataError
from tunelab.generation import Decoding, generate, stream
from tunelab.inference import load_for_inference


def decoding(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None, seed: int | None):
    try:
        return Decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    except ValueError as exc:
        raise ConfigError("bad decoding options", [str(exc)]) from None


def read_prompts(path: Path) -> list[Any]:
    """A file of {"prompt": str} or {"messages": [...]} rows (any format tunelab reads); errors name file:line."""
    prompts, problems = [], []
    for record in read(path, "--input"):  # the data package's readers: same files, same located errors
        row = record.fields
        if row is None:
            problems.append(f"{record.where}: not valid JSON ({record.error})")
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            prompts.append(row["prompt"])
        elif isinstance(row.get("messages"), list) and row["messages"]:
            prompts.append(row["messages"])
        else:
            problems.append(f"{record.where}: needs a non-empty `prompt` string or a `messages` list")
    if problems:
        raise DataError(f"{path}: {len(problems)} bad row(s)", problems)
    return prompts


def run_generate(model_ref, prompt, input_path, output_path, dec: Decoding, *, batch_size, system, device, dtype):
    if (prompt is None) == (input_path is None):
        raise ConfigError(
            "give either a PROMPT or --input FILE", ["tunelab generate MODEL 'prompt'  or  --input x.jsonl"]
        )
    prompts = [prompt] if prompt is not None else read_prompts(input_path)
    loaded = load_for_inference(model_ref, device=device, dtype=dtype)
    start = time.perf_counter()
    outputs = generate(
        loaded.model,
        loaded.tokenizer,
        prompts,
        dec,
        batch_size=batch_size,
        template=loaded.template,
        system=system or loaded.system,
        progress=len(prompts) > 1,
    )
    info(f"{len(prompts)} prompt(s) in {time.perf_counter() - start:.1f} s")
    if prompt is not None and output_path is None:
        print(outputs[0])
        return
    lines = "".join(json.dumps({"prompt": p, "output": o}) + "\n" for p, o in zip(prompts, outputs, strict=True))
    if output_path is None:
        print(lines, end="")
    else:
        artifacts.write_text(Path(output_path), lines)
        info(f"wrote {len(outputs)} rows to {output_path}")


def run_chat(model_ref: str, dec: Decoding, *, system: str | None, device: str, dtype: str) -> None:
    loaded = load_for_inference(model_ref, device=device, dtype=dtype)
    history: list[dict[str, str]] = []
    console.print(f"chatting with [bold]{loaded.source}[/] (empty line or Ctrl-D quits)")
    while True:
        try:
            user = input("you> ")
        except EOFError:
            break
        if not user.strip():
            break
        history.append({"role": "user", "content": user})
        print("assistant> ", end="", flush=True)
        pieces = []
        for piece in stream(
            loaded.model, loaded.tokenizer, history, dec, template=loaded.template, system=system or loaded.system
        ):
            print(piece, end="", flush=True)
            pieces.append(piece)
        print()
        history.append({"role": "assistant", "content": "".join(pieces)})
