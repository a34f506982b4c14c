"""Score generated answers: every metric with a 95% bootstrap interval, per-row scores, best and worst rows.

scored = score_all(predictions, references, ["rougeL", "bleu"], resamples=1000)
scored.metrics["rougeL"], scored.intervals["rougeL"], scored.rows[0]["scores"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.evaluation.bootstrap import bootstrap_ci
from tunelab.evaluation.metrics import main_metric, score_rows, task_scorer


@dataclass
class Scored:
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    row_scores: list[dict[str, float]]  # one dict per row, every metric's per-row values
    main: str  # the headline key (the first metric's)
    per_metric_main: dict[str, str] = field(default_factory=dict)


def score_all(
    predictions: list[str], references: list[str], metric_names: list[str], resamples: int = 1000, seed: int = 0
) -> Scored:
    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    row_scores: list[dict[str, float]] = [{} for _ in predictions]
    for name in metric_names:
        fn = task_scorer(name)
        metrics.update(fn(predictions, references))
        if resamples:
            intervals.update(bootstrap_ci(fn, predictions, references, n_resamples=resamples, seed=seed))
        for row, values in zip(row_scores, score_rows(name, predictions, references), strict=True):
            row.update(values)
    mains = {name: main_metric(name) for name in metric_names}
    return Scored(metrics, intervals, row_scores, mains[metric_names[0]], mains)


def best_and_worst(rows: list[dict[str, Any]], key: str, n: int = 5) -> tuple[list[dict], list[dict]]:
    """The n highest- and n lowest-scoring rows by `key` (ties keep file order)."""
    ranked = sorted(rows, key=lambda r: -r["scores"].get(key, 0.0))
    return ranked[:n], ranked[::-1][:n]


def format_value(key: str, value: float, interval: tuple[float, float] | None = None) -> str:
    """Shares as percentages, 0-100 scales (bleu, chrf) and counts as they are, with the ± half-width."""
    as_percent = not (key.endswith("_count") or key in ("bleu", "chrf") or key.startswith("perplexity"))
    scale = 100 if as_percent else 1
    text = f"{value * scale:.1f}" + ("%" if as_percent else "")
    if interval is not None:
        text += f" ± {(interval[1] - interval[0]) * scale / 2:.1f}"
    return text
