"""The search space: the config's `search.space` (or defaults for the method), turned into Optuna suggestions.

Each key is a dotted config key; a list is a categorical choice, a Range a float (or int) interval. Choices that
are not plain values (a list of target modules) are offered to Optuna as their JSON text and read back.
"""

from __future__ import annotations

import json
import math
from typing import Any

from tunelab.config import RunConfig
from tunelab.config.search import Range
from tunelab.errors import ConfigError, TunelabError
from tunelab.sweeps.runs import with_settings

PLAIN = (type(None), bool, int, float, str)
EPOCH_KEYS = ("train.num_train_epochs", "train.max_steps")


def space_of(cfg: RunConfig) -> dict[str, Range | list[Any]]:
    """The config's search space, else: the learning rate from a tenth to 3x the config's (log scale), 1 to
    twice the config's epochs, and for LoRA/QLoRA the rank r and alpha."""
    if cfg.search.space is not None:
        return dict(cfg.search.space)
    lr, epochs = cfg.train.learning_rate, cfg.train.num_train_epochs
    space: dict[str, Range | list[Any]] = {
        "train.learning_rate": Range(low=lr / 10, high=lr * 3, log=True),
    }
    if cfg.train.max_steps <= 0:
        space["train.num_train_epochs"] = Range(low=1, high=max(2, math.ceil(2 * epochs)))
    if cfg.method.name in ("lora", "qlora"):
        space["method.r"] = [4, 8, 16, 32]
        space["method.alpha"] = [8, 16, 32, 64]
    return space


def suggest(trial: Any, space: dict[str, Range | list[Any]]) -> dict[str, Any]:
    """One point of the space, as dotted settings, drawn by the trial's sampler."""
    settings = {}
    for key, values in space.items():
        if isinstance(values, list):
            settings[key] = _choice(trial, key, values)
        elif values.integer:
            settings[key] = trial.suggest_int(key, values.low, values.high, step=values.step or 1, log=values.log)
        else:
            settings[key] = trial.suggest_float(key, values.low, values.high, step=values.step, log=values.log)
    return settings


def _choice(trial: Any, key: str, values: list[Any]) -> Any:
    if all(isinstance(v, PLAIN) for v in values):
        return trial.suggest_categorical(key, values)
    return json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in values]))


def cheapest(space: dict[str, Range | list[Any]]) -> dict[str, Any]:
    """The point with the fewest epochs/steps, other keys at their first value (ranges: low): what the budget
    must hold at least once. Rank, learning rate and the rest barely move a trial's time."""
    point = {}
    for key, values in space.items():
        if isinstance(values, Range):
            point[key] = values.low
        elif key in EPOCH_KEYS:
            point[key] = min((v for v in values if isinstance(v, int | float)), default=values[0])
        else:
            point[key] = values[0]
    return point


def space_problems(cfg: RunConfig, space: dict[str, Range | list[Any]]) -> list[str]:
    """Keys or values the config does not take, each tried alone on the config (one line each)."""
    problems = []
    for key, values in space.items():
        for value in values if isinstance(values, list) else [values.low, values.high]:
            try:
                with_settings(cfg, {key: value})
            except TunelabError as err:
                detail = err.problems[0] if err.problems else str(err)
                problems.append(f"search.space: {key}={value!r} is not a valid setting ({_short(detail)})")
                break
            except (KeyError, TypeError):
                problems.append(f"search.space: {key}: no such config section; write e.g. train.learning_rate")
                break
    return problems


def _short(detail: str) -> str:
    return detail.removeprefix("the sweep's settings: ").strip()


def check_space(cfg: RunConfig, space: dict[str, Range | list[Any]]) -> None:
    problems = space_problems(cfg, space)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the search space", problems)
