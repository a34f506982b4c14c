"""Replay: mix general instruction data into training, a known mitigation of catastrophic forgetting.

    rows = replay_rows(cfg, n_task_rows)   # [] unless data.replay_fraction > 0

`data.replay_fraction` is the share of the final training rows that are general data, so 0.2 with 400
task rows adds 100 general rows. They come from `data.replay_data` (prompt/completion JSONL) or the
built-in general instruction set, drawn deterministically from `train.seed`.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.data.formats import FormatContext
from tunelab.data.messages import Row, convert
from tunelab.data.problems import Problem
from tunelab.data.readers import read
from tunelab.errors import ConfigError

# Replay rows carry their own neutral system prompt: the task's `data.system` (say, "answer only in JSON")
# would teach the model to follow it on general questions too.
REPLAY_SYSTEM = "You are a helpful assistant."
REPLAY_FORMATS = ("prompt_completion", "alpaca", "chat")


def replay_count(fraction: float, n_task_rows: int) -> int:
    return round(fraction / (1 - fraction) * n_task_rows) if fraction else 0


def replay_rows(cfg: RunConfig, fmt: str, n_task_rows: int) -> tuple[list, list[Problem]]:
    """General rows to add to training (as `Row`s), and the problems of a bad user replay file."""
    n = replay_count(cfg.data.replay_fraction, n_task_rows)
    if not n:
        return [], []
    if fmt not in REPLAY_FORMATS:
        raise ConfigError(
            f"data.replay_fraction needs instruction data, not format {fmt!r}",
            [f"data.replay_fraction: replay mixes in chat turns; use it with {', '.join(REPLAY_FORMATS)} data"],
        )
    if cfg.data.replay_data is not None:
        pool, problems = convert(read(Path(cfg.data.replay_data), "replay"), "prompt_completion", FormatContext())
    else:
        pool = [
            Row(_messages(r["prompt"], r["completion"]), f"replay[{i}]", i)
            for i, r in enumerate(builtin_instructions())
        ]
        problems = []
    rng = random.Random(cfg.train.seed)
    # Without repetition while the pool lasts; a larger share than the pool holds repeats rows evenly.
    picked = [pool[i] for k in range(0, n, len(pool)) for i in rng.sample(range(len(pool)), min(len(pool), n - k))]
    return [
        Row([{"role": "system", "content": REPLAY_SYSTEM}, *r.messages[-2:]], r.where, r.line) for r in picked
    ], problems


def _messages(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def builtin_instructions() -> list[dict[str, str]]:
    """The built-in general instruction set as {"prompt", "completion"} rows (shipped with tunelab, so checked
    by its tests rather than row by row here)."""
    data = resources.files("tunelab.data").joinpath("replay_data", "general_instructions.jsonl")
    with resources.as_file(data) as path:  # a real path even when the package is installed as a zip
        return [record.fields for record in read(path, "replay") if record.fields is not None]
