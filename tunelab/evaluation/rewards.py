"""Rewards: what a good answer is, as functions GRPO trains on and the held-out evaluation scores with.

    functions, weights = reward_functions(cfg.objective.rewards)
    functions[0](prompts=["..."], completions=['{"a": 1}'], reference=['{"a": 1}'])   # -> [1.0]

Each function takes TRL's reward signature, (prompts, completions, **columns) -> one float per completion, with
the rows' other fields as columns (`reference`, ...). Built-ins: valid_json, regex, length, exact_match,
field_match. `python` loads the user's own function from the file the config names, and from nothing else.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.errors import ConfigError
from tunelab.evaluation.metrics import parse_json_object

RewardFunction = Callable[..., list[float | None]]


def _named(name: str, score: Callable[[str, str | None], float]) -> RewardFunction:
    """A TRL reward function scoring each completion with score(completion, reference); named for TRL's logs."""

    def reward(prompts: list[Any], completions: list[Any], reference: list[str] | None = None, **_: Any):
        references = reference or [None] * len(completions)
        return [score(_text(c), r) for c, r in zip(completions, references, strict=True)]

    reward.__name__ = name
    return reward


def _text(completion: Any) -> str:
    """A completion as text: TRL passes plain strings for plain-text prompts, message lists for chat prompts."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def _field_match(fields: list[str] | None) -> Callable[[str, str | None], float]:
    def score(completion: str, reference: str | None) -> float:
        expected, got = parse_json_object(reference or ""), parse_json_object(completion)
        keys = fields or list(expected or {})
        if not expected or got is None or not keys:
            return 0.0
        return sum(key in got and got[key] == expected.get(key) for key in keys) / len(keys)

    return score


def built_in(spec: Any) -> RewardFunction:
    if spec.name == "valid_json":
        return _named("valid_json", lambda c, r: float(parse_json_object(c) is not None))
    if spec.name == "regex":
        pattern = re.compile(spec.pattern)
        return _named("regex", lambda c, r: float(pattern.search(c) is not None))
    if spec.name == "length":
        return _named("length", lambda c, r: float(spec.min_chars <= len(c) <= spec.max_chars))
    if spec.name == "exact_match":
        return _named("exact_match", lambda c, r: float(r is not None and c.strip() == r.strip()))
    if spec.name == "field_match":
        return _named("field_match", _field_match(spec.fields))
    raise ValueError(f"not a built-in reward: {spec.name}")


def user_function(spec: Any) -> RewardFunction:
    """The function `spec.function` (FILE.py:NAME) names, loaded from that file: one ConfigError line if it
    cannot be (missing file, an error on import, no such callable)."""
    path, _, name = spec.function.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"objective.rewards: {spec.function}: no file {file} (paths are relative to this folder)")
    module_spec = importlib.util.spec_from_file_location(f"tunelab_user_rewards_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: whatever it raises is reported as one line
        raise ConfigError(f"objective.rewards: importing {file} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"objective.rewards: {file} has no function {name!r}")
    return function


def reward_functions(specs: list[Any]) -> tuple[list[RewardFunction], list[float]]:
    """The configured rewards as TRL reward functions, and their weights."""
    functions = [user_function(s) if s.name == "python" else built_in(s) for s in specs]
    return functions, [s.weight for s in specs]


def total_rewards(
    functions: list[RewardFunction], weights: list[float], prompts: list[Any], completions: list[str], columns
) -> tuple[list[float], dict[str, float]]:
    """Each completion's weighted reward sum (a None from a function counts as 0), and each function's mean."""
    totals = [0.0] * len(completions)
    means = {}
    for function, weight in zip(functions, weights, strict=True):
        scores = [s or 0.0 for s in function(prompts=prompts, completions=completions, **columns)]
        means[function.__name__] = sum(scores) / len(scores) if scores else float("nan")
        totals = [t + weight * s for t, s in zip(totals, scores, strict=True)]
    return totals, means
