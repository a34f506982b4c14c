"""What `tunelab generate` and `tunelab chat` do, kept out of cli.py so the CLI stays thin."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab.console import console, info
from tunelab.data.readers import read
from tunelab.errors import ConfigError, DataError
from tunelab.generation import Decoding, generate, stream
from tunelab.inference import Loaded, load_for_inference, load_runs


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how: `adapter` picks one of several runs; None device/dtype: the run's, else auto."""

    adapter: str | None = None
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False


def decoding(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None, seed: int | None):
    try:
        return Decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    except ValueError as exc:
        raise ConfigError("bad decoding options", [str(exc)]) from None


def read_prompts(path: Path) -> list[tuple[Any, str | None]]:
    """A file of {"prompt": str} or {"messages": [...]} rows, each with an optional "adapter" name (any format
    tunelab reads); errors name file:line."""
    prompts, problems = [], []
    for record in read(path, "--input"):  # the data package's readers: same files, same located errors
        row = record.fields
        if row is None:
            problems.append(str(record.problem()))
            continue
        adapter = row.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            problems.append(f"{record.where}: `adapter` must be an adapter name (a string)")
        elif isinstance(row.get("prompt"), str) and row["prompt"].strip():
            prompts.append((row["prompt"], adapter))
        elif isinstance(row.get("messages"), list) and row["messages"]:
            prompts.append((row["messages"], adapter))
        else:
            problems.append(f"{record.where}: needs a non-empty `prompt` string or a `messages` list")
    if problems:
        raise DataError(f"{path}: {len(problems)} bad row(s)", problems)
    return prompts


def load(model_ref: str, options: LoadOptions) -> Loaded:
    """One model or run; or several runs on one base, comma-separated, with `adapter` (default: the first) active."""
    refs = [r.strip() for r in model_ref.split(",") if r.strip()]
    placement = {"device": options.device, "dtype": options.dtype, "trust_remote_code": options.trust_remote_code}
    if len(refs) == 1 and options.adapter is None:
        return load_for_inference(refs[0], **placement)
    if not all(artifacts.looks_like_run(r) for r in refs):
        raise ConfigError(
            "--adapter and several models need run directories: "
            "tunelab generate runs/tickets,runs/summaries --adapter summaries 'prompt'"
        )
    loaded = load_runs(refs, **placement)
    if options.adapter is not None:
        loaded.use(options.adapter)
    return loaded


def generate_by_adapter(
    loaded: Loaded, prompts: list[tuple[Any, str | None]], dec: Decoding, system: str | None = None, **options
) -> list[str]:
    """Rows naming an adapter run with it; the others with the active one. The base is never reloaded.
    `system` overrides each run's own system prompt."""
    default = loaded.source
    outputs = [""] * len(prompts)
    for name in dict.fromkeys(a or default for _, a in prompts):
        if loaded.adapters:
            loaded.use(name)
        elif name != default:
            raise ConfigError(f"a row asks for adapter {name!r}", ["load several runs: MODEL=runs/a,runs/b"])
        rows = [i for i, (_, a) in enumerate(prompts) if (a or default) == name]
        texts = generate(
            loaded.model,
            loaded.tokenizer,
            [prompts[i][0] for i in rows],
            dec,
            template=loaded.template,
            system=system or loaded.system,
            **options,
        )
        for i, text in zip(rows, texts, strict=True):
            outputs[i] = text
    return outputs


def run_generate(
    model_ref, prompt, input_path, output_path, dec: Decoding, options: LoadOptions, *, batch_size, system, overwrite
):
    if (prompt is None) == (input_path is None):
        raise ConfigError("give either a PROMPT or --input FILE: tunelab generate MODEL 'prompt'  or  --input x.jsonl")
    # Everything that can fail without the model fails here, before it loads and before any generation.
    prompts = [(prompt, None)] if prompt is not None else read_prompts(input_path)
    if output_path is not None:
        artifacts.check_outputs([Path(output_path)], overwrite, "--output")
    loaded = load(model_ref, options)
    if prompt is not None and output_path is None:
        print_streamed(loaded, prompt, dec, system or loaded.system)
        return
    start = time.perf_counter()
    outputs = generate_by_adapter(loaded, prompts, dec, system, batch_size=batch_size, progress=len(prompts) > 1)
    info(f"{len(prompts)} prompt(s) in {time.perf_counter() - start:.1f} s")
    lines = "".join(
        json.dumps({"prompt": p, "output": o} | ({"adapter": a} if a else {})) + "\n"
        for (p, a), o in zip(prompts, outputs, strict=True)
    )
    if output_path is None:
        print(lines, end="")
    else:
        artifacts.write_text(Path(output_path), lines)
        info(f"wrote {len(outputs)} rows to {output_path}")


def print_streamed(loaded: Loaded, prompt: Any, dec: Decoding, system: str | None) -> str:
    """Print the answer piece by piece as it is generated (the first words show while the rest decode)."""
    pieces = []
    for piece in stream(loaded.model, loaded.tokenizer, prompt, dec, template=loaded.template, system=system):
        print(piece, end="", flush=True)
        pieces.append(piece)
    print()
    return "".join(pieces)


def run_chat(model_ref: str, dec: Decoding, options: LoadOptions, *, system: str | None) -> None:
    loaded = load(model_ref, options)
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
