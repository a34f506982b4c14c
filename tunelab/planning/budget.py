"""Time budgets from the planner's estimate: how many steps fit (`train.time_budget`) and how long a run will
train (`tunelab search --budget`), before any weights load.

The estimate is the planner's FLOP count at the calibrated share of this machine's matmul rate
(docs/planning.md); it covers the optimizer steps only. Loading, evaluation and the retention probe come on
top, which is why a search calibrates the estimate with each finished trial's measured time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tunelab.config import RunConfig
from tunelab.config.search import duration_seconds
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.planning.planner import plan


@dataclass(frozen=True)
class TrainingTime:
    seconds_per_step: float
    steps: int  # what the config trains: max_steps, else epochs x steps per epoch
    steps_per_epoch: int

    @property
    def seconds(self) -> float:
        return self.steps * self.seconds_per_step


def training_time(cfg: RunConfig, nproc: int = 1) -> TrainingTime | None:
    """The configured method's estimated training time here, in `nproc` processes (each step then takes a global
    batch N times larger); None where the planner cannot tell (no rows)."""
    result = plan(cfg, nproc)
    row = next(r for r in result.rows if r.label == result.configured)
    per_epoch, per_step = result.tokens.steps_per_epoch, row.seconds_per_step
    if result.processes is not None and row.per_process is not None:
        per_epoch, per_step = result.processes.steps_per_epoch, row.per_process.seconds_per_step
    if per_step is None or not per_epoch:
        return None
    t = cfg.train
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * per_epoch)
    return TrainingTime(per_step, steps, per_epoch)


def fit_time_budget(cfg: RunConfig, nproc: int = 1) -> RunConfig:
    """`cfg` with max_steps cut to what fits train.time_budget (unchanged when all of it fits, or no budget), in
    `nproc` processes."""
    if cfg.train.time_budget is None:
        return cfg
    budget = duration_seconds(cfg.train.time_budget)
    estimate = training_time(cfg, nproc)
    if estimate is None:
        raise ConfigError("train.time_budget: the planner cannot estimate this run's time (no training rows)")
    fitting = math.floor(budget / estimate.seconds_per_step)
    if fitting < 1:
        raise ConfigError(
            f"train.time_budget={cfg.train.time_budget}: one step takes about {estimate.seconds_per_step:.1f} s "
            "here (planner estimate); give a longer budget or a smaller batch"
        )
    if fitting >= estimate.steps:
        info(
            f"train.time_budget={cfg.train.time_budget}: all {estimate.steps} steps fit "
            f"(about {estimate.seconds / 60:.1f} min, planner estimate)"
        )
        return cfg
    epochs = fitting / estimate.steps_per_epoch
    info(
        f"train.time_budget={cfg.train.time_budget}: {fitting} of {estimate.steps} steps fit ({epochs:.2f} epochs, "
        f"{estimate.seconds_per_step:.1f} s per step by the planner's estimate): train.max_steps={fitting}"
    )
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": fitting})})
