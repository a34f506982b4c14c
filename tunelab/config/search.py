"""The `search:` section (what `tunelab search` varies and optimizes) and durations such as `30m`.

search:
  metric: eval_field_accuracy      # default: train.metric_for_best_model
  budget: 30m                      # the whole search, every trial's training and evaluation
  max_probe_drop: 2                # a constraint: trials losing more retention-probe points are infeasible
  space:
    train.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # a range: float, or int when low/high are
    method.r: [4, 8, 16, 32]                                     # a list: one of these values
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from tunelab.config.methods import Strict

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def duration_seconds(text: str | float | int) -> float:
    """`90s`, `5m`, `1.5h`, `1h30m`, or a number of seconds, as seconds; ValueError naming the forms."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text).strip().replace(" ", ""))
        if not match or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 5m, 1.5h or 1h30m")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * hours + 60 * minutes + secs
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be longer than 0 seconds")
    return seconds


def checked_duration(text: str) -> str:
    duration_seconds(text)  # raises ValueError naming the forms
    return text


# A duration kept as written (`5m`, dumped back the same), checked when the config is validated.
Duration = Annotated[str, AfterValidator(checked_duration)]


class Range(Strict):
    """Values from `low` to `high`: integers when both are whole numbers (and `step` is, if given)."""

    low: int | float
    high: int | float
    log: bool = Field(False, description="Sample on a log scale (learning rates).")
    step: int | float | None = Field(None, description="Only multiples of this above `low`.")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and isinstance(self.step or 1, int)


class SearchConfig(Strict):
    """What `tunelab search` optimizes and within what."""

    metric: str | None = Field(
        None,
        description="The validation metric to optimize (eval_loss, or a generation metric of eval.metrics such "
        "as eval_field_accuracy). Default: train.metric_for_best_model.",
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        "auto", description="`auto`: minimize losses and perplexity, maximize the rest."
    )
    trials: int = Field(8, ge=1, description="Trials in the whole search (a resumed search counts earlier ones).")
    budget: Duration | None = Field(
        None,
        description="Wall-clock budget of the whole search (e.g. 30m): no trial starts that the planner's time "
        "estimate, calibrated by the trials so far, says would end past it.",
    )
    max_probe_drop: float | None = Field(
        None,
        ge=0,
        description="Constraint: trials whose retention-probe accuracy falls more than this many points are "
        "infeasible (never chosen as best; the sampler learns to avoid them). Needs forgetting.enabled.",
    )
    pruning: bool = Field(
        True, description="Stop trials whose intermediate evaluations fall below the median of earlier trials."
    )
    space: dict[str, Range | list[Any]] | None = Field(
        None,
        description="Dotted config keys and their values: a range {low, high, log?, step?} or a list of choices. "
        "Default: the learning rate around the config's, epochs, and LoRA r and alpha.",
    )

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Range | list[Any]] | None) -> dict[str, Range | list[Any]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError(
                "the search space is empty: name at least one setting, or remove search.space "
                "for the defaults (learning rate, epochs, LoRA r and alpha)"
            )
        for key, values in v.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"{key}: an empty list of choices; give at least one value")
            if "." not in key:
                raise ValueError(f"{key}: name a setting with its section, e.g. train.learning_rate or method.r")
        return v
