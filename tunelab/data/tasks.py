"""Several tasks in one training run: `data.train` as a list of sources, mixed by their `weight`.

    counts = mix_counts({"triage": 297, "category": 297}, {"triage": 3, "category": 1})  # {"triage": 446, ...}
    rows = mix(rows_by_task, counts, seed)

Without weights every source's rows go in once (plain concatenation). With weights, the mix keeps the total
number of rows (so an epoch is as long as the sources' rows together) and gives each task its share of it:
a task with fewer rows than its share is repeated (whole copies first, then a seeded sample of the rest),
a task with more is sampled down. Shares are rounded by largest remainder, so the counts add up exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class TaskMix:
    """One task's part of the training mix, as the run reports it (metrics.json data.tasks)."""

    name: str
    path: str
    format: str
    rows: int  # good training rows of the task (after its validation split)
    used: int  # rows of it in the mix (repeats counted)
    share: float  # used / all rows in the mix
    validation_rows: int = 0
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mix_counts(available: dict[str, int], weights: dict[str, float] | None) -> dict[str, int]:
    """Rows of each task in the mix: all of them without weights; else shares of the same total by weight."""
    if weights is None:
        return dict(available)
    total = sum(available.values())
    scale = sum(weights.values())
    exact = {name: total * weights[name] / scale for name in available}
    counts = {name: max(1, math.floor(value)) for name, value in exact.items()}
    # Largest remainder: the rows rounding dropped go to the tasks that lost the most.
    by_remainder = sorted(available, key=lambda n: (exact[n] - math.floor(exact[n]), n), reverse=True)
    for name in by_remainder[: max(0, total - sum(counts.values()))]:
        counts[name] += 1
    return counts


def take(rows: list[T], n: int, rng: random.Random) -> list[T]:
    """n rows of `rows`: a seeded sample when n is smaller; whole copies, then a seeded sample, when larger."""
    copies, rest = divmod(n, len(rows))
    picked = [i for _ in range(copies) for i in range(len(rows))] + sorted(rng.sample(range(len(rows)), rest))
    return [rows[i] for i in picked]


def mix(rows_by_task: dict[str, list[T]], counts: dict[str, int], seed: int) -> list[T]:
    """The training rows of every task at its count, task by task (the trainer shuffles them)."""
    rng = random.Random(seed)
    return [row for name, rows in rows_by_task.items() for row in take(rows, counts[name], rng)]
