"""`tunelab generate`: answers for one prompt (streamed) or a file of prompts (batched), to stdout or a JSONL file.

run_generate("runs/demo", None, Path("prompts.jsonl"), Path("out.jsonl"), Decoding(), LoadOptions(), ...)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab.console import info
from tunelab.data.readers import read
from tunelab.errors import ConfigError, DataError
from tunelab.inference.chat import print_streamed
from tunelab.inference.generation import Decoding, generate
from tunelab.inference.loading import Loaded, LoadOptions, load_model_or_runs


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
    loaded = load_model_or_runs(model_ref, options)
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
